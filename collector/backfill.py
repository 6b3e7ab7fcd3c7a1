"""Filling trade-id gaps from Binance's REST API, inside its rate limits, with an honest record.

    GET {rest_url}/api/v3/historicalTrades?symbol=S&fromId=N&limit=1000   (weight 25, no key)

The policy, in one place (`Backfiller._fetch`):
- keep the minute's used weight (`X-MBX-USED-WEIGHT-1M`) under `weight_limit` (half of the
  6,000 Binance allows, so live traffic from the same IP keeps its share): past it, wait for the
  next minute;
- 429: wait `Retry-After` seconds before any other request (continuing would earn a 418 ban);
- 418: banned; stop, record the rest of every gap as unfilled until `Retry-After` has passed;
- 403/451, 400 (unknown symbol): cannot be fixed by retrying: record and say why;
- 5xx and network errors: a few jittered retries, then record the range as unfilled.

A range the exchange no longer serves (older than it keeps) is recorded as `not_served`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from collector.binance import Trade, trade_from_rest

if TYPE_CHECKING:
    from collector.gapfill import OpenGap

__all__ = ["Backfiller", "BinanceRest", "RestPage", "Shortfall"]

PAGE_LIMIT = 1000  # Binance's maximum rows per historicalTrades call


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Ids `first_missing..last_missing` could not be fetched, and why."""

    first_missing: int
    last_missing: int
    reason: str  # not_served, banned, refused_location, bad_request, rest_unavailable, malformed_row
    detail: str = ""


@dataclass(frozen=True)
class RestPage:
    status: int
    rows: list[dict[str, Any]] | None
    used_weight: int | None
    retry_after_s: float | None
    body: str = ""


