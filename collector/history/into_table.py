"""`collector import --into table`: Binance's archive straight into the lake's tables, a commit a day.

    for each UTC day:  for each symbol, in order:
        a daily file ─▶ downloaded and checked against its CHECKSUM ─▶ read in blocks (ids in
        order, once) ─▶ its holes: jumps inside it, and its edges asked of the REST API ─▶
        filled from REST (historicalTrades) or recorded as unfilled
        ─▶ its rows into the day's `trades` files, its bars into `bars_1m`'s
    ─▶ one commit per table: those symbols' rows of the day replaced, nothing else touched

No minute objects and no markers: the checks of the landing import (collector/history/
importer.py) without its cost of a minute's object (about 2 ms of CPU each). A symbol's day
whose every id the table holds already (from its first trade of the day to the first of the
next, as the REST API says) is not downloaded again: a second run commits nothing, and a
stopped run, run again, goes on from the days it had not committed. Unfilled holes are in the
day's snapshot summary and the command's report.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from collector.binance.archive import ArchiveBatch, ArchiveFile, ArchiveProblem, download, read_trades
from collector.binance.rest import BinanceRest
from collector.capture.batching import SealedBatch, TimeUnit
from collector.history.holes import HoleFiller
from collector.history.report import FileReport, ImportSummary
from collector.history.staging import follow_ids
from collector.lake.holdings import IdRanges, LakeMinute
from collector.lake.parquet import batch_table
from collector.lock import staging_directory
from collector.table.catalog import LakeTables
from collector.table.read import SLICE_ROWS
from collector.table.schema import BARS_SCHEMA, TRADES_SCHEMA, arrow_schema
from collector.table.write import DataFiles, Intents, commit_day, minute_slices, write_slices

__all__ = ["DayRows", "TableImporter"]

_EPOCH = date(1970, 1, 1)
_PRICE = pa.decimal128(18, 8)


class _NoLake:
    """The landing zone's holdings, as the hole filler asks for them: none (the table is checked
    before a file is fetched)."""

    def minute(self, minute: int) -> LakeMinute:
        return LakeMinute()


@dataclass
class DayRows:
    """One daily file's trades as table rows, its holes, and the trades REST filled in."""

    file: ArchiveFile
    target: pa.Schema
    unit: TimeUnit = "ms"
    per_minute: int = 0
    first: tuple[int, int] | None = None  # (id, time) of the file's first trade
    last: tuple[int, int] | None = None
    holes: list[tuple[int, int, int, int]] = field(default_factory=list)
    rows: int = 0
    filled: int = 0
    lake: _NoLake = field(default_factory=_NoLake)
    _tables: list[pa.Table] = field(default_factory=list)
    _backfilled: bool = False

    def __post_init__(self) -> None:
        self.unit = "us" if self.file.unit == "us" else "ms"
        self.per_minute = 60_000_000 if self.unit == "us" else 60_000

    def feed(self, batch: ArchiveBatch) -> None:
        self.first, self.last = follow_ids(
            self.file, batch.ids, batch.times, (self.first, self.last), self.holes
        )
        micros = batch.times if self.unit == "us" else pc.multiply(batch.times, 1000)
        rows = len(batch.ids)
        self.rows += rows
        self._tables.append(
            pa.Table.from_arrays(
                [
                    pa.repeat(pa.scalar(self.file.symbol), rows),
                    batch.ids,
                    _decimal(batch.prices),
                    _decimal(batch.quantities),
                    micros.cast(pa.timestamp("us", tz="UTC")),
                    pa.nulls(rows, pa.timestamp("us", tz="UTC")),
                    batch.makers,
                    pa.nulls(rows, pa.timestamp("us", tz="UTC")),
                ],
                schema=self.target,
            )
        )

    def stage(self, batch: SealedBatch, kind: str) -> None:
        """Trades REST filled in: as the landing's backfill objects carry them."""
        self._tables.append(batch_table(batch).select(self.target.names).cast(self.target))
        self.filled += batch.rows
        self._backfilled = True

    def table(self) -> pa.Table:
        table = pa.concat_tables(self._tables) if self._tables else self.target.empty_table()
        return table.sort_by("trade_id") if self._backfilled else table


def _decimal(scaled: Any) -> pa.Array:
    """int64 scaled by 10**8 as DECIMAL(18,8): the same 64 bits, reinterpreted, then widened."""
    scaled = scaled.combine_chunks() if isinstance(scaled, pa.ChunkedArray) else scaled
    narrow = pa.Array.from_buffers(
        pa.decimal64(18, 8), len(scaled), [None, scaled.buffers()[1]], offset=scaled.offset
    )
    return narrow.cast(_PRICE)


