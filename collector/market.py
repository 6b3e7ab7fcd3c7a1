"""A deterministic market for the local feed: every trade a pure function of (symbol, trade id).

The live stream, the REST API and the trade archive of `collector emulate --market` all serve
this one market, so what the collector captures live, what it backfills and what it imports
from the archive agree trade for trade, as Binance's do. A symbol trades `trades_per_day`
times a UTC day, evenly spread with a sub-millisecond jitter; ids are consecutive across days.

    trade id  ->  (price, quantity, trade time in µs, buyer is maker)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["DAY_US", "Market", "MarketTrade"]

DAY_US = 86_400_000_000
_EPOCH_DAY = 19_000  # 2022-01-08: ids of every symbol count from here
_START_PRICES = {"BTCUSDT": 60_000, "ETHUSDT": 3_000, "BNBUSDT": 550, "SOLUSDT": 150}
_LOTS = (1, 1, 1, 2, 5, 10, 20, 50, 100, 1000)


class MarketTrade(NamedTuple):
    trade_id: int
    price: int  # scaled by 10**8
    quantity: int  # scaled by 10**8
    time_us: int
    is_buyer_maker: bool


@dataclass(frozen=True)
class Market:
    symbols: tuple[str, ...]
    trades_per_day: int = 86_400

    def _base_id(self, symbol: str) -> int:
        return 1_000_000 + self.symbols.index(symbol) * 10_000_000_000

    def first_id(self, symbol: str, day: int) -> int:
        """The id of the first trade of UTC day `day` (days since the epoch)."""
        return self._base_id(symbol) + (day - _EPOCH_DAY) * self.trades_per_day

    def id_at(self, symbol: str, time_us: int) -> int:
        """The id of the first trade at or after `time_us`."""
        day, into = divmod(time_us, DAY_US)
        k = -(-into * self.trades_per_day // DAY_US)  # ceil: the slot holding time_us or after
        return self.first_id(symbol, day) + k

    def trade(self, symbol: str, trade_id: int) -> MarketTrade:
        offset = trade_id - self._base_id(symbol)
        day, k = divmod(offset, self.trades_per_day)
        digest = hashlib.blake2b(f"{symbol}:{trade_id}".encode(), digest_size=8).digest()
        h = int.from_bytes(digest, "little")
        time_us = (day + _EPOCH_DAY) * DAY_US + k * DAY_US // self.trades_per_day + h % 1000
        start = _START_PRICES.get(symbol, 100)
        tick = 10 ** max(0, round(math.log10(start)) - 6 + 8)  # about 1e-6 of the price, scaled
        walk = int(2_000 * math.sin(trade_id / 7_919) + 500 * math.sin(trade_id / 104_729)) + (h >> 8) % 5
        price = start * 10**8 // tick * tick + walk * tick
        quantity = _LOTS[(h >> 16) % len(_LOTS)] * 10 ** (2 + (h >> 24) % 4)
        return MarketTrade(trade_id, price, quantity, time_us, bool(h >> 40 & 1))

    def day(self, symbol: str, day: int) -> Iterator[MarketTrade]:
        """Every trade of a UTC day, in id order."""
        first = self.first_id(symbol, day)
        for trade_id in range(first, first + self.trades_per_day):
            yield self.trade(symbol, trade_id)

    def after(self, symbol: str, time_us: int) -> Iterator[MarketTrade]:
        """Every trade from `time_us` on, without end."""
        trade_id = self.id_at(symbol, time_us)
        while True:
            yield self.trade(symbol, trade_id)
            trade_id += 1
