"""A local Binance-compatible trade feed, for demos, tests and downstream rehearsals.

Serves what Binance serves, on loopback:

    /ws/<symbol>@trade                         one raw stream
    /stream?streams=<a>@trade/<b>@trade        combined stream, frames wrapped as {"stream":..,"data":..}
    ...&timeUnit=MICROSECOND                   microsecond trade and event times (generated tape only)

with the same frame format, pings every `ping_interval_s`, consecutive trade ids per symbol,
realistic prices (a random walk on the symbol's tick) and quantities (round lots, a heavy tail),
and bursts (many trades in one millisecond). A replay tape serves a recording's trade frames
byte for byte (lines of `<local stamp> <combined frame>`, gzip or plain).

Production pauses while no client is connected, so a test that connects late misses nothing;
every connected client receives every trade of the symbols it asked for.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import heapq
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from collector.emulated_archive import ArchiveFeed
from collector.emulated_subscriptions import Control, CountingConnection, Limits, Session
from collector.market import Market, MarketTrade, Schedule, split_symbol

__all__ = ["Faults", "FeedServer", "GeneratedTape", "MarketTape", "ReplayTape", "TapeTrade", "load_replay"]

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
    # An emulated clock (for tests of minute markers without waiting for minutes to pass): trade
    # times start at clock_start_ms and advance clock_step_ms per trade, jumping clock_jump_s
    # after every clock_jump_every trades (quiet minutes). None: trade times are the wall clock.
    clock_start_ms: int | None = None
    clock_step_ms: float = 0.0
    clock_jump_every: int = 0
    clock_jump_s: float = 0.0
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
            self._state[symbol] = (self.first_id + i * 10_000_000_000, price, tick)

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
            if self.clock_start_ms is None:
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
    """The deterministic market's trades (collector.market) from `start_us` on, symbols merged
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


@dataclass
class Faults:
    """Scripted misbehaviour, all off by default. Times are seconds of a connection's life."""

    drop_every_s: float = 0.0  # abort each connection (no close frame) after this long
    stall_every_s: float = 0.0  # stop sending to a connection this long after it opened...
    stall_for_s: float = 0.0  # ...for this long, keeping it open
    shutdown_every_s: float = 0.0  # send serverShutdown this long after opening, close 5 s after sending it
    max_connection_age_s: float = 0.0  # close each connection at this age (Binance: 24 h)
    skip_every: int = 0  # leave every Nth trade out of the stream (REST still has it)
    duplicate_every: int = 0  # send every Nth trade twice
    rest_weight_limit: int = 6000  # per minute, like Binance; past it 429, and 418 if ignored
    rest_oldest_id: int = 0  # ids below this are "older than the exchange keeps"
    rest_fail_first: int = 0  # answer the first N REST calls with 429 (Retry-After: 1)
    rest_down: bool = False  # answer every REST call with 503
    rest_unavailable_first: int = 0  # answer the first N REST calls with 503


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    symbols: dict[str, None]  # what it listens to, in subscription order (SUBSCRIBE changes it)
    combined: bool
    micro: bool
    queue: asyncio.Queue[str]
    opened: float = field(default_factory=time.monotonic)
    number: int = 0
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    notice: str | None = None  # a queued serverShutdown frame
    notice_sent: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.flowing.set()


