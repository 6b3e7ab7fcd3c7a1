"""The local feed's WebSocket control protocol, and the limits Binance enforces on connections.

A connection (opened on /ws/<streams>, /stream?streams=..., or bare /ws or /stream) changes its
streams while it runs, with Binance's requests and answers:

    {"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}     -> {"result":null,"id":1}
    {"method":"UNSUBSCRIBE","params":["btcusdt@trade"],"id":2}   -> {"result":null,"id":2}
    {"method":"LIST_SUBSCRIPTIONS","id":3}                        -> {"result":["btcusdt@trade"],"id":3}
    {"method":"SET_PROPERTY","params":["combined",true],"id":4}   -> {"result":null,"id":4}
    {"method":"GET_PROPERTY","params":["combined"],"id":5}        -> {"result":true,"id":5}
    not JSON              -> {"error":{"code":3,"msg":"Invalid JSON: ..."},"id":null}
    anything malformed    -> {"error":{"code":2,"msg":"Invalid request: ..."},"id":..}

Streams are `<symbol>@trade`, lowercase; a symbol the market does not list is accepted and stays
silent, as on Binance. The limits, Binance's (`Limits`):

- 1,024 streams a connection: a SUBSCRIBE beyond it is refused whole; a URL naming more is
  answered 400 at the handshake (with Binance's names such a URL is over 8,000 characters, so
  414 comes first; a smaller `max_streams` reaches the 400).
- 5 incoming messages a second a connection, counted in a sliding second: every text or binary
  message, and the client's pings and pongs (`CountingConnection`). The 6th closes the
  connection with 1008 "Too many requests" and counts a violation for the client's IP.
- `ban_after` violations ban the IP: its handshakes are answered 418 with Retry-After for `ban_s`.
- A handshake URL over 8,000 characters is answered 414.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Response

__all__ = ["Control", "CountingConnection", "Limits", "Session"]

_STREAM = re.compile(r"[a-z0-9]{2,20}@trade")
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


@dataclass(frozen=True)
class Limits:
    """Binance's limits on a market-stream connection (the defaults are its numbers)."""

    max_streams: int = 1024
    messages_per_s: int = 5
    ban_after: int = 3  # rate violations of an IP before it is banned...
    ban_s: float = 120.0  # ...for this long
    max_url_chars: int = 8000


class _Streams(Protocol):
    """What a session changes: the connection's symbols (uppercase, in subscription order) and
    whether its frames are wrapped as {"stream":..,"data":..}."""

    symbols: dict[str, None]
    combined: bool


class _Refused(ValueError):
    def __init__(self, code: int, msg: str, request_id: int | None = None) -> None:
        super().__init__(msg)
        self.code = code
        self.request_id = request_id


def _json(status: int, reason: str, body: dict[str, Any], **headers: str) -> Response:
    head = Headers([("Content-Type", "application/json")])
    for name, value in headers.items():
        head[name.replace("_", "-")] = value
    return Response(status, reason, head, json.dumps(body).encode())


