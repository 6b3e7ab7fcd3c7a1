"""/health, /metrics and CloudWatch telling the truth during a real run."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Proc, collector_env, free_port, start_emulator, wait_for
from tests.support.landing import read_landing


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
    assert doc["spool"] == {"objects": 0, "bytes": 0, "dropped_trades": 0, "ok": True, "error": None}
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