class FeedServer:
    """Serves a tape over WebSocket.

    A generated tape is paced at `rate` trades per second in all; a replay at `speed` times the
    recorded pace. Zero means as fast as the slowest client reads. Connections change their
    streams with SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS under Binance's limits (`limits`;
    collector.emulated_subscriptions), counted in `subscribe_requests`, `subscription_errors`,
    `rate_violations` and `banned_handshakes`; `subscriptions()` is what each listens to now.
    """

    def __init__(
        self,
        tape: GeneratedTape | ReplayTape | MarketTape,
        *,
        rate: float = 0.0,
        speed: float = 0.0,
        ping_interval_s: float = 20.0,
        redeliver: int = 0,
        live: bool = False,
        statuses: dict[str, str] | None = None,
        archive: ArchiveFeed | None = None,
        faults: Faults | None = None,
        limits: Limits | None = None,
        log: Any = None,
    ) -> None:
        self.tape = tape
        self._symbol_set = frozenset(tape.symbols)
        self.control = Control(limits)
        self.exchange_info_calls = 0
        self.faults = faults or Faults()
        # live: keep producing with nobody connected, as an exchange does (downtime makes a hole)
        self.live = live
        self.statuses = statuses or {}  # exchangeInfo status per symbol (default TRADING)
        self.archive = archive  # the trade archive (data.binance.vision's paths), if served
        self.market = tape.market if isinstance(tape, MarketTape) else None
        self.archive_requests = 0
        self.history: dict[str, list[TapeTrade]] = {}
        self.ticker_calls = 0
        self.rest_calls = 0
        self.rest_throttled = 0
        self.rest_banned = 0
        self._weight_minute = 0
        self._weight_used = 0
        self._retry_after_until = 0.0
        self._published = 0
        # Test aid: a new connection first receives up to this many recent trades again, the way
        # a REST backfill re-delivers what a collector lost in flight when it died.
        self.redeliver = redeliver
        self._recent: collections.deque[TapeTrade] = collections.deque(maxlen=max(1, redeliver))
        self.rate = rate
        self.speed = speed
        self.ping_interval_s = ping_interval_s
        self.log = log
        self.clients: set[_Client] = set()
        self.sent = 0
        self.connections = 0
        self._has_clients = asyncio.Event()
        self._producer: asyncio.Task[None] | None = None
        self._server: Server | None = None

    @property
    def subscribe_requests(self) -> int:
        return self.control.subscribe_requests

    @property
    def subscription_errors(self) -> int:
        return self.control.subscription_errors

    @property
    def rate_violations(self) -> int:
        return self.control.rate_violations

    @property
    def banned_handshakes(self) -> int:
        return self.control.banned_handshakes

    @property
    def schedule(self) -> Schedule:
        """The market's listings and delistings (none for other tapes)."""
        return self.tape.schedule if isinstance(self.tape, MarketTape) else Schedule()

    def subscriptions(self) -> dict[int, frozenset[str]]:
        """The symbols each open connection (by number, from 1) listens to now."""
        return {client.number: frozenset(client.symbols) for client in self.clients}

    def status_of(self, symbol: str) -> str | None:
        """exchangeInfo's status of one of the tape's symbols now; None while it is not listed."""
        scheduled = self.schedule.status(symbol, time.time_ns() // 1000)
        if scheduled != "TRADING":
            return scheduled
        return self.statuses.get(symbol, "TRADING")

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = await serve(
            self._handle,
            host,
            port,
            create_connection=CountingConnection,
            process_request=self._check_request,
            ping_interval=self.ping_interval_s,
            ping_timeout=None,
            compression=None,
            max_queue=64,
        )
        sock = next(iter(self._server.sockets))
        bound_host, bound_port = sock.getsockname()[:2]
        self._producer = asyncio.create_task(self._produce())
        return f"ws://{bound_host}:{bound_port}"

    async def close(self) -> None:
        if self._producer:
            self._producer.cancel()
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    def _parse(self, path: str) -> tuple[tuple[str, ...], bool, bool] | str:
        """(symbols in URL order, combined, microseconds) of a stream URL, or why it is refused.
        Bare /ws and /stream name no stream: the connection SUBSCRIBEs."""
        parts = urlsplit(path)
        query = parse_qs(parts.query)
        micro = query.get("timeUnit", ["MILLISECOND"])[0].upper() in ("MICROSECOND", "MICROSECONDS")
        if parts.path.startswith("/ws/") or parts.path == "/ws":
            raw, combined = parts.path[len("/ws/") :], False
        elif parts.path == "/stream":
            raw, combined = query.get("streams", [""])[0], True
        else:
            return f"unknown path {parts.path}; use /ws/<symbol>@trade or /stream?streams=..."
        symbols: dict[str, None] = {}
        for name in raw.split("/") if raw else []:
            symbol, _, kind = name.partition("@")
            if kind != "trade" or symbol.upper() not in self._symbol_set:
                shown = ", ".join(self.tape.symbols[:20]) + (", ..." if len(self.tape.symbols) > 20 else "")
                return f"stream {name!r} is not served; this feed has {shown} @trade"
            symbols[symbol.upper()] = None
        if micro and isinstance(self.tape, ReplayTape):
            return "a replay serves the recording's own millisecond frames; drop timeUnit"
        return tuple(symbols), combined, micro

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/api/"):
            return self._rest(request)
        if request.path.startswith("/data/"):
            return self._archive(request)
        refused = self.control.refuse_handshake(_ip(connection), request.path)
        if refused is not None:
            return refused
        parsed = self._parse(request.path)
        if isinstance(parsed, str):
            body = json.dumps({"code": -1121, "msg": parsed}).encode()
            return Response(400, "Bad Request", Headers([("Content-Type", "application/json")]), body)
        return self.control.refuse_streams(len(parsed[0]))

    def _ticker(self, request: Request) -> Response:
        """GET /api/v3/ticker/24hr: each symbol's last trade id published so far (-1: none), and
        the time of the answer, with the weight Binance charges (2, 40 or 80 by symbols asked)."""
        self.ticker_calls += 1
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
        asked = self.tape.symbols if "symbols" not in query else json.loads(query["symbols"])
        minute = int(time.time() // 60)
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0
        whole = "symbols" not in query  # Binance charges the whole market's 80 whatever its size
        self._weight_used += 80 if whole else 2 if len(asked) <= 20 else 40 if len(asked) <= 100 else 80
        now_ms = int(time.time() * 1000)
        rows = [
            {"symbol": s, "firstId": h[0].trade_id if (h := self.history.get(s)) else -1,
             "lastId": h[-1].trade_id if h else -1, "count": len(h) if h else 0,
             "openTime": now_ms - 86_400_000, "closeTime": now_ms}
            for s in asked if s in self._symbol_set and self.status_of(s) is not None
        ]  # fmt: skip
        response = _json_response(200, rows)
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(self._weight_used)
        return response

    def _rest(self, request: Request) -> Response:
        """GET /api/v3/historicalTrades, with Binance's weight accounting, 429 and 418; and
        /api/v3/exchangeInfo for the tape's symbols (the scripted faults are historicalTrades')."""
        if urlsplit(request.path).path == "/api/v3/exchangeInfo":
            self.exchange_info_calls += 1
            query = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
            return _json_response(*exchange_info(query, self.tape.symbols, self.status_of))
        if urlsplit(request.path).path == "/api/v3/ticker/24hr":
            return self._ticker(request)
        faults = self.faults
        self.rest_calls += 1
        now = time.time()
        minute = int(now // 60)
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0

        def answer(status: int, body: Any, **headers: str) -> Response:
            head = Headers(
                [("Content-Type", "application/json"), ("X-MBX-USED-WEIGHT-1M", str(self._weight_used))]
            )
            for name, value in headers.items():
                head[name.replace("_", "-")] = value
            text = body if isinstance(body, str) else json.dumps(body)
            return Response(
                status,
                {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error"),
                head,
                text.encode(),
            )

        if now < self._retry_after_until:  # asked to wait and did not: Binance bans
            self.rest_banned += 1
            return answer(418, {"code": -1003, "msg": "IP banned"}, Retry_After="120")
        if faults.rest_down or self.rest_calls <= faults.rest_unavailable_first:
            return answer(503, {"code": -1001, "msg": "Service unavailable"})
        if self.rest_calls <= faults.rest_fail_first:
            self.rest_throttled += 1
            self._retry_after_until = now + 1
            return answer(429, {"code": -1003, "msg": "Too many requests"}, Retry_After="1")
        self._weight_used += 25
        if self._weight_used > faults.rest_weight_limit:
            self.rest_throttled += 1
            wait = 60 - now % 60
            self._retry_after_until = now + wait
            return answer(
                429, {"code": -1003, "msg": "Too much request weight used"}, Retry_After=f"{wait:.0f}"
            )
        parts = urlsplit(request.path)
        if parts.path not in ("/api/v3/historicalTrades", "/api/v3/aggTrades"):
            return answer(404, {"code": -1000, "msg": f"not served here: {parts.path}"})
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        symbol = query.get("symbol", "").upper()
        if symbol not in self._symbol_set or self.status_of(symbol) is None:
            return answer(400, {"code": -1121, "msg": "Invalid symbol."})
        try:
            limit = min(1000, int(query.get("limit", "500")))
            from_id = int(query["fromId"]) if "fromId" in query else None
            start_ms = int(query["startTime"]) if "startTime" in query else None
        except ValueError:
            return answer(400, {"code": -1100, "msg": "Illegal characters found in a parameter."})
        micro = request.headers.get("X-MBX-TIME-UNIT", "").upper() == "MICROSECOND"
        if self.market is not None:
            served = market_rows(
                self.market,
                symbol,
                window=self.schedule.window_us(symbol),
                from_id=from_id,
                start_ms=start_ms,
                limit=limit,
                micro=micro,
                oldest_id=faults.rest_oldest_id,
            )
            if parts.path == "/api/v3/aggTrades":
                return answer(200, json.dumps([_as_aggregate(json.loads(r)) for r in served]))
            return answer(200, "[" + ",".join(served) + "]")
        if parts.path == "/api/v3/aggTrades":
            return answer(404, {"code": -1000, "msg": "aggTrades is served by the --market feed only"})
        trades = self.history.get(symbol, [])
        if not trades:
            return answer(200, "[]")
        first = trades[0].trade_id
        start = len(trades) - limit if from_id is None else max(from_id, faults.rest_oldest_id, first) - first
        rows = trades[max(0, start) : max(0, start) + limit]
        return answer(200, "[" + ",".join(t.rest_row_us if micro else t.rest_row for t in rows) + "]")

    def _archive(self, request: Request) -> Response:
        self.archive_requests += 1
        if self.archive is None:
            return Response(
                404, "Not Found", Headers(), b"this feed serves no archive; start it with --archive"
            )
        status, body = self.archive.answer(urlsplit(request.path).path)
        kind = "application/zip" if request.path.endswith(".zip") else "text/plain"
        return Response(
            status, "OK" if status == 200 else "Not Found", Headers([("Content-Type", kind)]), body
        )

    async def _handle(self, ws: ServerConnection) -> None:
        parsed = self._parse(ws.request.path if ws.request else "")
        assert not isinstance(parsed, str)  # _check_request rejected those
        symbols, combined, micro = parsed
        self.connections += 1
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=50_000)
        client = _Client(ws, dict.fromkeys(symbols), combined, micro, queue, number=self.connections)
        session = self.control.session(_ip(ws), client)
        if isinstance(ws, CountingConnection):
            ws.session = session  # its pings and pongs count too
        if self.redeliver:
            for trade in list(self._recent):
                if trade.symbol in symbols:
                    client.queue.put_nowait(self._frame_for(client, trade))
        self.clients.add(client)
        self._has_clients.set()
        sender = asyncio.create_task(self._send(client))
        faults = asyncio.create_task(self._misbehave(client))
        try:
            await self._converse(client, session)
        finally:
            sender.cancel()
            faults.cancel()
            await asyncio.gather(sender, faults, return_exceptions=True)
            self.clients.discard(client)
            if not self.clients:
                self._has_clients.clear()
            while not client.queue.empty():  # release a producer blocked on this full queue
                client.queue.get_nowait()

    async def _converse(self, client: _Client, session: Session) -> None:
        """Answer the client's requests in order, behind what is already queued for it (a stalled
        connection answers late, as Binance's does); close it when it sends too fast."""
        try:
            async for message in client.ws:
                if not session.hit():
                    await session.close_overrun(client.ws)
                    break
                await client.queue.put(session.answer(message))
        except ConnectionClosed:
            pass
        await client.ws.wait_closed()

    async def _send(self, client: _Client) -> None:
        try:
            while True:
                frame = await client.queue.get()
                await client.flowing.wait()
                await client.ws.send(frame)
                self.sent += 1
                if frame is client.notice:
                    client.notice_sent.set()
        except ConnectionClosed:
            pass

    async def _misbehave(self, client: _Client) -> None:
        """The fault schedule: connection k suffers the k-th configured fault, in turn."""
        f = self.faults
        plans = [
            (what, after)
            for what, after in (
                ("drop", f.drop_every_s),
                ("stall", f.stall_every_s),
                ("shutdown", f.shutdown_every_s),
                ("age", f.max_connection_age_s),
            )
            if after > 0
        ]
        if not plans:
            return
        what, after = plans[(client.number - 1) % len(plans)]
        await asyncio.sleep(after)
        if self.log:
            self.log.info("emulator.fault", fault=what, connection=client.number)
        if what == "drop":
            client.ws.transport.abort()  # no close frame: a broken connection
        elif what == "stall":
            client.flowing.clear()  # the sender goes quiet; pings are still answered
            await asyncio.sleep(f.stall_for_s)
            client.flowing.set()
        elif what == "shutdown":
            notice = json.dumps({"e": "serverShutdown", "E": int(time.time() * 1000)}, separators=(",", ":"))
            client.notice = f'{{"stream":"!serverShutdown","data":{notice}}}' if client.combined else notice
            await client.queue.put(client.notice)
            await client.notice_sent.wait()  # in order, behind what was already queued
            await asyncio.sleep(5.0)  # trades keep flowing for a grace period, then the close
            await client.ws.close(1001, "server shutdown")
        else:
            await client.ws.close(1000, "connection lifetime reached")

    def _frame_for(self, client: _Client, trade: TapeTrade) -> str:
        payload = trade.payload_us if client.micro and trade.payload_us else trade.payload_ms
        if client.combined:
            return f'{{"stream":"{trade.symbol.lower()}@trade","data":{payload}}}'
        return payload

    async def _publish(self, trades: list[TapeTrade], *, block: bool) -> None:
        for trade in trades:
            self.history.setdefault(trade.symbol, []).append(trade)
        if self.redeliver:
            self._recent.extend(trades)
        f = self.faults
        if f.skip_every or f.duplicate_every:
            shaped: list[TapeTrade] = []
            for trade in trades:
                self._published += 1
                if f.skip_every and self._published % f.skip_every == 0:
                    continue
                shaped.append(trade)
                if f.duplicate_every and self._published % f.duplicate_every == 0:
                    shaped.append(trade)
            trades = shaped
        for client in list(self.clients):
            for trade in trades:
                if trade.symbol not in client.symbols:
                    continue
                frame = self._frame_for(client, trade)
                if block:
                    if client not in self.clients:
                        break
                    await client.queue.put(frame)
                else:
                    try:
                        client.queue.put_nowait(frame)
                    except asyncio.QueueFull:  # Binance drops consumers that cannot keep up
                        await client.ws.close(1008, "slow consumer")
                        break

    async def _produce(self) -> None:
        chunk = 256
        started: float | None = None
        produced = 0
        while not self.tape.exhausted:
            if not self.live:
                await self._has_clients.wait()
            loop_now = time.monotonic()
            if started is None:
                started = loop_now
            if isinstance(self.tape, ReplayTape) and self.speed <= 0:
                await self._publish(self.tape.take(chunk), block=True)
                await asyncio.sleep(0)
            elif isinstance(self.tape, ReplayTape):
                nxt = self.tape.trades[self.tape._pos]
                due = started + (nxt.offset_s or 0.0) / self.speed
                if due > loop_now:
                    await asyncio.sleep(min(due - loop_now, 0.05))
                    continue
                trades = self.tape.take(1)
                await self._publish(trades, block=False)
            elif self.rate > 0:
                target = int((loop_now - started) * self.rate)
                if target <= produced:
                    await asyncio.sleep(min(0.01, 1 / self.rate))
                    continue
                trades = self.tape.take(min(chunk, target - produced))
                produced += len(trades)
                await self._publish(trades, block=False)
            else:
                taken = self.tape.take(chunk)
                await self._publish(taken, block=True)
                await asyncio.sleep(0 if taken else 0.05)  # a market caught up with the present waits
        if self.log:
            self.log.info("emulator.tape_finished", sent=self.sent)


def market_rows(
    market: Market,
    symbol: str,
    *,
    window: tuple[int, int],
    from_id: int | None,
    start_ms: int | None,
    limit: int,
    micro: bool,
    oldest_id: int = 0,
) -> list[str]:
    """historicalTrades rows of the market: from an id, from a time, or the latest; none below
    `oldest_id`, before the symbol's listing or from its delisting on (`window`, µs)."""
    listed, delisted = window
    now_us = min(time.time_ns() // 1000, delisted - 1)
    if start_ms is not None:
        from_id = market.first_at(symbol, max(start_ms * 1000, listed))
    elif from_id is None:
        from_id = market.id_at(symbol, now_us) - limit
    from_id = max(from_id, oldest_id)
    if listed > 0:
        from_id = max(from_id, market.first_at(symbol, listed))
    rows = []
    for trade_id in range(from_id, from_id + limit):
        trade = market.trade(symbol, trade_id)
        if trade.time_us > now_us:  # the future has no trades yet
            break
        tape = market_tape_trade(symbol, trade)
        rows.append(tape.rest_row_us if micro else tape.rest_row)
    return rows


def _symbol_info(symbol: str, status: str = "TRADING") -> dict[str, Any]:
    """An exchangeInfo row, with the fields the collector reads."""
    base, quote = split_symbol(symbol)
    return {"symbol": symbol, "status": status, "baseAsset": base, "quoteAsset": quote,
            "isSpotTradingAllowed": True, "permissionSets": [["SPOT"]]}  # fmt: skip


_SYMBOL_STATUSES = ("TRADING", "HALT", "BREAK")


def exchange_info(
    query: dict[str, str], symbols: tuple[str, ...], status_of: Callable[[str], str | None]
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of /api/v3/exchangeInfo: the whole market (every listed symbol, or
    those of one `symbolStatus`), or the `symbols` / `symbol` asked for, as Binance answers."""
    status = query.get("symbolStatus")
    if status is not None and ("symbols" in query or "symbol" in query):
        msg = "Combination of optional parameters invalid: symbolStatus goes without symbol(s)."
        return 400, {"code": -1128, "msg": msg}
    if status is not None and status not in _SYMBOL_STATUSES:
        return 400, {"code": -1122, "msg": "Invalid symbolStatus."}
    wanted = _wanted_symbols(query)
    if wanted == "":
        return 400, {"code": -1100, "msg": "Illegal characters found in parameter 'symbols'."}
    rows: list[tuple[str, str | None]]
    if wanted is None:
        rows = [(s, now) for s in symbols if (now := status_of(s)) is not None and status in (None, now)]
    else:
        known = set(symbols)
        rows = [(s, status_of(s) if s in known else None) for s in wanted]
        if any(now is None for _, now in rows):
            return 400, {"code": -1121, "msg": "Invalid symbol."}
    infos = [_symbol_info(s, now) for s, now in rows if now is not None]
    return 200, {"timezone": "UTC", "serverTime": int(time.time() * 1000), "symbols": infos}


def _wanted_symbols(query: dict[str, str]) -> list[str] | str | None:
    """The symbols exchangeInfo is asked for (None: the whole market; "": not a list of names)."""
    if "symbol" in query and "symbols" not in query:
        return [query["symbol"]]
    if "symbols" not in query:
        return None
    try:
        wanted = json.loads(query["symbols"])
    except ValueError:
        return ""
    if not isinstance(wanted, list) or not all(isinstance(s, str) for s in wanted):
        return ""
    return wanted


def _ip(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else "unknown"


def _json_response(status: int, body: Any) -> Response:
    reason = {200: "OK", 400: "Bad Request"}.get(status, "Error")
    headers = Headers([("Content-Type", "application/json")])
    return Response(status, reason, headers, json.dumps(body).encode())


def _as_aggregate(row: dict[str, Any]) -> dict[str, Any]:
    """A historicalTrades row as an aggTrades row of one trade (a = f = l = the trade id)."""
    return {"a": row["id"], "p": row["price"], "q": row["qty"], "f": row["id"], "l": row["id"],
            "T": row["time"], "m": row["isBuyerMaker"], "M": True}  # fmt: skip
