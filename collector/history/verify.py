"""`collector verify`: the lake against Binance's archive, trade by trade, for a symbol's day.

Both sides are read minute by minute (the lake's partitions, the archive's rows split by trade
time), so a day of millions of trades needs the memory of a minute. A trade id present on one
side only is listed (in ranges); a trade on both sides is compared on price, quantity, trade
time (at the coarser of the two units: live objects in milliseconds against the archive's
microseconds from 2025 on compare in milliseconds) and the maker flag. Where the archive is the
one missing trades, the report says so: that is a fact about Binance's archive users want.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from collector.binance.archive import ArchiveFile, decimal_to_scaled, download, read_trades
from collector.lake.holdings import IdRanges
from collector.lake.layout import parse_object_key, symbol_root
from collector.lake.sinks import Sink

__all__ = ["VerifyReport", "render", "verify_day"]

_SAMPLES = 20
_LAKE_COLUMNS = ("trade_id", "price", "quantity", "trade_time", "is_buyer_maker")
_EPOCH = date(1970, 1, 1)


@dataclass
class VerifyReport:
    symbol: str
    day: str
    compared: int = 0
    equal: int = 0
    lake_trades: int = 0
    archive_trades: int = 0
    only_in_lake: IdRanges = field(default_factory=IdRanges)
    only_in_archive: IdRanges = field(default_factory=IdRanges)
    differing: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    duplicates: dict[str, list[int]] = field(default_factory=lambda: {"lake": [], "archive": []})

    @property
    def ok(self) -> bool:
        once = not self.duplicates["lake"] and not self.duplicates["archive"]
        return (
            once and not self.differing and not self.only_in_lake._ranges and not self.only_in_archive._ranges
        )

    def as_dict(self) -> dict[str, Any]:
        lake_only = sum(b - a + 1 for a, b in self.only_in_lake._ranges)
        archive_only = sum(b - a + 1 for a, b in self.only_in_archive._ranges)
        return {
            "ok": self.ok,
            "symbol": self.symbol,
            "day": self.day,
            "lake_trades": self.lake_trades,
            "archive_trades": self.archive_trades,
            "compared": self.compared,
            "equal": self.equal,
            "differing": self.differing,
            "differences": self.samples,
            "only_in_lake": lake_only,
            "only_in_lake_ranges": self.only_in_lake._ranges[:_SAMPLES],
            "only_in_archive": archive_only,
            "only_in_archive_ranges": self.only_in_archive._ranges[:_SAMPLES],
            "archive_lacks_trades": lake_only > 0,
            "lake_ids_twice": len(self.duplicates["lake"]),
            "lake_ids_twice_sample": sorted(self.duplicates["lake"])[:_SAMPLES],
            "archive_ids_twice": len(self.duplicates["archive"]),
        }


def _lake_minute(sink: Sink, keys: list[str]) -> Any:
    """A minute's lake objects as one table: trade_id, price and quantity scaled by 10**8,
    time in µs, maker, and the unit's µs per tick (to compare times at the coarser unit)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tables = []
    for key in keys:
        data = sink.get(key)
        if data is None or not key.endswith(".parquet"):
            continue
        try:
            table = pq.read_table(
                pa.BufferReader(data),
                columns=["trade_id", "price", "quantity", "trade_time", "is_buyer_maker"],
            )
        except (pa.ArrowException, OSError) as exc:
            raise ValueError(
                f"the lake's object {sink.describe(key)} cannot be read ({exc}); "
                "`collector audit` lists what is wrong with it"
            ) from exc
        scale = 1000 if table.schema.field("trade_time").type.unit == "ms" else 1
        tables.append(
            pa.table(
                {
                    "trade_id": table.column("trade_id"),
                    "l_price": decimal_to_scaled(table.column("price")),
                    "l_qty": decimal_to_scaled(table.column("quantity")),
                    "l_time": pc.multiply(table.column("trade_time").cast(pa.int64()), scale),
                    "l_maker": table.column("is_buyer_maker"),
                    "l_scale": pa.repeat(pa.scalar(scale, pa.int64()), len(table)),
                }
            )
        )
    return pa.concat_tables(tables) if tables else None