class TableImporter:
    """Imports symbols' days of the archive into the lake's tables (see the module's docstring)."""

    def __init__(self, tables: LakeTables, *, archive_url: str, rest_url: str, staging: Path,
                 backfill_max_trades: int, log: Any, progress: Any = None) -> None:  # fmt: skip
        self.tables, self.archive_url, self.rest_url = tables, archive_url, rest_url
        self.staging, self.log, self.progress = staging, log, progress
        self.holes = HoleFiller(rest_url, backfill_max_trades, log)
        self.rest = BinanceRest(rest_url, timeout_s=15.0)
        self.intents = Intents(staging / "intents")
        self._trades_schema = arrow_schema(TRADES_SCHEMA)
        self._bars_schema = arrow_schema(BARS_SCHEMA)

    async def run(self, symbols: list[str], first: date, last: date) -> ImportSummary:
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        summary = ImportSummary(days=len(days))
        started = time.monotonic()
        if self.progress:
            self.progress.begin(len(days) * len(symbols), days=len(days), symbols=len(symbols))
        with staging_directory(self.staging, command="collector import --into table", emptied=False):
            shutil.rmtree(self.staging / "files", ignore_errors=True)
            try:
                for day in days:
                    await self._day(day, sorted(symbols), summary)
            finally:
                shutil.rmtree(self.staging / "files", ignore_errors=True)
        summary.seconds = time.monotonic() - started
        return summary

    async def _day(self, day: date, symbols: list[str], summary: ImportSummary) -> None:
        intent = self.intents.begin(f"import-{day.isoformat()}-{int(time.time() * 1000)}")
        trades = DataFiles(self.tables.trades, day, self._trades_schema, intent)
        minute_bars = DataFiles(self.tables.bars, day, self._bars_schema, intent)
        imported: list[str] = []
        checksums = hashlib.sha256()
        unfilled = 0
        for symbol in symbols:
            file = ArchiveFile(symbol, "daily", day, day)
            report = FileReport(file.name)
            if await asyncio.to_thread(self._held_whole, file):
                report.warnings.append(f"{file.name}: the table holds every trade of it already")
                summary.files.append(report)
                self._done(file, summary)
                continue
            rows = await self._file(file, report, summary)
            if rows is None:
                self._done(file, summary)
                continue
            await asyncio.to_thread(write_slices, minute_slices(rows, SLICE_ROWS), trades, minute_bars)
            imported.append(symbol)
            checksums.update(f"{file.name} {report.trades} {report.filled}\n".encode())
            unfilled += len(report.unfilled)
            summary.files.append(report)
            self._done(file, summary)
        if not imported:
            Intents.done(intent)
            return
        detail = {"trade-lake.source": "archive", "trade-lake.symbols": ",".join(imported),
                  "trade-lake.rows": str(trades.rows), "trade-lake.unfilled-gaps": str(unfilled)}  # fmt: skip
        digest = "archive:" + checksums.hexdigest()
        for table, files in ((self.tables.trades, trades.finish()), (self.tables.bars, minute_bars.finish())):
            await asyncio.to_thread(commit_day, table, day, files, digest, detail, symbols=imported,
                                    record=False)  # fmt: skip
        Intents.done(intent)
        self.log.info(
            "collector.import_day_committed", day=str(day), symbols=len(imported), trades=trades.rows
        )

    async def _file(self, file: ArchiveFile, report: FileReport, summary: ImportSummary) -> pa.Table | None:
        """A checked file's rows with its holes filled; None when it is skipped (in the summary)."""
        target = self.staging / "files" / file.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            clock = time.monotonic()
            summary.bytes_downloaded += await asyncio.to_thread(download, file, self.archive_url, target)
            rows = DayRows(file, self._trades_schema)
            await asyncio.to_thread(self._read, file, target, rows)
            report.seconds["read"] = time.monotonic() - clock
        except ArchiveProblem as problem:
            summary.skipped.append({"name": file.name, "reason": problem.reason, "message": str(problem)})
            self.log.error(
                "collector.import_skipped", file=file.name, reason=problem.reason, error=str(problem)
            )
            return None
        finally:
            target.unlink(missing_ok=True)
        holes = rows.holes + await asyncio.to_thread(self.holes.at_edges, file, rows, report)
        clock = time.monotonic()
        await self.holes.fill(file, holes, rows, _file_ids(rows), report)
        report.seconds["fill"] = time.monotonic() - clock
        report.trades, report.landed, report.filled = rows.rows, rows.rows, rows.filled
        return rows.table()

    def _read(self, file: ArchiveFile, path: Path, rows: DayRows) -> None:
        for batch in read_trades(file, path):
            rows.feed(batch)
            if self.progress:
                self.progress.rows(len(batch.ids))

    def _held_whole(self, file: ArchiveFile) -> bool:
        """Does the table hold every trade of the file's day already (the REST API's first ids of
        the day and of the next bound it)? False when it cannot say."""
        start, end = file.bounds()
        per_ms = 1000 if file.unit == "us" else 1
        try:
            head = self.rest.first_trade_id_from(file.symbol, start // per_ms)
            tail = self.rest.first_trade_id_from(file.symbol, end // per_ms)
        except (OSError, ValueError):
            return False
        if head is None or tail is None or tail <= head:
            return False
        day = file.first_day
        held = self.tables.trades.scan(
            row_filter=f"symbol = '{file.symbol}' AND trade_time >= '{day}T00:00:00+00:00' "
            f"AND trade_time < '{day + timedelta(days=1)}T00:00:00+00:00'",
            selected_fields=("trade_id",),
        ).to_arrow()["trade_id"]
        if len(held) != tail - head:
            return False
        low, high = pc.min_max(held).values()
        return bool(low.as_py() == head and high.as_py() == tail - 1)

    def _done(self, file: ArchiveFile, summary: ImportSummary) -> None:
        if self.progress:
            self.progress.file_done(file, summary)


def _file_ids(rows: DayRows) -> IdRanges:
    """The ids the file holds: one run from its first to its last, less its holes."""
    present = IdRanges()
    if rows.first is None:
        return present
    start = rows.first[0]
    for low, high, _, _ in sorted(rows.holes):
        if low > start:
            present.add(start, low - 1)
        start = high + 1
    last = (rows.last or rows.first)[0]
    if last >= start:
        present.add(start, last)
    return present
