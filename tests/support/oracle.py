"""The capture rules one trade at a time, written plainly: the reference the columnar core must match.

Every frame is classified by `decode_frame`, every id goes through `SequenceTracker.observe`,
every trade into `MinuteBatcher.add`, each its own journal line. No columns, no splitting: if
the core's fast path and this disagree on anything, the core is wrong.
"""

from __future__ import annotations

from typing import Any

from collector.capture.batching import UNITS_PER_MINUTE, MinuteBatcher, SealedBatch
from collector.capture.core import CaptureStats, ChunkResult, GapSeen
from collector.capture.decode import ServerShutdown, Skipped, Trade, decode_frame
from collector.capture.sequence import SequenceTracker


class OneByOne:
    """Feeds frames one at a time with the same settings and results as `CaptureCore`."""

    def __init__(self, **settings: Any) -> None:
        settings.pop("combined", None)  # decode_frame takes either form
        self.stats = CaptureStats()
        self.sequence = SequenceTracker(settings.pop("last_ids", None))
        self.batcher = MinuteBatcher(**settings)
        self._per_minute = UNITS_PER_MINUTE[settings["time_unit"]]
        self._last_time: dict[str, int] = {}
        self._sealed: list[SealedBatch] = []

    def feed_chunk(self, frames: list[bytes], received_at_ns: int, now_s: float) -> ChunkResult:
        result = ChunkResult()
        self.stats.frames += len(frames)
        for raw in frames:
            frame = decode_frame(raw, received_at_ns)
            if type(frame) is Trade:
                self._trade(frame, raw, now_s, result)
            elif type(frame) is ServerShutdown:
                self.stats.skipped["server_shutdown"] += 1
                result.shutdowns.append(frame)
            elif type(frame) is Skipped:
                self.stats.skipped[frame.reason] += 1
                result.skipped.append(frame)
        return result

    def _trade(self, trade: Trade, raw: bytes, now_s: float, result: ChunkResult) -> None:
        symbol = trade.symbol
        accepted, gap = self.sequence.observe(symbol, trade.trade_id)
        if not accepted:
            self.stats.duplicates += 1
            return
        if gap is not None:
            self.stats.gaps += 1
            self.stats.missing_ids += gap.size
            result.gaps.append(
                GapSeen(gap, self._last_time.get(symbol), trade.trade_time, trade.received_at_ns)
            )
        self.stats.trades[symbol] += 1
        result._journal(self.batcher.batch_id_for(trade), [raw])
        for batch in self.batcher.add(trade, now_s):
            self.stats.sealed[batch.reason] += 1
            self._sealed.append(batch)
        self._last_time[symbol] = result.last_trade_time[symbol] = trade.trade_time

    def tick(self, now_s: float) -> None:
        self._sealed.extend(self.batcher.tick(now_s))

    def flush(self) -> None:
        self._sealed.extend(self.batcher.flush())

    def take_sealed(self) -> list[SealedBatch]:
        sealed, self._sealed = self._sealed, []
        return sealed
