"""The capture core: chunks of frames in, sealed batches out. No I/O, no asyncio, no clock of its own.

    chunk ─▶ decode (binance) ─▶ continuity (sequence) ─▶ minute batcher (batching) ─▶ SealedBatch

A chunk is every frame one read of the socket brought, with that read's receive stamp. It is
decoded, checked and buffered a column at a time, with no Python object per trade, whatever
it holds: several symbols are gathered apart, a run of one symbol is split where its ids jump
or repeat (only the trades at such a discontinuity are looked at one by one) and where its
trade times cross into another minute, and each piece is appended to its minute's batch whole.
Frames that are not trades (a control answer, a malformed frame) are classified on their own
and the trades around them stay columnar. The outcome is what feeding the frames one at a
time would give (tests/test_core.py holds the two to it).

The caller owns time: it passes the receive stamp of each chunk and the monotonic `now_s`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any

from collector.capture.batching import UNITS_PER_MINUTE, MinuteBatcher, SealedBatch, TimeUnit
from collector.capture.decode import ServerShutdown, Skipped, decode_read, decode_trades
from collector.capture.sequence import Gap, SequenceTracker

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
    fast_chunks: int = 0  # one symbol's trades of a chunk that simply continued, appended whole
    slow_frames: int = 0  # frames looked at one by one: not trades, or at a discontinuity


@dataclass(frozen=True, slots=True)
class GapSeen:
    """A gap, with the trade times around it (in the stream's unit) for its time window."""

    gap: Gap
    previous_trade_time: int | None  # the symbol's last accepted trade before the gap, if known
    trade_time: int  # the trade that revealed the gap
    received_at_ns: int
    batch_id: str = ""  # the batch that took the revealing trade (its journal notes the gap)


@dataclass(slots=True)
class ChunkResult:
    """What one chunk turned out to be, for the caller to journal, log and act on."""

    last_trade_time: dict[str, int] = field(default_factory=dict)  # per symbol with accepted trades
    first_trade_time: dict[str, int] = field(default_factory=dict)  # of the first accepted, per symbol
    gaps: list[GapSeen] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    shutdowns: list[ServerShutdown] = field(default_factory=list)
    journal: list[tuple[str, list[bytes]]] = field(default_factory=list)  # (batch_id, its frames)

    def _journal(self, batch_id: str, frames: list[bytes]) -> None:
        if self.journal and self.journal[-1][0] == batch_id:  # a new list: `frames` may be the read's
            self.journal[-1] = (batch_id, self.journal[-1][1] + frames)
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
        stats = self.stats
        stats.frames += len(frames)
        stats.reads += 1
        columns = decode_trades(frames, combined=self.combined)  # the usual read: trades only
        if columns is None:
            read = decode_read(frames, combined=self.combined)
            stats.slow_frames += read.one_by_one
            self._note_others(read.others, result)
            columns, frames = read.columns, read.frames
            if columns is None:
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

    def _note_others(self, others: list[ServerShutdown | Skipped], result: ChunkResult) -> None:
        for frame in others:
            if type(frame) is ServerShutdown:
                self.stats.skipped["server_shutdown"] += 1
                result.shutdowns.append(frame)
            elif type(frame) is Skipped:
                self.stats.skipped[frame.reason] += 1
                result.skipped.append(frame)

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
        """One symbol's trades of a chunk, in stretches that continue, each placed whole."""
        stats = self.stats
        times, per = values[3], self._units_per_minute
        minute = times[0] // per
        if min(times) // per == minute == max(times) // per and self.sequence.observe_run(symbol, values[0]):
            # The usual run: it continues where the symbol left off, all in one minute.
            placed, sealed = self.batcher.extend(
                symbol, minute, values, received_at_ns=received_at_ns, frames=frames, now_s=now_s
            )
            for batch_id, start, stop in placed:
                result._journal(batch_id, frames[start:stop] if len(placed) > 1 else frames)
            if sealed:
                self._collect(sealed)
            stats.fast_chunks += 1
            stats.trades[symbol] += len(frames)
            self._last_time[symbol] = result.last_trade_time[symbol] = times[-1]
            result.first_trade_time.setdefault(symbol, times[0])
            return
        self._feed_pieces(symbol, values, frames, received_at_ns=received_at_ns, now_s=now_s, result=result)

    def _feed_pieces(
        self,
        symbol: str,
        values: tuple[Sequence[Any], ...],
        frames: list[bytes],
        *,
        received_at_ns: int,
        now_s: float,
        result: ChunkResult,
    ) -> None:
        """A run that crosses a minute or has a discontinuity: split where it must be."""
        stats = self.stats
        stretches, duplicates = self.sequence.accept_run(symbol, values[0])
        stats.duplicates += duplicates
        whole = (
            len(stretches) == 1
            and stretches[0].gap is None
            and stretches[0].stop - stretches[0].start == len(frames)
        )
        if whole:
            stats.fast_chunks += 1
        else:
            stats.slow_frames += duplicates + len(stretches)
        for stretch in stretches:
            if whole:
                cols, run = values, frames
            else:
                a, b = stretch.start, stretch.stop
                cols, run = tuple(column[a:b] for column in values), frames[a:b]
            previous_time = self._last_time.get(symbol)
            first_batch = ""
            for minute, start, stop in self._minutes(cols[3]):
                piece = cols if stop - start == len(run) else tuple(column[start:stop] for column in cols)
                placed, sealed = self.batcher.extend(
                    symbol, minute, piece, received_at_ns=received_at_ns, frames=run[start:stop], now_s=now_s
                )
                first_batch = first_batch or placed[0][0]
                for batch_id, first, last in placed:
                    result._journal(batch_id, run[start + first : start + last])
                self._collect(sealed)
            if stretch.gap is not None:
                gap = stretch.gap
                stats.gaps += 1
                stats.missing_ids += gap.size
                result.gaps.append(GapSeen(gap, previous_time, cols[3][0], received_at_ns, first_batch))
            stats.trades[symbol] += len(run)
            self._last_time[symbol] = result.last_trade_time[symbol] = cols[3][-1]
            result.first_trade_time.setdefault(symbol, cols[3][0])

    def _minutes(self, trade_times: Sequence[int]) -> list[tuple[int, int, int]]:
        """(minute, start, stop) of each stretch of trade times within one minute, in order."""
        per = self._units_per_minute
        first, count = min(trade_times) // per, len(trade_times)
        last = max(trade_times) // per
        if first == last:
            return [(first, 0, count)]
        # Trade times rise with ids: find each minute's first trade by bisection, then check.
        bounds = [bisect_left(trade_times, m * per) for m in range(first + 1, last + 1)]
        pieces = [
            (m, a, b)
            for m, a, b in zip(range(first, last + 1), [0, *bounds], [*bounds, count], strict=True)
            if a < b
        ]
        if all(min(trade_times[a:b]) // per == m == max(trade_times[a:b]) // per for m, a, b in pieces):
            return pieces
        out, start = [], 0  # times out of order: stretches of equal minutes as they come
        for minute, group in groupby(t // per for t in trade_times):
            stop = start + sum(1 for _ in group)
            out.append((minute, start, stop))
            start = stop
        return out

    def tick(self, now_s: float) -> None:
        """Let time pass: seal batches by age or closed minute."""
        self._collect(self.batcher.tick(now_s))

    def flush(self) -> None:
        """Seal everything still buffered (shutdown)."""
        self._collect(self.batcher.flush())

    def seal_largest(self, down_to_bytes: int, cheap: Callable[[str], bool] = lambda symbol: True) -> None:
        """Seal the largest open batches (of `cheap` symbols first) until the rest hold at most
        `down_to_bytes` of frames."""
        self._collect(self.batcher.seal_largest(down_to_bytes, cheap))

    def take_sealed(self) -> list[SealedBatch]:
        sealed, self._sealed = self._sealed, []
        return sealed

    def _collect(self, sealed: list[SealedBatch]) -> None:
        for batch in sealed:
            self.stats.sealed[batch.reason] += 1
        self._sealed.extend(sealed)
