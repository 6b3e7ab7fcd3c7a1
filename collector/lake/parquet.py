"""The landing schema, and a sealed batch to bytes: Parquet (default) or gzip CSV.

Why DECIMAL(18, 8) stored as INT64: Binance quotes prices and quantities as decimal strings
with 8 decimals. A float cannot hold "61837.63000000" exactly; DECIMAL(18, 8) holds every
value Binance sends below 10**10 exactly, is read as an exact decimal by Athena, Spark,
DuckDB and pyarrow, and as a 64-bit integer it compresses like one.

Why these encodings: trade ids and times move by small steps, so DELTA_BINARY_PACKED
stores them in a few bits each; zstd squeezes what is left. A minute's file holds a few
thousand trades, so what every file carries matters too: the Parquet schema is the contract
(Athena, Spark and DuckDB read only it), so pyarrow's own copy of it (ARROW:schema, about a
kilobyte) is not stored, and min/max statistics are kept for the columns a reader prunes on
(ids and times), not for prices, sizes or flags. bench/landed_size.py measures the result on
the recorded BTCUSDT trades; the README's performance section has the figures.

Why `pyarrow._parquet` and not `pyarrow.parquet`: the public module imports `pyarrow.fs`,
which loads pyarrow's S3, GCS, Azure and HDFS filesystems (libarrow_s3 and the AWS SDK in
it): about 8 MB resident that a daemon uploading with boto3 never uses. The writer and
reader classes used here are the ones `pyarrow.parquet` itself wraps, with the same
keywords; tests/test_parquet.py checks the daemon's imports stay free of `pyarrow.fs`.
"""

from __future__ import annotations

import functools
import gzip
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyarrow import _parquet

from collector.capture.batching import SealedBatch, TimeUnit
from collector.capture.decode import DECIMAL_PRECISION, DECIMAL_SCALE, format_scaled

__all__ = [
    "COLUMNS",
    "batch_table",
    "count_rows",
    "encode_batch",
    "encode_csv_gz",
    "encode_parquet",
    "landing_parquet_schema",
    "landing_schema",
    "market_writer",
]

COLUMNS = (
    "symbol",
    "trade_id",
    "price",
    "quantity",
    "trade_time",
    "event_time",
    "is_buyer_maker",
    "received_at",
)

# Ids and times rise by small steps: delta. Prices and quantities are plain: zstd finds their
# repeats better than delta or a dictionary page per file did (measured on the recording:
# price 1.51 B/trade plain, 1.61 delta, 2.01 dictionary; quantity 2.26 plain, 2.50 dictionary).
_DELTA_COLUMNS = ("trade_id", "trade_time", "event_time", "received_at")
# zstd level 6: 3% smaller than level 3 on the recording for 0.06 µs more per trade; level 12
# saves another 1.5% for 0.45 µs more, which a burst of 200,000 trades/s would feel.
_ZSTD_LEVEL = 6
_DICTIONARY_COLUMNS = ["symbol"]
_STATISTICS_COLUMNS = ["trade_id", "trade_time", "event_time", "received_at"]
_DECIMAL = pa.decimal64(DECIMAL_PRECISION, DECIMAL_SCALE)


def landing_schema(time_unit: TimeUnit, *, archive: bool = False) -> pa.Schema:
    """The Parquet schema every landed object carries. Times are UTC at the stream's unit (the
    archive's, for archive objects). Archive objects have no event time and no receive time:
    those two columns are optional there and null, nothing invented."""
    return pa.schema(
        [
            pa.field("symbol", pa.string(), nullable=False),
            pa.field("trade_id", pa.int64(), nullable=False),
            pa.field("price", _DECIMAL, nullable=False),
            pa.field("quantity", _DECIMAL, nullable=False),
            pa.field("trade_time", pa.timestamp(time_unit, tz="UTC"), nullable=False),
            pa.field("event_time", pa.timestamp(time_unit, tz="UTC"), nullable=archive),
            pa.field("is_buyer_maker", pa.bool_(), nullable=False),
            # Microseconds: a host clock is not better than that, and Spark reads no nanoseconds.
            pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=archive),
        ]
    )


def _int64_view(values: Any, arrow_type: pa.DataType) -> pa.Array:
    """Zero-copy: an array('q') reinterpreted as an Arrow array of a 64-bit type."""
    return pa.Array.from_buffers(arrow_type, len(values), [None, pa.py_buffer(values)])


_ZERO_ONE = bytes.maketrans(b"\x00\x01", b"01")


