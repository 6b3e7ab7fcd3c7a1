"""Filling trade-id gaps from Binance's REST API, inside its rate limits, with an honest record.

    GET {rest_url}/api/v3/historicalTrades?symbol=S&fromId=N&limit=1000   (weight 25, no key)

The policy, in one place (`Backfiller._fetch`):
- each page's weight is taken from the REST weight budget every endpoint shares
  (collector.binance.weight: half of Binance's 6,000 a minute): past it, wait for the next minute;
- 429: no request of any kind for `Retry-After` seconds (continuing would earn a 418 ban);
- 418: banned; stop, record the rest of every gap as unfilled until `Retry-After` has passed;
- 403/451, 400 (unknown symbol): cannot be fixed by retrying: record and say why;
- 5xx and network errors: a few jittered retries, then record the range as unfilled.

A range the exchange no longer serves (older than it keeps) is recorded as `not_served`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from collector.binance.rest import HISTORICAL_TRADES_WEIGHT, BinanceRest, RestPage
from collector.binance.weight import WeightBudget
from collector.capture.decode import Trade, trade_from_rest

if TYPE_CHECKING:
    from collector.gaps.ledger import OpenGap

__all__ = ["Backfiller", "Shortfall"]

PAGE_LIMIT = 1000  # Binance's maximum rows per historicalTrades call


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Ids `first_missing..last_missing` could not be fetched, and why."""

    first_missing: int
    last_missing: int
    reason: str  # not_served, banned, refused_location, bad_request, rest_unavailable, malformed_row
    detail: str = ""


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
        budget: WeightBudget | None = None,
        max_server_retries: int = 4,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.rest = rest
        self.log = log
        self.budget = budget or WeightBudget(log=log, sleep=sleep)
        self.max_server_retries = max_server_retries
        self.sleep = sleep
        self.requests = 0
        self.rate_limited = 0
        self.banned_until = 0.0  # wall clock

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
            if self.banned_until > time.time():
                raise _GiveUp(
                    "banned", f"HTTP 418 from the exchange; no request before {self.banned_until:.0f}"
                )
            await self.budget.take(HISTORICAL_TRADES_WEIGHT, "historicalTrades")
            try:
                page = await asyncio.to_thread(self.rest.historical_trades, symbol, from_id, limit)
            except (OSError, ValueError) as exc:
                page = RestPage(0, None, None, None, repr(exc))
            self.requests += 1
            self.budget.saw(page.used_weight)
            if page.status == 200:
                return page
            if page.status == 429:
                self.rate_limited += 1
                self._pause(page.retry_after_s or 60.0, "HTTP 429: slowing down as asked")
                continue
            if page.status == 418:
                self.banned_until = time.time() + (page.retry_after_s or 120.0)
                self.budget.pause(page.retry_after_s or 120.0)  # nobody asks during a ban: it grows
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
        """No request of any endpoint for `seconds` (the budget is everyone's)."""
        self.budget.pause(seconds)
        self.log.warning("collector.backfill_paused", seconds=round(seconds, 1), why=why)
