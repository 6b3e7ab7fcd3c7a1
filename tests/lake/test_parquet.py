"""Encoding: exact decimals, the schema, delta encodings, the gzip CSV twin."""

from __future__ import annotations

import csv
import gzip
import io
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from collector.capture.batching import MinuteBatcher, SealedBatch
from collector.capture.decode import Trade, parse_scaled
from collector.lake.parquet import COLUMNS, count_rows, encode_csv_gz, encode_parquet, landing_parquet_schema

PRICES = ["61837.63000000", "0.00000001", "9999999999.99999999", "28165.47000000"]
QTYS = ["0.02000000", "12.00000000", "0.00056000", "1000.10000000"]


def sealed(time_unit: str = "ms") -> SealedBatch:
    b = MinuteBatcher(time_unit=time_unit, max_batch_bytes=10**7, max_batch_age_s=60, minute_grace_s=5)  # type: ignore[arg-type]
    base = 1_723_161_240_000 if time_unit == "ms" else 1_723_161_240_000_000
    for i, (p, q) in enumerate(zip(PRICES, QTYS, strict=True)):
        b.add(
            Trade(
                "BTCUSDT",
                100 + i,
                parse_scaled(p),
                parse_scaled(q),
                base + i,
                base + i + 1,
                i % 2 == 0,
                1_723_161_240_000_000_000 + i,
                150,
            ),
            0,
        )
    (batch,) = b.flush()
    return batch


def test_parquet_round_trips_decimals_string_identical() -> None:
    table = pq.read_table(io.BytesIO(encode_parquet(sealed())))
    assert [format(v, "f") for v in table.column("price").to_pylist()] == PRICES
    assert [format(v, "f") for v in table.column("quantity").to_pylist()] == QTYS
    assert table.column("price").to_pylist()[0] == Decimal("61837.63")


def test_parquet_carries_the_landing_schema_with_exact_types() -> None:
    data = encode_parquet(sealed())
    table = pq.read_table(io.BytesIO(data))
    assert table.schema.names == list(COLUMNS)
    assert table.schema.field("trade_time").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("received_at").type == pa.timestamp("us", tz="UTC")
    parquet_schema = pq.read_metadata(io.BytesIO(data)).schema
    price = parquet_schema.column(2)
    assert price.physical_type == "INT64"
    assert (price.precision, price.scale) == (18, 8)
    assert table.column("trade_id").to_pylist() == [100, 101, 102, 103]
    assert table.column("is_buyer_maker").to_pylist() == [True, False, True, False]
    assert table.column("symbol").to_pylist() == ["BTCUSDT"] * 4


def test_monotonic_integer_columns_use_delta_encoding_and_zstd() -> None:
    meta = pq.read_metadata(io.BytesIO(encode_parquet(sealed())))
    columns = {
        meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i)
        for i in range(meta.num_columns)
    }
    for name in ("trade_id", "trade_time", "event_time", "received_at"):
        assert "DELTA_BINARY_PACKED" in columns[name].encodings, name
    assert all(c.compression == "ZSTD" for c in columns.values())


def test_microsecond_streams_land_microsecond_timestamps() -> None:
    data = encode_parquet(sealed("us"))
    table = pq.read_table(io.BytesIO(data))
    assert pq.read_metadata(io.BytesIO(data)).schema.equals(landing_parquet_schema("us"))
    assert table.schema.field("trade_time").type == pa.timestamp("us", tz="UTC")
    assert table.column("trade_time").to_pylist()[0].microsecond == 0
    assert table.column("trade_time").type.unit == "us"


def test_csv_gz_has_the_same_columns_and_exact_decimals() -> None:
    data = encode_csv_gz(sealed())
    rows = list(csv.DictReader(io.StringIO(gzip.decompress(data).decode())))
    assert list(rows[0]) == list(COLUMNS)
    assert [r["price"] for r in rows] == PRICES
    assert [r["quantity"] for r in rows] == QTYS
    assert rows[0]["trade_time"] == "2024-08-08T23:54:00.000Z"
    assert rows[1]["is_buyer_maker"] == "false"
    assert count_rows(data, "csv.gz") == 4


