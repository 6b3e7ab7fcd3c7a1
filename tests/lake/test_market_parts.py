"""A market minute's parts: sorted by symbol then trade id whatever the order the rows came in,
split by rows into parts in order, the same bytes from the same sources, memory that does not
grow with the minute."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
from collections.abc import Iterable

import pyarrow.parquet as pq
import pytest

from collector.capture.batching import MinuteBatcher, SealedBatch
from collector.capture.decode import Trade
from collector.lake.market_parts import MARKET_ROW_GROUP_ROWS, MarketPart, MarketSource, market_parts
from collector.lake.parquet import encode_batch
from tests.conftest import REPO
from tests.support.batches import MINUTE, batch


def rows(symbol: str, ids: Iterable[int], minute: int = MINUTE) -> SealedBatch:
    """One sealed batch holding exactly these ids, in this order (a source as the spool has it)."""
    b = MinuteBatcher.until_flushed("ms")
    base = minute * 60_000
    for n, trade_id in enumerate(ids):
        t = base + n % 60_000
        b.add(Trade(symbol, trade_id, 100_000_000 + trade_id, 2_000_000, t, t + 1, trade_id % 2 == 0,
                    base * 1_000_000, 150), 0)  # fmt: skip
    (sealed,) = b.flush()
    return sealed


def source(b: SealedBatch, output_format: str = "parquet") -> MarketSource:
    data = encode_batch(b, output_format)
    return MarketSource(b.symbol, b.first_trade_id, b.last_trade_id, lambda: data)


def keys(part: MarketPart, output_format: str = "parquet") -> list[tuple[str, int]]:
    if output_format == "csv.gz":
        lines = gzip.decompress(part.data).decode().splitlines()
        assert lines[0].startswith("symbol,trade_id,")
        return [(line.split(",")[0], int(line.split(",")[1])) for line in lines[1:]]
    table = pq.read_table(io.BytesIO(part.data), columns=["symbol", "trade_id"])
    return list(zip(table.column("symbol").to_pylist(), table.column("trade_id").to_pylist(), strict=True))


def test_a_part_is_sorted_by_symbol_then_id_with_row_groups_readers_can_skip() -> None:
    sources = [source(batch(s, first, n)) for s, first, n in
               [("ETHUSDT", 7, 30), ("ADAUSDT", 50, 10), ("BTCUSDT", 1_000, 20_000)]]  # fmt: skip
    (part,) = market_parts(sources, "parquet", part_rows=10**6)
    (again,) = market_parts(sources, "parquet", part_rows=10**6)
    assert again.data == part.data  # the same sources, the same bytes: the same key
    got = keys(part)
    assert got == sorted(got) and len(got) == part.rows == 20_040
    assert [(s.symbol, s.rows, s.first_trade_id, s.last_trade_id) for s in part.shares] == [
        ("ADAUSDT", 10, 50, 59), ("BTCUSDT", 20_000, 1_000, 20_999), ("ETHUSDT", 30, 7, 36)]  # fmt: skip
    meta = pq.read_metadata(io.BytesIO(part.data))
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [MARKET_ROW_GROUP_ROWS, 3_656]
    stats = [meta.row_group(i).column(0).statistics for i in range(meta.num_row_groups)]
    assert [(s.min, s.max) for s in stats] == [("ADAUSDT", "BTCUSDT"), ("BTCUSDT", "ETHUSDT")]


@pytest.mark.parametrize("output_format", ["parquet", "csv.gz"])
def test_a_gaps_backfill_is_merged_into_the_live_rows_it_falls_between(output_format: str) -> None:
    """A connection cut mid-minute: the live batch holds ids 100-129 and 154-199, the gap's
    backfill 130-153 (and a late trade came on its own). Sorted by (symbol, first id) and put end
    to end, 24 rows were out of order in each such minute; merged, none are."""
    live = rows("COKAUSDT", [*range(100, 130), *range(154, 200)])
    backfill = rows("COKAUSDT", range(130, 154))
    late = rows("COKAUSDT", [200])
    other = rows("AAAUSDT", range(1, 6))
    sources = [source(b, output_format) for b in (late, live, other, backfill)]
    (part,) = market_parts(sources, output_format, part_rows=10**6)
    assert keys(part, output_format) == [("AAAUSDT", i) for i in range(1, 6)] + [
        ("COKAUSDT", i) for i in range(100, 201)
    ]
    assert [(s.symbol, s.rows, s.first_trade_id, s.last_trade_id) for s in part.shares] == [
        ("AAAUSDT", 5, 1, 5), ("COKAUSDT", 101, 100, 200)]  # fmt: skip


def test_rows_of_one_source_that_came_out_of_order_are_sorted_too() -> None:
    shuffled = rows("XUSDT", [5, 6, 7, 1, 2, 9, 3, 4, 8])
    (part,) = market_parts([source(shuffled)], "parquet", part_rows=100)
    assert keys(part) == [("XUSDT", i) for i in range(1, 10)]


@pytest.mark.parametrize("output_format", ["parquet", "csv.gz"])
def test_a_minute_is_split_into_parts_of_at_most_part_rows_each_in_order(output_format: str) -> None:
    batches = [batch("AAAUSDT", 1, 900), batch("BBBUSDT", 10, 1_500), batch("BBBUSDT", 1_510, 700),
               batch("CCCUSDT", 5, 3), batch("DDDUSDT", 40, 1_000)]  # fmt: skip
    sources = [source(b, output_format) for b in reversed(batches)]
    parts = list(market_parts(sources, output_format, part_rows=1_000))
    assert [p.rows for p in parts] == [1_000, 1_000, 1_000, 1_000, 103]
    got = [keys(p, output_format) for p in parts]
    assert all(len(k) == p.rows for k, p in zip(got, parts, strict=True))
    whole = [key for k in got for key in k]
    assert whole == sorted(whole) and len(whole) == 4_103  # each part sorted, and in order
    for k, p in zip(got, parts, strict=True):  # each part's shares say what it holds
        by_symbol: dict[str, list[int]] = {}
        for symbol, trade_id in k:
            by_symbol.setdefault(symbol, []).append(trade_id)
        assert [(s.symbol, s.rows, s.first_trade_id, s.last_trade_id) for s in p.shares] == [
            (s, len(ids), ids[0], ids[-1]) for s, ids in sorted(by_symbol.items())
        ]
    again = list(market_parts(sources, output_format, part_rows=1_000))
    assert [p.data for p in again] == [p.data for p in parts]


_PEAK = """
import json, sys
from collector.daemon import lean
lean.apply()
import pyarrow as pa
from collector.lake.market_parts import MarketSource, market_parts
from collector.lake.parquet import encode_batch
from tests.support.batches import batch
n, part_rows = int(sys.argv[1]), int(sys.argv[2])
sources = []
for i in range(n // 10_000):  # one symbol's size-sealed batches of 10,000 trades, 50 symbols
    data = encode_batch(batch(f"S{i % 50:03d}USDT", 1 + (i // 50) * 10_000, 10_000), "parquet")
    sources.append(MarketSource(f"S{i % 50:03d}USDT", 1 + (i // 50) * 10_000, (i // 50 + 1) * 10_000,
                                lambda data=data: data))
parts = sum(1 for _ in market_parts(sources, "parquet", part_rows))
print(json.dumps({"parts": parts, "arrow_peak": pa.default_memory_pool().max_memory()}))
"""


def _peak(trades: int, part_rows: int) -> dict[str, int]:
    done = subprocess.run([sys.executable, "-c", _PEAK, str(trades), str(part_rows)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    peak: dict[str, int] = json.loads(done.stdout)
    return peak


def test_assembling_a_minute_takes_memory_for_a_part_not_for_the_minute() -> None:
    """Arrow's peak while a minute of 500,000 trades is assembled in parts of 100,000 rows is
    what a minute of 100,000 takes, not five times it (in one piece it took about 100 bytes a
    row of the whole minute)."""
    small = _peak(100_000, 100_000)
    big = _peak(500_000, 100_000)
    assert (small["parts"], big["parts"]) == (1, 5)
    assert big["arrow_peak"] < 1.5 * small["arrow_peak"], (small, big)
    assert big["arrow_peak"] < 30 * 500_000  # 30 bytes a row of the minute, far under one piece's
