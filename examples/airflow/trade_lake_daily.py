"""Trade Lake, downstream: wait for a UTC day to be final and in the lake's tables, then write
that day's summary of one symbol from the `bars_1m` table, checked against the `trades` table.

`collector compact` (a daily timer on the collector's instance, 00:20 UTC) commits each final
day into two Apache Iceberg tables: `trades` (every trade once, partitioned by day) and
`bars_1m` (exact one-minute OHLCV, VWAP, trade counts). This DAG runs once a day ends:

1. `wait_for_day`: a deferrable S3KeySensor on the day's 1,440 `_SUCCESS` markers of the symbol
   (or, with TRADE_LAKE_LAYOUT=market, the 1,440 market-wide ones), as the hourly DAG
   (trade_lake_hourly.py) waits on an hour's 60: the collector has finished the day.
2. `wait_for_tables`: a sensor on both tables' properties: `collector compact` records
   `trade-lake.day.YYYY-MM-DD` (the digest of the markers the day was built from) in each table
   in the commit that adds the day, so its presence means the whole day is readable. Kept apart
   from the first so a failed run says which stage is late: the collector, or the compactor.
3. `summarise_day`: reads the symbol's day from `bars_1m` with a row filter (symbol, and the
   day's minutes: only that day's files are opened, and in them only the row groups whose
   statistics can hold the symbol), sums it into one row (open, high, low, close, volume, quote
   volume, VWAP, taker buy volume, trade count, first and last trade id, minutes with a trade),
   counts the symbol's trades of the day in `trades` and fails unless the two counts agree, then
   writes the row as `{TRADE_LAKE_DAILY_PREFIX}{SYMBOL}/YYYY/MM/DD.parquet` in the bucket, with the
   two tables' snapshot ids it was read from.

A day with no trade of the symbol: in the per-symbol layout its 1,440 markers prove the symbol
was captured all day, so the row says 0 trades. In the market-wide layout the markers are the
whole market's, and whether they covered this symbol is in each manifest (the hourly DAG reads
it); this DAG does not read 1,440 manifests, so a day without a single trade fails with
`NoTrades` instead of writing a row that would call the day quiet.

Settings (environment variables of the Airflow workers): TRADE_LAKE_BUCKET (required: the
landing bucket, where the summary goes too), TRADE_LAKE_PREFIX (the collector's key prefix,
default ""), TRADE_LAKE_SYMBOL (BTCUSDT), TRADE_LAKE_LAYOUT (`symbol` or `market`),
TRADE_LAKE_DAILY_PREFIX (default "Derived/daily/"), TRADE_LAKE_AWS_CONN_ID (aws_default: its
credentials, region and endpoint reach S3 and Glue), and the catalog the compactor writes:
TRADE_LAKE_CATALOG (`glue`, the default, or `sql`), TRADE_LAKE_NAMESPACE (the Glue database,
`trade_lake`: the collector's COLLECTOR_TABLE_NAMESPACE, Terraform's `table_namespace`) and, for
`sql` only, TRADE_LAKE_WAREHOUSE (the directory holding the sqlite catalog.db, the collector's
COLLECTOR_TABLE_WAREHOUSE).
"""

from __future__ import annotations

import io
import os
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

BUCKET = os.environ.get("TRADE_LAKE_BUCKET", "trade-lake-landing")
PREFIX = os.environ.get("TRADE_LAKE_PREFIX", "")
SYMBOL = os.environ.get("TRADE_LAKE_SYMBOL", "BTCUSDT")
DAILY_PREFIX = os.environ.get("TRADE_LAKE_DAILY_PREFIX", "Derived/daily/")
AWS_CONN_ID = os.environ.get("TRADE_LAKE_AWS_CONN_ID", "aws_default")
NAMESPACE = os.environ.get("TRADE_LAKE_NAMESPACE", "trade_lake")
WAREHOUSE = os.environ.get("TRADE_LAKE_WAREHOUSE", "")
LAYOUTS, CATALOGS = ("symbol", "market"), ("glue", "sql")
LAYOUT = os.environ.get("TRADE_LAKE_LAYOUT", "symbol").strip().lower()
CATALOG = os.environ.get("TRADE_LAKE_CATALOG", "glue").strip().lower()
if LAYOUT not in LAYOUTS:  # a DAG import error names the mistake at once
    raise ValueError(f"TRADE_LAKE_LAYOUT={LAYOUT!r}: give one of {', '.join(LAYOUTS)}")
if CATALOG not in CATALOGS:
    raise ValueError(f"TRADE_LAKE_CATALOG={CATALOG!r}: give one of {', '.join(CATALOGS)}")
if CATALOG == "sql" and not WAREHOUSE:
    raise ValueError("TRADE_LAKE_CATALOG=sql needs TRADE_LAKE_WAREHOUSE, the directory of its catalog.db")

TRADES, BARS = "trades", "bars_1m"
_EIGHT = Decimal("0.00000001")


