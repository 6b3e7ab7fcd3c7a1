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


# The market-wide layout (TRADE_LAKE_LAYOUT=market): a small whole market, two symbols watched.
MARKET_SYMBOLS, MARKET_PER_DAY, WATCHED = 12, 60_000, ("BTCUSDT", "ETHUSDT")


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


def test_with_the_market_layout_the_dag_waits_on_the_hours_market_markers(
    airflow_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jinja2
    import pendulum
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("TRADE_LAKE_LAYOUT", "market")
    monkeypatch.setenv("TRADE_LAKE_PREFIX", "lake/")
    bag = DagBag(dag_folder=str(DAG_FILE.parent))
    assert bag.import_errors == {}
    dag = bag.dags["trade_lake_hourly_ohlcv"]
    sensor = dag.get_task("wait_for_hour")
    assert sensor.deferrable is True and len(sensor.bucket_key) == 60
    hour = datetime(2026, 12, 1, 20, tzinfo=UTC)
    rendered = [
        jinja2.Template(t).render(data_interval_start=pendulum.instance(hour)) for t in sensor.bucket_key
    ]
    assert rendered == _example().market_marker_keys(hour, "lake/")
    assert rendered[0] == "lake/Binance/_market/2026/12/01/20/00/_SUCCESS"
    assert rendered[-1] == "lake/Binance/_market/2026/12/01/20/59/_SUCCESS"

    monkeypatch.setenv("TRADE_LAKE_LAYOUT", "markets")  # a typo is an import error, named
    bag = DagBag(dag_folder=str(DAG_FILE.parent))
    assert any("TRADE_LAKE_LAYOUT='markets'" in e for e in bag.import_errors.values()), bag.import_errors


def test_a_symbols_rows_are_read_from_its_row_groups_only(
    airflow_home: Path, s3_bucket: tuple[Any, str], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A market part as the collector writes them (sorted by symbol then trade id, row groups of
    16,384 rows with statistics): one symbol's rows cost the footer and its row groups."""
    import pyarrow as pa

    client, bucket = s3_bucket
    _aws_connection(monkeypatch, moto_endpoint)
    example = _example()
    symbols = tuple(f"{c * 3}USDT" for c in "ABCDEFGH")
    n = 20_000  # eight symbols of 20,000: ten row groups, each symbol in two of them
    table = pa.table(
        {
            "symbol": [s for s in symbols for _ in range(n)],
            "trade_id": [i for _ in symbols for i in range(n)],
            "price": pa.array(
                [Decimal(i % 997) / 100 for _ in symbols for i in range(n)], pa.decimal128(18, 8)
            ),
            "quantity": pa.array([Decimal(1)] * (n * len(symbols)), pa.decimal128(18, 8)),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=16_384, compression="zstd")
    body = buffer.getvalue()
    client.put_object(Bucket=bucket, Key="part.parquet", Body=body)
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    obj = S3Hook(aws_conn_id="aws_default").get_key("part.parquet", bucket_name=bucket)
    fetched: list[int] = []

    class Counting:  # the boto3 Object, counting the bytes of each ranged GET
        key, content_length, e_tag = obj.key, obj.content_length, obj.e_tag

        def get(self, **kwargs: Any) -> Any:
            answer = obj.get(**kwargs)
            data = answer["Body"].read()
            fetched.append(len(data))
            return {**answer, "Body": io.BytesIO(data)}

    rows = example.read_part_rows(Counting(), "BBBUSDT", len(body))
    assert rows.column_names == ["trade_id", "price", "quantity"]
    assert rows.column("trade_id").to_pylist() == list(range(n))
    assert rows.column("price").to_pylist() == [Decimal(i % 997) / 100 for i in range(n)]
    # Two GETs: the footer, then the two row groups' columns in one range; not the part.
    assert len(fetched) == 2 and sum(fetched) < 0.5 * len(body), (fetched, len(body))
    assert example.read_part_rows(obj, "ZZZUSDT", len(body)).num_rows == 0  # beyond every group's max
    with pytest.raises(ValueError, match="bytes, the manifest says"):
        example.read_part_rows(obj, "BBBUSDT", len(body) + 1)


def test_the_sensor_waits_for_every_market_marker_then_unwatched_symbols_are_summarised(
    airflow_home: Path,
    procs: Callable[..., Proc],
    tmp_path: Path,
    s3_bucket: tuple[Any, str],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor

    from collector.feed.simulated import Market

    client, bucket = s3_bucket
    _aws_connection(monkeypatch, moto_endpoint)
    example = _example()
    # A whole market of 12 symbols (the emulator's seed, 1), 60,000 trades a day in all, from
    # 10 minutes before the last whole UTC hour that ended 2 minutes ago or more: the collector
    # catches up 70 minutes for one whole hour (each market minute is assembled in turn, so
    # minutes, not trades, take the time), and the quietest symbol (a trade every 94 s) is
    # captured, so covered, before the hour. BTCUSDT and ETHUSDT are watched; the other 10 land
    # market-wide, the quietest with minutes without a trade.
    market = Market.whole_market(MARKET_SYMBOLS, MARKET_PER_DAY, seed=1)
    busy, quiet = market.symbols[2], market.symbols[-1]
    assert busy not in WATCHED and market.trades_per_day_of(quiet) < 1440  # under one a minute
    now = datetime.now(UTC)
    hour = (now - timedelta(minutes=2)).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    start = hour - timedelta(minutes=10)
    keys = example.market_marker_keys(hour, "lake/")
    sensor = S3KeySensor(task_id="wait", bucket_name=bucket, bucket_key=keys, aws_conn_id="aws_default")
    assert sensor.poke({}) is False  # nothing yet

    _, url = start_emulator(
        procs, "--market-symbols", str(MARKET_SYMBOLS), "--market-trades-per-day", str(MARKET_PER_DAY),
        "--clock-from-s", str(round((now - start).total_seconds())),
    )  # fmt: skip
    collector = procs(
        "run",
        env=collector_env(
            url, tmp_path, symbols="ALL", watched_symbols=",".join(WATCHED), destination=f"s3://{bucket}/lake/",
            s3_endpoint_url=moto_endpoint, s3_region="ap-northeast-1", max_batch_age_s="60",
            market_part_rows="10",  # a minute of about 30 trades in several parts, a symbol across two
        ),
    )  # fmt: skip
    last_key = keys[-1]

    def marked(key: str) -> bool:
        return any(e["key"].endswith(key) for e in collector.named("collector.market_minute_marked"))

    wait_for(lambda: marked(last_key), timeout_s=300, what="every market minute of the hour marked")
    stop_cleanly(collector)
    assert sensor.poke({}) is True
    # 59 of 60 is not enough.
    saved = client.get_object(Bucket=bucket, Key=last_key)["Body"].read()
    client.delete_object(Bucket=bucket, Key=last_key)
    assert sensor.poke({}) is False
    client.put_object(Bucket=bucket, Key=last_key, Body=saved)
    assert sensor.poke({}) is True

    manifests = [json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]
    assert all(len(m["files"]) >= 2 for m in manifests if m["rows"] > 10)  # several parts a minute
    assert any(len(e["files"]) >= 2 for m in manifests for e in m["symbols"].values())  # across two
    # Independently: every trade of the hour straight from the landed parts of its minutes.
    trades: dict[tuple[str, datetime], list[dict[str, Any]]] = {}
    for minute_key in keys:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=minute_key.removesuffix("_SUCCESS"))
        for obj in listed["Contents"]:
            if obj["Key"].endswith(".parquet"):
                body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                columns = ["symbol", "trade_id", "price", "quantity", "trade_time"]
                for t in pq.read_table(io.BytesIO(body), columns=columns).to_pylist():
                    minute = t["trade_time"].replace(second=0, microsecond=0)
                    if hour <= minute < hour + timedelta(hours=1):
                        trades.setdefault((t["symbol"], minute), []).append(t)
    hook = S3Hook(aws_conn_id="aws_default")
    hour_us = (int(hour.timestamp()) * 1_000_000, int(hour.timestamp() + 3600) * 1_000_000)
    for symbol in (busy, quiet):
        assert all(symbol in m["covered"] for m in manifests)
        key = example.summarise_hour_from_s3(
            hook, bucket, hour, symbol=symbol, prefix="lake/", layout="market"
        )
        assert key == f"Derived/ohlcv_1m/{symbol}/{hour:%Y/%m/%d/%H}.parquet"
        summary = pq.read_table(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()))
        assert summary.schema == example.SUMMARY_SCHEMA
        rows = summary.to_pylist()
        assert [r["minute"] for r in rows] == [hour + timedelta(minutes=m) for m in range(60)]
        # Every trade the market made in the hour, no more: the model says how many.
        expected = market.first_at(symbol, hour_us[1]) - market.first_at(symbol, hour_us[0])
        assert sum(r["trades"] for r in rows) == sum(len(v) for (s, _), v in trades.items() if s == symbol)
        assert sum(r["trades"] for r in rows) == expected
        for row, manifest in zip(rows, manifests, strict=True):
            minute_trades = sorted(trades.get((symbol, row["minute"]), []), key=lambda t: t["trade_id"])
            assert row["symbol"] == symbol and row["trades"] == len(minute_trades)
            assert row["trades"] == manifest["symbols"].get(symbol, {"rows": 0})["rows"]
            assert row["unfilled_gaps"] == 0 and row["marker_revision"] == manifest["revision"] == 1
            if not minute_trades:  # covered, and absent from `symbols`: a quiet minute
                assert symbol not in manifest["symbols"]
                assert (row["open"], row["vwap"], row["first_trade_id"], row["volume"]) == (
                    None,
                    None,
                    None,
                    0,
                )
                continue
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
            assert (row["first_trade_id"], row["last_trade_id"]) == (
                minute_trades[0]["trade_id"],
                minute_trades[-1]["trade_id"],
            )
        if symbol == busy:
            assert all(r["trades"] > 0 for r in rows)
        else:  # the quiet one has minutes of both kinds
            assert any(r["trades"] == 0 for r in rows) and any(r["trades"] > 0 for r in rows)

    # A watched symbol is not in the market-wide layout: said, with its minutes, and nothing written.
    with pytest.raises(example.NotCovered, match=r"BTCUSDT is not covered .* in 60 minute\(s\)") as caught:
        example.summarise_hour_from_s3(hook, bucket, hour, symbol="BTCUSDT", prefix="lake/", layout="market")
    assert caught.value.minutes == [hour + timedelta(minutes=m) for m in range(60)]
    assert f"{hour:%Y-%m-%dT%H:%M}Z" in str(caught.value) and "TRADE_LAKE_LAYOUT=symbol" in str(caught.value)
    assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix="Derived/ohlcv_1m/BTCUSDT/")
