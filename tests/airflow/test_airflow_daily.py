"""The daily Airflow example, for real: the DAG parses; its deferrable S3KeySensor's poke is false
until every minute of the day is marked in moto's S3 server; its table sensor is false until
`collector compact` (a real run, into real Iceberg tables through Glue on moto's server or a
sqlite catalog) has committed the day; the summary then matches the landed trades.

Needs Airflow (`bash .ci/airflow` builds its own environment); skipped where it is not installed.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest

if not os.environ.get("TRADE_LAKE_REQUIRE_AIRFLOW"):  # .ci/airflow requires it; elsewhere it may be absent
    pytest.importorskip(
        "airflow.providers.amazon", reason="Airflow is tested in its own environment: bash .ci/airflow"
    )

import pyarrow as pa
import pyarrow.parquet as pq

from collector.lake.sinks import LocalSink
from tests.conftest import REPO
from tests.support.lake_days import land_symbol_day, landed_trades

EXAMPLES = REPO / "examples" / "airflow"
DAY = date(2025, 11, 24)
BUSY = {"BTCUSDT": (1_000, {0: 5, 1: 300, 600: 40, 1439: 7}), "ETHUSDT": (50_000, {2: 11, 900: 2})}


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def airflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "airflow"
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.setenv("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
    return home


def _aws_connection(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
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


def test_the_daily_dag_waits_on_the_days_markers_then_on_the_tables(
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jinja2
    import pendulum
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("TRADE_LAKE_PREFIX", "lake/")
    bag = DagBag(dag_folder=str(EXAMPLES))
    assert bag.import_errors == {}
    dag = bag.dags["trade_lake_daily_summary"]
    assert {t.task_id for t in dag.tasks} == {"wait_for_day", "wait_for_tables", "summarise_day"}
    sensor = dag.get_task("wait_for_day")
    assert sensor.deferrable is True and len(sensor.bucket_key) == 1440
    assert dag.get_task("wait_for_tables").upstream_task_ids == {"wait_for_day"}
    assert dag.get_task("wait_for_tables").mode == "reschedule"  # no worker slot held for hours
    assert dag.get_task("summarise_day").upstream_task_ids == {"wait_for_tables"}

    start = datetime(2026, 12, 1, tzinfo=UTC)
    rendered = [
        jinja2.Template(t).render(data_interval_start=pendulum.instance(start)) for t in sensor.bucket_key
    ]
    daily, hourly = _load("trade_lake_daily"), _load("trade_lake_hourly")
    assert rendered == daily.day_marker_keys(start.date(), "BTCUSDT", "lake/", "symbol")
    # The hourly DAG's 60 keys, 24 times: the same contract.
    assert rendered == [
        k for h in range(24) for k in hourly.marker_keys(start + timedelta(hours=h), "BTCUSDT", "lake/")
    ]
    assert rendered[-1] == "lake/Binance/BTCUSDT/2026/12/01/23/59/_SUCCESS"

    monkeypatch.setenv("TRADE_LAKE_LAYOUT", "market")
    sensor = DagBag(dag_folder=str(EXAMPLES)).dags["trade_lake_daily_summary"].get_task("wait_for_day")
    rendered = [
        jinja2.Template(t).render(data_interval_start=pendulum.instance(start)) for t in sensor.bucket_key
    ]
    assert rendered == [
        k for h in range(24) for k in hourly.market_marker_keys(start + timedelta(hours=h), "lake/")
    ]

    # Mistakes are import errors that name the setting.
    for name, value, said in (
        ("TRADE_LAKE_CATALOG", "hive", "TRADE_LAKE_CATALOG='hive'"),
        ("TRADE_LAKE_CATALOG", "sql", "TRADE_LAKE_CATALOG=sql needs TRADE_LAKE_WAREHOUSE"),
    ):
        monkeypatch.setenv(name, value)
        errors = DagBag(dag_folder=str(EXAMPLES)).import_errors
        assert any(said in e for e in errors.values()), errors


def test_the_day_is_checked_against_the_trades_table() -> None:
    daily = _load("trade_lake_daily")
    minute = datetime(2025, 11, 24, 10, tzinfo=UTC)
    bars = pa.Table.from_pylist(
        [
            {"minute": minute + timedelta(minutes=1), "open": Decimal(3), "high": Decimal(4),
             "low": Decimal(2), "close": Decimal(2), "volume": Decimal(2), "quote_volume": Decimal(5),
             "taker_buy_volume": Decimal(1), "trade_count": 2, "first_trade_id": 7, "last_trade_id": 8},
            {"minute": minute, "open": Decimal(1), "high": Decimal(1), "low": Decimal(1), "close": Decimal(1),
             "volume": Decimal(1), "quote_volume": Decimal(1), "taker_buy_volume": Decimal(0),
             "trade_count": 1, "first_trade_id": 6, "last_trade_id": 6},
        ]
    )  # fmt: skip
    row = daily.summarise_bars("BTCUSDT", DAY, bars, 3)
    assert (row["open"], row["high"], row["low"], row["close"]) == (1, 4, 1, 2)  # in minute order
    assert (row["trades"], row["first_trade_id"], row["last_trade_id"], row["minutes_traded"]) == (3, 6, 8, 2)
    assert row["vwap"] == Decimal(2) and row["volume"] == 3 and row["taker_buy_volume"] == 1
    with pytest.raises(ValueError, match=r"bars_1m table counts 3 trades, the trades table holds 4"):
        daily.summarise_bars("BTCUSDT", DAY, bars, 4)
    quiet = daily.summarise_bars("BTCUSDT", DAY, bars.slice(0, 0), 0)
    assert (quiet["trades"], quiet["open"], quiet["vwap"], quiet["volume"]) == (0, None, None, 0)


@pytest.mark.parametrize("catalog", ["glue", "sql"])
def test_a_compacted_day_is_summarised(
    catalog: str,
    airflow_home: Path,
    tmp_path: Path,
    s3_bucket: tuple[Any, str],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor

    client, bucket = s3_bucket
    _aws_connection(monkeypatch, moto_endpoint)
    daily = _load("trade_lake_daily")
    namespace = re.sub(r"[^a-z0-9]", "_", bucket)  # this test's own database in the shared server
    keys = daily.day_marker_keys(DAY, "BTCUSDT", "lake/", "symbol")
    sensor = S3KeySensor(task_id="wait", bucket_name=bucket, bucket_key=keys, aws_conn_id="aws_default")
    assert sensor.poke({}) is False  # nothing yet

    # ---- the day lands: two symbols, every minute marked, as the collector writes them
    sink = LocalSink(tmp_path / "landing")
    for symbol, (first, busy) in BUSY.items():
        land_symbol_day(sink, symbol, DAY, first, busy)
    files = [p for p in sink.root.rglob("*") if p.is_file()]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: client.put_object(Bucket=bucket, Key=f"lake/{p.relative_to(sink.root)}",
                                                  Body=p.read_bytes()), files))  # fmt: skip
    assert sensor.poke({}) is True
    saved = client.get_object(Bucket=bucket, Key=keys[700])["Body"].read()
    client.delete_object(Bucket=bucket, Key=keys[700])
    assert sensor.poke({}) is False  # 1,439 of 1,440 is not enough
    client.put_object(Bucket=bucket, Key=keys[700], Body=saved)
    assert sensor.poke({}) is True

    # ---- marked is not compacted: the table sensor still waits
    warehouse = tmp_path / "warehouse"

    def open_catalog() -> Any:
        if catalog == "glue":
            return daily.open_catalog(AwsBaseHook(aws_conn_id="aws_default", client_type="glue"), "glue")
        return daily.open_catalog(None, "sql", str(warehouse))

    if catalog == "glue":
        assert daily.day_in_tables(open_catalog(), DAY, namespace) is False
    else:
        with pytest.raises(FileNotFoundError, match=r"catalog\.db"):
            open_catalog()

    # ---- `collector compact`, as the instance's timer runs it
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env |= {
        "COLLECTOR_DESTINATION": f"s3://{bucket}/lake/",
        "COLLECTOR_S3_ENDPOINT_URL": moto_endpoint,
        "COLLECTOR_S3_REGION": "ap-northeast-1",
        "COLLECTOR_SPOOL_DIR": str(tmp_path / "spool"),
        "COLLECTOR_TABLE_NAMESPACE": namespace,
        "AWS_ENDPOINT_URL_GLUE": moto_endpoint,
    }
    if catalog == "sql":
        env |= {"COLLECTOR_TABLE_CATALOG": "sql", "COLLECTOR_TABLE_WAREHOUSE": str(warehouse)}
    compact = subprocess.run(
        [sys.executable, "-m", "collector.cli", "compact", "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert compact.returncode == 0, compact.stdout + compact.stderr
    assert [d["status"] for d in json.loads(compact.stdout)["days"]] == ["committed"]
    tables = open_catalog()
    assert daily.day_in_tables(tables, DAY, namespace) is True
    assert daily.day_in_tables(tables, DAY + timedelta(days=1), namespace) is False

    # ---- the summaries, against the landed trades read straight from the landing's files
    landed = landed_trades(sink, DAY)
    hook = S3Hook(aws_conn_id="aws_default")
    for symbol in BUSY:
        key = daily.summarise_day_from_tables(tables, hook, bucket, DAY, symbol=symbol, namespace=namespace)
        assert key == f"Derived/daily/{symbol}/2025/11/24.parquet"
        summary = pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()))
        assert summary.schema == daily.DAILY_SCHEMA
        (row,) = summary.to_pylist()
        trades = sorted((tid, v) for (s, tid), v in landed.items() if s == symbol)
        prices = [p for _, (p, _, _, _) in trades]
        volume = sum((q for _, (_, q, _, _) in trades), Decimal(0))
        quote = sum((p * q for _, (p, q, _, _) in trades), Decimal(0))
        assert row["trades"] == len(trades) == sum(BUSY[symbol][1].values())
        assert (row["open"], row["high"], row["low"], row["close"]) == (
            prices[0],
            max(prices),
            min(prices),
            prices[-1],
        )
        assert (row["volume"], row["quote_volume"]) == (volume, quote)
        assert row["vwap"] == (quote / volume).quantize(Decimal("0.00000001"), ROUND_HALF_EVEN)
        assert row["taker_buy_volume"] == sum((q for _, (_, q, _, maker) in trades if not maker), Decimal(0))
        assert (row["first_trade_id"], row["last_trade_id"]) == (trades[0][0], trades[-1][0])
        assert row["minutes_traded"] == len(BUSY[symbol][1]) and row["day"] == DAY
        snapshots = [tables.load_table(f"{namespace}.{t}").current_snapshot().snapshot_id
                     for t in ("trades", "bars_1m")]  # fmt: skip
        assert [row["trades_snapshot_id"], row["bars_snapshot_id"]] == snapshots

    # A symbol without a trade that day, read as market-wide: refused, nothing written.
    with pytest.raises(daily.NoTrades, match="no trade of SOLUSDT on 2025-11-24"):
        daily.summarise_day_from_tables(tables, hook, bucket, DAY, symbol="SOLUSDT", namespace=namespace,
                                        layout="market")  # fmt: skip
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="Derived/daily/SOLUSDT/")
