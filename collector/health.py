"""Health and Prometheus metrics over HTTP on loopback, and the verdict behind them.

    GET /health   JSON: connection, ages, spool, gaps, destination, verdict. 200 when the
                  collector is capturing and able to land ("ok" or "degraded"), 503 otherwise.
    GET /metrics  Prometheus text format 0.0.4.

A deliberately small HTTP/1.0 responder on asyncio streams: two read-only endpoints on
127.0.0.1 do not justify a web framework.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HealthServer", "Snapshot", "render_metrics", "verdict"]

# Past these, the health verdict degrades; see `verdict`.
STALE_TRADE_S = 300.0  # BTCUSDT trades every second or so; five quiet minutes means trouble
DISCONNECTED_FAILING_S = 120.0  # reconnects take seconds; two minutes without a stream is an outage


@dataclass
class Snapshot:
    """Everything /health and /metrics report, taken at one instant."""

    uptime_s: float
    stream_url: str
    connected: bool
    disconnected_for_s: float
    connections: int
    reconnects: int
    sink: str
    sink_ok: bool
    sink_error: str | None
    last_trade_age_s: float | None
    last_landed_age_s: float | None
    frames: int
    trades_received: Mapping[str, int]
    trades_landed: Mapping[str, int]
    duplicates: int
    malformed: Mapping[str, int]
    gaps_opened: int
    gaps_filled: int
    missing_ids: int
    batches_landed: int
    bytes_landed: int
    upload_errors: Mapping[str, int]
    upload_seconds_sum: float
    upload_count: int
    spool_objects: int
    spool_bytes: int
    buffered_trades: int
    dropped_trades: int = 0
    backfilled_trades: int = 0
    unfilled_gaps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def open_gaps(self) -> int:
        return self.gaps_opened - self.gaps_filled


def verdict(s: Snapshot) -> tuple[str, list[str]]:
    """("ok" | "degraded" | "failing" | "starting", reasons)."""
    reasons: list[str] = []
    if not s.sink_ok:
        reasons.append(f"destination not usable: {s.sink_error or 'not yet checked'}")
    if not s.connected:
        reasons.append(f"not connected to the stream for {s.disconnected_for_s:.0f}s")
    if s.connections == 0 or (not s.sink_ok and s.sink_error is None):
        return "starting", reasons
    if not s.sink_ok or (not s.connected and s.disconnected_for_s >= DISCONNECTED_FAILING_S):
        return "failing", reasons
    if s.last_trade_age_s is not None and s.last_trade_age_s > STALE_TRADE_S:
        reasons.append(f"no trade for {s.last_trade_age_s:.0f}s")
    if s.unfilled_gaps:
        reasons.append(f"{s.unfilled_gaps} gap(s) could not be filled (see gaps/unfilled.jsonl)")
    elif s.open_gaps:
        reasons.append(f"{s.open_gaps} gap(s) being filled, {s.missing_ids} trade ids detected missing")
    if s.dropped_trades:
        reasons.append(f"{s.dropped_trades} trades dropped because the spool was full (see dropped.jsonl)")
    if s.upload_errors.get("transient", 0) and s.spool_objects > 1:
        reasons.append(f"{s.spool_objects} objects waiting in the spool")
    return ("degraded" if reasons else "ok"), reasons


def health_document(s: Snapshot) -> dict[str, Any]:
    state, reasons = verdict(s)
    return {
        "verdict": state,
        "healthy": state in ("ok", "degraded"),
        "reasons": reasons,
        "uptime_s": round(s.uptime_s, 3),
        "streams": [
            {
                "url": s.stream_url,
                "connected": s.connected,
                "connections": s.connections,
                "reconnects": s.reconnects,
            }
        ],
        "last_trade_age_s": _round(s.last_trade_age_s),
        "last_landed_age_s": _round(s.last_landed_age_s),
        "trades_received": dict(s.trades_received),
        "trades_landed": dict(s.trades_landed),
        "spool": {"objects": s.spool_objects, "bytes": s.spool_bytes, "dropped_trades": s.dropped_trades},
        "open_gaps": s.open_gaps,
        "unfilled_gaps": s.unfilled_gaps,
        "backfilled_trades": s.backfilled_trades,
        "missing_trade_ids": s.missing_ids,
        "destination": {"url": s.sink, "ok": s.sink_ok, "error": s.sink_error},
        **s.extra,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(s: Snapshot) -> str:
    """The snapshot in Prometheus text exposition format."""
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: Mapping[str, float] | float) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        if isinstance(samples, Mapping):
            for labels, value in samples.items():
                out.append(f"{name}{{{labels}}} {value}" if labels else f"{name} {value}")
        else:
            out.append(f"{name} {samples}")

    def by(label: str, values: Mapping[str, int]) -> dict[str, float]:
        return {f'{label}="{_escape(k)}"': v for k, v in sorted(values.items())}

    metric("collector_up", "gauge", "1 while the collector process runs.", 1)
    metric("collector_connected", "gauge", "1 while the WebSocket stream is connected.", int(s.connected))
    metric("collector_frames_total", "counter", "WebSocket frames received.", s.frames)
    metric(
        "collector_trades_received_total",
        "counter",
        "Trades received, per symbol.",
        by("symbol", s.trades_received),
    )
    metric(
        "collector_trades_landed_total",
        "counter",
        "Trades landed, per symbol.",
        by("symbol", s.trades_landed),
    )
    metric("collector_duplicate_trades_total", "counter", "Trades dropped as duplicates.", s.duplicates)
    metric(
        "collector_malformed_frames_total",
        "counter",
        "Frames skipped, per reason.",
        by("reason", s.malformed),
    )
    metric("collector_reconnects_total", "counter", "Stream reconnects.", s.reconnects)
    metric("collector_gaps_opened_total", "counter", "Trade-id gaps detected.", s.gaps_opened)
    metric("collector_gaps_filled_total", "counter", "Trade-id gaps filled.", s.gaps_filled)
    metric("collector_missing_trade_ids_total", "counter", "Trade ids inside detected gaps.", s.missing_ids)
    metric("collector_gaps_unfilled", "gauge", "Gap ranges recorded as unfillable.", s.unfilled_gaps)
    metric(
        "collector_backfilled_trades_total",
        "counter",
        "Trades filled in by REST backfill.",
        s.backfilled_trades,
    )
    metric("collector_batches_landed_total", "counter", "Objects landed.", s.batches_landed)
    metric("collector_bytes_landed_total", "counter", "Bytes landed.", s.bytes_landed)
    metric(
        "collector_upload_errors_total",
        "counter",
        "Failed upload attempts, per kind.",
        by("kind", s.upload_errors),
    )
    out.append("# HELP collector_upload_seconds Time to land one object.")
    out.append("# TYPE collector_upload_seconds summary")
    out.append(f"collector_upload_seconds_sum {s.upload_seconds_sum:.6f}")
    out.append(f"collector_upload_seconds_count {s.upload_count}")
    metric("collector_spool_objects", "gauge", "Objects waiting in the spool.", s.spool_objects)
    metric("collector_spool_bytes", "gauge", "Bytes waiting in the spool.", s.spool_bytes)
    metric("collector_buffered_trades", "gauge", "Trades in open batches.", s.buffered_trades)
    metric(
        "collector_dropped_trades_total",
        "counter",
        "Trades not kept because the spool was full.",
        s.dropped_trades,
    )
    if s.last_trade_age_s is not None:
        metric(
            "collector_last_trade_age_seconds",
            "gauge",
            "Seconds since the last trade.",
            round(s.last_trade_age_s, 3),
        )
    if s.last_landed_age_s is not None:
        metric(
            "collector_last_landed_age_seconds",
            "gauge",
            "Seconds since the last object landed.",
            round(s.last_landed_age_s, 3),
        )
    return "\n".join(out) + "\n"


class HealthServer:
    """Serves /health and /metrics from `snapshot()` on 127.0.0.1 only."""

    def __init__(self, snapshot: Callable[[], Snapshot], port: int, log: Any = None) -> None:
        self.snapshot = snapshot
        self.port = port
        self.log = log
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

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
                doc = health_document(self.snapshot())
                status = 200 if doc["healthy"] else 503
                ctype, body = "application/json", (json.dumps(doc) + "\n").encode()
            elif path == "/metrics":
                status, ctype = 200, "text/plain; version=0.0.4; charset=utf-8"
                body = render_metrics(self.snapshot()).encode()
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