def verify_day(
    sink: Sink, symbol: str, day: date, archive_url: str, staging: Path, *, table: Any = None
) -> VerifyReport:
    """Compare the lake's trades of `day` with the archive's daily file: the landing zone's, or
    with `table` (the lake's `trades` table) that table's. Raises ArchiveProblem."""
    file = ArchiveFile(symbol, "daily", day, day)
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / file.name
    report = VerifyReport(symbol, day.isoformat())
    try:
        download(file, archive_url, path)
        if table is not None:
            held = _table_minutes(table, symbol, day)
            for minute, archive in _archive_minutes(file, path):
                _compare(report, archive, held.pop(minute, None))
            for leftover in held.values():
                _compare(report, None, leftover)
            return report
        keys: dict[int, list[str]] = defaultdict(list)
        prefix = (
            f"{symbol_root(symbol)}{datetime.fromtimestamp((day - _EPOCH).days * 86_400, tz=UTC):%Y/%m/%d}/"
        )
        for key, _ in sink.list_keys(prefix):
            if (name := parse_object_key(key)) is not None and name.symbol == symbol:
                keys[name.minute].append(key)
        for minute, archive in _archive_minutes(file, path):
            _compare(report, archive, _lake_minute(sink, keys.pop(minute, [])))
        for leftover in keys.values():  # minutes of the lake the archive has no trade in
            _compare(report, None, _lake_minute(sink, leftover))
    finally:
        path.unlink(missing_ok=True)
    return report


def _table_minutes(table: Any, symbol: str, day: date) -> dict[int, Any]:
    """The table's trades of a symbol's day by minute since the epoch (the numbering the archive's
    minutes have in either unit), in the columns `_lake_minute` gives, times in µs."""
    import pyarrow as pa
    import pyarrow.compute as pc

    end = day + timedelta(days=1)
    span = f"trade_time >= '{day}T00:00:00+00:00' AND trade_time < '{end}T00:00:00+00:00'"
    rows = table.scan(
        row_filter=f"symbol = '{symbol}' AND {span}",
        selected_fields=("trade_id", "price", "quantity", "trade_time", "is_buyer_maker"),
    ).to_arrow()
    rows = rows.sort_by("trade_id") if len(rows) else rows
    micros = rows.column("trade_time").cast(pa.int64())
    lake = pa.table(
        {
            "trade_id": rows.column("trade_id"),
            "l_price": decimal_to_scaled(rows.column("price")),
            "l_qty": decimal_to_scaled(rows.column("quantity")),
            "l_time": micros,
            "l_maker": rows.column("is_buyer_maker"),
            "l_scale": pa.repeat(pa.scalar(1, pa.int64()), len(rows)),
        }
    )
    minutes = pc.divide(micros, 60_000_000).to_pylist()
    found: dict[int, Any] = {}
    start = 0
    for index in range(1, len(minutes) + 1):
        if index == len(minutes) or minutes[index] != minutes[start]:
            found[minutes[start]] = lake.slice(start, index - start)
            start = index
    return found


def _archive_minutes(file: ArchiveFile, path: Path) -> Iterator[tuple[int, Any]]:
    """The archive file's trades a minute at a time (trade_id, a_price, a_qty, a_time in µs,
    a_maker), in the order of the file."""
    import bisect

    import pyarrow as pa
    import pyarrow.compute as pc

    per = 60_000_000 if file.unit == "us" else 60_000
    to_us = 1 if file.unit == "us" else 1000
    pending: list[Any] = []
    pending_minute: int | None = None
    for batch in read_trades(file, path):
        block = pa.table(
            {
                "trade_id": batch.ids,
                "a_price": batch.prices,
                "a_qty": batch.quantities,
                "a_time": pc.multiply(batch.times, to_us),
                "a_maker": batch.makers,
            }
        )
        times = batch.times.combine_chunks() if hasattr(batch.times, "combine_chunks") else batch.times
        values = memoryview(times.buffers()[1]).cast("q")[times.offset : times.offset + len(times)]
        start = 0
        while start < len(values):
            minute = values[start] // per
            stop = bisect.bisect_left(values, (minute + 1) * per, lo=start)
            if minute != pending_minute and pending:
                yield pending_minute, pa.concat_tables(pending)  # type: ignore[misc]
                pending = []
            pending_minute = minute
            pending.append(block.slice(start, stop - start))
            start = stop
    if pending:
        yield pending_minute, pa.concat_tables(pending)  # type: ignore[misc]


def _once(report: VerifyReport, side: str, table: Any) -> Any:
    """The table with each trade id once; an id it holds twice is counted (a join would pair
    every copy with the other side's and call them equal)."""
    import pyarrow.compute as pc

    if table is None or pc.count_distinct(table.column("trade_id")).as_py() == len(table):
        return table
    seen: set[int] = set()
    first = []
    for i, trade_id in enumerate(table.column("trade_id").to_pylist()):
        if trade_id in seen:
            report.duplicates[side].append(trade_id)
        else:
            seen.add(trade_id)
            first.append(i)
    return table.take(first)


