"""A deterministic market for the local feed: every trade a pure function of (symbol, trade id).

The live stream, the REST API and the trade archive of `collector emulate --market` all serve
this one market, so what the collector captures live, what it backfills and what it imports
from the archive agree trade for trade, as Binance's do. A symbol trades its count of trades a
UTC day (`trades_per_day`, or its own in `per_day`), evenly spread with a jitter smaller than
the spacing (under a millisecond), so its trade times rise with its ids; ids are consecutive
across days.

    trade id  ->  (price, quantity, trade time in µs, buyer is maker)

`Market.whole_market` names a whole exchange's symbols with heavy-tailed counts, and a
`Schedule` lists and delists symbols while the feed runs.
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

__all__ = ["DAY_US", "QUOTES", "Market", "MarketTrade", "Schedule", "scheduled_names", "split_symbol"]

DAY_US = 86_400_000_000
_EPOCH_DAY = 19_000  # 2022-01-08: ids of every symbol count from here
_START_PRICES = {"BTCUSDT": 60_000, "ETHUSDT": 3_000, "BNBUSDT": 550, "SOLUSDT": 150}
_LOTS = (1, 1, 1, 2, 5, 10, 20, 50, 100, 1000)
# Quote assets, in the order a symbol's name is split by (a longer one before its suffixes).
QUOTES = ("USDT", "FDUSD", "USDC", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL", "JPY")
# How often a whole market's symbol is quoted in each (Binance's spot market, roughly).
_QUOTE_WEIGHTS = {"USDT": 55, "FDUSD": 11, "USDC": 10, "BTC": 9, "ETH": 3, "BNB": 3, "TRY": 4,
                  "EUR": 2, "BRL": 1.5, "JPY": 1.5}  # fmt: skip
_MAJORS = ("BTC", "ETH", "BNB", "SOL", "XRP", "DOGE", "ADA", "TRX", "AVAX", "LINK", "DOT", "LTC",
           "SHIB", "PEPE", "SUI", "NEAR", "APT", "ARB", "OP", "FIL", "ATOM", "UNI", "WIF", "TON")  # fmt: skip
ZIPF_EXPONENT = 1.15  # the head of a whole market: rank r trades in proportion to r ** -1.15...
TAIL_FROM = 0.2  # ...down to this fraction of the ranks; beyond it the tail falls off faster,
TAIL_EXPONENT = 3.0  # as (r / knee) ** -3: hundreds of pairs that trade a few times an hour
FLOOR_PER_DAY = 48  # no symbol trades less than twice an hour


def split_symbol(symbol: str) -> tuple[str, str]:
    """(base asset, quote asset) of a symbol's name, e.g. ETHBTC -> (ETH, BTC)."""
    quote = next((q for q in QUOTES if symbol.endswith(q) and len(symbol) > len(q)), symbol[-4:])
    return symbol[: -len(quote)], quote


class MarketTrade(NamedTuple):
    trade_id: int
    price: int  # scaled by 10**8
    quantity: int  # scaled by 10**8
    time_us: int
    is_buyer_maker: bool


