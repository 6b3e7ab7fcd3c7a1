"""The Airflow example, for real: the DAG parses, and its deferrable S3KeySensor's poke is false
until the collector has marked every minute of the hour in moto's S3 server, then true; the
summary task then reads exactly what the markers list.

Needs Airflow (`bash .ci/airflow` builds its own environment); skipped where it is not installed.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

if not os.environ.get("TRADE_LAKE_REQUIRE_AIRFLOW"):  # .ci/airflow requires it; elsewhere it may be absent
    pytest.importorskip(
        "airflow.providers.amazon", reason="Airflow is tested in its own environment: bash .ci/airflow"
    )

import pyarrow.parquet as pq

from tests.conftest import REPO, Proc, collector_env, start_emulator, stop_cleanly, wait_for

DAG_FILE = REPO / "examples" / "airflow" / "trade_lake_hourly.py"


def _example() -> Any:
    spec = importlib.util.spec_from_file_location("trade_lake_hourly", DAG_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["trade_lake_hourly"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def airflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "airflow"
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.setenv("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    return home


def test_the_dag_parses_with_a_deferrable_sensor_on_60_markers(airflow_home: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE.parent))
    assert bag.import_errors == {}
    dag = bag.dags.get("trade_lake_hourly_ohlcv")
    assert dag is not None
    assert {t.task_id for t in dag.tasks} == {"wait_for_hour", "summarise_hour"}
    sensor = dag.get_task("wait_for_hour")
    assert sensor.deferrable is True
    assert len(sensor.bucket_key) == 60
    assert dag.get_task("summarise_hour").upstream_task_ids == {"wait_for_hour"}


def test_the_sensor_waits_for_every_marker_of_the_hour_then_the_hour_is_summarised(
    airflow_home: Path,
    procs: Callable[..., Proc],
    tmp_path: Path,
    s3_bucket: tuple[Any, str],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client, bucket = s3_bucket
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": moto_endpoint, "region_name": "ap-northeast-1"},
            }
        ),
    )
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor

    example = _example()
    # Trade times from 2 h 10 min ago for 2 hours (72,000 trades 100 ms apart): one whole
    # UTC hour lies inside, and the collector marks all of it.
    now = datetime.now(UTC)
    start = now - timedelta(hours=2, minutes=10)
    hour = (start + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    keys = example.marker_keys(hour, "BTCUSDT", "lake/")
    sensor = S3KeySensor(task_id="wait", bucket_name=bucket, bucket_key=keys, aws_conn_id="aws_default")
    assert sensor.poke({}) is False  # nothing yet

    _, url = start_emulator(
        procs, "--count", "72000", "--rate", "0", "--clock-from-s", str(round((now - start).total_seconds())),
        "--clock-step-ms", "100",
    )  # fmt: skip
    collector = procs(
        "run",
        env=collector_env(
            url, tmp_path, destination=f"s3://{bucket}/lake/", s3_endpoint_url=moto_endpoint,
            s3_region="ap-northeast-1", max_batch_age_s="60",
        ),
    )  # fmt: skip
    last_key = keys[-1]

    def marked(key: str) -> bool:
        return any(e["key"].endswith(key) for e in collector.named("collector.minute_marked"))

    wait_for(lambda: marked(last_key), timeout_s=300, what="every minute of the hour marked")
    stop_cleanly(collector)
    assert sensor.poke({}) is True
    # 59 of 60 is not enough.
    saved = client.get_object(Bucket=bucket, Key=last_key)["Body"].read()
    client.delete_object(Bucket=bucket, Key=last_key)
    assert sensor.poke({}) is False
    client.put_object(Bucket=bucket, Key=last_key, Body=saved)
    assert sensor.poke({}) is True

    key = example.summarise_hour_from_s3(
        S3Hook(aws_conn_id="aws_default"), bucket, hour, symbol="BTCUSDT", prefix="lake/"
    )
    summary = pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()))
    assert summary.num_rows == 60
    rows = summary.to_pylist()
    # Independently: every trade of the hour straight from the landed objects.
    trades: dict[datetime, list[dict[str, Any]]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="lake/Binance/BTCUSDT/"
    ):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith(".parquet"):
                body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                columns = ["trade_id", "price", "quantity", "trade_time"]
                for t in pq.read_table(io.BytesIO(body), columns=columns).to_pylist():
                    minute = t["trade_time"].replace(second=0, microsecond=0)
                    if hour <= minute < hour + timedelta(hours=1):
                        trades.setdefault(minute, []).append(t)
    assert sum(r["trades"] for r in rows) == sum(len(v) for v in trades.values()) == 36_000
    for row in rows:
        minute_trades = sorted(trades[row["minute"]], key=lambda t: t["trade_id"])
        prices = [t["price"] for t in minute_trades]
        volume = sum((t["quantity"] for t in minute_trades), Decimal(0))
        quote = sum((t["price"] * t["quantity"] for t in minute_trades), Decimal(0))
        assert (row["open"], row["high"], row["low"], row["close"]) == (
            prices[0],
            max(prices),
            min(prices),
            prices[-1],
        )
        assert row["volume"] == volume and row["quote_volume"] == quote
        assert row["vwap"] == (quote / volume).quantize(Decimal("0.00000001"))
        assert row["unfilled_gaps"] == 0 and row["marker_revision"] == 1
