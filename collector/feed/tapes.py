"""What the local feed sends: tapes of trades, each trade ready as a frame and as a REST row.

GeneratedTape   a seeded random walk per symbol, endless or `count` long, on the wall or an emulated clock
MarketTape      the deterministic market of feed/simulated.py: live, REST and archive agree
ReplayTape      a recording's trade frames, byte for byte, at its own pace or faster
"""

from __future__ import annotations

import gzip
import heapq
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from collector.feed.simulated import Market, MarketTrade, Schedule

_START_PRICES = {"BTCUSDT": 60_000.0, "ETHUSDT": 3_000.0, "BNBUSDT": 550.0, "SOLUSDT": 150.0}


_FRAME = '{{"e":"trade","E":{E},"s":"{s}","t":{t},"p":"{p}","q":"{q}","T":{T},"m":{m},"M":true}}'


@dataclass(frozen=True, slots=True)
class TapeTrade:
    """One trade as the feed will send it: its symbol, and the raw payload per time unit."""

    symbol: str
    trade_id: int
    payload_ms: str
    payload_us: str | None = None
    offset_s: float | None = None  # replay: seconds since the tape's first trade
    rest_row: str = ""  # the same trade as a historicalTrades row (JSON, times in ms)
    rest_row_us: str = ""


@dataclass
class GeneratedTape:
    """An endless (or `count`-long per symbol) synthetic trade tape, deterministic for a seed."""

    symbols: tuple[str, ...]
    count: int | None = None
    seed: int = 1
    first_id: int = 1_000_000
    first_ids: dict[str, int] = field(default_factory=dict)  # per symbol, over first_id + i * 1e10
    # An emulated clock (for tests of minute markers without waiting for minutes to pass): trade
    # times start at clock_start_ms and advance clock_step_ms per trade, jumping clock_jump_s
    # after every clock_jump_every trades (quiet minutes). None: trade times are the wall clock.
    clock_start_ms: int | None = None
    clock_step_ms: float = 0.0
    clock_jump_every: int = 0
    clock_jump_s: float = 0.0
    # Never ahead of the wall clock: once the emulated clock reaches it, trade times are the wall
    # clock's (a demo's past minutes pass fast, then it trades live).
    catch_up: bool = False
    _rng: random.Random = field(init=False)
    _state: dict[str, tuple[int, int, int]] = field(init=False)  # next id, price scaled, tick scaled
    _emitted: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._state = {}
        self._emitted = dict.fromkeys(self.symbols, 0)
        self._clock_us = (self.clock_start_ms or 0) * 1000.0
        self._total = 0
        for i, symbol in enumerate(self.symbols):
            start = _START_PRICES.get(symbol, 100.0)
            tick = 10 ** max(0, round(math.log10(start)) - 6 + 8)  # ~1e-6 of the price, in 1e-8 units
            price = int(start * 1e8) // tick * tick
            first = self.first_ids.get(symbol, self.first_id + i * 10_000_000_000)
            self._state[symbol] = (first, price, tick)

    @property
    def exhausted(self) -> bool:
        return self.count is not None and all(n >= self.count for n in self._emitted.values())

    def take(self, n: int) -> list[TapeTrade]:
        """The next `n` trades (fewer at the end of a finite tape), symbols interleaved."""
        out: list[TapeTrade] = []
        rng = self._rng
        now_ns = time.time_ns()
        live = [s for s in self.symbols if self.count is None or self._emitted[s] < self.count]
        burst = 1
        for _ in range(n):
            if not live:
                break
            symbol = live[rng.randrange(len(live))]
            trade_id, price, tick = self._state[symbol]
            if burst <= 1:  # a new order sweeps the book: several trades at one instant
                burst = 1 if rng.random() < 0.9 else rng.randint(2, 40)
                step = rng.choice((-2, -1, -1, 0, 0, 0, 1, 1, 2))
                price = max(tick, price + step * tick)
            else:
                burst -= 1
            lots = rng.choice((1, 1, 1, 2, 5, 10, 20, 50, 100, 1000))
            quantity = lots * 10 ** rng.randint(2, 5) + (rng.randrange(100) if rng.random() < 0.2 else 0)
            maker = "true" if rng.random() < 0.5 else "false"
            self._state[symbol] = (trade_id + 1, price, tick)
            self._emitted[symbol] += 1
            if self.count is not None and self._emitted[symbol] >= self.count:
                live.remove(symbol)
            if self.clock_start_ms is None or (self.catch_up and self._clock_us >= now_ns // 1000):
                t_us = now_ns // 1000
            else:
                t_us = int(self._clock_us)
                self._total += 1
                self._clock_us += self.clock_step_ms * 1000
                if self.clock_jump_every and self._total % self.clock_jump_every == 0:
                    self._clock_us += self.clock_jump_s * 1_000_000
            e_us = t_us + rng.randrange(0, 2000)
            fields = {"s": symbol, "t": trade_id, "p": _fmt8(price), "q": _fmt8(quantity), "m": maker}
            out.append(
                TapeTrade(
                    symbol,
                    trade_id,
                    _FRAME.format(E=e_us // 1000, T=t_us // 1000, **fields),
                    _FRAME.format(E=e_us, T=t_us, **fields),
                    rest_row=_rest_row(trade_id, price, quantity, t_us // 1000, maker),
                    rest_row_us=_rest_row(trade_id, price, quantity, t_us, maker),
                )
            )
        return out


def _rest_row(trade_id: int, price: int, quantity: int, time_value: int, maker: str) -> str:
    quote = Decimal(price) * Decimal(quantity) / Decimal(10**16)
    return (
        f'{{"id":{trade_id},"price":"{_fmt8(price)}","qty":"{_fmt8(quantity)}","quoteQty":"{quote.normalize():f}",'
        f'"time":{time_value},"isBuyerMaker":{maker},"isBestMatch":true}}'
    )


def _fmt8(scaled: int) -> str:
    whole, frac = divmod(scaled, 100_000_000)
    return f"{whole}.{frac:08d}"


@dataclass
class MarketTape:
    """The deterministic market's trades (collector.feed.simulated) from `start_us` on, symbols merged
    in trade-time order, `count` per symbol or without end, each symbol only between its listing
    and its delisting (`schedule`). What the REST API and the archive of the same feed serve for
    these ids is the same trade. A trade is taken once its time has come (`time_us <= now`); the
    symbols wait in a heap by their next trade's time, so a whole market costs log(symbols) a
    trade."""

    market: Market
    start_us: int
    count: int | None = None
    schedule: Schedule = field(default_factory=Schedule)
    _heap: list[tuple[int, int, MarketTrade]] = field(init=False)  # (next time, symbol index, trade)
    _emitted: list[int] = field(init=False)
    _ends: list[int] = field(init=False)

    def __post_init__(self) -> None:
        market = self.market
        self._emitted = [0] * len(market.symbols)
        self._ends, self._heap = [], []
        for i, symbol in enumerate(market.symbols):
            first, end = self.schedule.window_us(symbol)
            self._ends.append(end)
            trade = market.trade(symbol, market.first_at(symbol, max(self.start_us, first)))
            if trade.time_us < end and self.count != 0:
                self._heap.append((trade.time_us, i, trade))
        heapq.heapify(self._heap)

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.market.symbols

    @property
    def exhausted(self) -> bool:
        """Every symbol has sent its `count`, or been delisted."""
        return not self._heap

    @property
    def frontier_us(self) -> int:
        """Every trade before this time (from `start_us` on) has been taken: the tape's clock,
        which stops when the feed does."""
        return self._heap[0][0] if self._heap else time.time_ns() // 1000

    def emitted(self, symbol: str) -> int:
        return self._emitted[self.market.index_of(symbol)]

    def take(self, n: int) -> list[TapeTrade]:
        """Up to `n` trades whose time has come, in time order."""
        out: list[TapeTrade] = []
        heap, market, symbols, count = self._heap, self.market, self.market.symbols, self.count
        now_us = time.time_ns() // 1000
        while heap and len(out) < n and heap[0][0] <= now_us:
            _, i, trade = heap[0]
            symbol = symbols[i]
            out.append(market_tape_trade(symbol, trade))
            self._emitted[i] += 1
            following = market.trade(symbol, trade.trade_id + 1)
            if (count is None or self._emitted[i] < count) and following.time_us < self._ends[i]:
                heapq.heapreplace(heap, (following.time_us, i, following))
            else:
                heapq.heappop(heap)
        return out


def market_tape_trade(symbol: str, t: MarketTrade) -> TapeTrade:
    maker = "true" if t.is_buyer_maker else "false"
    fields = {"s": symbol, "t": t.trade_id, "p": _fmt8(t.price), "q": _fmt8(t.quantity), "m": maker}
    e_us = t.time_us + 1_000  # the event a millisecond after the trade
    return TapeTrade(
        symbol,
        t.trade_id,
        _FRAME.format(E=e_us // 1000, T=t.time_us // 1000, **fields),
        _FRAME.format(E=e_us, T=t.time_us, **fields),
        rest_row=_rest_row(t.trade_id, t.price, t.quantity, t.time_us // 1000, maker),
        rest_row_us=_rest_row(t.trade_id, t.price, t.quantity, t.time_us, maker),
    )


@dataclass
class ReplayTape:
    """The trade frames of a recording, in order, with their recorded pacing."""

    trades: list[TapeTrade]
    _pos: int = 0

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.symbol for t in self.trades))

    @property
    def exhausted(self) -> bool:
        return self._pos >= len(self.trades)

    def take(self, n: int) -> list[TapeTrade]:
        chunk = self.trades[self._pos : self._pos + n]
        self._pos += len(chunk)
        return chunk


def _scaled(text: str) -> int:
    return int(Decimal(text) * 10**8)


def _open_text(path: Path) -> Iterator[str]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        yield from handle


def load_replay(path: Path) -> ReplayTape:
    """Keep the trade frames of a recording, byte for byte (`data` of combined frames)."""
    trades: list[TapeTrade] = []
    first_stamp: int | None = None
    for line in _open_text(path):
        stamp_text, _, frame = line.rstrip("\n").partition(" ")
        if '"e":"trade"' not in frame:
            continue
        try:
            message = json.loads(frame)
        except ValueError:
            continue
        data = message.get("data", message) if isinstance(message, dict) else None
        if not isinstance(data, dict) or data.get("e") != "trade":
            continue
        start = frame.find('"data":')
        payload = frame[start + len('"data":') : frame.rfind("}")] if start >= 0 else frame
        stamp = int(stamp_text)
        # Stamps are ns (19 digits) or us (16 digits) in the recordings we know.
        stamp_s = stamp / 1e9 if stamp > 10**17 else stamp / 1e6
        if first_stamp is None:
            first_stamp = stamp
            first_s = stamp_s
        maker = "true" if data.get("m") else "false"
        row = _rest_row(
            int(data["t"]), _scaled(str(data["p"])), _scaled(str(data["q"])), int(data["T"]), maker
        )
        trades.append(TapeTrade(str(data["s"]), int(data["t"]), payload, None, stamp_s - first_s, row, row))
    if not trades:
        raise ValueError(f"{path} holds no trade frames")
    return ReplayTape(trades)