@dataclass(frozen=True)
class Market:
    """The market's symbols; `per_day` (aligned with `symbols`) gives each its own count of
    trades a UTC day, None gives every symbol `trades_per_day`."""

    symbols: tuple[str, ...]
    trades_per_day: int = 86_400
    per_day: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("a market names each symbol once")
        counts = self.per_day if self.per_day is not None else (self.trades_per_day,)
        if self.per_day is not None and len(self.per_day) != len(self.symbols):
            raise ValueError(f"per_day has {len(self.per_day)} counts for {len(self.symbols)} symbols")
        if any(n < 1 for n in counts):
            raise ValueError("a symbol trades at least once a day")

    @classmethod
    def whole_market(cls, count: int, total_per_day: int, *, seed: int = 0) -> Market:
        """`count` plausibly named symbols (BTCUSDT, ETHUSDT first; quoted mostly in USDT, then
        FDUSD, USDC, BTC, TRY, ETH, BNB, EUR, BRL, JPY) trading about `total_per_day` in all, with
        heavy-tailed counts: rank r in proportion to r ** -1.15 down to the top fifth of the ranks,
        falling as r ** -3 beyond it, never under 48 a day. With 1,500 symbols and 17,280,000 a
        day (200 trades/s), the top 10 carry 55.6% of the trades, BTCUSDT 21.6% (3.7 M a day), the
        100th 0.11%, and 660 symbols trade ten times an hour or less (the quietest 48 a day)."""
        if count < 1 or total_per_day < 1:
            raise ValueError("a whole market has at least one symbol and one trade a day")
        symbols = _whole_market_names(count, random.Random(seed))
        return cls(symbols, max(FLOOR_PER_DAY, total_per_day // count), _heavy_tail(count, total_per_day))

    @cached_property
    def _index(self) -> dict[str, int]:
        return {symbol: i for i, symbol in enumerate(self.symbols)}

    def index_of(self, symbol: str) -> int:
        """Where `symbol` is in `symbols` (KeyError: not in this market)."""
        return self._index[symbol]

    def trades_per_day_of(self, symbol: str) -> int:
        """How many times `symbol` trades a UTC day."""
        if self.per_day is None:
            return self.trades_per_day
        return self.per_day[self._index[symbol]]

    def _base_id(self, symbol: str) -> int:
        return 1_000_000 + self._index[symbol] * 10_000_000_000

    def first_id(self, symbol: str, day: int) -> int:
        """The id of the first trade of UTC day `day` (days since the epoch)."""
        return self._base_id(symbol) + (day - _EPOCH_DAY) * self.trades_per_day_of(symbol)

    def id_at(self, symbol: str, time_us: int) -> int:
        """The id of the trade in the slot holding `time_us` or after (its jitter may put the
        trade before it by less than the spacing: `first_at` is exact)."""
        day, into = divmod(time_us, DAY_US)
        k = -(-into * self.trades_per_day_of(symbol) // DAY_US)  # ceil: the slot holding time_us or after
        return self.first_id(symbol, day) + k

    def first_at(self, symbol: str, time_us: int) -> int:
        """The id of the first trade at or after `time_us`."""
        trade_id = self.id_at(symbol, time_us)
        while self.trade(symbol, trade_id - 1).time_us >= time_us:  # jitter: step back
            trade_id -= 1
        while self.trade(symbol, trade_id).time_us < time_us:
            trade_id += 1
        return trade_id

    def trade(self, symbol: str, trade_id: int) -> MarketTrade:
        per_day = self.trades_per_day_of(symbol)
        offset = trade_id - self._base_id(symbol)
        day, k = divmod(offset, per_day)
        digest = hashlib.blake2b(f"{symbol}:{trade_id}".encode(), digest_size=8).digest()
        h = int.from_bytes(digest, "little")
        jitter = h % max(1, min(1000, DAY_US // per_day))  # under the spacing: times rise with ids
        time_us = (day + _EPOCH_DAY) * DAY_US + k * DAY_US // per_day + jitter
        start = _START_PRICES.get(symbol, 100)
        tick = 10 ** max(0, round(math.log10(start)) - 6 + 8)  # about 1e-6 of the price, scaled
        walk = int(2_000 * math.sin(trade_id / 7_919) + 500 * math.sin(trade_id / 104_729)) + (h >> 8) % 5
        price = start * 10**8 // tick * tick + walk * tick
        quantity = _LOTS[(h >> 16) % len(_LOTS)] * 10 ** (2 + (h >> 24) % 4)
        return MarketTrade(trade_id, price, quantity, time_us, bool(h >> 40 & 1))

    def day(self, symbol: str, day: int) -> Iterator[MarketTrade]:
        """Every trade of a UTC day, in id order."""
        first = self.first_id(symbol, day)
        for trade_id in range(first, first + self.trades_per_day_of(symbol)):
            yield self.trade(symbol, trade_id)

    def after(self, symbol: str, time_us: int) -> Iterator[MarketTrade]:
        """Every trade from `time_us` on, without end."""
        trade_id = self.id_at(symbol, time_us)
        while True:
            yield self.trade(symbol, trade_id)
            trade_id += 1


def _heavy_tail(count: int, total: int) -> tuple[int, ...]:
    """Zipf-like counts a day for ranks 1..count summing to about `total` (see whole_market)."""
    knee = max(10, int(count * TAIL_FROM))
    weights = [r**-ZIPF_EXPONENT if r <= knee else knee**-ZIPF_EXPONENT * (r / knee) ** -TAIL_EXPONENT
               for r in range(1, count + 1)]  # fmt: skip
    scale = total / sum(weights)
    for _ in range(8):  # the floor adds trades: shrink the rest until the sum is about `total`
        counts = [max(FLOOR_PER_DAY, round(scale * w)) for w in weights]
        over = sum(counts) - total
        free = sum(c for c in counts if c > FLOOR_PER_DAY)
        if abs(over) <= total // 1000 or free == 0:
            break
        scale *= max(0.01, 1 - over / free)
    return tuple(counts)


def _whole_market_names(count: int, rng: random.Random) -> tuple[str, ...]:
    """The majors against USDT (BTCUSDT, ETHUSDT first), then listed bases in other quotes and
    made-up bases (AAB, 1000XYZ) in weighted quotes, each name once."""
    quotes, weights = list(_QUOTE_WEIGHTS), list(_QUOTE_WEIGHTS.values())
    names = [base + "USDT" for base in _MAJORS][:count]
    seen, bases = set(names), list(_MAJORS)
    while len(names) < count:
        quote = rng.choices(quotes, weights)[0]
        if rng.random() < 0.35:
            base = bases[int(len(bases) ** rng.random()) - 1]  # a listed base, the older the likelier
        else:
            base = "".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ") for _ in range(rng.randint(3, 5)))
            base = "1000" + base if rng.random() < 0.03 else base
        symbol = base + quote
        if symbol in seen or base == quote or split_symbol(symbol) != (base, quote):
            continue
        if base not in bases:
            bases.append(base)
        seen.add(symbol)
        names.append(symbol)
    return tuple(names)


@dataclass(frozen=True)
class Schedule:
    """Listings and delistings: a symbol trades in [its listing, its delisting), times in µs
    since the epoch; a symbol without an entry traded before the feed started, and trades on.
    Before its listing a symbol is absent (exchangeInfo, the stream, REST, the archive); from
    its delisting on exchangeInfo shows it as BREAK and it trades no more."""

    listed_us: Mapping[str, int] = field(default_factory=dict)
    delisted_us: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def after_start(
        cls,
        listings_s: Mapping[str, float] | None = None,
        delistings_s: Mapping[str, float] | None = None,
        *,
        origin_us: int | None = None,
    ) -> Schedule:
        """Times in seconds after `origin_us` (default: now, the feed's start)."""
        origin = time.time_ns() // 1000 if origin_us is None else origin_us
        return cls(
            {s: origin + int(v * 1_000_000) for s, v in (listings_s or {}).items()},
            {s: origin + int(v * 1_000_000) for s, v in (delistings_s or {}).items()},
        )

    def window_us(self, symbol: str) -> tuple[int, int]:
        """[first, end) of the times `symbol` trades in."""
        return self.listed_us.get(symbol, -sys.maxsize), self.delisted_us.get(symbol, sys.maxsize)

    def status(self, symbol: str, now_us: int) -> str | None:
        """exchangeInfo's status at `now_us`: None (not listed yet), TRADING or BREAK."""
        first, end = self.window_us(symbol)
        if now_us < first:
            return None
        return "BREAK" if now_us >= end else "TRADING"


def scheduled_names(symbols: tuple[str, ...], listings: int, delistings: int) -> tuple[list[str], list[str]]:
    """Which of a whole market's symbols list during a run and which delist: the newcomers are
    the `listings` ranked just after the top 10 (new listings trade briskly), the delisted the
    `delistings` quietest of the others."""
    if listings < 0 or delistings < 0 or listings + delistings >= len(symbols):
        raise ValueError(f"{listings} listings and {delistings} delistings leave none of {len(symbols)} "
                         "symbols trading throughout")  # fmt: skip
    first = min(10, len(symbols) - listings)
    listed = list(symbols[first : first + listings])
    others = [s for s in symbols if s not in set(listed)]
    return listed, others[len(others) - delistings :] if delistings else []