def _compare(report: VerifyReport, archive: Any, lake: Any) -> None:
    """One minute: ids on one side only, and the trades on both compared column by column."""
    import pyarrow.compute as pc

    report.archive_trades += len(archive) if archive is not None else 0
    report.lake_trades += len(lake) if lake is not None else 0
    lake, archive = _once(report, "lake", lake), _once(report, "archive", archive)
    if archive is None or lake is None:
        only = report.only_in_lake if archive is None else report.only_in_archive
        side = lake if archive is None else archive
        if side is not None:
            only.add_sorted(sorted(side.column("trade_id").to_pylist()))
        return
    both = archive.join(lake, keys="trade_id", join_type="full outer")
    in_archive, in_lake = pc.is_valid(both.column("a_price")), pc.is_valid(both.column("l_price"))
    report.only_in_archive.add_sorted(sorted(both.filter(pc.invert(in_lake)).column("trade_id").to_pylist()))
    report.only_in_lake.add_sorted(sorted(both.filter(pc.invert(in_archive)).column("trade_id").to_pylist()))
    both = both.filter(pc.and_(in_archive, in_lake))
    scale = both.column("l_scale")
    archive_time = pc.multiply(pc.divide(both.column("a_time"), scale), scale)  # at the coarser unit
    checks = {
        "price": ("l_price", both.column("a_price")),
        "quantity": ("l_qty", both.column("a_qty")),
        "trade_time_us": ("l_time", archive_time),
        "is_buyer_maker": ("l_maker", both.column("a_maker")),
    }
    unequal = {name: pc.not_equal(both.column(column), other) for name, (column, other) in checks.items()}
    differing = unequal["price"]
    for mask in list(unequal.values())[1:]:
        differing = pc.or_(differing, mask)
    report.compared += len(both)
    count = pc.sum(differing).as_py() or 0
    report.differing += count
    report.equal += len(both) - count
    if count and len(report.samples) < _SAMPLES:
        rows = both.append_column("a_time_cmp", archive_time).filter(differing).slice(0, _SAMPLES)
        for row in sorted(rows.to_pylist(), key=lambda r: r["trade_id"]):
            if len(report.samples) >= _SAMPLES:
                break
            values = {"trade_time_us": ("l_time", "a_time_cmp"), "price": ("l_price", "a_price"),
                      "quantity": ("l_qty", "a_qty"), "is_buyer_maker": ("l_maker", "a_maker")}  # fmt: skip
            report.samples.append(
                {"trade_id": row["trade_id"]}
                | {
                    name: {"lake": row[mine], "archive": row[theirs]}
                    for name, (mine, theirs) in values.items()
                    if row[mine] != row[theirs]
                }
            )


def render(report: VerifyReport) -> str:
    d = report.as_dict()
    lines = [
        f"verify {d['symbol']} {d['day']}: lake {d['lake_trades']:,} trades, archive {d['archive_trades']:,}",
        f"  compared {d['compared']:,}: {d['equal']:,} equal, {d['differing']:,} differing",
    ]
    lines += [
        f"    trade {s['trade_id']}: "
        + ", ".join(f"{k} lake {v['lake']} archive {v['archive']}" for k, v in s.items() if k != "trade_id")
        for s in d["differences"]
    ]
    if d["only_in_archive"]:
        lines.append(
            f"  only in the archive: {d['only_in_archive']:,} trades, ids {d['only_in_archive_ranges']}"
        )
    if d["only_in_lake"]:
        lines.append(
            f"  only in the lake: {d['only_in_lake']:,} trades, ids {d['only_in_lake_ranges']}: "
            "Binance's archive lacks them (the lake has them from the live stream or REST)"
        )
    if d["lake_ids_twice"]:
        lines.append(
            f"  the lake holds {d['lake_ids_twice']:,} trade ids more than once, e.g. "
            f"{d['lake_ids_twice_sample']}: `collector audit` lists their files"
        )
    if d["archive_ids_twice"]:
        lines.append(f"  the archive holds {d['archive_ids_twice']:,} trade ids more than once")
    lines.append("OK: the lake and the archive agree" if d["ok"] else "DIFFERENT")
    return "\n".join(lines)
