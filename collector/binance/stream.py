"""The WebSocket edge: connect, read, answer pings, reconnect, and rotate connections without a gap.

Frames go to `on_chunk(frames, received_at_ns)` unparsed, a read at a time: every complete
frame that one read of the socket brought, with that read's receive stamp. All meaning is in
the core. Under load a read carries hundreds of frames, and everything downstream (decode,
journal, batch) works per chunk rather than per frame; at 50 trades/s a chunk is one frame.

The client is picows (a Cython WebSocket client): on this project's benchmark it receives
about 10x as many frames per second as the websockets library's sans-I/O core driven by a
plain asyncio Protocol, and about 80x its asyncio client (bench/transports.py; the README's
performance section has the figures). Pings are answered by picows itself; an idle connection
is pinged, and closed if the pong does not come.

Reconnect policy (unplanned drops): jittered exponential backoff (`Backoff`) from
`initial_delay_s` up to `max_delay_s`, reset only once a connection has delivered frames for
`healthy_after_s` (a server that accepts and hangs up at once is backed off from like one that
refuses), and never more than `max_attempts_per_5min` connection attempts in any five minutes
(Binance allows 300 per IP). Every attempt is counted. After a few failures in a row, one line
(`collector.cannot_connect`) names the host, the cause (DNS, refused, TLS, HTTP status, timeout)
and what to check; the stream keeps retrying, as a daemon must. What retrying cannot fix (HTTP
451/403, a rejected URL, a certificate that fails verification) raises ExchangeRefused with a
message saying what to change.

Planned rotations (make before break): on `serverShutdown`, when a connection nears Binance's
24-hour limit (`max_connection_age_s`), or when it has been silent for `silence_s`, a second
connection is opened while the first keeps delivering. The new connection's frames are held
back until `handover_ready(held)` says the old one has caught up with them (or `handover_s`
passes, also when the new one has brought nothing: quiet symbols); then the old connection is
closed and the held frames are delivered. The core drops the overlap by trade id, so a
rotation costs no trade at all.

Delivery: `on_chunk` is called synchronously, straight from the read, whenever nothing is
waiting ahead of the chunk (the usual case: no queue, no task switch per read). Chunks wait in
an in-memory queue only while a rotation is under way or earlier ones are still queued, and
are then delivered in order by the stream's task. An exception from `on_chunk` ends `run()`.

Flow control: past `max_queued_frames` queued, or while the consumer has asked to `hold_back`
(its own queue is full), the sockets stop being read (the kernel's buffer and TCP push back on
the sender) until it has caught up, so a slow disk cannot make memory grow without bound. A
read takes at most `MAX_READ_BYTES` from the socket, so what one read brings is bounded too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import picows
from picows.url import WSInvalidURL

from collector.counters import Registry
from collector.exceptions import ConnectionLost, ExchangeRefused, is_retryable

__all__ = ["MAX_READ_BYTES", "AttemptLimit", "Backoff", "Chunk", "OnChunk", "TradeStream", "streams_in"]

Chunk = tuple[list[bytes], int]  # the frames of one read, and when that read happened (ns)
OnChunk = Callable[[list[bytes], int], None]
HandoverReady = Callable[[list[Chunk]], bool]
ListenerFor = Callable[["_Connection"], Any]

_TEXT = picows.WSMsgType.TEXT
_DATA = (_TEXT, picows.WSMsgType.BINARY)
_CONTINUATION = picows.WSMsgType.CONTINUATION
_CLOSE = picows.WSMsgType.CLOSE
_ANSWER_STARTS = (b'{"result"', b'{"error"', b'{"id"')  # Binance's answers to SUBSCRIBE and the like
MAX_FRAME_BYTES = 2**20  # a trade frame is about 200 bytes; a megabyte is a broken peer
# Failures in a row before `collector.cannot_connect` explains them (then every tenth again).
EXPLAIN_AFTER_FAILURES = 3
# The most one read takes from the socket. picows doubles its read buffer whenever a read fills
# it, so on a link faster than the collector (plain ws:// on loopback) a read grew to about
# 4.5 MB, 23,000 frames, whose Python objects on their way through the core (about 25 MB) were
# most of the collector's memory in a burst: peak RSS 96-245 MB against 82-84 MB with reads
# capped here (bench/throughput.py, shape spaced-ws). Over TLS a read was already this size.
MAX_READ_BYTES = 256 * 1024


class Backoff:
    """Delays between connection attempts: exponential, capped, jittered, reset by hand.

    The n-th delay in a row is half of min(max_s, initial_s * 2**n) plus a random part of up
    to the other half ("equal jitter"): spread out, so many clients do not retry in step, yet
    never much shorter than the exponential step, so a failing peer is not hammered."""

    def __init__(self, initial_s: float, max_s: float, rng: Callable[[], float] = random.random) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.rng = rng
        self.failures = 0  # in a row, since the last reset

    def next_delay_s(self) -> float:
        cap = min(self.max_s, self.initial_s * 2**self.failures)
        self.failures += 1
        return float(cap / 2 + self.rng() * cap / 2)

    def reset(self) -> None:
        self.failures = 0


@dataclass(eq=False)
class _Connection:
    number: int
    opened_mono: float
    last_frame_mono: float
    transport: Any = None  # picows.WSTransport once connected
    listener: Any = None  # our _Listener
    frames: int = 0
    ended: bool = False
    paused: bool = False
    close_code: int | None = None
    close_reason: str = ""
    held: list[Chunk] = field(default_factory=list)
    url: str = ""  # what it was opened with (its streams, for the subscriptions)
    streams: set[str] = field(default_factory=set)  # subscribed: the URL's, then the acknowledged changes
    # Requests sent on it (SUBSCRIBE, ...) whose answers have not come: id -> the future to answer.
    answers: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)


class _Listener(picows.WSListener):
    """Collects the frames of one read and hands them to the stream as one chunk."""

    def __init__(self, stream: TradeStream, conn: _Connection) -> None:
        self._stream = stream
        self._conn = conn
        self._frames: list[bytes] = []
        self._stamp = 0
        self._partial: bytearray | None = None  # a fragmented message being reassembled
        self._loop = asyncio.get_running_loop()

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        if frame.msg_type is _TEXT and frame.fin and self._partial is None:  # the usual frame
            payload = frame.get_payload_as_bytes()
        else:
            kind = frame.msg_type
            if kind in _DATA or kind is _CONTINUATION:
                payload = self._reassemble(kind, frame)
                if payload is None:
                    return
            else:
                if kind is _CLOSE:
                    message = frame.get_close_message() or b""  # a close frame may carry no reason
                    self._conn.close_code = int(frame.get_close_code())
                    self._conn.close_reason = message.decode("utf-8", "replace")[:200]
                    transport.send_close(frame.get_close_code(), message)
                    transport.disconnect()
                return
        if self._conn.answers and payload.startswith(_ANSWER_STARTS) and self._answered(payload):
            return
        frames = self._frames
        if not frames:
            self._stamp = time.time_ns()
            if not frame.last_in_buffer:
                # The read's last frame may be a ping, which picows answers without telling us:
                # this delivers the chunk once the read's frames are all parsed, in any case.
                self._loop.call_soon(self._deliver)
        frames.append(payload)
        if frame.last_in_buffer:
            self._deliver()

    def _answered(self, payload: bytes) -> bool:
        """An answer to a request of ours (only looked for while one is awaited): its future set."""
        try:
            doc = json.loads(payload)
            future = self._conn.answers.pop(doc["id"], None) if isinstance(doc, dict) else None
        except (ValueError, KeyError, TypeError):
            return False
        if future is None:
            return False
        if not future.done():
            future.set_result(doc)
        return True

    def _reassemble(self, kind: Any, frame: Any) -> bytes | None:
        if kind is not _CONTINUATION:
            self._partial = bytearray()  # a new message: an unfinished one is abandoned by the peer
        elif self._partial is None:
            return None  # a continuation of nothing: not a message
        self._partial += frame.get_payload_as_memoryview()
        if len(self._partial) > MAX_FRAME_BYTES:
            self._partial = None
            self._stream.log.warning("collector.message_too_large", limit=MAX_FRAME_BYTES)
            return None
        if not frame.fin:
            return None
        payload, self._partial = bytes(self._partial), None
        return payload

    def _deliver(self) -> None:
        if self._frames:
            frames, self._frames = self._frames, []
            self._stream._enqueue(self._conn, frames, self._stamp)

    def on_ws_disconnected(self, transport: Any) -> None:
        answers, self._conn.answers = self._conn.answers, {}
        for future in answers.values():  # a request on a closed connection gets no answer
            if not future.done():
                future.set_exception(ConnectionLost("the connection closed before answering"))
        self._deliver()
        self._stream._enqueue(self._conn, None, 0)


class _ReadCap(asyncio.BufferedProtocol):
    """Between a connection's transport and picows: each read fills at most `cap` bytes of
    picows' read buffer, so a read, and the chunk it becomes, stays bounded; what is left waits
    in the socket for the next read."""

    def __init__(self, inner: Any, cap: int) -> None:
        self._inner, self._cap = inner, cap

    def get_buffer(self, sizehint: int) -> Any:
        buffer = self._inner.get_buffer(sizehint)
        return buffer[: self._cap] if len(buffer) > self._cap else buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._inner.buffer_updated(nbytes)

    def connection_made(self, transport: Any) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


def _cap_reads(transport: Any, cap: int) -> None:
    """Put a `_ReadCap` between the connection's socket transport and picows' protocol."""
    underlying = transport.underlying_transport
    underlying.set_protocol(_ReadCap(underlying.get_protocol(), cap))


class AttemptLimit:
    """Binance's 300 connection attempts per 5 minutes per IP, shared by every connection of the
    process (the limit held here is lower, to leave room for a restart's attempts)."""

    WINDOW_S = 300.0

    def __init__(self, per_5min: int = 250, *, log: Any = None) -> None:
        self.per_5min = per_5min
        self.log = log
        self.total = 0  # every attempt, opened or not
        self._times: collections.deque[float] = collections.deque()

    async def take(self) -> None:
        """Wait until one more attempt keeps inside the limit, and count it."""
        while True:
            now = time.monotonic()
            while self._times and now - self._times[0] > self.WINDOW_S:
                self._times.popleft()
            if len(self._times) < self.per_5min:
                break
            wait_s = self.WINDOW_S - (now - self._times[0]) + 0.01
            if self.log is not None:
                self.log.warning("collector.connection_rate_limited", wait_s=round(wait_s, 1))
            await asyncio.sleep(wait_s)
        self._times.append(time.monotonic())
        self.total += 1


class Connector:
    """Opens connections: the attempt limit, the backoff between failures, and every attempt counted.

    One per connection slot; several share one `AttemptLimit`, Binance's per-IP attempt limit."""

    def __init__(
        self,
        url: str,
        *,
        log: Any,
        initial_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        open_timeout_s: float = 10.0,
        max_attempts_per_5min: int = 250,
        ping_idle_s: float = 20.0,
        healthy_after_s: float = 10.0,
        limit: AttemptLimit | None = None,
    ) -> None:
        self.url = url  # the next connection's; the pool changes it as the streams change
        self.log = log
        self.open_timeout_s = open_timeout_s
        self.limit = limit or AttemptLimit(max_attempts_per_5min, log=log)
        self.ping_idle_s = ping_idle_s
        self.healthy_after_s = healthy_after_s
        self.backoff = Backoff(initial_delay_s, max_delay_s)
        self.connections = 0  # opened
        self.attempts = 0  # every connection attempt of this slot, opened or not
        self._owed_delay = False  # the last connection ended before it proved healthy

    def register(self, metrics: Registry) -> None:
        metrics.counter("connections", "WebSocket connections opened.", read=lambda: self.connections)
        metrics.counter(
            "connection_attempts", "Connection attempts, opened or not.", read=lambda: self.attempts
        )
        metrics.counter(
            "reconnects", "Connection attempts after the first.", read=lambda: max(0, self.attempts - 1)
        )

    def ended(self, conn: _Connection) -> None:
        """A connection ended: one that delivered for a while resets the backoff; one that did
        not is backed off from like a refusal (a server that accepts and hangs up at once)."""
        if conn.frames and time.monotonic() - conn.opened_mono >= self.healthy_after_s:
            self.backoff.reset()
        else:
            self._owed_delay = True

    async def connect(self, listener_for: ListenerFor) -> _Connection:
        if self._owed_delay:
            self._owed_delay = False
            delay = self.backoff.next_delay_s()
            self.log.warning(
                "collector.reconnecting",
                attempt=self.attempts + 1,
                delay_s=round(delay, 3),
                error=f"the last connection ended before it had delivered for {self.healthy_after_s:g}s",
            )
            await asyncio.sleep(delay)
        while True:
            try:
                conn = await self.open(listener_for)
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                delay = self.backoff.next_delay_s()
                self.log.warning(
                    "collector.reconnecting", attempt=self.attempts, delay_s=round(delay, 3), error=str(exc)
                )
                failures = self.backoff.failures
                if failures >= EXPLAIN_AFTER_FAILURES and (failures - EXPLAIN_AFTER_FAILURES) % 10 == 0:
                    self._explain(exc, failures)
                await asyncio.sleep(delay)
                continue
            return conn

    def _explain(self, exc: BaseException, failures: int) -> None:
        """One line a person can act on, after a few failures in a row."""
        cause, check = _diagnose(exc)
        self.log.error(
            "collector.cannot_connect",
            host=urlsplit(self.url).netloc,
            failures=failures,
            cause=cause,
            check=check,
            note="still retrying; `collector demo` runs everything offline against a local feed",
        )

    async def open(self, listener_for: ListenerFor) -> _Connection:
        await self.limit.take()
        self.attempts += 1
        now = time.monotonic()
        conn = _Connection(self.connections + 1, now, now, url=self.url, streams=streams_in(self.url))
        try:
            async with asyncio.timeout(self.open_timeout_s):
                transport, listener = await picows.ws_connect(
                    lambda: listener_for(conn),
                    self.url,
                    websocket_handshake_timeout=self.open_timeout_s,
                    enable_auto_ping=True,  # a silent, half-open TCP connection is found and closed
                    auto_ping_idle_timeout=self.ping_idle_s,
                    auto_ping_reply_timeout=self.ping_idle_s,
                    max_frame_size=MAX_FRAME_BYTES,
                    extra_headers={"User-Agent": "trade-lake-collector"},
                    logger_name="collector",
                )
        except picows.WSInvalidStatusError as exc:
            raise _refusal_or_retry(int(exc.response.status) if exc.response else 0, self.url) from exc
        except WSInvalidURL as exc:
            raise ExchangeRefused(f"{self.url} is not a valid WebSocket URL; fix COLLECTOR_WS_URL") from exc
        except ssl.SSLCertVerificationError as exc:
            raise ExchangeRefused(
                f"TLS certificate of {self.url} failed verification ({exc.verify_message}); check the "
                "host name in COLLECTOR_WS_URL and the machine's CA certificates and clock"
            ) from exc
        except (OSError, TimeoutError, picows.WSError) as exc:
            raise ConnectionLost(f"cannot connect to {self.url}: {exc!r}") from exc
        _cap_reads(transport, MAX_READ_BYTES)
        self.connections += 1
        conn.transport, conn.listener = transport, listener
        self.log.info("collector.connected", url=self.url, connection=conn.number)
        return conn


class _Backlog:
    """Reads taken from the sockets and not yet dispatched (a None frame list is a connection's
    end), and the flow control they drive: reading stops past `max_frames` queued or while the
    consumer holds back, and resumes once half of them are gone."""

    def __init__(self, max_frames: int) -> None:
        self.queue: asyncio.Queue[tuple[_Connection, list[bytes] | None, int]] = asyncio.Queue()
        self.frames = 0
        self.bytes = 0  # the frames' own bytes: memory the consumer's budget counts (its InFlight)
        self.max_frames = max_frames
        self.held_back = False  # the consumer asked for no more chunks for now
        self.paused = False
        self.pauses = 0  # times reading stopped because the consumer fell behind

    def should_pause(self) -> bool | None:
        """True or False when reading must stop or go on; None between the marks (stay as is)."""
        if self.held_back or self.frames > self.max_frames:
            paused = True
        elif self.frames <= self.max_frames // 2:
            paused = False
        else:
            return None
        if paused and not self.paused:
            self.pauses += 1
        self.paused = paused
        return paused


class TradeStream:
    """One logical subscription, kept open across drops and rotations.

    `connect` takes the `Connector`'s options (delays, timeouts, the attempt limit) when no
    `connector` is given.
    """

    def __init__(
        self,
        url: str,
        on_chunk: OnChunk,
        *,
        log: Any,
        # Binance closes a connection at 24 hours; rotating half an hour early leaves room.
        max_connection_age_s: float = 23.5 * 3600,
        silence_s: float = 60.0,
        handover_s: float = 10.0,
        handover_ready: HandoverReady | None = None,
        max_queued_frames: int = 20_000,
        metrics: Registry | None = None,
        connector: Connector | None = None,
        **connect: Any,
    ) -> None:
        self.url = url
        self.on_chunk = on_chunk
        self.log = log
        self.connector = connector or Connector(url, log=log, **connect)
        self.max_connection_age_s = max_connection_age_s
        self.silence_s = silence_s
        self.handover_s = handover_s
        self.handover_ready = handover_ready or (lambda held: True)
        self.connected = asyncio.Event()
        self.rotations = 0
        # Times continuity was lost (no connection at all); a planned rotation does not count.
        self.outages = 0
        self.disconnected_since: float | None = time.monotonic()
        self._backlog = _Backlog(max_queued_frames)
        self._queue = self._backlog.queue  # read on every chunk: one attribute away
        self._failure: BaseException | None = None  # what on_chunk raised, for run() to raise
        self._active: _Connection | None = None
        self._pending: _Connection | None = None
        self._rotation: asyncio.Task[None] | None = None
        self._rotation_reason = ""
        self._pending_since = 0.0
        # A connection still in its handshake: frames that come with the handshake's answer are
        # held for it, not dropped as a stranger's.
        self._opening: set[_Connection] = set()
        self.on_active: Callable[[], None] = lambda: None  # a connection became the one delivering
        if metrics is not None:
            self._register(metrics)

    def _register(self, metrics: Registry) -> None:
        metrics.gauge(
            "connected", "1 while the WebSocket stream is connected.", lambda: int(self.connected.is_set())
        )
        self.connector.register(metrics)
        metrics.counter("rotations", "Planned make-before-break handovers.", read=lambda: self.rotations)
        metrics.counter(
            "stream_pauses", "Times reading stopped because landing fell behind.", read=lambda: self.pauses
        )

    @property
    def queued_bytes(self) -> int:
        """Bytes of frames read from the socket and not yet handed to the consumer."""
        return self._backlog.bytes

    @property
    def pauses(self) -> int:
        """Times reading stopped because the consumer fell behind."""
        return self._backlog.pauses

    @property
    def connections(self) -> int:
        return self.connector.connections

    @property
    def attempts(self) -> int:
        return self.connector.attempts

    @property
    def reconnects(self) -> int:
        """Connection attempts after the first one, whether they opened or not."""
        return max(0, self.attempts - 1)

    @property
    def active(self) -> _Connection | None:
        """The connection delivering now, while no rotation is under way (None otherwise)."""
        if self._pending is not None or (self._rotation is not None and not self._rotation.done()):
            return None
        return self._active

    # ---- the public surface -----------------------------------------------------------------

    async def run(self) -> None:
        """Read until cancelled. Raises ExchangeRefused for what retrying cannot fix."""
        timer = asyncio.create_task(self._watch_age_and_silence(), name="stream-timer")
        try:
            while True:
                if self._active is None:
                    if self._pending is not None:
                        await self._promote_pending()
                    else:
                        self._activate(await self.connector.connect(self._listener_for))
                await self._dispatch_one()
        finally:
            timer.cancel()
            for task in (self._rotation, timer):
                if task is not None:
                    task.cancel()
            for conn in (self._active, self._pending):
                if conn is not None:
                    await _close(conn)

    def request_rotation(self, reason: str) -> None:
        """Open a new connection and hand over to it once it has caught up (make before break)."""
        if (
            self._active is None
            or self._pending is not None
            or (self._rotation and not self._rotation.done())
        ):
            return
        self._rotation_reason = reason
        self.log.info("collector.rotating", reason=reason, connection=self._active.number)
        self._rotation = asyncio.create_task(self._open_pending(), name="stream-rotation")

    # ---- dispatch ---------------------------------------------------------------------------

    def hold_back(self, hold: bool) -> None:
        """The consumer's flow control: True stops reading the sockets, False resumes."""
        if hold != self._backlog.held_back:
            self._backlog.held_back = hold
            self._apply_reading()

    async def _dispatch_one(self) -> None:
        try:
            conn, frames, received_at_ns = self._queue.get_nowait()
        except asyncio.QueueEmpty:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # arrives as the queue yields an item, and the collector would never stop.
                async with asyncio.timeout(1.0):
                    conn, frames, received_at_ns = await self._queue.get()
            except TimeoutError:
                await self._maybe_hand_over()
                return
        if self._failure is not None:
            raise self._failure
        if frames is None:
            await self._connection_ended(conn)
            return
        self._backlog.frames -= len(frames)
        self._backlog.bytes -= sum(map(len, frames))
        self._apply_reading()
        if conn is self._active:
            self._deliver(conn, frames, received_at_ns)
            if not self._queue.empty():
                await asyncio.sleep(0)  # a long queue: let the rest of the process run between chunks
        elif conn is self._pending or conn in self._opening:
            conn.frames += len(frames)
            conn.last_frame_mono = time.monotonic()
            conn.held.append((frames, received_at_ns))
            if conn is self._pending:
                await self._maybe_hand_over()

    def _enqueue(self, conn: _Connection, frames: list[bytes] | None, received_at_ns: int) -> None:
        """Called by a connection's listener, from the event loop, once per read (None: ended)."""
        if frames is None:
            conn.ended = True
        elif conn is self._active and self._queue.empty() and self._failure is None:
            self._deliver(conn, frames, received_at_ns)  # the hot path: nothing waits ahead of it
            return
        else:
            self._backlog.frames += len(frames)
            self._backlog.bytes += sum(map(len, frames))
            self._apply_reading()
        self._queue.put_nowait((conn, frames, received_at_ns))

    def _deliver(self, conn: _Connection, frames: list[bytes], received_at_ns: int) -> None:
        conn.frames += len(frames)
        conn.last_frame_mono = time.monotonic()
        try:
            self.on_chunk(frames, received_at_ns)
        except Exception as exc:
            if self._failure is None:
                self._failure = exc
                self._queue.put_nowait((conn, None, 0))  # wakes run(), which raises it

    def _apply_reading(self) -> None:
        """Read the sockets unless the backlog is too long or the consumer holds back."""
        paused = self._backlog.should_pause()
        if paused is None:
            return
        for conn in (self._active, self._pending):
            if conn is not None and conn.transport is not None and conn.paused != paused:
                conn.paused = paused
                with contextlib.suppress(Exception):  # a transport that closed meanwhile
                    if paused:
                        conn.transport.underlying_transport.pause_reading()
                    else:
                        conn.transport.underlying_transport.resume_reading()

    async def _maybe_hand_over(self) -> None:
        pending = self._pending
        if pending is None:
            return
        waited = time.monotonic() - self._pending_since
        if waited < self.handover_s and (not pending.held or not self.handover_ready(pending.held)):
            return  # a quiet connection pair hands over once `handover_s` has passed with nothing lost
        old = self._active
        self.log.info(
            "collector.handover",
            reason=self._rotation_reason,
            old_connection=old.number if old else None,
            new_connection=pending.number,
            held_frames=len(pending.held),
            caught_up=waited < self.handover_s,
        )
        self._active = None
        if old is not None:
            await _close(old)
        await self._promote_pending()

    async def _promote_pending(self) -> None:
        pending = self._pending
        assert pending is not None
        self._pending = None
        self.rotations += 1
        self._activate(pending)  # and its held frames delivered, as any other

    async def _connection_ended(self, conn: _Connection) -> None:
        if conn is self._pending:
            self._pending = None
            self.log.warning("collector.rotation_failed", connection=conn.number, frames=conn.frames)
            return
        if conn is not self._active:
            return
        self._active = None
        self._mark_disconnected()
        self.connector.ended(conn)
        self.log.warning(
            "collector.disconnected",
            url=self.url,
            connection=conn.number,
            frames=conn.frames,
            code=conn.close_code,
            reason=conn.close_reason,
        )

    def _activate(self, conn: _Connection) -> None:
        self._opening.clear()  # this one is open; any other left in it failed
        self._active = conn
        self.connected.set()
        self.disconnected_since = None
        self._backlog.paused = False
        self._apply_reading()  # a new connection starts paused if the consumer holds back
        held, conn.held = conn.held, []
        for frames, received_at_ns in held:  # what came with the handshake, or during a handover
            counted = conn.frames
            self._deliver(conn, frames, received_at_ns)
            conn.frames = counted  # counted when they were held
        self.on_active()

    # ---- connections --------------------------------------------------------------------------

    def _listener_for(self, conn: _Connection) -> _Listener:
        self._opening.add(conn)
        return _Listener(self, conn)

    async def _open_pending(self) -> None:
        try:
            conn = await self.connector.open(self._listener_for)
            self._opening.discard(conn)
        except Exception as exc:  # the old connection keeps delivering; try again later
            self._opening.clear()
            self.log.warning("collector.rotation_failed", reason=self._rotation_reason, error=str(exc))
            return
        self._pending = conn
        self._pending_since = time.monotonic()
        self._backlog.paused = False
        self._apply_reading()

    async def _watch_age_and_silence(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            conn = self._active
            if conn is None:
                continue
            now = time.monotonic()
            if now - conn.opened_mono >= self.max_connection_age_s:
                self.request_rotation("connection_age")
            elif now - conn.last_frame_mono >= self.silence_s:
                self.request_rotation("silence")

    def _mark_disconnected(self) -> None:
        if self.connected.is_set():
            self.outages += 1
        if self.connected.is_set() or self.disconnected_since is None:
            self.disconnected_since = time.monotonic()
        self.connected.clear()


async def _close(conn: _Connection) -> None:
    """Close a connection politely, waiting a few seconds for the peer."""
    transport = conn.transport
    if transport is None or conn.ended:
        return
    with contextlib.suppress(Exception):
        transport.send_close(picows.WSCloseCode.OK)
        transport.disconnect()
        async with asyncio.timeout(5):
            await transport.wait_disconnected()


def streams_in(url: str) -> set[str]:
    """The stream names a connection URL subscribes: `/ws/<name>` or `/stream?streams=a/b`."""
    parts = urlsplit(url)
    if parts.path.startswith("/ws/"):
        return {n for n in parts.path[len("/ws/") :].split("/") if n}
    query = parse_qs(parts.query).get("streams", [""])[0]
    return {n for n in query.split("/") if n}


def _refusal_or_retry(status: int, url: str) -> Exception:
    if status in (451, 403):
        return ExchangeRefused(
            f"Binance refused the connection to {url} with HTTP {status}: it does not serve this "
            "location; run the collector in another region (ap-northeast-1 is Binance's own) or set "
            "COLLECTOR_WS_URL to an endpoint that serves it",
            status=status,
        )
    if status in (400, 404):
        return ExchangeRefused(
            f"{url} answered HTTP {status}: the stream path is not served; check COLLECTOR_SYMBOLS "
            "(unknown symbol?) and COLLECTOR_WS_URL",
            status=status,
        )
    return ConnectionLost(f"{url} answered HTTP {status} during the handshake")


def _diagnose(exc: BaseException) -> tuple[str, str]:
    """(cause, what to check) for a failed connection attempt."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 5:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(str(e) for e in chain)
    if any(isinstance(e, socket.gaierror) for e in chain):
        return f"DNS: the host name does not resolve ({text})", (
            "the machine's DNS and network egress; a host with no route to the internet cannot reach Binance"
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused: nothing listens at that address and port", "COLLECTOR_WS_URL (host and port)"
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return f"TLS: {text}", "the machine's clock and CA certificates, and any TLS-intercepting proxy"
    if any(isinstance(e, TimeoutError | asyncio.TimeoutError) for e in chain) or "timed out" in text.lower():
        return "timeout: no answer", "egress rules (security group, firewall) for port 443 or 9443"
    if "HTTP" in text:
        return f"the server answered the handshake with an error ({text})", (
            "COLLECTOR_WS_URL; HTTP 451/403 mean Binance refuses this location (ap-northeast-1 is served)"
        )
    return f"network: {text}", "network egress to the host, and COLLECTOR_WS_URL"
