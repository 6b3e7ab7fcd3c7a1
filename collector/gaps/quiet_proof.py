"""Continuity for symbols that have not traded since a restart or a reconnect, from one request.

A minute is final only once its symbol's continuity is proven past its end (collector.lake.completion):
a later trade, or an unbroken connection since the last one. After a restart or a reconnect a
quiet symbol has neither until it trades again, which for the quietest of the market is
hours; its markers (and every market-wide minute) would wait that long. So:

    every PROBE_EVERY_S: symbols whose proof is behind, on a connection that has stayed up since
    the last look ─▶ GET /api/v3/ticker/24hr?type=MINI (weight 80 for the whole market, 2 to 40
    for up to 100 symbols) ─▶ each one's `lastId` against the last id we hold:
        the same ─▶ nothing traded that we lack: proven up to the answer's `closeTime`
        higher   ─▶ trades happened while we were away: a gap (the backfill fills it), then proven
                    on a later look

Why a connection up since the last look: a trade after the subscription comes on the stream,
so a ticker that lags a few seconds cannot hide one. A symbol the ticker cannot vouch for (not
in its answer, or no trade in 24 h while we hold a last id) is asked again only once its
connection changes.

A symbol streamed but never seen trading since the start (collector.gaps.unseen) is asked like
any other once its subscription is confirmed: nothing traded since that we lack, so it is
proven, its `lastId` becomes its cursor (`SequenceTracker.remember_reported`: the stream's next
trade of it is taken even if the ticker counted it first), and `adopt` starts its markers, per
symbol or market-wide, so a quiet symbol is covered without waiting for its first trade.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

from collector.binance.rest import BinanceRest, ticker_weight
from collector.binance.weight import WeightBudget
from collector.capture.sequence import SequenceTracker
from collector.counters import Registry
from collector.gaps.filler import GapFiller
from collector.gaps.ledger import OpenGap

__all__ = ["QuietProof", "ticker_ids"]

PROBE_EVERY_S = 15.0
BEHIND_S = 75.0  # a proof this far behind the wall clock holds up a minute past its grace


def ticker_ids(rest: BinanceRest, symbols: list[str] | None) -> list[dict[str, Any]]:
    """The 24 h ticker's rows (symbol, lastId, closeTime), for some symbols or all (blocking).
    Raises ValueError when the exchange does not answer with them."""
    page = rest.ticker_24h(symbols)
    if page.status != 200 or not isinstance(page.rows, list):
        raise ValueError(f"ticker/24hr answered HTTP {page.status or 'nothing'}: {page.body[:200]}")
    return [
        r for r in page.rows
        if isinstance(r, dict) and isinstance(r.get("symbol"), str) and isinstance(r.get("lastId"), int)
        and isinstance(r.get("closeTime"), int)
    ]  # fmt: skip


class QuietProof:
    """Asks the exchange for the last trade ids of symbols whose continuity is behind."""

    def __init__(
        self,
        rest: BinanceRest,
        *,
        symbols: Callable[[], Iterable[str]],
        proven_until: Callable[[str], float | None],
        stream_state: Callable[[str], tuple[bool, int]],
        last_id: Callable[[str], int | None],
        proved: Callable[[str, float, float, int], None],
        gaps: GapFiller,
        sequence: SequenceTracker,
        window_from: Callable[[str, float], float],
        log: Any,
        metrics: Registry,
        budget: WeightBudget | None = None,
        adopt: Callable[[str], None] = lambda symbol: None,
    ) -> None:
        self.rest = rest
        self.adopt = adopt
        self.budget = budget or WeightBudget(log=log)
        self.symbols, self.proven_until, self.stream_state = symbols, proven_until, stream_state
        self.last_id, self.proved, self.window_from = last_id, proved, window_from
        self.gap_filler, self.sequence = gaps, sequence
        self.log = log
        self._looked: dict[str, tuple[bool, int]] = {}  # behind at the last look, and its state then
        self._unprovable: dict[str, tuple[bool, int]] = {}  # asked, could not say; until the state changes
        self.asked = self.proofs = self.gaps = 0
        metrics.counter("quiet_proofs", "Symbols the ticker proved after a restart or a reconnect.",
                        read=lambda: self.proofs)  # fmt: skip
        metrics.counter("quiet_probe_requests", "Ticker requests made to prove quiet symbols.",
                        read=lambda: self.asked)  # fmt: skip

    async def run(self) -> None:
        while True:
            await asyncio.sleep(PROBE_EVERY_S)
            try:
                await self.look(time.time())
            except (OSError, ValueError) as exc:
                self.log.warning("collector.quiet_probe_failed", error=str(exc), retry_in_s=PROBE_EVERY_S)

    def behind(self, now_s: float) -> dict[str, tuple[bool, int]]:
        """Symbols whose proof is behind, with their stream's (connected, outages) now."""
        out = {}
        for symbol in self.symbols():
            proven = self.proven_until(symbol)
            if proven is None or proven < now_s - BEHIND_S:
                state = self.stream_state(symbol)
                if state[0] and self._unprovable.get(symbol) != state:
                    out[symbol] = state
        return out

    async def look(self, now_s: float) -> None:
        behind = self.behind(now_s)
        steady = {s: st for s, st in behind.items() if self._looked.get(s) == st}
        self._looked = behind
        if not steady:
            return
        self.asked += 1
        asked = sorted(steady) if len(steady) <= 100 else None
        await self.budget.take(ticker_weight(None if asked is None else len(asked)), "ticker/24hr")
        rows = await asyncio.to_thread(ticker_ids, self.rest, asked)
        answered_mono = time.monotonic()
        found = {r["symbol"]: r for r in rows}
        counts = {"proven": 0, "gaps": 0, "unprovable": 0}
        for symbol, state in steady.items():
            row, ours = found.get(symbol), self.last_id(symbol)
            if self.stream_state(symbol) != state:
                continue  # reconnected meanwhile: the next look
            if row is None or (row["lastId"] < 0 and ours is not None):
                self._unprovable[symbol] = state
                counts["unprovable"] += 1
                continue
            self.adopt(symbol)  # its markers start, if they had not (a symbol never seen trading)
            if ours is None:  # nothing since its subscription, or the stream would have brought it
                if row["lastId"] >= 0:
                    self.sequence.remember_reported(symbol, row["lastId"])
                self.proved(symbol, row["closeTime"] / 1000, answered_mono, state[1])
                counts["proven"] += 1
            elif row["lastId"] <= ours:
                self.proved(symbol, row["closeTime"] / 1000, answered_mono, state[1])
                counts["proven"] += 1
            else:
                close_s = row["closeTime"] / 1000
                counts["gaps"] += 1
                gap = OpenGap(
                    symbol=symbol,
                    first_missing=ours + 1,
                    last_missing=row["lastId"],
                    next_id=ours + 1,
                    detected_at_ns=time.time_ns(),
                    window_start_s=self.window_from(symbol, close_s),
                    window_end_s=close_s,
                )
                self.gap_filler.register(gap)
                self.sequence.remember(symbol, row["lastId"])  # the stream need not report them again
        self.proofs += counts["proven"]
        self.gaps += counts["gaps"]
        self.log.info("collector.quiet_symbols_checked", asked=len(steady), **counts)
