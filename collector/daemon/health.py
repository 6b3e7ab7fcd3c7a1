"""Health and Prometheus metrics over HTTP on loopback, and the verdict behind them.

    GET /health   JSON: verdict, reasons, connection, ages, spool, gaps, destination, and every
                  counter. 200 when the collector is capturing and able to land ("ok" or
                  "degraded"), 503 otherwise ("starting", "failing").
    GET /metrics  Prometheus text format 0.0.4, every counter of the registry.

Both read the one registry (`collector.counters`), so they always agree with the stats log line.
A deliberately small HTTP/1.0 responder on asyncio streams: two read-only endpoints on
127.0.0.1 do not justify a web framework.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from collector.counters import Registry

__all__ = ["HealthServer", "Status", "health_document", "verdict"]

# Past these, the health verdict degrades; see `verdict`.
STALE_TRADE_S = 300.0  # BTCUSDT trades every second or so; five quiet minutes means trouble
DISCONNECTED_FAILING_S = 120.0  # reconnects take seconds; two minutes without a stream is an outage


@dataclass(frozen=True, slots=True)
class Status:
    """What the verdict needs beside the counters: where things are, and what is wrong."""

    stream_url: str
    connected: bool
    disconnected_for_s: float
    destination: str
    destination_ok: bool
    destination_error: str | None
    spool_error: str | None = None  # a write the spool's disk refused (full), until one succeeds


def verdict(v: Mapping[str, Any], s: Status) -> tuple[str, list[str]]:
    """("ok" | "degraded" | "failing" | "starting", reasons), from counter values and status."""
    reasons: list[str] = []
    if not s.destination_ok:
        reasons.append(f"destination not usable: {s.destination_error or 'not yet checked'}")
    if not s.connected:
        reasons.append(f"not connected to the stream for {s.disconnected_for_s:.0f}s")
    if s.spool_error is not None:
        reasons.append(f"the spool cannot be written ({s.spool_error}): the stream is held back until it can")
    if v.get("connections", 0) == 0 or (not s.destination_ok and s.destination_error is None):
        return "starting", reasons
    if (
        not s.destination_ok
        or s.spool_error is not None
        or (not s.connected and s.disconnected_for_s >= DISCONNECTED_FAILING_S)
    ):
        return "failing", reasons
    trade_age = v.get("last_trade_age_seconds")
    if trade_age is not None and trade_age > STALE_TRADE_S:
        reasons.append(f"no trade for {trade_age:.0f}s")
    if v.get("gaps_unfilled", 0):
        reasons.append(f"{v['gaps_unfilled']} gap(s) could not be filled (see gaps/unfilled.jsonl)")
    elif v.get("open_gaps", 0):
        missing = v.get("missing_trade_ids", 0)
        reasons.append(f"{v['open_gaps']} gap(s) being filled, {missing} trade ids detected missing")
    if v.get("dropped_trades", 0):
        reasons.append(f"{v['dropped_trades']} trades dropped because the spool was full (see dropped.jsonl)")
    if (v.get("upload_errors") or {}).get("transient", 0) and v.get("spool_objects", 0) > 1:
        reasons.append(f"{v['spool_objects']} objects waiting in the spool")
    return ("degraded" if reasons else "ok"), reasons


def health_document(v: Mapping[str, Any], s: Status) -> dict[str, Any]:
    state, reasons = verdict(v, s)
    return {
        "verdict": state,
        "healthy": state in ("ok", "degraded"),
        "reasons": reasons,
        "uptime_s": v.get("uptime_seconds"),
        "streams": [
            {
                "url": s.stream_url,
                "connected": s.connected,
                "connections": v.get("connections", 0),
                "reconnects": v.get("reconnects", 0),
            }
        ],
        "last_trade_age_s": v.get("last_trade_age_seconds"),
        "last_landed_age_s": v.get("last_landed_age_seconds"),
        "trades_received": v.get("trades_received", {}),
        "trades_landed": v.get("trades_landed", {}),
        "spool": {
            "objects": v.get("spool_objects", 0),
            "bytes": v.get("spool_bytes", 0),
            "dropped_trades": v.get("dropped_trades", 0),
            "ok": s.spool_error is None,
            "error": s.spool_error,
        },
        "open_gaps": v.get("open_gaps", 0),
        "unfilled_gaps": v.get("gaps_unfilled", 0),
        "backfilled_trades": v.get("backfilled_trades", 0),
        "missing_trade_ids": v.get("missing_trade_ids", 0),
        "destination": {"url": s.destination, "ok": s.destination_ok, "error": s.destination_error},
        "counters": dict(v),
    }


class HealthServer:
    """Serves /health and /metrics from the registry on 127.0.0.1 only."""

    def __init__(self, registry: Registry, status: Callable[[], Status], port: int) -> None:
        self.registry = registry
        self.status = status
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def start_or_warn(self, log: Any) -> int | None:
        """`start`, or None with the reason logged: capture matters more than its dashboard."""
        try:
            return await self.start()
        except OSError as exc:
            log.error("collector.health_unavailable", port=self.port, error=str(exc),
                      fix="free the port or set COLLECTOR_HEALTH_PORT")  # fmt: skip
            return None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), timeout=5)
            parts = request.decode("latin-1").split()
            while (await asyncio.wait_for(reader.readline(), timeout=5)) not in (b"\r\n", b"\n", b""):
                pass
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            if method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"only GET\n"
            elif path == "/health":
                doc = health_document(self.registry.values(), self.status())
                status = 200 if doc["healthy"] else 503
                ctype, body = "application/json", (json.dumps(doc) + "\n").encode()
            elif path == "/metrics":
                status, ctype = 200, "text/plain; version=0.0.4; charset=utf-8"
                body = self.registry.prometheus().encode()
            else:
                status, ctype, body = 404, "text/plain", b"try /health or /metrics\n"
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[
                status
            ]
            head = (
                f"HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (TimeoutError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()