def day_marker_keys(day: date, symbol: str = SYMBOL, prefix: str = PREFIX, layout: str = LAYOUT) -> list[str]:
    """The 1,440 `_SUCCESS` keys of a UTC day: the symbol's, or the market-wide ones."""
    folder = "_market" if layout == "market" else symbol
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    minutes = (start + timedelta(minutes=m) for m in range(1440))
    return [f"{prefix}Binance/{folder}/{minute:%Y/%m/%d/%H/%M}/_SUCCESS" for minute in minutes]


# The same keys as Jinja, so the sensor's keys come from the run's own data interval.
MARKER_KEY_TEMPLATES = [
    f"{PREFIX}Binance/{'_market' if LAYOUT == 'market' else SYMBOL}/"
    f"{{{{ data_interval_start.add(minutes={m}).strftime('%Y/%m/%d/%H/%M') }}}}/_SUCCESS"
    for m in range(1440)
]

DAILY_SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("day", pa.date32(), nullable=False),
        pa.field("trades", pa.int64(), nullable=False),
        pa.field("open", pa.decimal128(18, 8)),
        pa.field("high", pa.decimal128(18, 8)),
        pa.field("low", pa.decimal128(18, 8)),
        pa.field("close", pa.decimal128(18, 8)),
        pa.field("volume", pa.decimal128(38, 8), nullable=False),
        pa.field("quote_volume", pa.decimal128(38, 16), nullable=False),
        pa.field("vwap", pa.decimal128(18, 8)),
        pa.field("taker_buy_volume", pa.decimal128(38, 8), nullable=False),
        pa.field("first_trade_id", pa.int64()),
        pa.field("last_trade_id", pa.int64()),
        pa.field("minutes_traded", pa.int64(), nullable=False),
        pa.field("trades_snapshot_id", pa.int64(), nullable=False),
        pa.field("bars_snapshot_id", pa.int64(), nullable=False),
    ]
)


class NoTrades(ValueError):
    """The market-wide layout's day holds no trade of the symbol (see the module docstring)."""


def day_property(day: date) -> str:
    """The table property `collector compact` sets in the commit that adds a day."""
    return f"trade-lake.day.{day.isoformat()}"


def open_catalog(hook: Any = None, catalog: str = CATALOG, warehouse: str = WAREHOUSE) -> Any:
    """The catalog the compactor writes: Glue, through the Airflow connection's credentials,
    region and endpoint (`hook`: an AwsBaseHook for Glue), or the sqlite file of a local one."""
    if catalog == "sql":
        from pyiceberg.catalog.sql import SqlCatalog

        where = Path(warehouse).resolve()
        if not (where / "catalog.db").is_file():
            raise FileNotFoundError(
                f"no {where / 'catalog.db'}: TRADE_LAKE_WAREHOUSE is the compactor's warehouse"
            )
        return SqlCatalog("lake", uri=f"sqlite:///{where / 'catalog.db'}", warehouse=where.as_uri())
    from pyiceberg.catalog.glue import GlueCatalog

    properties = {"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"}
    credentials = hook.get_credentials()
    properties |= {"s3.access-key-id": credentials.access_key, "s3.secret-access-key": credentials.secret_key}
    if credentials.token:
        properties["s3.session-token"] = credentials.token
    if hook.conn_region_name:
        properties["s3.region"] = hook.conn_region_name
    if hook.conn_config.endpoint_url:
        properties["s3.endpoint"] = hook.conn_config.endpoint_url
    return GlueCatalog("lake", client=hook.conn, **properties)


def day_in_tables(catalog: Any, day: date, namespace: str = NAMESPACE) -> bool:
    """Both tables exist and hold the day (committed by `collector compact`)."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    try:
        tables = [catalog.load_table(f"{namespace}.{name}") for name in (TRADES, BARS)]
    except (NoSuchTableError, NoSuchNamespaceError):
        return False
    return all(day_property(day) in table.properties for table in tables)


def _day_filter(column: str, symbol: str, day: date) -> Any:
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return And(
        EqualTo("symbol", symbol),
        GreaterThanOrEqual(column, start.isoformat()),
        LessThan(column, (start + timedelta(days=1)).isoformat()),
    )


def summarise_bars(symbol: str, day: date, bars: pa.Table, trades_counted: int) -> dict[str, Any]:
    """The day's row from its one-minute bars, exact: decimals stay decimals, VWAP is rounded
    half-even to 8 places as the bars' own. Fails unless the bars count `trades_counted` trades."""
    rows = sorted(bars.to_pylist(), key=lambda r: r["minute"])
    count = sum(r["trade_count"] for r in rows)
    if count != trades_counted:
        raise ValueError(
            f"{symbol} on {day}: the bars_1m table counts {count} trades, the trades table holds "
            f"{trades_counted}; the tables disagree: run `collector compact --from {day}` again"
        )
    volume = sum((r["volume"] for r in rows), Decimal(0))
    quote = sum((r["quote_volume"] for r in rows), Decimal(0))
    return {
        "symbol": symbol,
        "day": day,
        "trades": count,
        "open": rows[0]["open"] if rows else None,
        "high": max(r["high"] for r in rows) if rows else None,
        "low": min(r["low"] for r in rows) if rows else None,
        "close": rows[-1]["close"] if rows else None,
        "volume": volume,
        "quote_volume": quote,
        "vwap": (quote / volume).quantize(_EIGHT, rounding=ROUND_HALF_EVEN) if volume else None,
        "taker_buy_volume": sum((r["taker_buy_volume"] for r in rows), Decimal(0)),
        "first_trade_id": rows[0]["first_trade_id"] if rows else None,
        "last_trade_id": rows[-1]["last_trade_id"] if rows else None,
        "minutes_traded": len(rows),
    }


