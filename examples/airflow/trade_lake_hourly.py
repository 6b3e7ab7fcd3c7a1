"""Trade Lake, downstream: wait for an hour's 60 minute markers, then summarise the hour.

Each minute partition `Binance/{SYMBOL}/YYYY/MM/DD/HH/mm/` gets a `_SUCCESS` manifest once it is
final (the collector's README describes the contract). This DAG runs once an hour ends:

1. `wait_for_hour`: a deferrable S3KeySensor on the hour's 60 `_SUCCESS` keys. Deferred, it
   waits in the triggerer, not in a worker slot; it succeeds when all 60 exist.
2. `summarise_hour`: reads the 60 manifests, fetches exactly the files they list (no listing,
   no guessing), and writes 1-minute OHLCV, VWAP and trade counts as one Parquet file, with
   each minute's declared unfilled gaps so nobody mistakes a hole for a quiet minute.

Settings (environment variables of the Airflow workers): TRADE_LAKE_BUCKET (required),
TRADE_LAKE_PREFIX (the collector's key prefix, default ""), TRADE_LAKE_SYMBOL (BTCUSDT),
TRADE_LAKE_SUMMARY_PREFIX (default "Derived/ohlcv_1m/"), TRADE_LAKE_AWS_CONN_ID (aws_default).
"""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

BUCKET = os.environ.get("TRADE_LAKE_BUCKET", "trade-lake-landing")
PREFIX = os.environ.get("TRADE_LAKE_PREFIX", "")
SYMBOL = os.environ.get("TRADE_LAKE_SYMBOL", "BTCUSDT")
SUMMARY_PREFIX = os.environ.get("TRADE_LAKE_SUMMARY_PREFIX", "Derived/ohlcv_1m/")
AWS_CONN_ID = os.environ.get("TRADE_LAKE_AWS_CONN_ID", "aws_default")


def minute_prefix(minute_start: datetime, symbol: str = SYMBOL, prefix: str = PREFIX) -> str:
    return f"{prefix}Binance/{symbol}/{minute_start:%Y/%m/%d/%H/%M}/"


def marker_keys(hour_start: datetime, symbol: str = SYMBOL, prefix: str = PREFIX) -> list[str]:
    """The 60 `_SUCCESS` keys of the hour that starts at `hour_start` (UTC)."""
    return [f"{minute_prefix(hour_start + timedelta(minutes=m), symbol, prefix)}_SUCCESS" for m in range(60)]


# The same 60 keys as Jinja, so the sensor's keys come from the run's own data interval.
MARKER_KEY_TEMPLATES = [
    f"{PREFIX}Binance/{SYMBOL}/"
    f"{{{{ data_interval_start.add(minutes={m}).strftime('%Y/%m/%d/%H/%M') }}}}/_SUCCESS"
    for m in range(60)
]

SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("minute", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("trades", pa.int64(), nullable=False),
        pa.field("open", pa.decimal128(18, 8)),
        pa.field("high", pa.decimal128(18, 8)),
        pa.field("low", pa.decimal128(18, 8)),
        pa.field("close", pa.decimal128(18, 8)),
        pa.field("volume", pa.decimal128(38, 8), nullable=False),
        pa.field("quote_volume", pa.decimal128(38, 16), nullable=False),
        pa.field("vwap", pa.decimal128(38, 8)),
        pa.field("first_trade_id", pa.int64()),
        pa.field("last_trade_id", pa.int64()),
        pa.field("unfilled_gaps", pa.int64(), nullable=False),
        pa.field("marker_revision", pa.int64(), nullable=False),
    ]
)


