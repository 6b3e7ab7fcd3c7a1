"""Capture: the stream's reads through the pure core, journaled, reported and handed on.

    stream ─▶ Capture.on_chunk ─▶ CaptureCore.feed_chunk ─▶ journal (one write per batch per read)
                                 ├─▶ gaps ─▶ GapFiller.register     ├─▶ shutdown notices ─▶ its rotation
                                 ├─▶ last trade times ─▶ MarkerScheduler.saw_trades
                                 └─▶ sealed batches ─▶ Landing.submit
    the bytes it holds (open batches) ─▶ InFlight: the stream held back, or the largest sealed

Everything here runs on the event loop, once per read, so it does no blocking I/O beyond the
journal's one unbuffered write (page cache; no fsync). A write the spool's disk refuses (full)
holds the stream back until the journal has written what it kept meanwhile (`tick` tries).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from collector.binance.stream import Chunk
from collector.capture.batching import SealedBatch
from collector.capture.core import CaptureCore, ChunkResult
from collector.capture.decode import Trade, decode_frame
from collector.counters import Registry
from collector.gaps.filler import GapFiller
from collector.gaps.ledger import OpenGap
from collector.landing.inflight import PER_BATCH_BYTES, InFlight
from collector.landing.journal import Journal
from collector.landing.markers import MarkerScheduler

__all__ = ["Capture"]

# A flood of bad frames must not flood the journal: the first 100 of each reason, then every 1000th.
_SKIP_LOG_FIRST = 100
_SKIP_LOG_EVERY = 1000


class Capture:
    """Feeds each read to the core and acts on what it was."""

    def __init__(
        self,
        core: CaptureCore,
        journal: Journal,
        *,
        gaps: GapFiller,
        markers: MarkerScheduler,
        submit: Callable[[SealedBatch], None],
        inflight: InFlight,
        units_per_s: int,
        log: Any,
        metrics: Registry,
        hold_back: Callable[[bool], None] = lambda hold: None,
        cheap: Callable[[str], bool] = lambda symbol: True,
    ) -> None:
        """`cheap(symbol)`: its batches cost no request of their own (a market source), so they
        are the first sealed early when memory is short."""
        self.core = core
        self.inflight = inflight
        self.cheap = cheap
        batcher = core.batcher
        inflight.open_bytes = lambda: batcher.buffered_bytes + PER_BATCH_BYTES * batcher.open_batches
        inflight.shed = self.seal_largest
        self.journal = journal
        self.hold_back = hold_back
        self.journal_refused = False  # the journal's disk refused a write; the stream is held back
        self.gaps = gaps
        self.markers = markers
        self.submit = submit
        self.units_per_s = units_per_s
        self.log = log
        self.last_trade_mono: float | None = None
        self._held_seen: tuple[int, int] = (0, 0)  # (id of the held list, chunks examined)
        self._held_first: dict[str, int] = {}
        stats, sequence = core.stats, core.sequence
        metrics.counter("frames", "WebSocket frames received.", read=lambda: stats.frames)
        metrics.counter("reads", "Socket reads that brought frames.", read=lambda: stats.reads)
        metrics.counter(
            "trades_received", "Trades accepted, per symbol.", label="symbol", read=lambda: stats.trades
        )
        metrics.counter("duplicate_trades", "Trades dropped as duplicates.", read=lambda: stats.duplicates)
        metrics.counter(
            "skipped_frames",
            "Frames that carried no trade, per reason.",
            label="reason",
            read=lambda: stats.skipped,
        )
        metrics.counter("gaps_opened", "Trade-id gaps detected.", read=lambda: stats.gaps)
        metrics.counter(
            "missing_trade_ids", "Trade ids inside detected gaps.", read=lambda: stats.missing_ids
        )
        metrics.counter(
            "batches_sealed", "Batches sealed, per reason.", label="reason", read=lambda: stats.sealed
        )
        metrics.gauge("buffered_trades", "Trades in open batches.", lambda: core.batcher.buffered_trades)
        metrics.gauge(
            "last_trade_id", "The last trade id accepted, per symbol.", sequence.snapshot, label="symbol"
        )
        metrics.gauge(
            "last_trade_age_seconds",
            "Seconds since the last trade.",
            lambda: None if self.last_trade_mono is None else time.monotonic() - self.last_trade_mono,
        )

    def reader_for(self, stream: Any) -> Callable[[list[bytes], int], None]:
        """`on_chunk` for the reads of one connection slot (a TradeStream of the pool): its own
        outages prove its symbols' continuity, and a serverShutdown rotates it alone."""

        def on_chunk(frames: list[bytes], received_at_ns: int) -> None:
            self.on_chunk(frames, received_at_ns, stream)

        return on_chunk

    def on_chunk(self, frames: list[bytes], received_at_ns: int, stream: Any) -> None:
        """The frames of one read of `stream`: capture them, journal them, then act on what they were."""
        now = time.monotonic()
        result = self.core.feed_chunk(frames, received_at_ns, now)
        if result.journal:
            self.journal.append_read(received_at_ns, result.journal)
        if result.skipped or result.shutdowns or self.core.sequence.resets:
            self._report(result, stream.request_rotation)
        if result.last_trade_time:
            self.last_trade_mono = now
            units = self.units_per_s
            for found in result.gaps:
                gap = found.gap
                # The missing trades happened after the last trade we have (or, after a restart,
                # no earlier than the first minute not yet marked) and before this one.
                trade_s = found.trade_time / units
                window_start = (
                    found.previous_trade_time / units
                    if found.previous_trade_time is not None
                    else self.markers.first_unmarked_s(gap.symbol, trade_s)
                )
                registered = OpenGap(
                    symbol=gap.symbol,
                    first_missing=gap.first_missing,
                    last_missing=gap.last_missing,
                    next_id=gap.first_missing,
                    detected_at_ns=found.received_at_ns,
                    window_start_s=window_start,
                    window_end_s=trade_s,
                )
                self.journal.note_gap(found.batch_id, registered.to_json())
                self.gaps.register(registered)
            # The connection's count of outages: continuity since a trade is proven by it.
            self.markers.saw_trades(
                result.last_trade_time, units, now, stream.outages, result.first_trade_time
            )
        if self.journal.failure is not None and not self.journal_refused:
            self._refused(self.journal.failure)
        self.hand_on()
        self.inflight.check()

    def _refused(self, failure: OSError) -> None:
        """The journal kept a read it could not write: no more reads until it can."""
        self.journal_refused = True
        self.hold_back(True)
        self.log.error("collector.spool_unwritable", path=str(self.journal.root), error=str(failure),
                       unwritten_bytes=self.journal.unwritten_bytes,
                       fix="free space on the spool's disk (COLLECTOR_SPOOL_DIR); the stream is held back "
                       "until the journal can be written, and nothing taken is lost meanwhile")  # fmt: skip

    def _report(self, result: ChunkResult, rotate: Callable[[str], None]) -> None:
        sequence = self.core.sequence
        for symbol, remembered, seen in sequence.resets:
            self.log.error(
                "collector.sequence_reset",
                symbol=symbol,
                remembered_last_id=remembered,
                new_id=seen,
                note="the remembered id is from another series (a demo's spool?); following the stream",
            )
        sequence.resets.clear()
        for skipped in result.skipped:
            count = self.core.stats.skipped[skipped.reason]
            if count <= _SKIP_LOG_FIRST or count % _SKIP_LOG_EVERY == 0:
                self.log.warning(
                    "collector.frame_skipped", reason=skipped.reason, detail=skipped.detail, count=count
                )
        for shutdown in result.shutdowns:
            self.log.info("collector.server_shutdown", event_time=shutdown.event_time)
            rotate("server_shutdown")

    def tick(self, now_s: float) -> None:
        """Let time pass: batches old enough, or whose minute has closed, are sealed; a journal
        the disk refused is written again, and once it is, the stream reads again."""
        if self.journal_refused and self.journal.flush():
            self.journal_refused = False
            self.log.info("collector.spool_writable", path=str(self.journal.root))
            self.hold_back(False)
        self.core.tick(now_s)
        self.hand_on()
        self.inflight.check()

    def seal_largest(self, down_to_bytes: int) -> None:
        """Memory is short: the largest open batches are sealed, and handed on, at once."""
        self.core.seal_largest(down_to_bytes, self.cheap)
        self.hand_on()

    def flush(self) -> None:
        """Seal everything still buffered (shutdown)."""
        self.core.flush()
        self.hand_on()

    def hand_on(self) -> None:
        for batch in self.core.take_sealed():
            self.submit(batch)

    def handover_ready(self, held: list[Chunk]) -> bool:
        """A new connection may take over once the old one has delivered everything before it."""
        seen_list, examined = self._held_seen
        if seen_list != id(held):
            self._held_first, examined = {}, 0
        for frames, received_at_ns in held[examined:]:
            for raw in frames:
                frame = decode_frame(raw, received_at_ns)
                if type(frame) is Trade and frame.symbol not in self._held_first:
                    self._held_first[frame.symbol] = frame.trade_id
        self._held_seen = (id(held), len(held))
        sequence = self.core.sequence
        return all((sequence.last_id(s) or -1) >= first - 1 for s, first in self._held_first.items())
