"""`collector compact`: final days of the landing zone into the lake's tables, and its report."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any

from collector.config import Settings, parse_destination
from collector.exceptions import SinkError

__all__ = ["cmd_compact", "open_lake_tables"]


def open_lake_tables(settings: Settings) -> Any:
    """The catalog and both tables, or exit 2 with what to do (a missing extra, a bad catalog)."""
    try:
        from collector.table.catalog import CatalogError, open_tables
    except ImportError as exc:  # pragma: no cover - the table's libraries are dependencies
        raise ValueError(f"the tables need pyiceberg ({exc}); reinstall: pip install -e .") from exc
    try:
        return open_tables(settings)
    except CatalogError as exc:
        raise ValueError(str(exc)) from None


def cmd_compact(args: argparse.Namespace, settings: Settings) -> int:
    """Compact the days asked for (or every day ready); exit 1 when a day failed its checks, or a
    day asked for is not final yet."""
    from collector.lake.sinks import make_sink
    from collector.logs import get_logger
    from collector.table.compactor import Compactor, WarehouseError

    if args.destination:
        settings = dataclasses.replace(settings, destination=parse_destination(args.destination))
    days = _days(args)
    sink = make_sink(settings)
    try:
        sink.probe()
    except SinkError as exc:
        print(f"collector compact: {exc}; nothing was compacted", file=sys.stderr)
        return 2
    tables = open_lake_tables(settings)
    compactor = Compactor(sink, tables, settings.spool_dir / "compact", log=get_logger(),
                          snapshot_days=settings.table_snapshot_days)  # fmt: skip
    try:
        outcomes = compactor.run(days)
    except WarehouseError as exc:
        print(f"collector compact: {exc}", file=sys.stderr)
        return 1
    except SinkError as exc:
        print(
            f"collector compact: stopped: {exc}; run it again (nothing half-done is visible)", file=sys.stderr
        )
        return 1
    if args.json:
        print(json.dumps({"tables": tables.where, "days": [o.as_dict() for o in outcomes]}, indent=1))
    else:
        print(_render(outcomes, tables.where, asked=days is not None))
    failed = [o for o in outcomes if o.status == "defects" or (days is not None and o.status == "not_ready")]
    return 1 if failed else 0


def _days(args: argparse.Namespace) -> list[date] | None:
    if args.start is None and args.end is None:
        return None
    first = args.start or args.end
    last = args.end or args.start
    if last < first:
        raise ValueError("--to must not be before --from")
    today = datetime.now(tz=UTC).date()
    if last >= today:
        raise ValueError(f"--to {last}: a day is compacted once it is over and final (today is {today})")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _render(outcomes: list[Any], where: str, *, asked: bool) -> str:
    lines = [f"tables: {where}"]
    for o in outcomes:
        if o.status == "committed":
            gaps = f", {o.unfilled_gaps} unfilled gap(s) declared" if o.unfilled_gaps else ""
            lines.append(f"  {o.day} committed: {o.rows:,} trades in {o.files} file(s), {o.bars:,} bars, "
                         f"{o.seconds} s{gaps}{'; ' + o.detail if o.detail else ''}")  # fmt: skip
        elif o.status == "unchanged":
            lines.append(f"  {o.day} unchanged: {o.detail}")
        elif o.status == "defects":
            lines.append(f"  {o.day} NOT committed, {len(o.defects)} defect(s); `collector audit` says more:")
            lines.extend(f"    {d}" for d in o.defects[:20])
        elif asked or o.status == "not_ready":
            lines.append(f"  {o.day} {o.status.replace('_', ' ')}: {o.detail}")
    if not outcomes:
        lines.append(
            "  no day to compact: the landing zone holds no day before today that is not in the tables"
        )
    return "\n".join(lines)
