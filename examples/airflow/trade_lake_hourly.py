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
TRADE_LAKE_SUMMARY_PREFIX (default "Derived/ohlcv_1m/"), TRADE_LAKE_AWS_CONN_ID (aws_default),
TRADE_LAKE_LAYOUT (`symbol`, the default, or `market`).

TRADE_LAKE_LAYOUT=market is for a symbol the collector does not watch (not in its
COLLECTOR_WATCHED_SYMBOLS): those land market-wide, all of them in a part (several in a busy
minute) and one `_SUCCESS` a minute under `Binance/_market/YYYY/MM/DD/HH/mm/`. The sensor waits
on the hour's 60 market `_SUCCESS` keys; the summary reads each market manifest and, of its parts, only those
that `symbols[SYMBOL]["files"]` names. It checks each part's size against the manifest (a HEAD),
then reads just the symbol's row groups by their min/max statistics on `symbol` (byte-range
GETs: the footer, then the chosen row groups, not the whole minute of the market), keeps the
symbol's rows, and checks their count against `symbols[SYMBOL]["rows"]` (0: a symbol that is
`covered` but absent from `symbols` had no trade that minute). `unfilled_gaps` is that symbol's
entries. The summary is the same: one row a minute, the same schema.

A minute whose manifest does not list the symbol in `covered` was not captured market-wide:
the symbol is watched (its minutes are in the per-symbol layout: use TRADE_LAKE_LAYOUT=symbol),
was not listed yet, or was no longer streamed. The summary then raises `NotCovered`, naming
the symbol and every such minute of the hour, before it reads a part or writes anything. Why
not a row: the schema has no column for "not captured", and a row of 0 trades would say the
minute was quiet, which is exactly the mistake the markers exist to prevent; a summary with
fewer than 60 rows would be read as complete by anyone who does not count. An hour that is
partly not captured is a question for a person (a wrong setting, a listing or a delisting),
and a failed task with the minutes in its log is where they will look.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BUCKET = os.environ.get("TRADE_LAKE_BUCKET", "trade-lake-landing")
PREFIX = os.environ.get("TRADE_LAKE_PREFIX", "")
SYMBOL = os.environ.get("TRADE_LAKE_SYMBOL", "BTCUSDT")
SUMMARY_PREFIX = os.environ.get("TRADE_LAKE_SUMMARY_PREFIX", "Derived/ohlcv_1m/")
AWS_CONN_ID = os.environ.get("TRADE_LAKE_AWS_CONN_ID", "aws_default")
LAYOUTS = ("symbol", "market")
LAYOUT = os.environ.get("TRADE_LAKE_LAYOUT", "symbol").strip().lower()
if LAYOUT not in LAYOUTS:  # a DAG import error names the mistake at once
    raise ValueError(f"TRADE_LAKE_LAYOUT={LAYOUT!r}: give one of {', '.join(LAYOUTS)}")


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


def market_minute_prefix(minute_start: datetime, prefix: str = PREFIX) -> str:
    return f"{prefix}Binance/_market/{minute_start:%Y/%m/%d/%H/%M}/"


def market_marker_keys(hour_start: datetime, prefix: str = PREFIX) -> list[str]:
    """The 60 market-wide `_SUCCESS` keys of the hour that starts at `hour_start` (UTC)."""
    return [f"{market_minute_prefix(hour_start + timedelta(minutes=m), prefix)}_SUCCESS" for m in range(60)]


