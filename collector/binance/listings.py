"""Which symbols COLLECTOR_SYMBOLS=ALL means now: every TRADING spot symbol exchangeInfo lists.

    exchangeInfo (weight 20, the whole market) ─▶ trading_symbols (pure) ─▶ ListingChange (pure)
        ─▶ the collector: new listings streamed, symbols that stopped trading sealed and dropped

Asked at start (until it answers: capture cannot begin without it) and then every
`refresh_s`. A refresh that fails changes nothing: a symbol is dropped only when exchangeInfo
says it no longer trades (status BREAK, HALT, END_OF_DAY, ...) or no longer lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from collector.binance.rest import EXCHANGE_INFO_WEIGHT, BinanceRest
from collector.binance.weight import WeightBudget
from collector.exceptions import CollectorError

__all__ = ["ListingChange", "Listings", "ListingsUnavailable", "listing_change", "trading_symbols"]

FIRST_RETRY_S = 2.0
MAX_RETRY_S = 60.0


class ListingsUnavailable(CollectorError):
    """exchangeInfo could not be asked, or answered something that is not a market."""


@dataclass(frozen=True)
class ListingChange:
    added: tuple[str, ...]
    removed: dict[str, str]  # symbol -> its status now ("not listed" when exchangeInfo dropped it)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def trading_symbols(info: Any, quotes: tuple[str, ...] = ()) -> tuple[dict[str, str], tuple[str, ...]]:
    """(every spot symbol's status, the TRADING ones of the quote assets) from an exchangeInfo body."""
    rows = info.get("symbols") if isinstance(info, dict) else None
    if not isinstance(rows, list):
        raise ListingsUnavailable("exchangeInfo's answer has no `symbols` list")
    statuses: dict[str, str] = {}
    trading: list[str] = []
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("symbol"), str) or not _is_spot(row):
            continue
        symbol, status = row["symbol"], str(row.get("status", ""))
        statuses[symbol] = status
        if status == "TRADING" and (not quotes or row.get("quoteAsset") in quotes):
            trading.append(symbol)
    return statuses, tuple(sorted(trading))


def _is_spot(row: dict[str, Any]) -> bool:
    if row.get("isSpotTradingAllowed") is True:
        return True
    sets = row.get("permissionSets") or [row.get("permissions") or []]
    return any(isinstance(s, list) and "SPOT" in s for s in sets)


def listing_change(
    current: Iterable[str], trading: tuple[str, ...], statuses: dict[str, str]
) -> ListingChange:
    now, before = set(trading), set(current)
    removed = {s: statuses.get(s, "not listed") for s in sorted(before - now)}
    return ListingChange(tuple(s for s in trading if s not in before), removed)


class Listings:
    """Asks exchangeInfo for the market's TRADING symbols, at start and every `refresh_s`."""

    def __init__(
        self,
        rest: BinanceRest,
        *,
        quotes: tuple[str, ...],
        refresh_s: float,
        log: Any,
        budget: WeightBudget | None = None,
    ) -> None:
        self.rest = rest
        self.budget = budget or WeightBudget(log=log)
        self.quotes = quotes
        self.refresh_s = refresh_s
        self.log = log
        self.refreshes = 0  # exchangeInfo answers used
        self.failures = 0

    def fetch(self) -> tuple[dict[str, str], tuple[str, ...]]:
        """(statuses, TRADING symbols). Blocking: run it in a thread."""
        try:
            page = self.rest.exchange_info()
        except (OSError, ValueError) as exc:
            raise ListingsUnavailable(
                f"exchangeInfo could not be reached at {self.rest.base_url}: {exc}"
            ) from exc
        if page.status != 200 or not page.rows:
            raise ListingsUnavailable(
                f"exchangeInfo answered HTTP {page.status or 'nothing'}: {page.body[:200]}"
            )
        statuses, trading = trading_symbols(page.rows[0], self.quotes)
        if not trading:
            quotes = ",".join(self.quotes) or "any quote asset"
            raise ListingsUnavailable(
                f"exchangeInfo lists no TRADING spot symbol of {quotes} ({len(statuses)} spot symbols); "
                "check the quote assets in COLLECTOR_SYMBOLS=ALL:..."
            )
        self.refreshes += 1
        return statuses, trading

    async def first(self, stop: asyncio.Event) -> tuple[str, ...] | None:
        """The symbols to start with: asked until exchangeInfo answers (nothing can be captured
        before), or None once `stop` is set (a SIGTERM while waiting)."""
        delay_s = FIRST_RETRY_S
        while not stop.is_set():
            try:
                await self.budget.take(EXCHANGE_INFO_WEIGHT, "exchangeInfo")
                _, trading = await asyncio.to_thread(self.fetch)
                return trading
            except ListingsUnavailable as exc:
                self.failures += 1
                self.log.error("collector.listings_unavailable", error=str(exc), retry_in_s=delay_s,
                               fix="COLLECTOR_REST_URL must reach Binance's exchangeInfo")  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay_s):
                        await stop.wait()
                delay_s = min(MAX_RETRY_S, delay_s * 2)
        return None

    async def watch(
        self, current: Callable[[], set[str]], apply: Callable[[ListingChange], Awaitable[None]]
    ) -> None:
        """Every `refresh_s`: what changed against `current()`, handed to `apply`."""
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.budget.take(EXCHANGE_INFO_WEIGHT, "exchangeInfo")
                statuses, trading = await asyncio.to_thread(self.fetch)
            except ListingsUnavailable as exc:
                self.failures += 1
                self.log.warning("collector.listings_refresh_failed", error=str(exc),
                                 note="the symbols stay as they are until a refresh answers")  # fmt: skip
                continue
            change = listing_change(current(), trading, statuses)
            if change:
                await apply(change)