def summarise_day_from_tables(
    catalog: Any,
    hook: Any,
    bucket: str,
    day: date,
    *,
    symbol: str = SYMBOL,
    namespace: str = NAMESPACE,
    daily_prefix: str = DAILY_PREFIX,
    layout: str = LAYOUT,
) -> str:
    """Read the day from the tables, write its summary (`hook`: an S3Hook); returns its key."""
    trades = catalog.load_table(f"{namespace}.{TRADES}")
    bars = catalog.load_table(f"{namespace}.{BARS}")
    if not all(day_property(day) in t.properties for t in (trades, bars)):
        raise ValueError(f"{day} is not in the tables {namespace}.{TRADES} and {namespace}.{BARS} yet")
    # Each read pinned to one snapshot: the ids written below are the data read.
    snapshots = [t.current_snapshot().snapshot_id for t in (trades, bars)]
    day_bars = bars.scan(row_filter=_day_filter("minute", symbol, day), snapshot_id=snapshots[1]).to_arrow()
    counted = trades.scan(
        row_filter=_day_filter("trade_time", symbol, day),
        selected_fields=("trade_id",),
        snapshot_id=snapshots[0],
    ).to_arrow()
    if layout == "market" and counted.num_rows == 0:
        raise NoTrades(
            f"no trade of {symbol} on {day} in {namespace}.{TRADES}: in the market-wide layout that is "
            "a day it was not captured (watched, not listed yet, or delisted) more often than a quiet "
            "one; the day's market markers say which (their `covered` list)"
        )
    row = summarise_bars(symbol, day, day_bars, counted.num_rows)
    row |= {"trades_snapshot_id": snapshots[0], "bars_snapshot_id": snapshots[1]}
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([row], schema=DAILY_SCHEMA), buffer, compression="zstd")
    key = f"{daily_prefix}{symbol}/{day:%Y/%m/%d}.parquet"
    hook.load_bytes(buffer.getvalue(), key=key, bucket_name=bucket, replace=True)
    return key


try:  # the DAG itself needs Airflow; the functions above do not
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
    from airflow.sdk import DAG, PokeReturnValue, task
    from airflow.timetables.interval import CronDataIntervalTimetable
except ImportError:  # pragma: no cover - imported for its functions outside Airflow
    DAG = None


def _catalog_of_connection() -> Any:
    return open_catalog(
        AwsBaseHook(aws_conn_id=AWS_CONN_ID, client_type="glue") if CATALOG == "glue" else None
    )


def _day_of(data_interval_start: datetime | None) -> date:
    assert data_interval_start is not None
    return datetime.fromtimestamp(data_interval_start.timestamp(), tz=UTC).date()


if DAG is not None:
    with DAG(
        dag_id="trade_lake_daily_summary",
        description="A symbol's day from the lake's tables once the day is marked and compacted",
        # A data interval per UTC day: the run for 2026-11-30 starts after 2026-12-01 00:00.
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        start_date=datetime(2026, 11, 1, tzinfo=UTC),
        catchup=False,
        max_active_runs=2,
        tags=["trade-lake"],
    ) as dag:
        wait_for_day = S3KeySensor(
            task_id="wait_for_day",
            bucket_name=BUCKET,
            bucket_key=MARKER_KEY_TEMPLATES,
            aws_conn_id=AWS_CONN_ID,
            deferrable=True,
            poke_interval=300,  # 1,440 HEADs a poke: every five minutes is plenty for a daily run
            timeout=6 * 3600,  # the last minute is marked seconds after midnight; six hours means trouble
        )

        # The compactor starts at 00:20 UTC (and up to 5 minutes later) and takes minutes a day.
        @task.sensor(poke_interval=600, timeout=8 * 3600, mode="reschedule")
        def wait_for_tables(data_interval_start: datetime | None = None) -> PokeReturnValue:
            try:
                catalog = _catalog_of_connection()
            except FileNotFoundError as exc:  # a sqlite catalog the compactor has not made yet
                print(f"waiting: {exc}")
                return PokeReturnValue(is_done=False)
            return PokeReturnValue(is_done=day_in_tables(catalog, _day_of(data_interval_start)))

        @task
        def summarise_day(data_interval_start: datetime | None = None) -> str:
            return summarise_day_from_tables(
                _catalog_of_connection(),
                S3Hook(aws_conn_id=AWS_CONN_ID),
                BUCKET,
                _day_of(data_interval_start),
            )

        wait_for_day >> wait_for_tables() >> summarise_day()
