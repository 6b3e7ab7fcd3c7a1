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
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from collector.archive import ArchiveFile, download, read_trades
from collector.lake import IdRanges
from collector.layout import parse_object_key, symbol_root
from collector.sinks import Sink

__all__ = ["VerifyReport", "render", "verify_day"]

_SAMPLES = 20
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

    @property
    def ok(self) -> bool:
        return not self.differing and not self.only_in_lake._ranges and not self.only_in_archive._ranges

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
        }


def _lake_minute(sink: Sink, keys: list[str]) -> dict[int, tuple[int, int, int, bool, int]]:
    """id -> (price, quantity, trade time in µs, maker, the unit's µs per tick) of a minute's files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    found: dict[int, tuple[int, int, int, bool, int]] = {}
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
        unit = table.schema.field("trade_time").type.unit
        scale = 1000 if unit == "ms" else 1
        ids = table.column("trade_id").to_pylist()
        prices = [int(v.scaleb(8)) for v in table.column("price").to_pylist()]
        quantities = [int(v.scaleb(8)) for v in table.column("quantity").to_pylist()]
        times = table.column("trade_time").cast(pa.int64()).to_pylist()
        makers = table.column("is_buyer_maker").to_pylist()
        for i, trade_id in enumerate(ids):
            found[trade_id] = (prices[i], quantities[i], times[i] * scale, makers[i], scale)
    return found


def verify_day(sink: Sink, symbol: str, day: date, archive_url: str, staging: Path) -> VerifyReport:
    """Compare the lake's trades of `day` with the archive's daily file. Raises ArchiveProblem."""
    file = ArchiveFile(symbol, "daily", day, day)
    staging.mkdir(parents=True, exist_ok=True)
    path = staging / file.name
    report = VerifyReport(symbol, day.isoformat())
    try:
        download(file, archive_url, path)
        keys: dict[int, list[str]] = defaultdict(list)
        prefix = (
            f"{symbol_root(symbol)}{datetime.fromtimestamp((day - _EPOCH).days * 86_400, tz=UTC):%Y/%m/%d}/"
        )
        for key, _ in sink.list_keys(prefix):
            if (name := parse_object_key(key)) is not None and name.symbol == symbol:
                keys[name.minute].append(key)
        per = 60_000_000 if file.unit == "us" else 60_000
        to_us = 1 if file.unit == "us" else 1000
        archive_minute: int | None = None
        rows: list[tuple[int, int, int, int, bool]] = []
        for batch in read_trades(file, path):
            columns = [
                batch.ids.to_pylist(),
                batch.prices.to_pylist(),
                batch.quantities.to_pylist(),
                batch.times.to_pylist(),
                batch.makers.to_pylist(),
            ]
            for trade_id, price, qty, t, maker in zip(*columns, strict=True):
                minute = t // per
                if minute != archive_minute:
                    if archive_minute is not None:
                        _compare(report, rows, _lake_minute(sink, keys.pop(archive_minute, [])))
                    archive_minute, rows = minute, []
                rows.append((trade_id, price, qty, t * to_us, maker))
        if archive_minute is not None:
            _compare(report, rows, _lake_minute(sink, keys.pop(archive_minute, [])))
        for leftover in keys.values():  # minutes of the lake the archive has no trade in
            _compare(report, [], _lake_minute(sink, leftover))
    finally:
        path.unlink(missing_ok=True)
    return report


def _compare(
    report: VerifyReport,
    archive: list[tuple[int, int, int, int, bool]],
    lake: dict[int, tuple[int, int, int, bool, int]],
) -> None:
    report.archive_trades += len(archive)
    report.lake_trades += len(lake)
    seen = set()
    for trade_id, price, qty, time_us, maker in archive:
        held = lake.get(trade_id)
        if held is None:
            report.only_in_archive.add(trade_id, trade_id)
            continue
        seen.add(trade_id)
        report.compared += 1
        l_price, l_qty, l_time, l_maker, scale = held
        differences = {
            name: {"lake": a, "archive": b}
            for name, a, b in (
                ("price", l_price, price),
                ("quantity", l_qty, qty),
                ("trade_time_us", l_time, time_us // scale * scale),
                ("is_buyer_maker", l_maker, maker),
            )
            if a != b
        }
        if differences:
            report.differing += 1
            if len(report.samples) < _SAMPLES:
                report.samples.append({"trade_id": trade_id, **differences})
        else:
            report.equal += 1
    for trade_id in sorted(set(lake) - seen):
        report.only_in_lake.add(trade_id, trade_id)


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
    lines.append("OK: the lake and the archive agree" if d["ok"] else "DIFFERENT")
    return "\n".join(lines)
