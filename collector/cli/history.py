"""`collector import` and `collector verify`: the archive's commands, their arguments and output."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from collector.binance.archive import StagingError
from collector.cli.options import landing_to_read
from collector.config import Settings, parse_destination
from collector.exceptions import SinkError

__all__ = [
    "RESUME",
    "check_days",
    "cmd_import",
    "cmd_verify",
    "importer_for",
    "plain",
    "render_summary",
    "sink_for",
    "symbols_known",
]


def sink_for(settings: Settings, destination: str | None) -> Any:
    import dataclasses

    from collector.lake.sinks import make_sink

    if destination:
        settings = dataclasses.replace(settings, destination=parse_destination(destination))
    return settings, make_sink(settings)


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    """Import days of Binance's archive; exit 0 when every file landed, 1 when some were skipped."""
    check_days(args.start, args.end)
    if args.into == "table":
        if not symbols_known(settings, args.symbols, "import", "nothing was imported"):
            return 2
        return _import_into_table(args, settings)
    settings, sink = sink_for(settings, args.destination)
    importer = importer_for(settings, sink, settings.archive_url, settings.rest_url, args.downloads)
    try:
        sink.probe()  # a missing bucket or a denied permission, before anything is downloaded
    except SinkError as exc:
        print(f"collector import: {plain(exc)}; nothing was imported", file=sys.stderr)
        return 2
    if not symbols_known(settings, args.symbols, "import", "nothing was imported"):
        return 2
    try:
        summary = asyncio.run(importer.run(args.symbols, args.start, args.end))
    except (SinkError, StagingError) as exc:
        print(f"collector import: stopped: {plain(exc)}. {RESUME}", file=sys.stderr)
        return 1
    totals = summary.totals()
    print(json.dumps(totals, indent=1) if args.json else render_summary(totals, sink.describe()))
    return 1 if totals["skipped"] or totals["unchecked"] else 0


def _import_into_table(args: argparse.Namespace, settings: Settings) -> int:
    """`--into table`: days straight into the lake's tables, a commit a day."""
    from collector.cli.progress import ImportProgress
    from collector.cli.table import open_lake_tables
    from collector.history.into_table import TableImporter
    from collector.logs import get_logger

    if args.destination:
        import dataclasses

        settings = dataclasses.replace(settings, destination=parse_destination(args.destination))
    tables = open_lake_tables(settings)
    log = get_logger()
    importer = TableImporter(tables, archive_url=settings.archive_url, rest_url=settings.rest_url,
                             staging=settings.spool_dir / "import-table",
                             backfill_max_trades=settings.backfill_max_trades, log=log,
                             progress=ImportProgress(log))  # fmt: skip
    try:
        summary = asyncio.run(importer.run(args.symbols, args.start, args.end))
    except (StagingError, OSError) as exc:
        print(f"collector import: stopped: {exc}. Days committed are whole; run the same command "
              "again to finish (days the table holds are not fetched again)", file=sys.stderr)  # fmt: skip
        return 1
    totals = summary.totals()
    print(json.dumps(totals, indent=1) if args.json else _render_table_import(totals, tables.where))
    return 1 if totals["skipped"] or totals["unchecked"] else 0


def _render_table_import(t: dict[str, Any], where: str) -> str:
    held = [w for w in t["warnings"] if w.endswith("holds every trade of it already")]
    lines = [
        f"imported {t['days']} day(s) into the tables ({where}): {t['files'] - len(held)} file(s), "
        f"{t['archive_trades']:,} archive trades in {t['seconds']} s ({t['trades_per_s'] or 0:,} trades/s)",
        f"  {t['filled_from_rest']:,} trades the archive lacked came from the REST API; "
        f"{len(held)} file(s) the tables held whole already were not fetched",
    ]
    lines += [f"  unfilled: ids {g['first_missing']}..{g['last_missing']} ({g['reason']}): {g['detail']}"
              for g in t["gaps_unfilled"]]  # fmt: skip
    lines += [f"  warning: {w}" for w in t["warnings"] if w not in held]
    lines += [f"  skipped {s['name']} ({s['reason']}): {s['message']}" for s in t["skipped"]]
    return "\n".join(lines)


RESUME = (
    "What landed is kept (an object whole or not at all, a minute's marker only after its "
    "objects); run the same command again to finish the import"
)


def plain(exc: Exception) -> str:
    # The sink speaks for the daemon, which retries and keeps what it holds in its spool.
    return str(exc).removesuffix("; retrying").replace(" (data stays in the spool)", "")


