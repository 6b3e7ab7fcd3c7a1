"""Symbols streamed but never seen trading: when each one's subscription was confirmed, kept on
disk, and after a restart their first trade since then, asked of the REST API.

A symbol the collector has seen trade has a last id (state.json, the spool, the lake): after a
downtime its next trade reveals the gap and the backfill fills it. One subscribed that has not
traded has none, and its trades while the collector was down would be taken for history from
before it started (a listing confirmed minutes before a crash, a quiet symbol). So:

    subscription confirmed (collector.binance.subscriptions) ─▶ `confirmed`: the time kept in
        `spool/subscribed.json` for each symbol with no last id yet
    while the collector runs, the quiet proof asks the ticker for it like any quiet symbol: its
        `lastId` becomes the cursor, and its markers start at the confirmation's minute
        (collector.gaps.quiet_proof)
    at start, each symbol on record still without a last id ─▶ aggTrades from the confirmation
        (weight 4, from the shared budget) ─▶ its first trade since: the id before it becomes
        its cursor, so its trades since are a gap like any other (the stream's next trade or the
        ticker shows it; the backfill fills it). None since: it stays on record.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from collector.binance.rest import AGG_TRADES_WEIGHT, BinanceRest
from collector.binance.weight import WeightBudget
from collector.capture.sequence import SequenceTracker
from collector.exceptions import NewerFormat, SpoolError
from collector.files import write_atomically
from collector.formats import stamp, version_in

__all__ = ["Unseen"]

LOOKUPS_AT_ONCE = 8
ATTEMPTS = 3  # per symbol at start, RETRY_S apart, before its trades since are given up on (logged)
RETRY_S = 2.0


class Unseen:
    """Subscriptions confirmed, and the symbols among them without a last id."""

    def __init__(
        self, path: Path, *, sequence: SequenceTracker, rest: BinanceRest, budget: WeightBudget, log: Any
    ) -> None:
        self.path, self.sequence, self.rest, self.budget, self.log = path, sequence, rest, budget, log
        self.confirmed_at: dict[str, float] = {}  # this run's first confirmation of each symbol (s)
        self.on_record = self._load()  # the first confirmation of symbols without a last id (s)
        self._saving: asyncio.Task[None] | None = None
        self._dirty = False

    def _load(self) -> dict[str, float]:
        try:
            saved = json.loads(self.path.read_text()) if self.path.exists() else {}
            version_in(saved, "subscribed", self.path)
            return {str(s): float(t) for s, t in saved["confirmed_at"].items()} if saved else {}
        except NewerFormat:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SpoolError) as exc:
            self.log.error("collector.subscribed_unreadable", path=str(self.path), error=str(exc),
                           fix="symbols never seen trading before the restart get no look-up of their "
                           "trades while it was down; remove the file to silence this")  # fmt: skip
            return {}

    # ---- while running ----------------------------------------------------------------------

    def confirmed(self, symbols: list[str]) -> None:
        """Their streams are certainly on (event loop): noted, and kept on disk for those without
        a last id."""
        now = time.time()
        for symbol in symbols:
            self.confirmed_at.setdefault(symbol, now)
            if self.sequence.last_id(symbol) is None and symbol not in self.on_record:
                self.on_record[symbol] = now
                self._dirty = True
        if self._dirty and (self._saving is None or self._saving.done()):
            self._saving = asyncio.get_running_loop().create_task(self._save_soon())

    def first_minute(self, symbol: str) -> int:
        """The minute its stream was first confirmed in this run: where its markers may start."""
        return int(self.confirmed_at.get(symbol, time.time()) // 60)

    async def _save_soon(self) -> None:
        while self._dirty:
            self._dirty = False
            await asyncio.to_thread(self.save)

    def save(self) -> None:
        """The record, less the symbols that have a last id now (blocking)."""
        kept = {s: t for s, t in list(self.on_record.items()) if self.sequence.last_id(s) is None}
        record = {**stamp("subscribed"), "confirmed_at": kept}
        write_atomically(self.path, json.dumps(record, sort_keys=True).encode())

    # ---- at start ---------------------------------------------------------------------------

    async def after_restart(self) -> None:
        """Before the stream starts: each symbol on record still without a last id gets, as its
        cursor, the id before its first trade since its subscription was confirmed."""
        waiting = [s for s in sorted(self.on_record) if self.sequence.last_id(s) is None]
        gate = asyncio.Semaphore(LOOKUPS_AT_ONCE)
        lost: list[str] = []

        async def look(symbol: str) -> None:
            async with gate:
                since_ms = int(self.on_record[symbol] * 1000)
                for attempt in range(1, ATTEMPTS + 1):
                    await self.budget.take(AGG_TRADES_WEIGHT, "aggTrades")
                    try:
                        first = await asyncio.to_thread(self.rest.first_trade_id_from, symbol, since_ms)
                        break
                    except (OSError, ValueError) as exc:
                        if attempt == ATTEMPTS:
                            lost.append(symbol)
                            self.log.error("collector.unseen_lookup_failed", symbol=symbol, error=str(exc))
                            return
                        await asyncio.sleep(RETRY_S * attempt)
                if first is not None:
                    self.sequence.remember(symbol, first - 1)
                self.log.info("collector.unseen_since", symbol=symbol, confirmed_ms=since_ms, first_id=first)

        await asyncio.gather(*(look(symbol) for symbol in waiting))
        if lost:
            self.log.error("collector.unseen_trades_not_fetched", symbols=",".join(lost), count=len(lost),
                           detail="never seen trading before the restart, and the REST API did not say "
                           "where their trades since began: trades before their next one are not fetched",
                           fix="COLLECTOR_REST_URL must reach Binance's aggTrades")  # fmt: skip
        await asyncio.to_thread(self.save)
