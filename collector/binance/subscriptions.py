"""One connection's subscriptions kept equal to the streams its symbols need.

    StreamPool.want(names) ─▶ Subscriptions ─▶ SUBSCRIBE / UNSUBSCRIBE, at most 100 streams each,
        one request every 0.5 s at most ─▶ every answer checked ─▶ LIST_SUBSCRIPTIONS: equal?

A connection opens with every stream it needs in its URL; requests carry only the changes that
come later (a listing, a delisting). Binance counts every message a client sends (requests,
pings, pongs) against 5 a second per connection, closes a connection past it and bans an IP
that keeps doing it: requests are spaced `min_interval_s` apart, so with the pongs to Binance's
pings (one each 20 s) and the client's own idle pings a connection stays under 3 a second. A
SUBSCRIBE of about 440 streams has been seen to fail silently, so a request names at most
`per_request` streams and LIST_SUBSCRIPTIONS confirms the result.

What goes wrong (an error answer, no answer within `answer_timeout_s`, a list that differs, the
connection closing) is logged and answered by a rotation: the new connection's URL names every
stream wanted, so it starts right and hands over without a gap (the stream's make before break).

`on_confirmed(names)` is told which streams are certainly on: a new connection's URL streams
once it delivers, and each SUBSCRIBE's once LIST_SUBSCRIPTIONS has shown them (from then on, a
trade of theirs comes on the stream: collector.gaps.unseen counts on it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import picows

from collector.binance.stream import TradeStream
from collector.exceptions import CollectorError, ConnectionLost

__all__ = ["SubscriptionFailed", "Subscriptions"]

PER_REQUEST = 100
MIN_INTERVAL_S = 0.5
ANSWER_TIMEOUT_S = 10.0


class SubscriptionFailed(CollectorError):
    """A request about the connection's streams was refused, not answered, or did not take."""


class Subscriptions:
    """Reconciles a stream's connection with the set of stream names wanted on it."""

    def __init__(
        self,
        stream: TradeStream,
        *,
        log: Any,
        min_interval_s: float = MIN_INTERVAL_S,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
        per_request: int = PER_REQUEST,
    ) -> None:
        self.stream = stream
        self.log = log
        self.min_interval_s = min_interval_s
        self.answer_timeout_s = answer_timeout_s
        self.per_request = per_request
        self.desired: set[str] = set()
        self.requests = 0  # sent: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS
        self.failures = 0  # reconciliations that ended in a rotation
        self.wake = asyncio.Event()
        self.on_confirmed: Callable[[set[str]], None] = lambda names: None
        self._next_id = 1
        self._last_sent = float("-inf")
        self._confirmed_conn = 0  # the connection whose URL streams were last confirmed
        stream.on_active = self.wake.set  # a new connection: compare it with what is wanted

    def want(self, names: set[str]) -> None:
        self.desired = set(names)
        self.wake.set()

    async def run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            conn = self.stream.active
            if conn is None or conn.ended:
                continue  # connecting or rotating: the next activation wakes this again
            if conn.number != self._confirmed_conn:  # a new connection: its URL's streams are on
                self._confirmed_conn = conn.number
                self.on_confirmed(set(conn.streams))
            try:
                await self._reconcile(conn)
            except (SubscriptionFailed, ConnectionLost) as exc:
                self.failures += 1
                self.log.warning(
                    "collector.subscription_failed",
                    connection=conn.number,
                    error=str(exc),
                    action="rotating: a new connection's URL names every stream wanted",
                )
                self.stream.request_rotation("subscription_failed")

    async def _reconcile(self, conn: Any) -> None:
        changed: list[str] = []
        added: set[str] = set()
        while True:
            add = sorted(self.desired - conn.streams)
            drop = sorted(conn.streams - self.desired)
            if add:
                batch = add[: self.per_request]
                await self._request(conn, "SUBSCRIBE", batch)
                conn.streams.update(batch)
                added.update(batch)
                changed.append(f"+{len(batch)}")
            elif drop:
                batch = drop[: self.per_request]
                await self._request(conn, "UNSUBSCRIBE", batch)
                conn.streams.difference_update(batch)
                changed.append(f"-{len(batch)}")
            else:
                break
        if not changed:
            return
        listed = await self._request(conn, "LIST_SUBSCRIPTIONS", None)
        found = {str(n) for n in listed} if isinstance(listed, list) else set()
        if found != conn.streams:
            missing, extra = sorted(conn.streams - found), sorted(found - conn.streams)
            raise SubscriptionFailed(
                f"LIST_SUBSCRIPTIONS lists {len(found)} streams where {len(conn.streams)} were "
                f"subscribed (missing {missing[:5]}, unexpected {extra[:5]})"
            )
        self.log.info(
            "collector.subscribed", connection=conn.number, changes=" ".join(changed), streams=len(found)
        )
        if added & found:
            self.on_confirmed(added & found)

    async def _request(self, conn: Any, method: str, params: list[str] | None) -> Any:
        """Send one request, paced, and return its answer's `result`."""
        loop = asyncio.get_running_loop()
        wait_s = self._last_sent + self.min_interval_s - loop.time()
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        if conn.ended or conn.transport is None:
            raise ConnectionLost(f"connection {conn.number} closed before {method}")
        request_id, self._next_id = self._next_id, self._next_id + 1
        message: dict[str, Any] = {"method": method, "id": request_id}
        if params is not None:
            message["params"] = params
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        conn.answers[request_id] = future
        conn.transport.send(picows.WSMsgType.TEXT, json.dumps(message, separators=(",", ":")).encode())
        self._last_sent = loop.time()
        self.requests += 1
        try:
            async with asyncio.timeout(self.answer_timeout_s):
                answer = await future
        except TimeoutError:
            conn.answers.pop(request_id, None)
            raise SubscriptionFailed(
                f"no answer to {method} (id {request_id}) within {self.answer_timeout_s:g}s"
            ) from None
        if "error" in answer:
            raise SubscriptionFailed(f"{method} of {len(params or [])} streams refused: {answer['error']}")
        return answer.get("result")
