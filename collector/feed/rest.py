"""The local feed's REST API and archive, answered as Binance answers them.

GET /api/v3/historicalTrades   by id, or the latest (weight 25; the scripted REST faults apply)
GET /api/v3/aggTrades          from a time (--market only; weight 4)
GET /api/v3/exchangeInfo       the tape's symbols with their status of the moment (weight 20)
GET /api/v3/ticker/24hr        each symbol's last id (MINI; weight 2, 40 or 80): the market's last
                               trade by now (--market), or the last published
GET /data/spot/...             the --market's days as Binance's trade archive (feed/archive.py)

Every endpoint's weight counts against the minute's (`X-MBX-USED-WEIGHT-1M`), past the limit a
429, and `peak_weight` is the most any minute used: what a test holds the collector's REST use to.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from collector.feed.archive import ArchiveFeed
from collector.feed.simulated import Market, Schedule, split_symbol
from collector.feed.tapes import TapeTrade, market_tape_trade


class FeedState(Protocol):
    """What the REST API answers from: the feed's tape, what it published, its market and faults."""

    tape: Any
    history: dict[str, list[TapeTrade]]
    market: Market | None
    faults: Any
    archive: ArchiveFeed | None
    symbol_set: frozenset[str]

    @property
    def schedule(self) -> Schedule: ...

    def status_of(self, symbol: str) -> str | None: ...