MARKET_MARKER_KEY_TEMPLATES = [
    f"{PREFIX}Binance/_market/"
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
    layout: str = LAYOUT,
) -> str:
    """Read the hour through its manifests, write the summary; returns the summary's key."""
    minutes = [hour_start + timedelta(minutes=m) for m in range(60)]
    read: Iterator[tuple[dict[str, Any], pa.Table]]  # a minute at a time, in order
    if layout == "symbol":
        read = (_symbol_minute(hook, bucket, minute_prefix(minute, symbol, prefix)) for minute in minutes)
    elif layout == "market":
        read = _market_hour(hook, bucket, minutes, symbol, prefix)
    else:
        raise ValueError(f"layout {layout!r}: give one of {', '.join(LAYOUTS)}")
    rows = [
        summarise_minute(symbol, minute, manifest, trades)
        for minute, (manifest, trades) in zip(minutes, read, strict=True)
    ]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA), buffer, compression="zstd")
    key = f"{summary_prefix}{symbol}/{hour_start:%Y/%m/%d/%H}.parquet"
    hook.load_bytes(buffer.getvalue(), key=key, bucket_name=bucket, replace=True)
    return key


def _no_trades() -> pa.Table:
    return pa.table(
        {
            "trade_id": pa.array([], pa.int64()),
            "price": pa.array([], pa.decimal128(18, 8)),
            "quantity": pa.array([], pa.decimal128(18, 8)),
        }
    )


def _symbol_minute(hook: Any, bucket: str, base: str) -> tuple[dict[str, Any], pa.Table]:
    """A per-symbol minute: its manifest, and the trades of every file it lists."""
    manifest = json.loads(hook.read_key(f"{base}_SUCCESS", bucket_name=bucket))
    tables = []
    for entry in manifest["files"]:
        body = hook.get_key(f"{base}{entry['name']}", bucket_name=bucket).get()["Body"].read()
        if len(body) != entry["bytes"]:
            raise ValueError(f"{base}{entry['name']}: {len(body)} bytes, the manifest says {entry['bytes']}")
        tables.append(pq.read_table(io.BytesIO(body), columns=["trade_id", "price", "quantity"]))
    trades = pa.concat_tables(tables) if tables else _no_trades()
    if trades.num_rows != manifest["rows"]:
        raise ValueError(f"{base}: {trades.num_rows} rows, the manifest says {manifest['rows']}")
    return manifest, trades


class NotCovered(ValueError):
    """The market-wide layout does not hold `symbol` in these minutes (see the module docstring)."""

    def __init__(self, symbol: str, minutes: list[datetime], prefix: str) -> None:
        self.symbol, self.minutes = symbol, minutes
        listed = ", ".join(f"{m:%Y-%m-%dT%H:%M}Z" for m in minutes[:5])
        more = f" and {len(minutes) - 5} more" if len(minutes) > 5 else ""
        super().__init__(
            f"{symbol} is not covered by the market-wide layout ({prefix}Binance/_market/) in "
            f"{len(minutes)} minute(s): {listed}{more}. It was not captured market-wide then: it is "
            "watched by the collector (read it with TRADE_LAKE_LAYOUT=symbol), or it was not listed "
            "yet, or no longer streamed."
        )


def market_share(manifest: dict[str, Any], symbol: str) -> dict[str, Any] | None:
    """What a market manifest says of one symbol's minute, shaped like a per-symbol manifest:
    `files` (the parts holding its trades, with their sizes), `rows`, `unfilled_gaps` and
    `revision`. None when the symbol is not `covered`; `rows` 0 when covered without trades."""
    if manifest.get("layout") != "market":
        raise ValueError(f"not a market-wide manifest: layout {manifest.get('layout')!r}")
    if symbol not in manifest["covered"]:
        return None
    entry = manifest["symbols"].get(symbol, {"rows": 0, "files": []})
    parts = {f["name"]: f for f in manifest["files"]}
    if missing := [name for name in entry["files"] if name not in parts]:
        raise ValueError(f"the manifest names {missing} for {symbol} but does not list them in files")
    return {
        "files": [parts[name] for name in entry["files"]],
        "rows": entry["rows"],
        "unfilled_gaps": manifest["unfilled_gaps"].get(symbol, []),
        "revision": manifest["revision"],
    }


