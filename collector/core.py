"""The capture core: chunks of frames in, sealed batches out. No I/O, no asyncio, no clock of its own.

    chunk ─▶ decode (binance) ─▶ continuity (sequence) ─▶ minute batcher (batching) ─▶ SealedBatch

A chunk is every frame one read of the socket brought, with that read's receive stamp. The
usual chunk (well-formed trades whose ids continue where their symbol left off, within one
minute) takes the columnar fast path: decoded, checked and buffered a column at a time, with
no Python object per trade. Anything else (a gap, a duplicate, a minute boundary, a frame that
is not a trade) goes frame by frame through the same rules; the outcome is the same either way.

The caller owns time: it passes the receive stamp of each chunk and the monotonic `now_s`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from collector.batching import UNITS_PER_MINUTE, MinuteBatcher, SealedBatch, TimeUnit
from collector.binance import ServerShutdown, Skipped, Trade, decode_frame, decode_trades
from collector.sequence import Gap, SequenceTracker

__all__ = ["CaptureCore", "CaptureStats", "ChunkResult", "GapSeen"]


@dataclass(slots=True)
class CaptureStats:
    """Counters since start; every frame lands in exactly one of trades, duplicates, skipped."""

    frames: int = 0
    reads: int = 0  # chunks fed: frames / reads is how many frames a socket read brings
    trades: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    gaps: int = 0
    missing_ids: int = 0
    sealed: Counter[str] = field(default_factory=Counter)
    fast_chunks: int = 0  # chunks (or one symbol's part of one) that took the columnar path
    slow_frames: int = 0  # frames that went one by one


@dataclass(frozen=True, slots=True)
class GapSeen:
    """A gap, with the trade times around it (in the stream's unit) for its time window."""

    gap: Gap
    previous_trade_time: int | None  # the symbol's last accepted trade before the gap, if known
    trade_time: int  # the trade that revealed the gap
    received_at_ns: int


@dataclass(slots=True)
class ChunkResult:
    """What one chunk turned out to be, for the caller to journal, log and act on."""

    last_trade_time: dict[str, int] = field(default_factory=dict)  # per symbol with accepted trades
    gaps: list[GapSeen] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    shutdowns: list[ServerShutdown] = field(default_factory=list)
    journal: list[tuple[str, list[bytes]]] = field(default_factory=list)  # (batch_id, its frames)

    def _journal(self, batch_id: str, frames: list[bytes]) -> None:
        if self.journal and self.journal[-1][0] == batch_id:
            self.journal[-1][1].extend(frames)
        else:
            self.journal.append((batch_id, frames))


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
        combined: bool = False,
    ) -> None:
        self.stats = CaptureStats()
        self.sequence = SequenceTracker(last_ids)
        self.batcher = MinuteBatcher(
            time_unit=time_unit,
            max_batch_bytes=max_batch_bytes,
            max_batch_age_s=max_batch_age_s,
            minute_grace_s=minute_grace_s,
        )
        self.combined = combined  # frames come wrapped as {"stream", "data"} (several symbols)
        self._units_per_minute = UNITS_PER_MINUTE[time_unit]
        self._last_time: dict[str, int] = {}
        self._sealed: list[SealedBatch] = []

    def feed_chunk(self, frames: list[bytes], received_at_ns: int, now_s: float) -> ChunkResult:
        """Take the frames of one read. Sealed batches accumulate for `take_sealed()`."""
        result = ChunkResult()
        self.stats.frames += len(frames)
        self.stats.reads += 1
        columns = decode_trades(frames, combined=self.combined)
        if columns is None:
            self._feed_slowly(frames, received_at_ns, now_s, result)
            return result
        positions: dict[str, list[int] | None]
        values: tuple[Sequence[Any], ...] = (
            columns.trade_ids,
            columns.prices,
            columns.quantities,
            columns.trade_times,
            columns.event_times,
            columns.is_buyer_maker,
        )
        if columns.only_symbol is not None:  # one symbol: the usual chunk
            positions = {columns.only_symbol: None}
        else:  # several: each symbol's positions (setdefault would make a list per trade)
            by_symbol: defaultdict[str, list[int]] = defaultdict(list)
            for i, symbol in enumerate(columns.symbols):
                by_symbol[symbol].append(i)
            positions = dict(by_symbol)
        for symbol, where in positions.items():
            picked, run = values, frames
            if where is not None:  # several symbols: gather this one's trades, in C
                if len(where) == 1:
                    picked = tuple((column[where[0]],) for column in values)
                    run = [frames[where[0]]]
                else:
                    gather = itemgetter(*where)
                    picked = tuple(map(gather, values))
                    run = list(gather(frames))
            self._feed_run(symbol, picked, run, received_at_ns=received_at_ns, now_s=now_s, result=result)
        return result

    def feed(self, raw: bytes, received_at_ns: int, now_s: float) -> ChunkResult:
        """One frame: a chunk of one."""
        return self.feed_chunk([raw], received_at_ns, now_s)

    def _feed_run(
        self,
        symbol: str,
        values: tuple[Sequence[Any], ...],
        frames: list[bytes],
        *,
        received_at_ns: int,
        now_s: float,
        result: ChunkResult,
    ) -> None:
        """One symbol's trades of a decoded chunk, columnar when they simply continue."""
        trade_times = values[3]
        minute = min(trade_times) // self._units_per_minute
        if max(trade_times) // self._units_per_minute != minute or not self.sequence.observe_run(
            symbol, values[0]
        ):
            self._feed_slowly(frames, received_at_ns, now_s, result)
            return
        placed, sealed = self.batcher.extend(
            symbol,
            minute,
            values,
            received_at_ns=received_at_ns,
            frames=frames,
            now_s=now_s,
        )
        for batch_id, start, stop in placed:
            result._journal(batch_id, frames[start:stop])
        self._collect(sealed)
        stats = self.stats
        stats.fast_chunks += 1
        stats.trades[symbol] += len(frames)
        self._last_time[symbol] = result.last_trade_time[symbol] = trade_times[-1]

    def _feed_slowly(
        self, frames: list[bytes], received_at_ns: int, now_s: float, result: ChunkResult
    ) -> None:
        stats = self.stats
        stats.slow_frames += len(frames)
        for raw in frames:
            frame = decode_frame(raw, received_at_ns)
            if type(frame) is Trade:
                self._feed_trade(frame, raw, now_s, result)
            elif type(frame) is ServerShutdown:
                stats.skipped["server_shutdown"] += 1
                result.shutdowns.append(frame)
            elif type(frame) is Skipped:
                stats.skipped[frame.reason] += 1
                result.skipped.append(frame)

    def _feed_trade(self, trade: Trade, raw: bytes, now_s: float, result: ChunkResult) -> None:
        stats = self.stats
        symbol = trade.symbol
        accepted, gap = self.sequence.observe(symbol, trade.trade_id)
        if not accepted:
            stats.duplicates += 1
            return
        if gap is not None:
            stats.gaps += 1
            stats.missing_ids += gap.size
            result.gaps.append(
                GapSeen(gap, self._last_time.get(symbol), trade.trade_time, trade.received_at_ns)
            )
        stats.trades[symbol] += 1
        result._journal(self.batcher.batch_id_for(trade), [raw])
        self._collect(self.batcher.add(trade, now_s))
        self._last_time[symbol] = result.last_trade_time[symbol] = trade.trade_time

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