class RestApi:
    """The feed's REST side: historicalTrades and aggTrades with Binance's weight accounting (429,
    then 418 when ignored) and the scripted REST faults; exchangeInfo; ticker/24hr; the archive."""

    def __init__(self, feed: FeedState) -> None:
        self.feed = feed
        self.calls = 0  # historicalTrades and aggTrades
        self.throttled = 0
        self.banned = 0
        self.exchange_info_calls = 0
        self.ticker_calls = 0
        self.archive_requests = 0
        self._weight_minute = 0
        self._weight_used = 0
        self.peak_weight = 0  # the most weight used in any one minute, every endpoint counted
        self._retry_after_until = 0.0

    def _weigh(self, weight: int, now: float) -> bool:
        """Count a request's weight in its minute; False when it passes the limit (a 429)."""
        minute = int(now // 60)
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0
        self._weight_used += weight
        self.peak_weight = max(self.peak_weight, self._weight_used)
        limit: int = self.feed.faults.rest_weight_limit
        return self._weight_used <= limit

    def _too_much(self, now: float) -> Response:
        self.throttled += 1
        wait = 60 - now % 60
        self._retry_after_until = now + wait
        msg = {"code": -1003, "msg": "Too much request weight used"}
        return self._reply(429, msg, Retry_After=f"{wait:.0f}")

    def _ticker(self, request: Request) -> Response:
        """GET /api/v3/ticker/24hr: each symbol's last trade id published so far (-1: none), and
        the time of the answer, with the weight Binance charges (2, 40 or 80 by symbols asked)."""
        self.ticker_calls += 1
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
        asked = self.feed.tape.symbols if "symbols" not in query else json.loads(query["symbols"])
        now = time.time()
        whole = "symbols" not in query  # Binance charges the whole market's 80 whatever its size
        if not self._weigh(80 if whole else 2 if len(asked) <= 20 else 40 if len(asked) <= 100 else 80, now):
            return self._too_much(now)
        now_ms = int(now * 1000)
        rows = [
            {"symbol": s, **self._ids_of(s, now_ms), "openTime": now_ms - 86_400_000, "closeTime": now_ms}
            for s in asked if s in self.feed.symbol_set and self.feed.status_of(s) is not None
        ]  # fmt: skip
        response = _json_response(200, rows)
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(self._weight_used)
        return response

    def _ids_of(self, symbol: str, now_ms: int) -> dict[str, int]:
        """A ticker row's ids: a market's every trade of the last 24 hours up to the tape's clock
        (as Binance's ticker has them: a symbol quiet since the feed started too, and a trade
        taken but not yet sent), or what another tape has published."""
        market = self.feed.market
        if market is None:
            h = self.feed.history.get(symbol)
            return {"firstId": h[0].trade_id if h else -1, "lastId": h[-1].trade_id if h else -1,
                    "count": len(h) if h else 0}  # fmt: skip
        listed, delisted = self.feed.schedule.window_us(symbol)
        now_us = min(now_ms * 1000, self.feed.tape.frontier_us - 1, delisted - 1)
        first = market.first_at(symbol, max(listed, now_us - 86_400_000_000))
        last = market.first_at(symbol, now_us + 1) - 1
        return {"firstId": first if last >= first else -1, "lastId": last if last >= first else -1,
                "count": max(0, last - first + 1)}  # fmt: skip

    def answer(self, request: Request) -> Response:
        """GET /api/v3/historicalTrades and aggTrades, with Binance's weight accounting, 429 and
        418; exchangeInfo and ticker/24hr (the scripted faults are the trade endpoints')."""
        path = urlsplit(request.path).path
        if path == "/api/v3/exchangeInfo":
            self.exchange_info_calls += 1
            if not self._weigh(20, now := time.time()):
                return self._too_much(now)
            query = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
            return _json_response(*exchange_info(query, self.feed.tape.symbols, self.feed.status_of))
        if path == "/api/v3/ticker/24hr":
            return self._ticker(request)
        self.calls += 1
        return self._charge(time.time(), 4 if path == "/api/v3/aggTrades" else 25) or self._trades(request)

    def _reply(self, status: int, body: Any, **headers: str) -> Response:
        head = Headers(
            [("Content-Type", "application/json"), ("X-MBX-USED-WEIGHT-1M", str(self._weight_used))]
        )
        for name, value in headers.items():
            head[name.replace("_", "-")] = value
        text = body if isinstance(body, str) else json.dumps(body)
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
        return Response(status, reason, head, text.encode())

    def _charge(self, now: float, weight: int) -> Response | None:
        """The request's weight counted; the refusal Binance would answer with, if any."""
        faults = self.feed.faults
        if now < self._retry_after_until:  # asked to wait and did not: Binance bans
            self.banned += 1
            return self._reply(418, {"code": -1003, "msg": "IP banned"}, Retry_After="120")
        if faults.rest_down or self.calls <= faults.rest_unavailable_first:
            return self._reply(503, {"code": -1001, "msg": "Service unavailable"})
        if self.calls <= faults.rest_fail_first:
            self.throttled += 1
            self._retry_after_until = now + 1
            return self._reply(429, {"code": -1003, "msg": "Too many requests"}, Retry_After="1")
        if not self._weigh(weight, now):
            return self._too_much(now)
        return None

    def _trades(self, request: Request) -> Response:
        """historicalTrades or aggTrades rows: from the market, or from what the tape published."""
        parts = urlsplit(request.path)
        if parts.path not in ("/api/v3/historicalTrades", "/api/v3/aggTrades"):
            return self._reply(404, {"code": -1000, "msg": f"not served here: {parts.path}"})
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        symbol = query.get("symbol", "").upper()
        if symbol not in self.feed.symbol_set or self.feed.status_of(symbol) is None:
            return self._reply(400, {"code": -1121, "msg": "Invalid symbol."})
        try:
            limit = min(1000, int(query.get("limit", "500")))
            from_id = int(query["fromId"]) if "fromId" in query else None
            start_ms = int(query["startTime"]) if "startTime" in query else None
        except ValueError:
            return self._reply(400, {"code": -1100, "msg": "Illegal characters found in a parameter."})
        micro = request.headers.get("X-MBX-TIME-UNIT", "").upper() == "MICROSECOND"
        oldest_id = self.feed.faults.rest_oldest_id
        if self.feed.market is not None:
            window = self.feed.schedule.window_us(symbol)
            served = market_rows(self.feed.market, symbol, window=window, from_id=from_id, start_ms=start_ms,
                                 limit=limit, micro=micro, oldest_id=oldest_id)  # fmt: skip
            if parts.path == "/api/v3/aggTrades":
                return self._reply(200, json.dumps([_as_aggregate(json.loads(r)) for r in served]))
            return self._reply(200, "[" + ",".join(served) + "]")
        if parts.path == "/api/v3/aggTrades":
            return self._reply(404, {"code": -1000, "msg": "aggTrades is served by the --market feed only"})
        trades = self.feed.history.get(symbol, [])
        if not trades:
            return self._reply(200, "[]")
        first = trades[0].trade_id
        start = len(trades) - limit if from_id is None else max(from_id, oldest_id, first) - first
        rows = trades[max(0, start) : max(0, start) + limit]
        return self._reply(200, "[" + ",".join(t.rest_row_us if micro else t.rest_row for t in rows) + "]")

    def archive_file(self, request: Request) -> Response:
        self.archive_requests += 1
        if self.feed.archive is None:
            return Response(
                404, "Not Found", Headers(), b"this feed serves no archive; start it with --archive"
            )
        status, body = self.feed.archive.answer(urlsplit(request.path).path)
        kind = "application/zip" if request.path.endswith(".zip") else "text/plain"
        return Response(
            status, "OK" if status == 200 else "Not Found", Headers([("Content-Type", kind)]), body
        )


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


def _json_response(status: int, body: Any) -> Response:
    reason = {200: "OK", 400: "Bad Request"}.get(status, "Error")
    headers = Headers([("Content-Type", "application/json")])
    return Response(status, reason, headers, json.dumps(body).encode())


def _as_aggregate(row: dict[str, Any]) -> dict[str, Any]:
    """A historicalTrades row as an aggTrades row of one trade (a = f = l = the trade id)."""
    return {"a": row["id"], "p": row["price"], "q": row["qty"], "f": row["id"], "l": row["id"],
            "T": row["time"], "m": row["isBuyerMaker"], "M": True}  # fmt: skip
