"""`collector import`: Binance's public trade archive into the lake, in the live data's contract.

    plan (monthly files for whole past months, daily otherwise) ─▶ download, a few at once,
    each checked against its CHECKSUM ─▶ read in blocks ─▶ per minute: what the lake lacks
    ─▶ staged ─▶ continuity: holes inside the file, and at its ends (asked of the REST API)
    ─▶ filled from REST (historicalTrades, within the weight budget) or recorded as unfilled
    ─▶ published: objects first (conditional writes, checksums), then each minute's _SUCCESS

Archive objects are `archive-{first}-{last}.parquet` with null `event_time` and `received_at`
(the archive has neither). A trade id the lake holds already is never written again, so an
import over live data lands only what the live capture lacks, and a second run lands nothing.
A file that fails its checksum, is not published yet, or is not what its name says lands
nothing and is reported with what to do.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from collector.binance.archive import ArchiveFile, ArchiveProblem, download, plan_files, read_trades
from collector.history.holes import HoleFiller
from collector.history.report import FileReport, ImportSummary
from collector.history.staging import MinuteStager, minute_manifest
from collector.lake.completion import LandedFile, UnfilledGap
from collector.lake.holdings import IdRanges, LakeDays
from collector.lake.layout import marker_key, symbol_root
from collector.lake.sinks import Sink, write_marker
from collector.lock import staging_directory

__all__ = ["Importer"]

_EPOCH = date(1970, 1, 1)
UPLOADERS = 8  # objects published at once
ENCODERS = 2  # minutes encoded at once while a file is read


@dataclass
class Prepared:
    """A file read, staged and checked, waiting to be published."""

    file: ArchiveFile
    stager: MinuteStager
    present: IdRanges
    unfilled: list[tuple[UnfilledGap, int, int]]
    report: FileReport


class Importer:
    """Imports symbols' days into one sink. Blocking work runs in worker threads."""

    def __init__(
        self,
        sink: Sink,
        *,
        archive_url: str,
        rest_url: str,
        staging: Path,
        output_format: str = "parquet",
        backfill_max_trades: int = 5_000_000,
        downloads: int = 3,
        log: Any,
        progress: Any = None,
    ) -> None:
        self.sink = sink
        self.archive_url = archive_url
        self.rest_url = rest_url
        self.staging = staging
        self.output_format = output_format
        self.holes = HoleFiller(rest_url, backfill_max_trades, log)
        self.downloads = downloads
        self.log = log
        self.progress = progress

    async def run(self, symbols: list[str], first: date, last: date) -> ImportSummary:
        summary = ImportSummary(days=(last - first).days + 1)
        started = time.monotonic()
        # One import at a time per staging directory; what a stopped run left is made again, and
        # a stopped import leaves nothing staged (a full disk is freed again).
        with staging_directory(self.staging, command="collector import"):
            files = await asyncio.to_thread(self._plan, symbols, first, last)
            if self.progress:
                self.progress.begin(len(files), days=summary.days, symbols=len(symbols))
            # Two files at a time along the path: one is read and staged while the one before it
            # is published and marked (the two share no minute: their days differ).
            await self._run_files(files, summary)
        summary.seconds = time.monotonic() - started
        return summary

    async def _run_files(self, files: list[ArchiveFile], summary: ImportSummary) -> None:
        landing: asyncio.Task[None] | None = None
        with ThreadPoolExecutor(ENCODERS, thread_name_prefix="encode") as encoder:
            async for file, fetched in self._fetched(files):
                if isinstance(fetched, ArchiveProblem):
                    self._skip(summary, file, fetched)
                    if self.progress:
                        self.progress.file_done(file, summary)
                    continue
                path, size = fetched
                summary.bytes_downloaded += size
                try:
                    prepared = await self._prepare(file, path, encoder)
                except ArchiveProblem as problem:
                    self._skip(summary, file, problem)
                    if self.progress:
                        self.progress.file_done(file, summary)
                    continue
                finally:
                    path.unlink(missing_ok=True)
                if landing is not None:
                    await landing
                landing = asyncio.create_task(self._land(prepared, summary))
            if landing is not None:
                await landing

    def _plan(self, symbols: list[str], first: date, last: date) -> list[ArchiveFile]:
        """The files to fetch: a month the lake holds data in already comes as daily files, so
        what the lake holds is read a day at a time (a month of live BTCUSDT is about 100
        million ids; a day, 3 million)."""
        files: list[ArchiveFile] = []
        for file in plan_files(symbols, first, last):
            month = f"{symbol_root(file.symbol)}{file.first_day:%Y/%m}/"
            if file.period == "monthly" and self.sink.list_keys(month):
                files += [ArchiveFile(file.symbol, "daily", day, day) for day in file.days]
            else:
                files.append(file)
        return files

    def _skip(self, summary: ImportSummary, file: ArchiveFile, problem: ArchiveProblem) -> None:
        summary.skipped.append({"name": file.name, "reason": problem.reason, "message": str(problem)})
        self.log.error("collector.import_skipped", file=file.name, reason=problem.reason, error=str(problem))

    async def _fetched(self, files: list[ArchiveFile]) -> AsyncIterator[tuple[ArchiveFile, Any]]:
        """Each file downloaded (or its problem), in plan order, at most `downloads` ahead."""
        self.staging.mkdir(parents=True, exist_ok=True)

        async def one(file: ArchiveFile) -> Any:
            target = self.staging / file.name
            try:
                return target, await asyncio.to_thread(download, file, self.archive_url, target)
            except ArchiveProblem as problem:
                return problem

        ahead: deque[asyncio.Task[Any]] = deque()
        queue = iter(files)
        for file in queue:
            ahead.append(asyncio.create_task(one(file)))
            if len(ahead) >= max(1, self.downloads):
                break
        for file in files:
            result = await ahead.popleft()
            if (following := next(queue, None)) is not None:
                ahead.append(asyncio.create_task(one(following)))
            yield file, result

    async def _prepare(self, file: ArchiveFile, path: Path, encoder: ThreadPoolExecutor) -> Prepared:
        """Read, staged, checked for holes, holes filled: everything short of publishing."""
        report = FileReport(file.name)
        days = [(d - _EPOCH).days for d in file.days]
        lake = await asyncio.to_thread(LakeDays, self.sink, file.symbol, days)
        stager = MinuteStager(
            file,
            lake,
            self.staging / file.name.removesuffix(".zip"),
            output_format=self.output_format,
            encoder=encoder,
        )
        clock = time.monotonic()
        await asyncio.to_thread(self._read, file, path, stager)
        report.seconds["read"] = time.monotonic() - clock
        report.trades, report.landed = stager.rows, stager.new_rows
        holes = stager.holes + await asyncio.to_thread(self.holes.at_edges, file, stager, report)
        present = IdRanges()
        for ranges in (lake.present, stager.in_file):
            for low, high in ranges._ranges:
                present.add(low, high)
        clock = time.monotonic()
        unfilled = await self.holes.fill(file, holes, stager, present, report)
        report.seconds["fill"] = time.monotonic() - clock
        return Prepared(file, stager, present, unfilled, report)

    async def _land(self, prepared: Prepared, summary: ImportSummary) -> None:
        file, stager, report = prepared.file, prepared.stager, prepared.report
        await self._publish(prepared)
        shutil.rmtree(stager.staging, ignore_errors=True)
        summary.files.append(report)
        self.log.info(
            "collector.import_file_done",
            file=file.name,
            trades=report.trades,
            landed=report.landed,
            filled=report.filled,
            objects=report.objects,
            minutes_marked=report.markers_written,
            markers_rewritten=report.markers_rewritten,
            unfilled=len(report.unfilled),
            seconds={k: round(v, 3) for k, v in report.seconds.items()},
        )
        if self.progress:
            self.progress.file_done(file, summary)

    def _read(self, file: ArchiveFile, path: Path, stager: MinuteStager) -> None:
        for batch in read_trades(file, path):
            stager.feed(batch)
            if self.progress:
                self.progress.rows(len(batch.ids))
        stager.flush()
        stager.finish()

    async def _publish(self, prepared: Prepared) -> None:
        """Objects first, a few at once; then every minute's marker, each after its objects."""
        stager, report = prepared.stager, prepared.report

        def put(staged: Any) -> None:
            self.sink.put(staged.key, staged.path.read_bytes(), source=staged.path)

        clock = time.monotonic()
        with ThreadPoolExecutor(UPLOADERS) as pool:
            await asyncio.get_running_loop().run_in_executor(None, lambda: list(pool.map(put, stager.staged)))
        report.objects = len(stager.staged)
        report.seconds["publish"] = time.monotonic() - clock
        clock = time.monotonic()
        await asyncio.to_thread(self._mark, prepared)
        report.seconds["mark"] = time.monotonic() - clock

    def _mark(self, prepared: Prepared) -> None:
        file, stager, present, report = prepared.file, prepared.stager, prepared.present, prepared.report
        unfilled = prepared.unfilled
        new: dict[int, list[LandedFile]] = {}
        for staged in stager.staged:
            new.setdefault(staged.minute, []).append(staged.entry)
        per = stager.per_minute
        start, end = file.bounds()
        now = time.time()
        due = []
        for minute in _markable(stager, report, start // per, end // per):
            gaps = [g for g, before, after in unfilled if before // per <= minute <= after // per]
            held = stager.lake.minute(minute)
            doc, what = minute_manifest(
                file.symbol, minute, held=held, new=new.get(minute, []), gaps=gaps, present=present, now_s=now
            )
            if doc is not None:
                due.append((minute, doc, what))

        def write(item: tuple[int, dict[str, Any], str]) -> None:
            minute, doc, what = item
            write_marker(self.sink, doc, file.symbol, minute)
            if what == "rewritten":
                key = self.sink.describe(marker_key(file.symbol, minute))
                self.log.warning(
                    "collector.marker_rewritten",
                    key=key,
                    rows=doc["rows"],
                    revision=doc["revision"],
                    by="import",
                )

        with ThreadPoolExecutor(UPLOADERS) as pool:
            list(pool.map(write, due))
        report.markers_rewritten += sum(1 for _, _, what in due if what == "rewritten")
        report.markers_written += sum(1 for _, _, what in due if what == "written")


def _markable(stager: MinuteStager, report: FileReport, first: int, stop: int) -> range:
    """The minutes a file's import may mark: all of its days, or, when the REST API could not
    say whether trades lie before its first row or after its last (a day that stops at 16:00
    checks out by its CHECKSUM), only the minutes from its first trade to its last."""
    if not report.unchecked:
        return range(first, stop)
    if stager.first is None:
        return range(0)
    per = stager.per_minute
    return range(stager.first[1] // per, (stager.last or stager.first)[1] // per + 1)
