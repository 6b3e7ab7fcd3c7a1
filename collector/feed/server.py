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
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from collector.feed.archive import ArchiveFeed
from collector.feed.rest import RestApi
from collector.feed.simulated import Schedule
from collector.feed.subscriptions import Control, CountingConnection, Limits, Session
from collector.feed.tapes import GeneratedTape, MarketTape, ReplayTape, TapeTrade

__all__ = ["Faults", "FeedServer"]


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
    collector.feed.subscriptions), counted in `subscribe_requests`, `subscription_errors`,
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
        self.symbol_set = frozenset(tape.symbols)
        self.control = Control(limits)
        self.faults = faults or Faults()
        # live: keep producing with nobody connected, as an exchange does (downtime makes a hole)
        self.live = live
        self.statuses = statuses or {}  # exchangeInfo status per symbol (default TRADING)
        self.archive = archive  # the trade archive (data.binance.vision's paths), if served
        self.market = tape.market if isinstance(tape, MarketTape) else None
        self.history: dict[str, list[TapeTrade]] = {}
        self.rest = RestApi(self)  # /api/ and /data/: the REST API and the archive
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
        self._refuse_until = 0.0  # `cut`: stream handshakes answered 503 until then (monotonic)

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

    def cut(self, for_s: float) -> None:
        """An outage on demand (tests call it on the feed's loop): every connection dropped with
        no close frame, and new ones refused (HTTP 503) for `for_s`; the REST API stays up."""
        self._refuse_until = time.monotonic() + for_s
        for client in list(self.clients):
            client.ws.transport.abort()

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

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/api/"):
            return self.rest.answer(request)
        if request.path.startswith("/data/"):
            return self.rest.archive_file(request)
        if time.monotonic() < self._refuse_until:
            return Response(503, "Service Unavailable", Headers(), b"cut off for a while; try again")
        refused = self.control.refuse_handshake(_ip(connection), request.path)
        if refused is not None:
            return refused
        parsed = parse_stream_path(request.path, self.tape, self.symbol_set)
        if isinstance(parsed, str):
            body = json.dumps({"code": -1121, "msg": parsed}).encode()
            return Response(400, "Bad Request", Headers([("Content-Type", "application/json")]), body)
        return self.control.refuse_streams(len(parsed[0]))

    async def _handle(self, ws: ServerConnection) -> None:
        parsed = parse_stream_path(ws.request.path if ws.request else "", self.tape, self.symbol_set)
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


def _ip(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else "unknown"


def parse_stream_path(
    path: str, tape: GeneratedTape | ReplayTape | MarketTape, served: frozenset[str]
) -> tuple[tuple[str, ...], bool, bool] | str:
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
        if kind != "trade" or symbol.upper() not in served:
            shown = ", ".join(tape.symbols[:20]) + (", ..." if len(tape.symbols) > 20 else "")
            return f"stream {name!r} is not served; this feed has {shown} @trade"
        symbols[symbol.upper()] = None
    if micro and isinstance(tape, ReplayTape):
        return "a replay serves the recording's own millisecond frames; drop timeUnit"
    return tuple(symbols), combined, micro
