"""Health and metrics: the verdict's rules, and the endpoints telling the truth during a real run."""

from __future__ import annotations

import json
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collector.counters import Registry
from collector.health import Status, health_document, verdict
from tests.conftest import Proc, collector_env, free_port, start_emulator, wait_for
from tests.landing import read_landing


def snapshot(**changes: Any) -> tuple[dict[str, Any], Status]:
    """Counter values and status as a running collector would report them, with `changes`."""
    status_fields = {
        "stream_url": "ws://x/ws/btcusdt@trade",
        "connected": True,
        "disconnected_for_s": 0.0,
        "destination": "landing/",
        "destination_ok": True,
        "destination_error": None,
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


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback http only)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def landed_rows(doc: dict[str, Any]) -> int:
    return int(sum(doc["trades_landed"].values()))


def test_health_and_metrics_report_the_truth_during_a_run(procs: Callable[..., Proc], tmp_path: Path) -> None:
    port = free_port()
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--count", "2000", "--rate", "1000")
    collector = procs("run", env=collector_env(url, tmp_path, health_port=str(port)))
    base = f"http://127.0.0.1:{port}"

    def health() -> dict[str, Any] | None:
        try:
            status, body = get(base + "/health")
        except OSError:
            return None
        return {"status": status, **json.loads(body)}

    doc = wait_for(lambda: (h := health()) and h["status"] == 200 and h, what="healthy")
    assert doc["verdict"] in ("ok", "degraded") and doc["streams"][0]["connected"] is True
    assert doc["destination"]["ok"] is True
    doc = wait_for(lambda: (h := health()) and landed_rows(h) == 2000 and h, what="all 2000 trades landed")
    assert doc["trades_received"] == {"BTCUSDT": 2000}
    assert doc["spool"] == {"objects": 0, "bytes": 0, "dropped_trades": 0}
    assert doc["open_gaps"] == 0
    assert doc["last_trade_age_s"] >= 0 and doc["last_landed_age_s"] >= 0

    status, metrics = get(base + "/metrics")
    assert status == 200
    files = sorted((tmp_path / "landing").rglob("*.parquet"))
    assert (
        f'collector_trades_landed_total{{symbol="BTCUSDT"}} {len(read_landing(tmp_path / "landing"))}'
        in metrics
    )
    assert f"collector_batches_landed_total {len(files)}" in metrics
    assert f"collector_bytes_landed_total {sum(f.stat().st_size for f in files)}" in metrics
    assert "collector_connected 1" in metrics
    assert get(base + "/nope")[0] == 404

    status_cmd = procs("status", "--port", str(port))
    assert status_cmd.popen.wait(timeout=60) == 0
    assert json.loads("".join(status_cmd.lines))["healthy"] is True
    collector.send(signal.SIGTERM)
    assert collector.popen.wait(timeout=60) == 0


def test_health_says_failing_and_why_when_the_destination_is_unusable(
    procs: Callable[..., Proc], tmp_path: Path, moto_endpoint: str, aws_env: dict[str, str]
) -> None:
    port = free_port()
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--rate", "50")
    env = collector_env(
        url,
        tmp_path,
        health_port=str(port),
        destination="s3://no-such-landing-bucket",
        s3_endpoint_url=moto_endpoint,
    )
    env.update(aws_env)
    collector = procs("run", env=env)
    collector.wait_event("collector.destination_unusable")
    status, body = wait_for(lambda: _try_get(f"http://127.0.0.1:{port}/health"), what="health answers")
    doc = json.loads(body)
    assert status == 503 and doc["verdict"] == "failing"
    assert 'landing bucket "no-such-landing-bucket" does not exist' in doc["reasons"][0]
    status_cmd = procs("status", "--port", str(port))
    assert status_cmd.popen.wait(timeout=60) == 1
    collector.stop()


def _try_get(url: str) -> tuple[int, str] | None:
    try:
        return get(url)
    except OSError:
        return None


def test_status_says_when_nothing_is_running(procs: Callable[..., Proc]) -> None:
    proc = procs("status", "--port", str(free_port()))
    assert proc.popen.wait(timeout=60) == 1
    assert "nothing answers" in proc.stderr and "is it running?" in proc.stderr


def test_alarm_metrics_are_published_to_cloudwatch(
    procs: Callable[..., Proc], tmp_path: Path, moto_endpoint: str, aws_env: dict[str, str]
) -> None:
    import boto3

    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--rate", "50")
    env = collector_env(url, tmp_path, cloudwatch_namespace="TradeLakeTest/Run", s3_region="ap-northeast-1")
    env.update(aws_env)
    env["AWS_ENDPOINT_URL_CLOUDWATCH"] = moto_endpoint
    collector = procs("run", env=env)
    cloudwatch = boto3.client("cloudwatch", endpoint_url=moto_endpoint, region_name="ap-northeast-1")

    def names() -> set[str]:
        listed = cloudwatch.list_metrics(Namespace="TradeLakeTest/Run")["Metrics"]
        return {m["MetricName"] for m in listed}

    wait_for(lambda: names() == {"LastLandedBatchAgeSeconds", "SpoolBytes", "UnfilledGaps"}, what="metrics")
    collector.stop()