def _market_hour(
    hook: Any, bucket: str, minutes: list[datetime], symbol: str, prefix: str
) -> Iterator[tuple[dict[str, Any], pa.Table]]:
    """Every minute's share of `symbol` (all 60 manifests first: NotCovered before any part is
    read), then its trades a minute at a time."""
    shares = []
    for minute in minutes:
        base = market_minute_prefix(minute, prefix)
        manifest = json.loads(hook.read_key(f"{base}_SUCCESS", bucket_name=bucket))
        shares.append((base, market_share(manifest, symbol)))
    if uncovered := [minute for minute, (_, share) in zip(minutes, shares, strict=True) if share is None]:
        raise NotCovered(symbol, uncovered, prefix)
    return (_market_minute(hook, bucket, base, share, symbol) for base, share in shares if share is not None)


def _market_minute(
    hook: Any, bucket: str, base: str, share: dict[str, Any], symbol: str
) -> tuple[dict[str, Any], pa.Table]:
    tables = [
        read_part_rows(hook.get_key(f"{base}{part['name']}", bucket_name=bucket), symbol, part["bytes"])
        for part in share["files"]
    ]
    trades = pa.concat_tables(tables) if tables else _no_trades()
    if trades.num_rows != share["rows"]:
        raise ValueError(f"{base}: {trades.num_rows} rows of {symbol}, the manifest says {share['rows']}")
    return share, trades


def read_part_rows(
    obj: Any, symbol: str, expected_bytes: int, columns: tuple[str, ...] = ("trade_id", "price", "quantity")
) -> pa.Table:
    """One symbol's rows of a market part (`obj`: the boto3 Object that S3Hook.get_key gives),
    reading only the row groups whose min/max statistics on `symbol` can hold it. The part is
    sorted by symbol, so a symbol's rows sit in one run of row groups; its size is checked
    against the manifest first (no download: the byte ranges read are the footer and those
    row groups, so its sha256 is not checked here; S3 verified it when the part was written)."""
    ranges = _S3Ranges(obj)
    if ranges.size != expected_bytes:
        raise ValueError(f"{obj.key}: {ranges.size} bytes, the manifest says {expected_bytes}")
    part = pq.ParquetFile(ranges, pre_buffer=True)  # pre_buffer: the row groups' columns in few GETs
    meta = part.metadata
    paths = [meta.schema.column(i).path for i in range(meta.num_columns)]
    column = paths.index("symbol")
    groups = []
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(column).statistics
        if stats is None or not stats.has_min_max or stats.min <= symbol <= stats.max:
            groups.append(i)  # no statistics: read it, and let the filter below decide
    table = part.read_row_groups(groups, columns=["symbol", *columns])
    return table.filter(pc.equal(table.column("symbol"), symbol)).select(list(columns))


class _S3Ranges(io.RawIOBase):
    """A seekable, read-only file over one S3 object that fetches only the byte ranges read,
    pinned to the version it first saw (If-Match on its ETag). The last range is kept: pyarrow
    reads the footer with up to 64 KiB before it, which for a small part is all of it."""

    def __init__(self, obj: Any) -> None:
        super().__init__()
        self.obj, self.size, self.etag, self.pos = obj, int(obj.content_length), obj.e_tag, 0
        self.kept_at, self.kept = 0, b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        end = min(self.pos + len(buffer), self.size)
        if end <= self.pos:
            return 0
        if not self.kept_at <= self.pos < end <= self.kept_at + len(self.kept):
            self.kept_at = self.pos
            self.kept = self.obj.get(Range=f"bytes={self.pos}-{end - 1}", IfMatch=self.etag)["Body"].read()
        body = self.kept[self.pos - self.kept_at : end - self.kept_at]
        buffer[: len(body)] = body
        self.pos += len(body)
        return len(body)


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
            bucket_key=MARKET_MARKER_KEY_TEMPLATES if LAYOUT == "market" else MARKER_KEY_TEMPLATES,
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
