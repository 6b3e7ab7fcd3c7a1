"""One REST weight budget for every request the collector makes of Binance's REST API.

Binance counts the weight of every request from an IP in each clock minute (the answer's
`X-MBX-USED-WEIGHT-1M`), answers 429 past 6,000 and bans an IP (418) that keeps asking. The
collector keeps to `limit` (3,000 by default: half, so other traffic from the same IP keeps its
share), counting every endpoint it asks through one budget:

    historicalTrades 25 (the backfill) · aggTrades 4 (a symbol's first id after a time)
    exchangeInfo 20 (listings, the preflight) · ticker/24hr 2, 40 or 80 (the quiet proof)

Before a request its weight is taken: when the minute's count (what was taken here this minute,
or what the last answer said the IP has used, whichever is more) and the request's weight would
pass the limit, the request waits for the next minute. A 429 or a 418 stops every request until
its Retry-After has passed. Every answer's header is noted (`BinanceRest` does it), so weight
used by someone else on the IP is counted too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from collector.counters import Registry

__all__ = ["WEIGHT_LIMIT", "WeightBudget"]

WEIGHT_LIMIT = 3_000  # half of Binance's 6,000 a minute
# Binance's minute and ours differ by the clocks' offset: wait this far into the next one.
MINUTE_MARGIN_S = 1.0


class WeightBudget:
    """The minute's REST weight, shared by every caller. `take` on the event loop; `saw` from any
    thread (an answer's header, noted by `BinanceRest`)."""

    def __init__(
        self,
        limit: int = WEIGHT_LIMIT,
        *,
        log: Any = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        metrics: Registry | None = None,
    ) -> None:
        self.limit, self.log, self.clock, self.sleep = limit, log, clock, sleep
        self._minute = -1
        self._taken = 0  # weight taken here in `_minute`
        self._seen = (-1, 0)  # (minute, used weight) of the latest answer's header
        self._paused_until = 0.0  # a 429 or a 418: nothing before this (wall clock)
        self.peak = 0  # the most weight counted in any one minute
        self.waits = 0  # requests that waited for the next minute
        if metrics is not None:
            metrics.gauge("rest_weight_used", "REST weight used this minute (every endpoint).", self.used)
            metrics.gauge(
                "rest_weight_peak", "The most REST weight used in any one minute.", lambda: self.peak
            )
            metrics.counter("rest_weight_waits", "REST requests that waited for the next minute.",
                            read=lambda: self.waits)  # fmt: skip

    def used(self) -> int:
        """The weight counted in the current minute."""
        minute = int(self.clock() // 60)
        taken = self._taken if self._minute == minute else 0
        seen_minute, seen = self._seen
        return max(taken, seen if seen_minute == minute else 0)

    async def take(self, weight: int, why: str = "") -> None:
        """Wait until `weight` more fits in the minute, and count it."""
        while True:
            now = self.clock()
            if now < self._paused_until:
                await self.sleep(self._paused_until - now)
                continue
            used = self.used()
            if used + weight <= self.limit:
                break
            self.waits += 1
            wait_s = 60 - now % 60 + MINUTE_MARGIN_S
            if self.log is not None:
                self.log.info("collector.rest_weight_wait", used=used, weight=weight, limit=self.limit,
                              wait_s=round(wait_s, 1), request=why)  # fmt: skip
            await self.sleep(wait_s)
        minute = int(self.clock() // 60)
        if minute != self._minute:
            self._minute, self._taken = minute, 0
        self._taken = max(self._taken, self.used()) + weight
        self.peak = max(self.peak, self._taken)

    def saw(self, used_weight: int | None) -> None:
        """An answer's `X-MBX-USED-WEIGHT-1M` (any thread)."""
        if used_weight is not None:
            self._seen = (int(self.clock() // 60), used_weight)
            self.peak = max(self.peak, used_weight)

    def pause(self, seconds: float) -> None:
        """Binance said to stop (429 Retry-After, or a 418 ban): no request for `seconds`."""
        self._paused_until = max(self._paused_until, self.clock() + seconds)
