"""Minute-aligned batches sealed by size, age or the minute's end.

Pure: the caller passes the monotonic clock (`now_s`) in, so tests drive time by hand.

Rules:
- A batch holds trades of one symbol and one UTC minute of *trade time*; it never spans two.
- It is sealed when its raw frames reach `max_batch_bytes`, when it is `max_batch_age_s` old,
  or `minute_grace_s` after its minute has ended: after a later minute's trade of that symbol,
  or, for a symbol that trades no more in the minute, once the exchange's clock (extrapolated
  from the batch's first trade by the monotonic clock, so the host's clock does not matter)
  is past the minute's end. A quiet symbol's minute so lands and is marked within seconds.
- Per symbol work is per symbol: a whole market's thousands of open batches cost nothing to a
  symbol that opens one.
- Memory is bounded: at most `max_open_minutes` batches are open per symbol (a flood of
  out-of-order minutes seals the oldest first), each at most `max_batch_bytes` of frames; and
  the caller can seal the largest open batches early (`seal_largest`) when all of them together
  hold more than it can afford (collector.landing.inflight).
- Columns are `array('q')`: 8 bytes a value instead of a Python int object and a pointer.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Literal

from collector.capture.decode import Trade

__all__ = ["UNITS_PER_MINUTE", "MinuteBatcher", "SealReason", "SealedBatch", "Source", "TimeUnit"]

TimeUnit = Literal["ms", "us"]
SealReason = Literal[
    "size", "age", "minute_closed", "crowded", "budget", "shutdown", "recovered", "backfill", "archive"
]
UNITS_PER_MINUTE: dict[str, int] = {"ms": 60_000, "us": 60_000_000}
# Where a batch's trades came from: the live stream, REST backfill, Binance's trade archive (which
# carries no event time and no receive time: those land as nulls).
Source = Literal["stream", "backfill", "archive"]


@dataclass(slots=True)
class _Columns:
    trade_id: array[int] = field(default_factory=lambda: array("q"))
    price: array[int] = field(default_factory=lambda: array("q"))
    quantity: array[int] = field(default_factory=lambda: array("q"))
    trade_time: array[int] = field(default_factory=lambda: array("q"))
    event_time: array[int] = field(default_factory=lambda: array("q"))
    is_buyer_maker: array[int] = field(default_factory=lambda: array("b"))
    # Microseconds, as landed: the stamp of the read is truncated once, when it is buffered.
    received_at_us: array[int] = field(default_factory=lambda: array("q"))


@dataclass(frozen=True, slots=True)
class SealedBatch:
    """A finished batch: one symbol, one minute, trades in arrival order."""

    symbol: str
    minute: int  # minutes since the Unix epoch, UTC
    time_unit: TimeUnit
    columns: _Columns
    raw_bytes: int
    reason: SealReason
    batch_id: str = ""
    source: Source = "stream"
    # (lowest, highest) trade id, kept as trades were buffered; None: found by a scan.
    id_range: tuple[int, int] | None = None

    @property
    def rows(self) -> int:
        return len(self.columns.trade_id)

    @property
    def first_trade_id(self) -> int:
        return self.id_range[0] if self.id_range is not None else min(self.columns.trade_id)

    @property
    def last_trade_id(self) -> int:
        return self.id_range[1] if self.id_range is not None else max(self.columns.trade_id)

    @property
    def first_received_us(self) -> int:
        return self.columns.received_at_us[0]


@dataclass(slots=True)
class _OpenBatch:
    symbol: str
    minute: int
    opened_at_s: float
    batch_id: str
    columns: _Columns = field(default_factory=_Columns)
    raw_bytes: int = 0
    close_at_s: float | None = None  # set once a later minute is seen
    ends_at_s: float = float("inf")  # monotonic time the minute (and its grace) ends, by the trade's clock
    id_range: tuple[int, int] | None = None  # (lowest, highest) trade id buffered
    sealed: bool = False  # sealed while a trade was being added (crowded out by it): not counted

    def saw_ids(self, low: int, high: int) -> None:
        seen = self.id_range
        self.id_range = (low, high) if seen is None else (min(seen[0], low), max(seen[1], high))


class MinuteBatcher:
    """Accumulates trades into per-(symbol, minute) batches and seals them."""

    @classmethod
    def until_flushed(
        cls, time_unit: TimeUnit, *, source: Source = "stream", max_batch_bytes: int = 2**62
    ) -> MinuteBatcher:
        """A batcher for trades already in hand (a REST page, a journal left by a crash):
        batches close by size or at flush(), never by age, grace or the open-minute cap."""
        return cls(
            time_unit=time_unit,
            max_batch_bytes=max_batch_bytes,
            max_batch_age_s=float("inf"),
            minute_grace_s=float("inf"),
            max_open_minutes=2**31,
            source=source,
        )

    def __init__(
        self,
        *,
        time_unit: TimeUnit,
        max_batch_bytes: int,
        max_batch_age_s: float,
        minute_grace_s: float,
        max_open_minutes: int = 4,
        source: Source = "stream",
    ) -> None:
        self.time_unit: TimeUnit = time_unit
        self.source: Source = source
        self._units_per_minute = UNITS_PER_MINUTE[time_unit]
        self.max_batch_bytes = max_batch_bytes
        self.max_batch_age_s = max_batch_age_s
        self.minute_grace_s = minute_grace_s
        self.max_open_minutes = max_open_minutes
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        self._by_symbol: dict[str, dict[int, _OpenBatch]] = {}  # the same batches, per symbol
        self._units_per_s = self._units_per_minute / 60
        self._watermark: dict[str, int] = {}  # latest minute seen per symbol
        self._bytes = 0  # raw frame bytes of every open batch, kept as trades come and go

    @property
    def buffered_bytes(self) -> int:
        """Raw frame bytes in open batches (no scan: kept as trades are added and sealed)."""
        return self._bytes

    @property
    def open_batches(self) -> int:
        return len(self._open)

    @property
    def buffered_trades(self) -> int:
        return sum(len(b.columns.trade_id) for b in self._open.values())

    def add(self, trade: Trade, now_s: float) -> list[SealedBatch]:
        """Buffer one trade; return the batches this sealed (by size or crowding)."""
        minute = trade.trade_time // self._units_per_minute
        sealed: list[SealedBatch] = []
        batch = self._batch_for(trade.symbol, minute, trade.trade_id, trade.trade_time, now_s, sealed=sealed)
        cols = batch.columns
        batch.saw_ids(trade.trade_id, trade.trade_id)
        cols.trade_id.append(trade.trade_id)
        cols.price.append(trade.price)
        cols.quantity.append(trade.quantity)
        cols.trade_time.append(trade.trade_time)
        cols.event_time.append(trade.event_time)
        cols.is_buyer_maker.append(trade.is_buyer_maker)
        cols.received_at_us.append(trade.received_at_ns // 1000)
        batch.raw_bytes += trade.raw_bytes
        if not batch.sealed:
            self._bytes += trade.raw_bytes
        if batch.raw_bytes >= self.max_batch_bytes:
            sealed.append(self._seal((trade.symbol, minute), "size"))
        return sealed

    def extend(
        self,
        symbol: str,
        minute: int,
        columns: tuple[Sequence[int], ...],
        *,
        received_at_ns: int,
        frames: Sequence[bytes],
        now_s: float,
    ) -> tuple[list[tuple[str, int, int]], list[SealedBatch]]:
        """Buffer a run of trades of one symbol and one minute, as `add` would one at a time.

        `columns` is (trade_id, price, quantity, trade_time, event_time, is_buyer_maker), the
        ids ascending (the caller has checked the run continues); `frames` the trades' frames,
        whose sizes count towards `max_batch_bytes`. Returns which batch took which slice of
        the run, as (batch_id, start, stop), and the batches sealed: a batch that reaches
        `max_batch_bytes` is sealed after exactly the trade that took it there, as with `add`.
        """
        sealed: list[SealedBatch] = []
        placed: list[tuple[str, int, int]] = []
        ids = columns[0]
        start, count = 0, len(ids)
        total = sum(map(len, frames))
        cumulative: list[int] | None = None  # running frame sizes: only when a batch fills up
        while start < count:
            batch = self._batch_for(symbol, minute, ids[start], columns[3][start], now_s, sealed=sealed)
            if cumulative is None and batch.raw_bytes + total < self.max_batch_bytes:
                stop, added = count, total  # the usual run: it fits
            else:
                cumulative = cumulative or list(accumulate(map(len, frames)))
                base = cumulative[start - 1] if start else 0
                # The first trade at which the batch reaches its size limit, if within this run.
                stop = bisect_left(cumulative, self.max_batch_bytes - batch.raw_bytes + base, lo=start) + 1
                stop = min(stop, count)
                added = cumulative[stop - 1] - base
            whole = start == 0 and stop == count  # the usual run: no slice to copy
            cols = batch.columns
            for column, values in zip(
                (cols.trade_id, cols.price, cols.quantity, cols.trade_time, cols.event_time,
                 cols.is_buyer_maker), columns, strict=True,
            ):  # fmt: skip
                # Extending by an array is a memcpy; by a list, a conversion per item.
                column.extend(array(column.typecode, values if whole else values[start:stop]))
            cols.received_at_us.extend(array("q", [received_at_ns // 1000]) * (stop - start))
            batch.saw_ids(ids[start], ids[stop - 1])
            batch.raw_bytes += added
            if not batch.sealed:
                self._bytes += added
            placed.append((batch.batch_id, start, stop))
            if batch.raw_bytes >= self.max_batch_bytes:
                sealed.append(self._seal((symbol, minute), "size"))
            start = stop
        return placed, sealed

    def _batch_for(
        self, symbol: str, minute: int, first_trade_id: int, trade_time: int, now_s: float, *,
        sealed: list[SealedBatch],
    ) -> _OpenBatch:  # fmt: skip
        """The open batch of (symbol, minute), opened if need be (which may seal crowded ones)."""
        key = (symbol, minute)
        batch = self._open.get(key)
        if batch is None:
            batch = _OpenBatch(symbol, minute, now_s, f"{symbol}-{minute}-{first_trade_id}")
            left_s = max(0.0, ((minute + 1) * self._units_per_minute - trade_time) / self._units_per_s)
            batch.ends_at_s = now_s + left_s + self.minute_grace_s
            self._open[key] = batch
            mine = self._by_symbol.setdefault(symbol, {})
            mine[minute] = batch
            watermark = self._watermark.get(symbol)
            if watermark is None or minute > watermark:
                self._watermark[symbol] = minute
                for other in mine.values():
                    if other.minute < minute and other.close_at_s is None:
                        other.close_at_s = now_s + self.minute_grace_s
            elif minute < watermark:
                batch.close_at_s = now_s + self.minute_grace_s  # a late trade of a past minute
            # (minute == watermark: the minute goes on after a size seal; it closes at its end)
            sealed.extend(self._seal_crowded(symbol))
        return batch

    def open_minutes(self, symbol: str) -> set[int]:
        return set(self._by_symbol.get(symbol, ()))

    def batch_id_for(self, trade: Trade) -> str:
        """`{symbol}-{minute}-{first_trade_id}` of the batch `add(trade)` will put the trade in."""
        minute = trade.trade_time // self._units_per_minute
        batch = self._open.get((trade.symbol, minute))
        return batch.batch_id if batch is not None else f"{trade.symbol}-{minute}-{trade.trade_id}"

    def tick(self, now_s: float) -> list[SealedBatch]:
        """Seal every batch that is old enough or whose minute has closed."""
        due: list[tuple[tuple[str, int], SealReason]] = []
        for key, batch in self._open.items():
            if (batch.close_at_s is not None and now_s >= batch.close_at_s) or now_s >= batch.ends_at_s:
                due.append((key, "minute_closed"))
            elif now_s - batch.opened_at_s >= self.max_batch_age_s:
                due.append((key, "age"))
        return [self._seal(key, reason) for key, reason in due]

    def flush(self, reason: SealReason = "shutdown") -> list[SealedBatch]:
        """Seal everything (shutdown, or a recovered journal)."""
        return [self._seal(key, reason) for key in sorted(self._open, key=lambda k: (k[1], k[0]))]

    def seal_largest(
        self, down_to_bytes: int, cheap: Callable[[str], bool] = lambda symbol: True
    ) -> list[SealedBatch]:
        """Seal open batches, the largest first (those of `cheap` symbols before the others),
        until those left hold at most `down_to_bytes` of frames (the caller's memory budget;
        sealed as "budget")."""
        if self._bytes <= down_to_bytes:
            return []
        sealed: list[SealedBatch] = []
        order = sorted(self._open.items(), key=lambda item: (not cheap(item[0][0]), -item[1].raw_bytes))
        for key, _ in order:
            if self._bytes <= down_to_bytes:
                break
            sealed.append(self._seal(key, "budget"))
        return sealed

    def _seal_crowded(self, symbol: str) -> list[SealedBatch]:
        minutes = self._by_symbol.get(symbol, {})
        if len(minutes) <= self.max_open_minutes:
            return []
        keys = [(symbol, m) for m in sorted(minutes)]
        return [self._seal(key, "crowded") for key in keys[: len(keys) - self.max_open_minutes]]

    def _seal(self, key: tuple[str, int], reason: SealReason) -> SealedBatch:
        batch = self._open.pop(key)
        batch.sealed = True
        self._bytes -= batch.raw_bytes
        mine = self._by_symbol[key[0]]
        del mine[key[1]]
        if not mine:
            del self._by_symbol[key[0]]
        return SealedBatch(
            symbol=batch.symbol,
            minute=batch.minute,
            time_unit=self.time_unit,
            columns=batch.columns,
            raw_bytes=batch.raw_bytes,
            reason=reason,
            batch_id=batch.batch_id,
            source=self.source,
            id_range=batch.id_range,
        )