def summarise_minute(
    symbol: str, minute_start: datetime, manifest: dict[str, Any], trades: pa.Table
) -> dict[str, Any]:
    """One row of the summary, exact: decimals stay decimals, VWAP is rounded to 8 places."""
    ordered = trades.sort_by("trade_id")
    prices = [Decimal(p) for p in ordered.column("price").to_pylist()] if ordered.num_rows else []
    sizes = [Decimal(q) for q in ordered.column("quantity").to_pylist()] if ordered.num_rows else []
    volume = sum(sizes, Decimal(0))
    quote = sum((p * q for p, q in zip(prices, sizes, strict=True)), Decimal(0))
    ids = ordered.column("trade_id").to_pylist()
    return {
        "symbol": symbol,
        "minute": minute_start,
        "trades": ordered.num_rows,
        "open": prices[0] if prices else None,
        "high": max(prices) if prices else None,
        "low": min(prices) if prices else None,
        "close": prices[-1] if prices else None,
        "volume": volume,
        "quote_volume": quote,
        "vwap": (quote / volume).quantize(Decimal("0.00000001")) if volume else None,
        "first_trade_id": ids[0] if ids else None,
        "last_trade_id": ids[-1] if ids else None,
        "unfilled_gaps": len(manifest["unfilled_gaps"]),
        "marker_revision": manifest["revision"],
    }


def summarise_hour_from_s3(
    hook: Any,
    bucket: str,
    hour_start: datetime,
    *,
    symbol: str = SYMBOL,
    prefix: str = PREFIX,
    summary_prefix: str = SUMMARY_PREFIX,
) -> str:
    """Read the hour through its manifests, write the summary; returns the summary's key."""
    rows = []
    for m in range(60):
        minute_start = hour_start + timedelta(minutes=m)
        base = minute_prefix(minute_start, symbol, prefix)
        manifest = json.loads(hook.read_key(f"{base}_SUCCESS", bucket_name=bucket))
        tables = []
        for entry in manifest["files"]:
            body = hook.get_key(f"{base}{entry['name']}", bucket_name=bucket).get()["Body"].read()
            if len(body) != entry["bytes"]:
                raise ValueError(
                    f"{base}{entry['name']}: {len(body)} bytes, the manifest says {entry['bytes']}"
                )
            tables.append(pq.read_table(io.BytesIO(body), columns=["trade_id", "price", "quantity"]))
        trades = (
            pa.concat_tables(tables)
            if tables
            else pa.table(
                {
                    "trade_id": pa.array([], pa.int64()),
                    "price": pa.array([], pa.decimal128(18, 8)),
                    "quantity": pa.array([], pa.decimal128(18, 8)),
                }
            )
        )
        if trades.num_rows != manifest["rows"]:
            raise ValueError(f"{base}: {trades.num_rows} rows, the manifest says {manifest['rows']}")
        rows.append(summarise_minute(symbol, minute_start, manifest, trades))
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA), buffer, compression="zstd")
    key = f"{summary_prefix}{symbol}/{hour_start:%Y/%m/%d/%H}.parquet"
    hook.load_bytes(buffer.getvalue(), key=key, bucket_name=bucket, replace=True)
    return key


try:  # the DAG itself needs Airflow; the functions above do not
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
    from airflow.sdk import DAG, task
    from airflow.timetables.interval import CronDataIntervalTimetable
except ImportError:  # pragma: no cover - imported for its functions outside Airflow
    DAG = None

if DAG is not None:
    with DAG(
        dag_id="trade_lake_hourly_ohlcv",
        description="1-minute OHLCV and VWAP once all 60 minute markers of the hour exist",
        # A data interval per hour: the run for 10:00-11:00 starts after 11:00.
        schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
        start_date=datetime(2026, 11, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=4,
        tags=["trade-lake"],
    ) as dag:
        wait_for_hour = S3KeySensor(
            task_id="wait_for_hour",
            bucket_name=BUCKET,
            bucket_key=MARKER_KEY_TEMPLATES,
            aws_conn_id=AWS_CONN_ID,
            deferrable=True,
            poke_interval=30,
            timeout=2 * 3600,  # markers come about a minute after each minute; two hours means trouble
        )

        @task
        def summarise_hour(data_interval_start: datetime | None = None) -> str:
            assert data_interval_start is not None
            hour_start = datetime.fromtimestamp(data_interval_start.timestamp(), tz=UTC)
            return summarise_hour_from_s3(S3Hook(aws_conn_id=AWS_CONN_ID), BUCKET, hour_start)

        wait_for_hour >> summarise_hour()