class Control:
    """The limits across a server's connections: the handshake checks, the rate violations and
    bans per IP, and the counters of the control requests."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.requests = 0  # control requests answered
        self.subscribe_requests = 0
        self.subscription_errors = 0  # requests answered with an error
        self.rate_violations = 0
        self.bans = 0
        self.banned_handshakes = 0
        self._violations: collections.Counter[str] = collections.Counter()
        self._banned_until: dict[str, float] = {}

    def refuse_handshake(self, ip: str, path: str) -> Response | None:
        """418 for a banned IP, 414 for an over-long URL; None: go on."""
        until = self._banned_until.get(ip, 0.0)
        now = time.monotonic()
        if now < until:
            self.banned_handshakes += 1
            wait = str(math.ceil(until - now))
            body = {"code": -1003, "msg": f"Way too many requests; IP banned for {wait} more seconds."}
            return _json(418, "I'm a teapot", body, Retry_After=wait)
        if len(path) > self.limits.max_url_chars:
            body = {"code": -1, "msg": f"URL of {len(path)} characters; at most {self.limits.max_url_chars}"}
            return _json(414, "URI Too Long", body)
        return None

    def refuse_streams(self, count: int) -> Response | None:
        """400 for a URL naming more streams than a connection may have; None: go on."""
        if count <= self.limits.max_streams:
            return None
        body = {"code": -1, "msg": f"{count} streams; a connection has at most {self.limits.max_streams}"}
        return _json(400, "Bad Request", body)

    def violated(self, ip: str) -> None:
        """A connection of `ip` sent too many messages: after `ban_after` of those, a ban."""
        self.rate_violations += 1
        self._violations[ip] += 1
        if self._violations[ip] >= self.limits.ban_after:
            del self._violations[ip]
            self._banned_until[ip] = time.monotonic() + self.limits.ban_s
            self.bans += 1

    def session(self, ip: str, streams: _Streams) -> Session:
        return Session(self, ip, streams)


class Session:
    """One connection's side of the protocol: its incoming message rate, and the answers to its
    requests (the changes to its streams made as they are answered)."""

    def __init__(self, control: Control, ip: str, streams: _Streams) -> None:
        self.control = control
        self.ip = ip
        self.streams = streams
        self.overrun = False  # closed for too many messages
        self._times: collections.deque[float] = collections.deque()

    def hit(self) -> bool:
        """One incoming message; False when it is over the rate (the connection must close)."""
        now = time.monotonic()
        times = self._times
        while times and now - times[0] >= 1.0:
            times.popleft()
        times.append(now)
        return len(times) <= self.control.limits.messages_per_s

    async def close_overrun(self, ws: ServerConnection) -> None:
        """Close the connection for too many messages (once), counting the violation."""
        if self.overrun:
            return
        self.overrun = True
        self.control.violated(self.ip)
        await ws.close(1008, "Too many requests")

    def answer(self, message: str | bytes) -> str:
        """The answer to one request, as Binance words it."""
        control = self.control
        control.requests += 1
        try:
            request_id, method, params = _request(message)
            try:
                result = self._perform(method, params)
            except _Refused as refused:
                refused.request_id = request_id
                raise
        except _Refused as refused:
            control.subscription_errors += 1
            answer = {"error": {"code": refused.code, "msg": str(refused)}, "id": refused.request_id}
            return json.dumps(answer, separators=(",", ":"))
        return json.dumps({"result": result, "id": request_id}, separators=(",", ":"))

    def _perform(self, method: str, params: Any) -> Any:
        if method == "LIST_SUBSCRIPTIONS":
            return [f"{s.lower()}@trade" for s in self.streams.symbols]
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            return self._property(method, params)
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise _Refused(2, "Invalid request: params must be a list of stream names")
        bad = next((p for p in params if not _STREAM.fullmatch(p)), None)
        if bad is not None:
            raise _Refused(2, f"Invalid request: invalid stream name {bad!r}; streams are <symbol>@trade")
        symbols = self.streams.symbols
        wanted = [p.removesuffix("@trade").upper() for p in params]
        if method == "UNSUBSCRIBE":
            for symbol in wanted:
                symbols.pop(symbol, None)
            return None
        self.control.subscribe_requests += 1
        new = [s for s in dict.fromkeys(wanted) if s not in symbols]
        limit = self.control.limits.max_streams
        if len(symbols) + len(new) > limit:
            raise _Refused(2, f"Invalid request: a connection listens to at most {limit} streams; it has "
                              f"{len(symbols)} and asked for {len(new)} more")  # fmt: skip
        symbols.update(dict.fromkeys(new))
        return None

    def _property(self, method: str, params: Any) -> Any:
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            raise _Refused(2, "Invalid request: property name must be a string")
        if params[0] != "combined":
            raise _Refused(0, "Unknown property")
        if method == "GET_PROPERTY":
            return self.streams.combined
        if len(params) != 2 or not isinstance(params[1], bool):
            raise _Refused(1, "Invalid value type: expected Boolean")
        self.streams.combined = params[1]
        return None


def _request(message: str | bytes) -> tuple[int, str, Any]:
    """(id, method, params) of a request: its id an unsigned int, its method a known one."""
    try:
        request = json.loads(message)
    except ValueError as exc:
        raise _Refused(3, f"Invalid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise _Refused(2, "Invalid request: expected a JSON object")
    request_id = request.get("id")
    if type(request_id) is not int or request_id < 0:
        raise _Refused(2, "Invalid request: request ID must be an unsigned integer")
    method = request.get("method")
    if method not in _METHODS:
        shown = f"unknown variant `{method}`" if isinstance(method, str) else "missing field `method`"
        raise _Refused(2, f"Invalid request: {shown}, expected one of " + ", ".join(_METHODS), request_id)
    return request_id, method, request.get("params")


class CountingConnection(ServerConnection):
    """A server connection on which the client's pings and pongs count as incoming messages
    (once its handler has given it a `session`)."""

    session: Session | None = None
    _closing: asyncio.Task[None] | None = None

    def process_event(self, event: Any) -> None:
        super().process_event(event)
        session = self.session
        if session is None or not isinstance(event, Frame) or event.opcode not in (Opcode.PING, Opcode.PONG):
            return
        if not session.hit() and self._closing is None:
            self._closing = self.loop.create_task(session.close_overrun(self))
