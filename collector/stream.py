"""The WebSocket edge: connect, read frames, answer pings, reconnect with a readable policy.

Frames go to `on_frame(raw, received_at_ns)` unparsed; all meaning is in the core.

Reconnect policy: jittered exponential backoff from `initial_delay_s` up to `max_delay_s`
(tenacity's `wait_random_exponential`), reset once a connection has delivered data. What
retrying cannot fix (HTTP 451/403, a rejected URL, a certificate that fails verification)
raises ExchangeRefused and stops the collector with a message that says what to change.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from collector.exceptions import ConnectionLost, ExchangeRefused, is_retryable

__all__ = ["OnFrame", "TradeStream"]

OnFrame = Callable[[str | bytes, int], Awaitable[None]]


class TradeStream:
    """One logical subscription, kept open across reconnects."""

    def __init__(
        self,
        url: str,
        on_frame: OnFrame,
        *,
        log: Any,
        initial_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.on_frame = on_frame
        self.log = log
        self.initial_delay_s = initial_delay_s
        self.max_delay_s = max_delay_s
        self.open_timeout_s = open_timeout_s
        self.connected = asyncio.Event()
        self.connections = 0
        self.reconnects = 0
        self.disconnected_since: float | None = time.monotonic()

    async def run(self) -> None:
        """Read until cancelled. Raises ExchangeRefused for what retrying cannot fix."""
        retrying = AsyncRetrying(
            wait=wait_random_exponential(multiplier=self.initial_delay_s, max=self.max_delay_s),
            retry=retry_if_exception(is_retryable),
            before_sleep=self._log_retry,
            reraise=True,
        )
        while True:
            # A session that delivered data returns normally, ending this retry loop, so the
            # next outage starts again from the initial delay.
            async for attempt in retrying:
                with attempt:
                    await self._session()
            self.reconnects += 1

    async def _session(self) -> None:
        received = 0
        try:
            async with connect(
                self.url,
                compression=None,  # Binance does not compress; saves a negotiation and CPU
                open_timeout=self.open_timeout_s,
                max_size=2**20,
                user_agent_header="trade-lake-collector",
            ) as ws:
                self.connections += 1
                self.connected.set()
                self.disconnected_since = None
                self.log.info("collector.connected", url=self.url, connection=self.connections)
                try:
                    async for message in ws:
                        received += 1
                        await self.on_frame(message, time.time_ns())
                finally:
                    self._mark_disconnected()
                self.log.warning(
                    "collector.disconnected",
                    url=self.url,
                    frames=received,
                    code=ws.close_code,
                    reason=ws.close_reason,
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
        except ConnectionClosed as exc:
            self._mark_disconnected()
            if received == 0:
                raise ConnectionLost(f"connection to {self.url} closed before any frame: {exc}") from exc
            self.log.warning("collector.disconnected", url=self.url, frames=received, error=str(exc))
            return
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            self._mark_disconnected()
            if received == 0:
                raise ConnectionLost(f"cannot connect to {self.url}: {exc!r}") from exc
            self.log.warning("collector.disconnected", url=self.url, frames=received, error=repr(exc))
            return
        if received == 0:
            raise ConnectionLost(f"connection to {self.url} closed before any frame")

    def _mark_disconnected(self) -> None:
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
            "and COLLECTOR_WS_URL",
            status=status,
        )
    return ConnectionLost(f"{url} answered HTTP {status} during the handshake")
