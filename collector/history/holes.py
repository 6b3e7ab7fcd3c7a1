"""The holes of an archive file: found at its edges (asked of the REST API), filled from REST.

A matching checksum proves a download, not a file: a day that stops at 16:00 checks out. So the
importer asks the REST API (`aggTrades`, by time) for the first trade of the file's first day and
of the day after its last; ids between those and the file's own first and last are holes, as
are the jumps inside it. Each hole the lake does not cover either is filled from
`historicalTrades` (the live backfill's client and weight budget) or recorded as unfilled with
the reason, with the time window whose markers must list it.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Protocol

from collector.binance.rest import BinanceRest
from collector.binance.weight import WeightBudget
from collector.capture.batching import MinuteBatcher, SealedBatch, TimeUnit
from collector.capture.decode import Trade
from collector.gaps.backfill import Backfiller
from collector.gaps.ledger import OpenGap
from collector.lake.completion import UnfilledGap
from collector.lake.holdings import IdRanges, LakeMinute

if TYPE_CHECKING:
    from collector.binance.archive import ArchiveFile
    from collector.history.report import FileReport

__all__ = ["HoleFiller", "HoleTarget"]


class _Holdings(Protocol):
    def minute(self, minute: int) -> LakeMinute: ...


class HoleTarget(Protocol):
    """Where a file's trades go, as the hole filler sees it: the landing import's stager (minute
    objects), or the table import's rows."""

    unit: TimeUnit
    per_minute: int
    first: tuple[int, int] | None
    last: tuple[int, int] | None

    @property
    def lake(self) -> _Holdings: ...

    def stage(self, batch: SealedBatch, kind: Any) -> Any: ...


class HoleFiller:
    """Edge holes of a file, and every hole filled from REST or recorded as unfilled."""

    def __init__(self, rest_url: str, max_trades: int, log: Any) -> None:
        self.rest_url = rest_url
        self.max_trades = max_trades
        self.log = log
        self._backfillers: dict[str, Backfiller] = {}
        self._budget = WeightBudget(log=log)  # the import's pages, both time units, share it

    def at_edges(
        self, file: ArchiveFile, stager: HoleTarget, report: FileReport
    ) -> list[tuple[int, int, int, int]]:
        """Trades of the file's days before its first row or after its last, as the REST API
        knows them: a day that stops at 16:00 shows here, whatever its checksum says."""
        start, end = file.bounds()
        per_ms = 1000 if file.unit == "us" else 1
        rest = BinanceRest(self.rest_url, timeout_s=15.0)
        try:
            head = rest.first_trade_id_from(file.symbol, start // per_ms)
            tail = rest.first_trade_id_from(file.symbol, end // per_ms)
        except (OSError, ValueError) as exc:
            warning = f"could not check {file.name}'s first and last trades against the REST API: {exc}"
            report.warnings.append(warning)
            report.unchecked = True  # its minutes outside its first and last trade stay unmarked
            self.log.warning("collector.import_unchecked", file=file.name, error=str(exc))
            return []
        holes = []
        if stager.first is None:
            if head is not None and tail is not None and tail > head:
                holes.append((head, tail - 1, start, end))
            return holes
        first_id, first_time = stager.first
        last_id, last_time = stager.last or stager.first
        if head is not None and head < first_id:
            holes.append((head, first_id - 1, start, first_time))
        if tail is not None and tail > last_id + 1:
            holes.append((last_id + 1, tail - 1, last_time, end))
        return holes

    def _backfiller(self, unit: str) -> Backfiller:
        if unit not in self._backfillers:
            rest = BinanceRest(self.rest_url, time_unit=unit, budget=self._budget)
            self._backfillers[unit] = Backfiller(rest, log=self.log, budget=self._budget)
        return self._backfillers[unit]

    async def fill(
        self,
        file: ArchiveFile,
        holes: list[tuple[int, int, int, int]],
        stager: HoleTarget,
        present: IdRanges,
        report: FileReport,
    ) -> list[tuple[UnfilledGap, int, int]]:
        """Holes the lake does not cover either, from REST; what stays missing, with its window."""
        unfilled: list[tuple[UnfilledGap, int, int]] = []
        for low, high, before, after in holes:
            for first, last in present.missing(low, high):
                size = last - first + 1
                if size > self.max_trades:
                    detail = f"{size} trades missing from {file.name} exceed COLLECTOR_BACKFILL_MAX_TRADES"
                    unfilled.append((UnfilledGap(first, last, "too_large", detail), before, after))
                    continue
                open_gap = OpenGap(
                    symbol=file.symbol,
                    first_missing=first,
                    last_missing=last,
                    next_id=first,
                    detected_at_ns=time.time_ns(),
                )
                self.log.info(
                    "collector.import_backfill", file=file.name, first=first, last=last, missing=size
                )

                async def land(trades: list[Trade], next_id: int) -> None:
                    await asyncio.to_thread(self._stage, stager, trades, present, report)

                for short in await self._backfiller(file.unit).fill(open_gap, land):
                    detail = f"missing from {file.name}; the REST API: {short.detail}"
                    unfilled.append(
                        (
                            UnfilledGap(short.first_missing, short.last_missing, short.reason, detail),
                            before,
                            after,
                        )
                    )
        for gap, _, _ in unfilled:
            report.unfilled.append(
                {
                    "first_missing": gap.first_missing,
                    "last_missing": gap.last_missing,
                    "reason": gap.reason,
                    "detail": gap.detail,
                }
            )
            self.log.error(
                "collector.gap_unfilled",
                file=file.name,
                first_missing=gap.first_missing,
                last_missing=gap.last_missing,
                reason=gap.reason,
                detail=gap.detail,
            )
        return unfilled

    def _stage(self, stager: HoleTarget, trades: list[Trade], present: IdRanges, report: FileReport) -> None:
        """REST's trades staged as backfill objects; their ids (each one, not the objects' name
        ranges, which may span ids still missing) join `present`."""
        batcher = MinuteBatcher.until_flushed(stager.unit, source="backfill")
        per = stager.per_minute
        for trade in trades:
            held = stager.lake.minute(trade.trade_time // per).ids
            if held and trade.trade_id in held:
                continue
            batcher.add(trade, 0.0)
        sealed: list[SealedBatch] = batcher.flush("backfill")
        for batch in sealed:
            stager.stage(batch, "backfill")
            present.add_sorted(batch.columns.trade_id)
            report.filled += batch.rows
