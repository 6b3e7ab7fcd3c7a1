"""The symbols' streams, spread over as many connections as Binance's limits require.

    symbols ─▶ StreamPool: slots of at most `streams_per_connection` streams (and a URL under
        MAX_URL_CHARS) ─▶ per slot a TradeStream (its own reconnects and rotations) and its
        Subscriptions (listings and delistings as SUBSCRIBE / UNSUBSCRIBE)
    every slot's connection attempts ─▶ one AttemptLimit (Binance's 300 per 5 minutes per IP)

A symbol stays on its slot for the life of the process, so its trades always come from one
connection and the core's per-symbol continuity (ids, markers' proof of a connected stream)
holds. A new symbol goes to the first slot with room, or to a new slot; a slot whose symbols are
all gone is closed. Each slot's URL is rebuilt when its symbols change, so a reconnect or a
rotation opens a connection that names every stream wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from collector.binance.stream import AttemptLimit, Chunk, OnChunk, TradeStream
from collector.binance.subscriptions import Subscriptions
from collector.config import Settings
from collector.counters import Registry

__all__ = ["MAX_URL_CHARS", "StreamPool"]

# Binance answers a /stream?streams=... URL of more than about 8,000 characters with an error.
MAX_URL_CHARS = 7_500


@dataclass(eq=False)
class _Slot:
    number: int
    stream: TradeStream
    subscriptions: Subscriptions
    symbols: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class StreamPool:
    """Every configured symbol's trade stream, on one connection or several."""

    def __init__(self, settings: Settings, *, log: Any, metrics: Registry | None = None) -> None:
        self.settings = settings
        self.log = log
        self.per_connection = settings.streams_per_connection
        self.limit = AttemptLimit(250, log=log)
        self.slots: list[_Slot] = []
        self.where: dict[str, _Slot] = {}
        self.reader_for: Callable[[TradeStream], OnChunk] = lambda stream: lambda frames, stamp: None
        self.handover_ready: Callable[[list[Chunk]], bool] = lambda held: True
        # Told the symbols whose stream is certainly on (a connection's URL, a confirmed SUBSCRIBE).
        self.confirmed: Callable[[list[str]], None] = lambda symbols: None
        self._created = 0
        self._closed_counts = {"connections": 0, "rotations": 0, "pauses": 0, "requests": 0, "failures": 0}
        self._held_back = False
        self._holding: set[str] = set()  # why reading is held back: the landing's queue, a full disk
        self._running = False
        self._failure: asyncio.Future[None] | None = None
        if metrics is not None:
            self._register(metrics)

    # ---- which symbols, where ---------------------------------------------------------------

    @property
    def symbols(self) -> set[str]:
        return set(self.where)

    def add(self, symbols: Iterable[str]) -> list[str]:
        """Give each new symbol a slot; the symbols that were new."""
        added, touched = [], []
        for symbol in symbols:
            if symbol in self.where:
                continue
            slot = next((s for s in self.slots if self._has_room(s, symbol)), None) or self._new_slot()
            slot.symbols.add(symbol)
            self.where[symbol] = slot
            added.append(symbol)
            if slot not in touched:
                touched.append(slot)
        for slot in touched:
            self._update(slot)
        return added

    def remove(self, symbols: Iterable[str]) -> list[str]:
        """Stop each symbol's stream (UNSUBSCRIBE, or close a slot left empty); those removed."""
        removed, touched = [], []
        for symbol in symbols:
            slot = self.where.pop(symbol, None)
            if slot is None:
                continue
            slot.symbols.discard(symbol)
            removed.append(symbol)
            if slot not in touched:
                touched.append(slot)
        for slot in touched:
            if slot.symbols:
                self._update(slot)
            else:
                self._close_slot(slot)
        return removed

    def _has_room(self, slot: _Slot, symbol: str) -> bool:
        if len(slot.symbols) >= self.per_connection:
            return False
        return len(self._url(slot.symbols | {symbol})) <= MAX_URL_CHARS

    def _url(self, symbols: set[str]) -> str:
        return self.settings.stream_url(tuple(sorted(symbols)))

    def _new_slot(self) -> _Slot:
        s = self.settings
        self._created += 1
        stream = TradeStream("", lambda frames, stamp: None, log=self.log,
                             initial_delay_s=s.reconnect_initial_delay_s, max_delay_s=s.reconnect_max_delay_s,
                             max_connection_age_s=s.connection_max_age_s, silence_s=s.stream_silence_s,
                             limit=self.limit)  # fmt: skip
        stream.on_chunk = self.reader_for(stream)
        stream.handover_ready = self.handover_ready
        stream.hold_back(self._held_back)
        slot = _Slot(self._created, stream, Subscriptions(stream, log=self.log))
        slot.subscriptions.on_confirmed = lambda names: self._confirmed(slot, names)
        self.slots.append(slot)
        return slot

    def _confirmed(self, slot: _Slot, names: set[str]) -> None:
        symbols = sorted(s for name in names if (s := name.partition("@")[0].upper()) in slot.symbols)
        if symbols:
            self.confirmed(symbols)

    def _update(self, slot: _Slot) -> None:
        url = self._url(slot.symbols)
        slot.stream.url = slot.stream.connector.url = url  # what its next connection opens with
        slot.subscriptions.want({f"{symbol.lower()}@trade" for symbol in slot.symbols})
        if self._running and slot.task is None:
            self._start(slot)

    def _close_slot(self, slot: _Slot) -> None:
        self.slots.remove(slot)
        counts = self._closed_counts
        counts["connections"] += slot.stream.connections
        counts["rotations"] += slot.stream.rotations
        counts["pauses"] += slot.stream.pauses
        counts["requests"] += slot.subscriptions.requests
        counts["failures"] += slot.subscriptions.failures
        if slot.task is not None:
            slot.task.cancel()
        self.log.info("collector.connection_slot_closed", slot=slot.number, note="no symbol left on it")

    # ---- running ----------------------------------------------------------------------------

    def bind(
        self, reader_for: Callable[[TradeStream], OnChunk], handover_ready: Callable[[list[Chunk]], bool]
    ) -> None:
        """Where each slot's reads go (the capture, told which stream read them)."""
        self.reader_for, self.handover_ready = reader_for, handover_ready
        for slot in self.slots:
            slot.stream.on_chunk, slot.stream.handover_ready = reader_for(slot.stream), handover_ready

    async def run(self) -> None:
        """Run every slot until cancelled; raises what one of them raises (ExchangeRefused)."""
        self._failure = asyncio.get_running_loop().create_future()
        self._running = True
        try:
            for slot in self.slots:
                self._start(slot)
            await self._failure
        finally:
            self._running = False
            tasks = [slot.task for slot in self.slots if slot.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, slot: _Slot) -> None:
        slot.task = asyncio.create_task(self._run_slot(slot), name=f"stream-{slot.number}")

    async def _run_slot(self, slot: _Slot) -> None:
        subscriptions = asyncio.create_task(slot.subscriptions.run(), name=f"subscriptions-{slot.number}")
        try:
            await slot.stream.run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if self._failure is not None and not self._failure.done():
                self._failure.set_exception(exc)
        finally:
            subscriptions.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await subscriptions

    # ---- what the other stages ask ------------------------------------------------------------

    def state_of(self, symbol: str) -> tuple[bool, int]:
        """(connected, outages so far) of the connection carrying `symbol`."""
        slot = self.where.get(symbol)
        if slot is None:
            return False, -1  # not streamed: nothing after its last trade is proven
        return slot.stream.connected.is_set(), slot.stream.outages

    @property
    def all_connected(self) -> bool:
        return bool(self.slots) and all(s.stream.connected.is_set() for s in self.slots)

    async def wait_connected(self) -> None:
        """Until every slot's connection is up (one slot's event at a time: no task per wait)."""
        while not self.all_connected:
            down = next((s for s in self.slots if not s.stream.connected.is_set()), None)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # slots come and go: look again each second
                    await (down.stream.connected.wait() if down else asyncio.sleep(1.0))

    @property
    def disconnected_since(self) -> float | None:
        """Since when a connection has been down (the longest-down one), None while all are up."""
        since = [s.stream.disconnected_since for s in self.slots if s.stream.disconnected_since is not None]
        return min(since) if since else None

    def queued_bytes(self) -> int:
        """Frames read from the sockets and not yet handed to the capture, in bytes."""
        return sum(slot.stream.queued_bytes for slot in self.slots)

    def hold_back(self, hold: bool, reason: str = "landing") -> None:
        """Stop reading every connection while any reason holds; read again once none does."""
        if hold:
            self._holding.add(reason)
        else:
            self._holding.discard(reason)
        self._held_back = bool(self._holding)
        for slot in self.slots:
            slot.stream.hold_back(self._held_back)

    def describe(self) -> str:
        if len(self.slots) == 1 and len(self.where) <= 5:
            return self.slots[0].stream.url
        return f"{self.settings.ws_url} ({len(self.where)} streams on {len(self.slots)} connections)"

    def _register(self, metrics: Registry) -> None:
        closed = self._closed_counts

        def total(kind: str, of: Callable[[_Slot], int]) -> Callable[[], int]:
            return lambda: closed[kind] + sum(of(s) for s in self.slots)

        metrics.gauge(
            "connected", "1 while every WebSocket connection is connected.", lambda: int(self.all_connected)
        )
        metrics.gauge(
            "stream_connections",
            "WebSocket connections connected now.",
            lambda: sum(s.stream.connected.is_set() for s in self.slots),
        )
        metrics.gauge("streams", "Symbols streamed now.", lambda: len(self.where))
        metrics.counter(
            "connections",
            "WebSocket connections opened.",
            read=total("connections", lambda s: s.stream.connections),
        )
        metrics.counter(
            "connection_attempts", "Connection attempts, opened or not.", read=lambda: self.limit.total
        )
        metrics.counter(
            "reconnects",
            "Connection attempts beyond each connection's first.",
            read=lambda: max(0, self.limit.total - self._created),
        )
        metrics.counter(
            "rotations",
            "Planned make-before-break handovers.",
            read=total("rotations", lambda s: s.stream.rotations),
        )
        metrics.counter(
            "stream_pauses",
            "Times reading stopped because landing fell behind.",
            read=total("pauses", lambda s: s.stream.pauses),
        )
        metrics.counter(
            "subscription_requests",
            "SUBSCRIBE, UNSUBSCRIBE and LIST_SUBSCRIPTIONS sent.",
            read=total("requests", lambda s: s.subscriptions.requests),
        )
        metrics.counter(
            "subscription_failures",
            "Subscription changes that ended in a rotation.",
            read=total("failures", lambda s: s.subscriptions.failures),
        )
