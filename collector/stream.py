"""The WebSocket edge: connect, read, answer pings, reconnect, and rotate connections without a gap.

Frames go to `on_frame(raw, received_at_ns)` unparsed; all meaning is in the core.

Reconnect policy (unplanned drops): jittered exponential backoff from `initial_delay_s` up to
`max_delay_s` (tenacity's `wait_random_exponential`), reset once a connection has delivered
data, and never more than `max_attempts_per_5min` connection attempts in any five minutes
(Binance allows 300 per IP). What retrying cannot fix (HTTP 451/403, a rejected URL, a
certificate that fails verification) raises ExchangeRefused with a message saying what to change.

Planned rotations (make before break): on `serverShutdown`, when a connection nears Binance's
24-hour limit (`max_connection_age_s`), or when it has been silent for `silence_s`, a second
connection is opened while the first keeps delivering. The new connection's frames are held
back until `handover_ready(held)` says the old one has caught up with them (or `handover_s`
passes); then the old connection is closed and the held frames are delivered. The core drops
the overlap by trade id, so a rotation costs no trade at all.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from collector.exceptions import ConnectionLost, ExchangeRefused, is_retryable

__all__ = ["OnFrame", "TradeStream"]

OnFrame = Callable[[str | bytes, int], Awaitable[None]]
HandoverReady = Callable[[list[tuple[str | bytes, int]]], bool]


@dataclass(eq=False)
class _Connection:
    number: int
    ws: ClientConnection
    opened_mono: float
    last_frame_mono: float
    frames: int = 0
    reader: asyncio.Task[None] | None = None
    held: list[tuple[str | bytes, int]] = field(default_factory=list)


_END = object()  # a reader's last item: its connection is gone


class TradeStream:
    """One logical subscription, kept open across drops and rotations."""

    def __init__(
        self,
        url: str,
        on_frame: OnFrame,
        *,
        log: Any,
        initial_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        open_timeout_s: float = 10.0,
        # Binance closes a connection at 24 hours; rotating half an hour early leaves room.
        max_connection_age_s: float = 23.5 * 3600,
        silence_s: float = 60.0,
        handover_s: float = 10.0,
        handover_ready: HandoverReady | None = None,
        max_attempts_per_5min: int = 250,
    ) -> None:
        self.url = url
        self.on_frame = on_frame
        self.log = log
        self.initial_delay_s = initial_delay_s
        self.max_delay_s = max_delay_s
        self.open_timeout_s = open_timeout_s
        self.max_connection_age_s = max_connection_age_s
        self.silence_s = silence_s
        self.handover_s = handover_s
        self.handover_ready = handover_ready or (lambda held: True)
        self.max_attempts_per_5min = max_attempts_per_5min
        self.connected = asyncio.Event()
        self.connections = 0
        self.reconnects = 0
        self.rotations = 0
        # Times continuity was lost (no connection at all); a planned rotation does not count.
        self.outages = 0
        self.disconnected_since: float | None = time.monotonic()
        self._attempts: collections.deque[float] = collections.deque()
        self._queue: asyncio.Queue[tuple[_Connection, Any, int]] = asyncio.Queue(maxsize=10_000)
        self._active: _Connection | None = None
        self._pending: _Connection | None = None
        self._rotation: asyncio.Task[None] | None = None
        self._rotation_reason = ""
        self._pending_since = 0.0

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
                        self._activate(await self._connect_with_backoff())
                await self._dispatch_one()
        finally:
            timer.cancel()
            for task in (self._rotation, timer):
                if task is not None:
                    task.cancel()
            for conn in (self._active, self._pending):
                if conn is not None:
                    await self._close(conn)

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

    async def _dispatch_one(self) -> None:
        try:
            conn, message, received_at_ns = self._queue.get_nowait()  # the hot path: no timer
        except asyncio.QueueEmpty:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # arrives as the queue yields an item, and the collector would never stop.
                async with asyncio.timeout(1.0):
                    conn, message, received_at_ns = await self._queue.get()
            except TimeoutError:
                await self._maybe_hand_over()
                return
        if message is _END:
            await self._connection_ended(conn)
            return
        conn.frames += 1
        conn.last_frame_mono = time.monotonic()
        if conn is self._active:
            await self.on_frame(message, received_at_ns)
        elif conn is self._pending:
            conn.held.append((message, received_at_ns))
            await self._maybe_hand_over()

    async def _maybe_hand_over(self) -> None:
        pending = self._pending
        if pending is None or not pending.held:
            return
        waited = time.monotonic() - self._pending_since
        if not self.handover_ready(pending.held) and waited < self.handover_s:
            return
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
            await self._close(old)
        await self._promote_pending()

    async def _promote_pending(self) -> None:
        pending = self._pending
        assert pending is not None
        self._pending = None
        held, pending.held = pending.held, []
        self._activate(pending)
        self.rotations += 1
        for message, received_at_ns in held:
            await self.on_frame(message, received_at_ns)

    async def _connection_ended(self, conn: _Connection) -> None:
        if conn is self._pending:
            self._pending = None
            self.log.warning("collector.rotation_failed", connection=conn.number, frames=conn.frames)
            return
        if conn is not self._active:
            return
        self._active = None
        self._mark_disconnected()
        close_code = conn.ws.close_code
        self.log.warning(
            "collector.disconnected",
            url=self.url,
            connection=conn.number,
            frames=conn.frames,
            code=close_code,
            reason=conn.ws.close_reason,
        )
        if self._pending is None:
            self.reconnects += 1

    def _activate(self, conn: _Connection) -> None:
        self._active = conn
        self.connected.set()
        self.disconnected_since = None

    # ---- connections --------------------------------------------------------------------------

    async def _connect_with_backoff(self) -> _Connection:
        retrying = AsyncRetrying(
            wait=wait_random_exponential(multiplier=self.initial_delay_s, max=self.max_delay_s),
            retry=retry_if_exception(is_retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._open()
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _open(self) -> _Connection:
        await self._respect_attempt_limit()
        try:
            ws = await connect(
                self.url,
                compression=None,  # Binance does not compress; saves a negotiation and CPU
                open_timeout=self.open_timeout_s,
                max_size=2**20,
                user_agent_header="trade-lake-collector",
            )
        except InvalidStatus as exc:
            raise _refusal_or_retry(exc, self.url) from exc
        except InvalidURI as exc:
            raise ExchangeRefused(f"{self.url} is not a valid WebSocket URL; fix COLLECTOR_WS_URL") from exc
        except ssl.SSLCertVerificationError as exc:
            raise ExchangeRefused(
                f"TLS certificate of {self.url} failed verification ({exc.verify_message}); check the "
                "host name in COLLECTOR_WS_URL and the machine's CA certificates and clock"
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ConnectionLost(f"cannot connect to {self.url}: {exc!r}") from exc
        self.connections += 1
        now = time.monotonic()
        conn = _Connection(self.connections, ws, now, now)
        conn.reader = asyncio.create_task(self._read(conn), name=f"stream-reader-{conn.number}")
        self.log.info("collector.connected", url=self.url, connection=conn.number)
        return conn

    async def _open_pending(self) -> None:
        try:
            conn = await self._open()
        except Exception as exc:  # the old connection keeps delivering; try again later
            self.log.warning("collector.rotation_failed", reason=self._rotation_reason, error=str(exc))
            return
        self._pending = conn
        self._pending_since = time.monotonic()

    async def _read(self, conn: _Connection) -> None:
        try:
            async for message in conn.ws:
                await self._queue.put((conn, message, time.time_ns()))
        except ConnectionClosed:
            pass
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await self._queue.put((conn, _END, 0))

    async def _close(self, conn: _Connection) -> None:
        if conn.reader is not None:
            conn.reader.cancel()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await conn.ws.close()

    async def _respect_attempt_limit(self) -> None:
        window_s = 300.0
        now = time.monotonic()
        while self._attempts and now - self._attempts[0] > window_s:
            self._attempts.popleft()
        if len(self._attempts) >= self.max_attempts_per_5min:
            wait_s = window_s - (now - self._attempts[0])
            self.log.warning("collector.connection_rate_limited", wait_s=round(wait_s, 1))
            await asyncio.sleep(wait_s)
        self._attempts.append(time.monotonic())

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

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        self.log.warning(
            "collector.reconnecting", attempt=state.attempt_number, delay_s=round(delay, 3), error=str(exc)
        )


def _refusal_or_retry(exc: InvalidStatus, url: str) -> Exception:
    status = exc.response.status_code
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