def _bool_view(values: Any) -> pa.Array:
    """An array('b') of 0/1 as an Arrow boolean array: bits packed by int(), in C."""
    rows = len(values)
    # int(..., 2) reads its last digit as bit 0: reversed, value i becomes bit i (LSB first).
    bits = int(bytes(values).translate(_ZERO_ONE)[::-1] or b"0", 2).to_bytes((rows + 7) // 8, "little")
    return pa.Array.from_buffers(pa.bool_(), rows, [None, pa.py_buffer(bits)])


def batch_table(batch: SealedBatch) -> pa.Table:
    """The batch's columns as Arrow arrays, by views and without compute kernels: a cast
    would page in libarrow_compute (about 3 MB resident) for conversions done here for free."""
    cols = batch.columns
    archive = batch.source == "archive"
    schema = landing_schema(batch.time_unit, archive=archive)
    if archive:
        return pa.Table.from_arrays(
            [
                pa.repeat(pa.scalar(batch.symbol, pa.string()), batch.rows),
                _int64_view(cols.trade_id, pa.int64()),
                _int64_view(cols.price, _DECIMAL),
                _int64_view(cols.quantity, _DECIMAL),
                _int64_view(cols.trade_time, schema.field("trade_time").type),
                pa.nulls(batch.rows, schema.field("event_time").type),
                _bool_view(cols.is_buyer_maker),
                pa.nulls(batch.rows, schema.field("received_at").type),
            ],
            schema=schema,
        )
    arrays = [
        pa.repeat(pa.scalar(batch.symbol, pa.string()), batch.rows),
        _int64_view(cols.trade_id, pa.int64()),
        _int64_view(cols.price, _DECIMAL),
        _int64_view(cols.quantity, _DECIMAL),
        _int64_view(cols.trade_time, schema.field("trade_time").type),
        _int64_view(cols.event_time, schema.field("event_time").type),
        _bool_view(cols.is_buyer_maker),
        _int64_view(cols.received_at_us, schema.field("received_at").type),
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _writer(sink: Any, schema: pa.Schema, **options: Any) -> _parquet.ParquetWriter:
    return _parquet.ParquetWriter(
        sink,
        schema,
        version="2.6",  # what pyarrow.parquet passes: the format version
        writer_engine_version="V2",
        data_page_version="1.0",
        store_decimal_as_integer=True,
        store_schema=False,
        **options,
    )


def _encodings() -> dict[str, Any]:
    """Every landed object's compression and encodings (the module's docstring says why)."""
    return {
        "compression": "zstd",
        "compression_level": _ZSTD_LEVEL,
        "use_dictionary": _DICTIONARY_COLUMNS,
        "column_encoding": dict.fromkeys(_DELTA_COLUMNS, "DELTA_BINARY_PACKED"),
    }


def _write(table: pa.Table, row_group_size: int | None = None, **options: Any) -> bytes:
    sink = pa.BufferOutputStream()
    writer = _writer(sink, table.schema, **options)
    try:
        writer.write_table(table, row_group_size=row_group_size)
    finally:
        writer.close()
    data: bytes = sink.getvalue().to_pybytes()
    return data


def _metadata(data: bytes) -> _parquet.FileMetaData:
    reader = _parquet.ParquetReader()
    reader.open(pa.BufferReader(data))
    try:
        return reader.metadata
    finally:
        reader.close()


def encode_parquet(batch: SealedBatch) -> bytes:
    return _write(batch_table(batch), **_encodings(), write_statistics=_STATISTICS_COLUMNS)


@functools.cache
def landing_parquet_schema(time_unit: TimeUnit, *, archive: bool = False) -> _parquet.ParquetSchema:
    """The Parquet schema (physical and logical types) of every landed file: the contract."""
    empty = pa.Table.from_pylist([], schema=landing_schema(time_unit, archive=archive))
    return _metadata(_write(empty)).schema


def _iso(value: int, time_unit: str) -> str:
    divisor = 1_000 if time_unit == "ms" else 1_000_000
    seconds, fraction = divmod(value, divisor)
    width = 3 if time_unit == "ms" else 6
    return f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%S}.{fraction:0{width}d}Z"


def encode_csv_gz(batch: SealedBatch) -> bytes:
    """The same columns as CSV: decimals as Binance wrote them, times as ISO 8601 UTC."""
    cols = batch.columns
    unit = batch.time_unit
    archive = batch.source == "archive"  # no event time, no receive time: empty fields
    lines = [",".join(COLUMNS)]
    for i in range(batch.rows):
        lines.append(
            f"{batch.symbol},{cols.trade_id[i]},{format_scaled(cols.price[i])},"
            f"{format_scaled(cols.quantity[i])},{_iso(cols.trade_time[i], unit)},"
            f"{'' if archive else _iso(cols.event_time[i], unit)},"
            f"{'true' if cols.is_buyer_maker[i] else 'false'},"
            f"{'' if archive else _iso(cols.received_at_us[i], 'us')}"
        )
    return gzip.compress(("\n".join(lines) + "\n").encode("ascii"), compresslevel=6, mtime=0)


def encode_batch(batch: SealedBatch, output_format: str) -> bytes:
    if output_format == "parquet":
        return encode_parquet(batch)
    if output_format == "csv.gz":
        return encode_csv_gz(batch)
    raise ValueError(f"unknown output format {output_format!r}")


def market_writer(sink: Any, schema: pa.Schema) -> _parquet.ParquetWriter:
    """A writer of market parts (collector.lake.market_parts): the objects' encodings, and min/max
    statistics on `symbol` too, so a reader of a few symbols skips the other row groups."""
    return _writer(sink, schema, **_encodings(), write_statistics=["symbol", *_STATISTICS_COLUMNS])


def count_rows(data: bytes, output_format: str) -> int:
    """Rows in an encoded object: the Parquet footer, or the CSV's lines less the header."""
    if output_format == "parquet" or data[:4] == b"PAR1":
        return int(_metadata(data).num_rows)
    return gzip.decompress(data).count(b"\n") - 1