def check_days(first: date, last: date, flag: str = "--to") -> None:
    if last < first:
        raise ValueError("--to must not be before --from")
    today = datetime.now(tz=UTC).date()
    if last >= today:
        raise ValueError(
            f"{flag} {last} has no archive yet: a day is published after it ends (today is {today})"
        )


def symbols_known(settings: Settings, symbols: list[str], command: str, nothing: str) -> bool:
    """Ask exchangeInfo whether Binance knows the symbols (delisted ones it lists in BREAK): the
    archive answers 404 alike for a misspelt name and a day not published yet, and only the
    second is worth waiting for. When exchangeInfo cannot be asked, says so and goes on."""
    from collector.binance.rest import BinanceRest
    from collector.daemon.preflight import check_symbols

    report = check_symbols(BinanceRest(settings.rest_url, timeout_s=10.0), tuple(symbols))
    if report.error:
        print(f"collector {command}: could not check the symbols ({report.error}); going on", file=sys.stderr)
    for problem in report.problems("--symbols"):
        print(f"collector {command}: {problem}; {nothing}", file=sys.stderr)
    return not report.unknown


def importer_for(settings: Settings, sink: Any, archive_url: str, rest_url: str, downloads: int) -> Any:
    from collector.cli.progress import ImportProgress
    from collector.daemon.preflight import offline_problems
    from collector.history.importer import Importer
    from collector.logs import get_logger

    if problems := offline_problems(settings):
        raise ValueError("; ".join(problems))
    log = get_logger()
    return Importer(
        sink,
        archive_url=archive_url,
        rest_url=rest_url,
        staging=settings.spool_dir / "import",
        output_format=settings.output_format,
        backfill_max_trades=settings.backfill_max_trades,
        downloads=downloads,
        log=log,
        progress=ImportProgress(log),
    )


def render_summary(t: dict[str, Any], where: str) -> str:
    lines = [
        f"imported {t['days']} day(s) into {where}: {t['files']} file(s), {t['archive_trades']:,} "
        f"archive trades in {t['seconds']} s ({t['trades_per_s'] or 0:,} trades/s)",
        f"  landed {t['landed_trades']:,} trades in {t['objects']:,} objects; {t['already_in_lake']:,} "
        f"were in the lake already; {t['filled_from_rest']:,} the archive lacked came from the REST API",
        f"  minutes marked {t['minutes_marked']:,}, markers rewritten {t['markers_rewritten']:,}",
    ]
    if t["landed_trades"] == 0 and t["filled_from_rest"] == 0 and t["files"]:
        lines.append("  nothing new: the lake held every trade of these days already")
    for gap in t["gaps_unfilled"]:
        ids = f"{gap['first_missing']}..{gap['last_missing']}"
        lines.append(f"  unfilled: ids {ids} ({gap['reason']}): {gap['detail']}")
    for warning in t["warnings"]:
        lines.append(f"  warning: {warning}")
    for name in t["unchecked"]:
        lines.append(
            f"  unmarked: {name}'s minutes before its first trade and after its last, since the REST "
            "API could not say whether the archive lacks trades there; run the import again when it answers"
        )
    for skipped in t["skipped"]:
        lines.append(f"  skipped {skipped['name']} ({skipped['reason']}): {skipped['message']}")
    return "\n".join(lines)


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Compare the lake with the archive trade by trade; exit 1 on any difference."""
    from collector.binance.archive import ArchiveProblem
    from collector.history.verify import render, verify_day

    check_days(args.day, args.day, "--day")
    settings, sink = sink_for(settings, args.destination)
    table = None
    if args.table:
        from collector.cli.table import open_lake_tables

        table = open_lake_tables(settings).trades
    elif isinstance(settings.destination, Path):
        landing_to_read(settings.destination)
    else:
        try:
            sink.probe()  # a LIST: a missing bucket or a denied permission
        except SinkError as exc:
            print(f"collector verify: {plain(exc)}", file=sys.stderr)
            return 2
    if not symbols_known(settings, args.symbols, "verify", "nothing was compared"):
        return 2
    code = 0
    for symbol in args.symbols:
        try:
            report = verify_day(sink, symbol, args.day, settings.archive_url, settings.spool_dir / "verify",
                                table=table)  # fmt: skip
        except ArchiveProblem as problem:
            print(f"collector verify: {problem}", file=sys.stderr)
            return 2
        print(json.dumps(report.as_dict(), indent=1) if args.json else render(report))
        code = code or (0 if report.ok else 1)
    return code
