"""Health and metrics: the verdict's rules, and the endpoints telling the truth during a real run."""

from __future__ import annotations

import re
from typing import Any

import pytest

from collector.counters import Registry
from collector.daemon.health import Status, health_document, verdict


def snapshot(**changes: Any) -> tuple[dict[str, Any], Status]:
    """Counter values and status as a running collector would report them, with `changes`."""
    status_fields = {
        "stream_url": "ws://x/ws/btcusdt@trade",
        "connected": True,
        "disconnected_for_s": 0.0,
        "destination": "landing/",
        "destination_ok": True,
        "destination_error": None,
        "spool_error": None,
    }
    values: dict[str, Any] = {
        "uptime_seconds": 100.0,
        "connections": 1,
        "reconnects": 0,
        "last_trade_age_seconds": 0.5,
        "last_landed_age_seconds": 30.0,
        "frames": 10,
        "trades_received": {"BTCUSDT": 10},
        "trades_landed": {"BTCUSDT": 8},
        "duplicate_trades": 0,
        "skipped_frames": {},
        "gaps_opened": 0,
        "gaps_filled": 0,
        "open_gaps": 0,
        "missing_trade_ids": 0,
        "batches_landed": 1,
        "bytes_landed": 1000,
        "upload_errors": {},
        "upload_seconds": (0.1, 1),
        "spool_objects": 0,
        "spool_bytes": 0,
        "buffered_trades": 2,
        "dropped_trades": 0,
        "gaps_unfilled": 0,
    }
    for key, value in changes.items():
        if key in status_fields:
            status_fields[key] = value
        else:
            values[key] = value
    return values, Status(**status_fields)


def test_verdict_rules() -> None:
    assert verdict(*snapshot()) == ("ok", [])
    assert verdict(*snapshot(connections=0, connected=False))[0] == "starting"
    assert verdict(*snapshot(connected=False, disconnected_for_s=10))[0] == "degraded"
    assert verdict(*snapshot(connected=False, disconnected_for_s=600))[0] == "failing"
    state, reasons = verdict(*snapshot(destination_ok=False, destination_error='bucket "x" does not exist'))
    assert state == "failing" and 'bucket "x" does not exist' in reasons[0]
    state, reasons = verdict(*snapshot(last_trade_age_seconds=900))
    assert state == "degraded" and "no trade for 900s" in reasons
    assert verdict(*snapshot(open_gaps=2, missing_trade_ids=7))[1] == [
        "2 gap(s) being filled, 7 trade ids detected missing"
    ]
    assert verdict(*snapshot(open_gaps=2, gaps_unfilled=1))[1] == [
        "1 gap(s) could not be filled (see gaps/unfilled.jsonl)"
    ]
    assert verdict(*snapshot(spool_error="[Errno 28] No space left on device")) == (
        "failing",
        [
            "the spool cannot be written ([Errno 28] No space left on device): the stream is held back "
            "until it can"
        ],
    )


def test_metrics_are_valid_prometheus_text() -> None:
    registry = Registry()
    registry.counter("trades_received", "Trades.", label="symbol", read=lambda: {"BTCUSDT": 10})
    registry.counter("skipped_frames", "Skipped.", label="reason", read=lambda: {"not_json": 3})
    errors = registry.counter("upload_errors", "Errors.", label="kind")
    errors.inc(2, label="transient")
    registry.summary("upload_seconds", "Upload time.", lambda: (0.1, 1))
    registry.gauge("last_trade_age_seconds", "Age.", lambda: None)  # no trade yet: left out
    registry.gauge("connected", "Connected.", lambda: 1)
    text = registry.prometheus()
    assert 'collector_trades_received_total{symbol="BTCUSDT"} 10' in text
    assert 'collector_skipped_frames_total{reason="not_json"} 3' in text
    assert 'collector_upload_errors_total{kind="transient"} 2' in text
    assert "collector_upload_seconds_count 1" in text
    assert "collector_connected 1" in text and "last_trade_age" not in text
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"\})? -?[0-9.e+]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line


def test_a_metric_has_one_name_and_every_reader_sees_it() -> None:
    registry = Registry()
    count = registry.counter("batches_landed", "Objects landed.")
    count.inc(3)
    assert registry.values()["batches_landed"] == 3
    assert "collector_batches_landed_total 3" in registry.prometheus()
    assert health_document(registry.values(), snapshot()[1])["counters"]["batches_landed"] == 3
    with pytest.raises(ValueError, match="registered twice"):
        registry.counter("batches_landed", "Again.")