def test_encoding_is_deterministic_for_the_same_batch() -> None:
    batch = sealed()
    assert encode_parquet(batch) == encode_parquet(batch)
    assert encode_csv_gz(batch) == encode_csv_gz(batch)
    assert count_rows(encode_parquet(batch), "parquet") == 4


def test_ids_and_times_carry_min_max_statistics_for_pruning() -> None:
    batch = sealed()
    metadata = pq.read_metadata(io.BytesIO(encode_parquet(batch)))
    row_group = metadata.row_group(0)
    stats = {row_group.column(i).path_in_schema: row_group.column(i).statistics for i in range(len(COLUMNS))}
    ids = batch.columns.trade_id
    assert (stats["trade_id"].min, stats["trade_id"].max) == (min(ids), max(ids))
    for name in ("trade_time", "event_time", "received_at"):
        assert stats[name] is not None and stats[name].has_min_max, name
    # Prices, sizes and flags are not pruned on; their statistics would only cost bytes per file.
    assert stats["price"] is None or not stats["price"].has_min_max
    # The Parquet schema is the contract; pyarrow's private copy of it is not stored.
    assert b"ARROW:schema" not in (metadata.metadata or {})


def test_flags_and_receive_stamps_round_trip_at_every_bit_boundary() -> None:
    """is_buyer_maker is packed into a bitmap by hand, received_at truncated to µs on buffering."""
    for rows in (1, 7, 8, 9, 63, 64, 65, 1001, 5003):  # 5003: past int()'s 4,300-digit limit for base 10
        b = MinuteBatcher(time_unit="ms", max_batch_bytes=10**9, max_batch_age_s=60, minute_grace_s=5)
        flags = [(i * 7919) % 3 == 0 for i in range(rows)]
        stamps = [1_723_161_240_123_456_789 + i * 1_001 for i in range(rows)]
        for i in range(rows):
            t = 1_723_161_240_000
            b.add(Trade("BTCUSDT", i, 1, 1, t, t, flags[i], stamps[i], 100), 0)
        (batch,) = b.flush()
        table = pq.read_table(io.BytesIO(encode_parquet(batch)))
        assert table.column("is_buyer_maker").to_pylist() == flags, rows
        assert table.column("symbol").to_pylist() == ["BTCUSDT"] * rows, rows
        received = pc.cast(table.column("received_at"), pa.int64()).to_pylist()
        assert received == [s // 1000 for s in stamps], rows


def test_the_daemon_encodes_without_pyarrow_filesystems_or_compute_kernels() -> None:
    """pyarrow.parquet would load pyarrow.fs (S3/GCS/Azure/HDFS, ~8 MB resident) and a cast the
    compute kernels (~3 MB): the collector process needs neither to write and count Parquet."""
    code = (
        "import sys\n"
        "import collector.cli.main, collector.daemon.app\n"
        "from collector.capture.batching import MinuteBatcher\n"
        "from collector.capture.decode import Trade\n"
        "from collector.lake.parquet import count_rows, encode_parquet, landing_parquet_schema\n"
        "b = MinuteBatcher(time_unit='ms', max_batch_bytes=10**6, max_batch_age_s=60, minute_grace_s=5)\n"
        "for i in range(4): b.add(Trade('BTCUSDT', i, 5, 7, 60_000, 60_001, i % 2 == 0, 10**18, 150), 0)\n"
        "assert count_rows(encode_parquet(b.flush()[0]), 'parquet') == 4\n"
        "landing_parquet_schema('ms'); landing_parquet_schema('us')\n"
        "print(sorted(m for m in ('pyarrow.fs', 'pyarrow.parquet', 'pyarrow.compute') if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
