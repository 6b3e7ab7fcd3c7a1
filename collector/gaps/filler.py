"""Gap filling: every trade-id gap registered, filled from REST or recorded as unfilled, durably.

    core finds a gap ─▶ GapFiller.register ─▶ ledger (gaps/open.json) ─▶ GapFiller.run
        ─▶ Backfiller.fill (REST, within the weight budget) ─▶ pages batched by minute ─▶ landing
        ─▶ closed: filled, or recorded in gaps/unfilled.jsonl with the reason

A gap is registered from the event loop without blocking it: in memory at once, written to the
journal of the batch holding the trade that revealed it (the same page-cache durability as
that trade's frame, so a crash cannot lose one without the other), and saved to the ledger by
a worker thread before any state file or journal says the collector got past it. A range
left unfilled for a reason that may pass (`RETRYABLE`) is tried again after
COLLECTOR_BACKFILL_RETRY_S, at most `MAX_ATTEMPTS` times; the markers that listed it are
rewritten once its files have landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import Any, Protocol

from collector.capture.batching import MinuteBatcher, SealedBatch, TimeUnit
from collector.capture.decode import Trade
from collector.counters import Registry
from collector.exceptions import SinkError
from collector.gaps.backfill import Backfiller, Shortfall
from collector.gaps.ledger import GapLedger, OpenGap, UnfilledRange
from collector.lake.completion import UnfilledGap
from collector.lake.holdings import LakeDays
from collector.lake.sinks import Sink

__all__ = ["GapFiller"]

# Pages (1,000 trades, weight 25) a gap is fetched before the next gap's turn: one, so the
# weight budget is shared page by page among every symbol with a gap.
TURN_PAGES = 1
LEDGER_RETRY_S = 5.0


class BackfillLanding(Protocol):
    async def land_backfill(self, batches: list[SealedBatch]) -> None: ...

    def landing(self, symbol: str, minutes: range) -> bool: ...


class MarkerRefresh(Protocol):
    def refresh_later(self, symbol: str, minutes: range, landing: Any) -> None: ...


class GapFiller:
    """Registers gaps and works through them, one at a time, oldest first."""

    def __init__(
        self,
        ledger: GapLedger,
        backfiller: Backfiller,
        *,
        time_unit: TimeUnit,
        max_batch_bytes: int,
        max_trades: int,
        retry_s: float,
        log: Any,
        metrics: Registry,
    ) -> None:
        self.ledger = ledger
        self.backfiller = backfiller
        self.time_unit: TimeUnit = time_unit
        self.max_batch_bytes = max_batch_bytes
        self.max_trades = max_trades
        self.retry_s = retry_s
        self.log = log
        self.landing: BackfillLanding | None = None  # wired by the app
        self.lake: Sink | None = None  # the landing zone, read for ids an import landed
        self.markers: MarkerRefresh | None = None
        self._wakeup = asyncio.Event()
        self._filled = metrics.counter("gaps_filled", "Trade-id gaps filled completely.")
        # Per gap being filled in turns: the ranges to fetch and what could not be, so far.
        self._plans: dict[tuple[str, int, int], tuple[list[tuple[int, int]], list[Shortfall]]] = {}
        self._backfilled = metrics.counter("backfilled_trades", "Trades filled in by REST backfill.")
        metrics.gauge(
            "open_gaps", "Gaps registered and not yet filled or recorded.", lambda: len(ledger.open)
        )
        metrics.gauge(
            "gaps_unfilled", "Gap ranges recorded as unfillable, ever.", lambda: ledger.unfilled_count
        )
        metrics.gauge(
            "gaps_unfilled_last_day",
            "Gap ranges recorded as unfillable in the last 24 h.",
            lambda: ledger.unfilled_since(86_400),
        )

    def register(self, gap: OpenGap) -> None:
        """A gap the stream revealed (from the event loop): kept, saved by a worker thread, filled."""
        self.ledger.add(gap, save=False)
        self.log.warning(
            "collector.gap_detected",
            symbol=gap.symbol,
            first_missing=gap.first_missing,
            last_missing=gap.last_missing,
            missing=gap.size,
        )
        saving = asyncio.get_running_loop().run_in_executor(None, self.ledger.save_if_dirty)
        saving.add_done_callback(self._saved)
        self._wakeup.set()

    def _saved(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:  # retried by the next state save
            self.log.error(
                "collector.gap_ledger_failed", path=str(self.ledger.open_path), error=str(future.exception())
            )

    def open_gap_from(self, symbol: str) -> float:
        """The earliest trade time an open gap of `symbol` may hold (inf when none is open)."""
        starts = [g.window_start_s for g in self.ledger.open if g.symbol == symbol]
        return min((s if s is not None else float("-inf") for s in starts), default=float("inf"))

    def unfilled_in(self, symbol: str, minute: int) -> list[UnfilledGap]:
        return [r.as_gap() for r in self.ledger.unfilled_between(symbol, minute * 60.0, minute * 60.0 + 60.0)]

    async def run(self) -> None:
        while True:
            try:
                await self._turn()
            except OSError as exc:  # the ledger's disk refused a write (full): the turn again, later
                self.log.error("collector.gap_ledger_failed", path=str(self.ledger.root), error=str(exc),
                               retry_in_s=LEDGER_RETRY_S)  # fmt: skip
                await asyncio.sleep(LEDGER_RETRY_S)

    async def _turn(self) -> None:
        if not self.ledger.open:
            self._reopen_due()
        if not self.ledger.open:
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self.retry_s, 60.0)):
                    await self._wakeup.wait()
            return
        await self._fill(self.ledger.open[0])
        await asyncio.sleep(0)  # a turn ended: let the event loop run before the next

    def _reopen_due(self) -> None:
        for record in self.ledger.due_for_retry(time.time(), self.retry_s):
            retry = self.ledger.reopen(record)
            self.log.info(
                "collector.backfill_retry",
                symbol=retry.symbol,
                first=retry.first_missing,
                last=retry.last_missing,
                attempt=retry.attempt,
                last_reason=record.reason,
            )

    async def _fill(self, gap: OpenGap) -> None:
        """One turn of the gap first in line: at most TURN_PAGES pages, then, unless it is done,
        it goes to the back of the line. Many symbols' gaps (after a restart) so share the weight
        budget page by page: the quiet symbols' one-page gaps are not kept waiting behind
        BTCUSDT's thousand pages, and BTCUSDT gets its share of every round."""
        key = (gap.symbol, gap.first_missing, gap.attempt)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = await self._plan(gap)
        ranges, shortfalls = plan
        pages = TURN_PAGES
        for low, high in ranges:
            if gap.next_id > high:
                continue  # done in an earlier turn
            gap.next_id = max(gap.next_id, low)  # the ids before `low` are in the lake already
            part = dataclasses.replace(gap, first_missing=low, last_missing=high)
            if gap.next_id == low:
                self.log.info("collector.backfill_started", symbol=gap.symbol, first=part.next_id, last=high)
            before = self.backfiller.requests
            found = await self.backfiller.fill(
                part, lambda trades, next_id: self._land_page(gap, trades, next_id), max_pages=pages
            )
            shortfalls += found
            pages -= self.backfiller.requests - before
            gave_up = any(s.last_missing >= high for s in found)  # the rest of this range cannot be had
            if gap.next_id <= high and not gave_up:
                await asyncio.to_thread(self.ledger.to_back, gap)  # its turn is over; the rest later
                return
        del self._plans[key]
        for shortfall in shortfalls:
            await asyncio.to_thread(self._record, gap, shortfall)
        if not shortfalls:
            self._filled.inc()
            self.log.info(
                "collector.gap_filled", symbol=gap.symbol, first=gap.first_missing, last=gap.last_missing
            )
        await asyncio.to_thread(self.ledger.close, gap)
        if (
            gap.attempt > 1
            and gap.window_start_s is not None
            and gap.window_end_s is not None
            and self.markers
        ):
            # A retried range: the markers of its minutes listed it as unfilled. They are updated
            # once its files have landed, so no marker ever drops the gap before it lists the
            # trades that filled it.
            minutes = range(int(gap.window_start_s // 60), int(gap.window_end_s // 60) + 1)
            landing = self.landing
            self.markers.refresh_later(
                gap.symbol, minutes, lambda: landing is not None and landing.landing(gap.symbol, minutes)
            )

    async def _plan(self, gap: OpenGap) -> tuple[list[tuple[int, int]], list[Shortfall]]:
        """The id ranges of the gap to fetch (what the lake lacks), and what cannot be fetched."""
        try:
            ranges = await asyncio.to_thread(self._missing_in_lake, gap)
        except (SinkError, OSError, ValueError) as exc:  # S3 unreachable, an unreadable object: later
            detail = f"could not read what the landing zone holds of these ids: {exc}"
            return [], [Shortfall(gap.next_id, gap.last_missing, "lake_unavailable", detail)]
        missing = sum(hi - lo + 1 for lo, hi in ranges)
        if missing > self.max_trades:
            detail = f"{missing} trades exceed COLLECTOR_BACKFILL_MAX_TRADES"
            return [], [Shortfall(lo, hi, "too_large", detail) for lo, hi in ranges]
        return ranges, []

    def _missing_in_lake(self, gap: OpenGap) -> list[tuple[int, int]]:
        """The ids of gap.next_id..last_missing the landing zone does not hold. Trades the
        collector did not land itself can be there only in days before today (an import of
        Binance's archive, published after a day ends): of those days, the objects whose id
        ranges meet the gap's are read. Blocking: run it in a worker thread."""
        whole = [(gap.next_id, gap.last_missing)]
        if self.lake is None or gap.window_start_s is None or gap.next_id > gap.last_missing:
            return whole
        today = int(time.time() // 86_400)
        first = int(gap.window_start_s // 86_400)
        last = min(int((gap.window_end_s or time.time()) // 86_400), today - 1)
        if first > last:
            return whole
        held = LakeDays(
            self.lake,
            gap.symbol,
            list(range(first, last + 1)),
            within=(gap.next_id, gap.last_missing),
            markers=False,
        )
        ranges = held.present.missing(gap.next_id, gap.last_missing)
        if ranges != whole:
            self.log.info(
                "collector.gap_partly_in_lake",
                symbol=gap.symbol,
                first=gap.next_id,
                last=gap.last_missing,
                held=gap.last_missing - gap.next_id + 1 - sum(hi - lo + 1 for lo, hi in ranges),
                still_missing=len(ranges),
            )
        return ranges

    def _record(self, gap: OpenGap, shortfall: Shortfall) -> None:
        hole = self.ledger.record_unfilled(
            UnfilledRange(
                symbol=gap.symbol,
                first_missing=shortfall.first_missing,
                last_missing=shortfall.last_missing,
                reason=shortfall.reason,
                detail=shortfall.detail,
                window_start_s=gap.window_start_s,
                window_end_s=gap.window_end_s,
                detected_at_ns=gap.detected_at_ns,
                attempt=gap.attempt,
            )
        )
        self.log.error(
            "collector.gap_unfilled",
            symbol=hole.symbol,
            first_missing=hole.first_missing,
            last_missing=hole.last_missing,
            missing=hole.size,
            reason=hole.reason,
            detail=hole.detail,
            record=str(self.ledger.unfilled_path),
        )

    async def _land_page(self, gap: OpenGap, trades: list[Trade], next_id: int) -> None:
        """One page of backfilled trades: batched by minute, spooled, then the gap's progress saved."""
        batcher = MinuteBatcher.until_flushed(
            self.time_unit, source="backfill", max_batch_bytes=self.max_batch_bytes
        )
        sealed: list[SealedBatch] = []
        for trade in trades:
            sealed.extend(batcher.add(trade, 0.0))
        sealed.extend(batcher.flush("backfill"))
        assert self.landing is not None, "the app wires the landing before running"
        await self.landing.land_backfill(sealed)
        self._backfilled.inc(len(trades))
        gap.next_id = next_id
        await asyncio.to_thread(self.ledger.save)