class BinanceRest:
    """Blocking calls to the REST API (run them in a thread)."""

    def __init__(self, base_url: str, *, time_unit: str = "ms", timeout_s: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.time_unit = time_unit
        self.timeout_s = timeout_s

    def historical_trades(self, symbol: str, from_id: int, limit: int) -> RestPage:
        query = urllib.parse.urlencode({"symbol": symbol, "fromId": from_id, "limit": limit})
        headers = {"X-MBX-TIME-UNIT": "MICROSECOND"} if self.time_unit == "us" else {}
        return self._get(f"/api/v3/historicalTrades?{query}", headers)

    def first_trade_id_from(self, symbol: str, start_ms: int) -> int | None:
        """The id of the first trade at or after `start_ms` (aggTrades, weight 4); None when there
        is none yet. Raises OSError or ValueError when the API cannot say."""
        query = urllib.parse.urlencode({"symbol": symbol, "startTime": start_ms, "limit": 1})
        page = self._get(f"/api/v3/aggTrades?{query}", {})
        if page.status != 200 or not isinstance(page.rows, list):
            raise ValueError(f"aggTrades answered HTTP {page.status or 'nothing'}: {page.body[:200]}")
        return int(page.rows[0]["f"]) if page.rows else None

    def exchange_info(self, symbols: list[str] | None = None) -> RestPage:
        """GET /api/v3/exchangeInfo (weight 20), for some symbols or the whole market (rows: the
        response object, in a list of one)."""
        query = ""
        if symbols:
            query = "?" + urllib.parse.urlencode({"symbols": json.dumps(symbols, separators=(",", ":"))})
        page = self._get(f"/api/v3/exchangeInfo{query}", {})
        if page.status == 200 and isinstance(page.rows, dict):
            return RestPage(page.status, [page.rows], page.used_weight, None)
        return page

    def ticker_24h(self, symbols: list[str] | None = None) -> RestPage:
        """GET /api/v3/ticker/24hr?type=MINI (each row's firstId, lastId, closeTime): weight 80 for
        the whole market, 2 for up to 20 symbols, 40 for up to 100."""
        query = {"type": "MINI"}
        if symbols is not None:
            query["symbols"] = json.dumps(symbols, separators=(",", ":"))
        return self._get(f"/api/v3/ticker/24hr?{urllib.parse.urlencode(query)}", {})

    def _get(self, path: str, headers: dict[str, str]) -> RestPage:
        request = urllib.request.Request(f"{self.base_url}{path}")  # noqa: S310 (http(s) only, from settings)
        request.add_header("User-Agent", "trade-lake-collector")
        for name, value in headers.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                body = response.read().decode()
                return RestPage(
                    response.status,
                    json.loads(body),
                    _int(response.headers.get("X-MBX-USED-WEIGHT-1M")),
                    None,
                )
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")[:500]
            answer = exc.headers
            return RestPage(
                exc.code,
                None,
                _int(answer.get("X-MBX-USED-WEIGHT-1M")) if answer else None,
                _float(answer.get("Retry-After")) if answer else None,
                body,
            )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class _GiveUp(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class Backfiller:
    """Fetches the trades of a gap page by page; reports what it could not fill."""

    def __init__(
        self,
        rest: BinanceRest,
        *,
        log: Any,
        weight_limit: int = 3000,
        max_server_retries: int = 4,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.rest = rest
        self.log = log
        self.weight_limit = weight_limit
        self.max_server_retries = max_server_retries
        self.sleep = sleep
        self.requests = 0
        self.rate_limited = 0
        self.banned_until = 0.0  # wall clock
        self._paused_until = 0.0  # wall clock

    async def fill(
        self,
        gap: OpenGap,
        on_trades: Callable[[list[Trade], int], Awaitable[None]],
        *,
        max_pages: int | None = None,
    ) -> list[Shortfall]:
        """Fetch gap.next_id..gap.last_missing, at most `max_pages` pages of it (a turn: the
        caller comes back for the rest); hand each page's trades (and the next id) to on_trades."""
        unfilled: list[Shortfall] = []
        next_id = gap.next_id
        pages = 0
        while next_id <= gap.last_missing and (max_pages is None or pages < max_pages):
            pages += 1
            limit = min(PAGE_LIMIT, gap.last_missing - next_id + 1)
            try:
                page = await self._fetch(gap.symbol, next_id, limit)
            except _GiveUp as stop:
                unfilled.append(Shortfall(next_id, gap.last_missing, stop.reason, stop.detail))
                return unfilled
            rows = [r for r in page.rows or [] if isinstance(r, dict) and isinstance(r.get("id"), int)]
            wanted = [r for r in rows if next_id <= r["id"] <= gap.last_missing]
            if not wanted:
                unfilled.append(
                    Shortfall(
                        next_id, gap.last_missing, "not_served", "the exchange returned none of these ids"
                    )
                )
                return unfilled
            first = min(r["id"] for r in wanted)
            if first > next_id:  # older than the exchange keeps
                unfilled.append(
                    Shortfall(next_id, first - 1, "not_served", f"the exchange's oldest id here is {first}")
                )
            trades: list[Trade] = []
            for row in wanted:
                trade = trade_from_rest(row, gap.symbol, gap.detected_at_ns)
                if isinstance(trade, Trade):
                    trades.append(trade)
                else:
                    unfilled.append(Shortfall(row["id"], row["id"], "malformed_row", trade.detail))
            next_id = max(r["id"] for r in wanted) + 1
            await on_trades(trades, next_id)
        return unfilled

    async def _fetch(self, symbol: str, from_id: int, limit: int) -> Any:
        server_errors = 0
        while True:
            now = time.time()
            if self.banned_until > now:
                raise _GiveUp(
                    "banned", f"HTTP 418 from the exchange; no request before {self.banned_until:.0f}"
                )
            if self._paused_until > now:
                await self.sleep(self._paused_until - now)
            try:
                page = await asyncio.to_thread(self.rest.historical_trades, symbol, from_id, limit)
            except (OSError, ValueError) as exc:
                page = RestPage(0, None, None, None, repr(exc))
            self.requests += 1
            if page.used_weight is not None and page.used_weight >= self.weight_limit:
                self._pause(
                    60 - time.time() % 60 + 1, f"used weight {page.used_weight} of {self.weight_limit}"
                )
            if page.status == 200:
                return page
            if page.status == 429:
                self.rate_limited += 1
                self._pause(page.retry_after_s or 60.0, "HTTP 429: slowing down as asked")
                continue
            if page.status == 418:
                self.banned_until = time.time() + (page.retry_after_s or 120.0)
                self.log.error("collector.backfill_banned", until=self.banned_until, body=page.body)
                raise _GiveUp("banned", f"HTTP 418 from the exchange: {page.body}")
            if page.status in (403, 451):
                raise _GiveUp(
                    "refused_location",
                    f"HTTP {page.status}: the exchange refuses this location; run in another region or set "
                    "COLLECTOR_REST_URL",
                )
            if page.status == 400:
                raise _GiveUp("bad_request", f"HTTP 400 {page.body} (unknown symbol?)")
            server_errors += 1
            if server_errors > self.max_server_retries:
                raise _GiveUp("rest_unavailable", f"HTTP {page.status or 'no answer'}: {page.body}")
            await self.sleep(random.uniform(0, min(30.0, 0.5 * 2**server_errors)))  # noqa: S311 (jitter)

    def _pause(self, seconds: float, why: str) -> None:
        until = time.time() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.log.warning("collector.backfill_paused", seconds=round(seconds, 1), why=why)
