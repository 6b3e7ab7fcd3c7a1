"""The capture core: frames in, sealed batches out. No I/O, no asyncio, no clock of its own.

    frame ─▶ decode (binance) ─▶ continuity (sequence) ─▶ minute batcher (batching) ─▶ SealedBatch

The caller owns time: it passes the receive stamp of each frame and the monotonic `now_s`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from collector.batching import MinuteBatcher, SealedBatch, TimeUnit
from collector.binance import Frame, ServerShutdown, Skipped, Trade, decode_frame
from collector.sequence import Gap, SequenceTracker

__all__ = ["CaptureCore", "CaptureStats", "FeedResult"]


@dataclass(slots=True)
class CaptureStats:
    """Counters since start; every frame lands in exactly one of trades, duplicates, skipped."""

    frames: int = 0
    trades: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    gaps: int = 0
    missing_ids: int = 0
    sealed: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class FeedResult:
    """What one frame turned out to be, for the caller to log or act on."""

    frame: Frame
    duplicate: bool = False
    gap: Gap | None = None
    batch_id: str | None = None  # the batch an accepted trade went into (for the journal)


class CaptureCore:
    """Decodes frames, drops duplicates, notes gaps and batches trades by minute."""

    def __init__(
        self,
        *,
        time_unit: TimeUnit,
        max_batch_bytes: int,
        max_batch_age_s: float,
        minute_grace_s: float,
        last_ids: Mapping[str, int] | None = None,
    ) -> None:
        self.stats = CaptureStats()
        self.sequence = SequenceTracker(last_ids)
        self.batcher = MinuteBatcher(
            time_unit=time_unit,
            max_batch_bytes=max_batch_bytes,
            max_batch_age_s=max_batch_age_s,
            minute_grace_s=minute_grace_s,
        )
        self._sealed: list[SealedBatch] = []

    def feed(self, raw: str | bytes, received_at_ns: int, now_s: float) -> FeedResult:
        """Take one WebSocket frame. Sealed batches accumulate for `take_sealed()`."""
        stats = self.stats
        stats.frames += 1
        frame = decode_frame(raw, received_at_ns)
        if type(frame) is Trade:
            accepted, gap = self.sequence.observe(frame.symbol, frame.trade_id)
            if not accepted:
                stats.duplicates += 1
                return FeedResult(frame, duplicate=True)
            if gap is not None:
                stats.gaps += 1
                stats.missing_ids += gap.size
            stats.trades[frame.symbol] += 1
            batch_id = self.batcher.batch_id_for(frame)
            sealed = self.batcher.add(frame, now_s)
            if sealed:
                self._collect(sealed)
            return FeedResult(frame, gap=gap, batch_id=batch_id)
        if type(frame) is ServerShutdown:
            stats.skipped["server_shutdown"] += 1
        elif type(frame) is Skipped:
            stats.skipped[frame.reason] += 1
        return FeedResult(frame)

    def tick(self, now_s: float) -> None:
        """Let time pass: seal batches by age or closed minute."""
        self._collect(self.batcher.tick(now_s))

    def flush(self) -> None:
        """Seal everything still buffered (shutdown)."""
        self._collect(self.batcher.flush())

    def take_sealed(self) -> list[SealedBatch]:
        sealed, self._sealed = self._sealed, []
        return sealed

    def _collect(self, sealed: list[SealedBatch]) -> None:
        for batch in sealed:
            self.stats.sealed[batch.reason] += 1
        self._sealed.extend(sealed)
