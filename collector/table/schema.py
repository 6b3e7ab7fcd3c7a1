"""The lake's two tables, defined once: Iceberg schemas, partitioning, sort orders, properties.

    trades    every trade once: the landing zone's columns and exact types, times in UTC
              microseconds; partitioned by day(trade_time), rows sorted by symbol, trade_id
    bars_1m   per symbol and minute, from the same rows: open, high, low, close (in trade-id
              order), volume, quote volume, VWAP, trade count, taker buy volumes, first and
              last trade id; partitioned by day(minute), sorted by symbol, minute

Decimal types: prices and quantities are DECIMAL(18,8), what Binance sends. Sums over a
minute can pass 10^10 (a meme coin's quantities), so volumes are DECIMAL(38,8); a quote
volume sums price x quantity, which has 16 decimals, kept whole in DECIMAL(38,16). VWAP is
quote volume / volume, the one value that is not a sum: rounded half-even to 8 decimals,
DECIMAL(18,8) like a price.

Why day(trade_time) alone and not also the symbol: measured by bench/table.py (figures in
docs/performance.md) on the local feed's 1,500-symbol market, a day partitioned by symbol too
is 1,500 files, median 7 kB, and every question got slower (all symbols over an hour 14x);
sorted by symbol in a few files a day, a reader skips other symbols by each file's and row
group's statistics.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    BooleanType,
    DecimalType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

__all__ = [
    "BARS",
    "BARS_ORDER",
    "BARS_SCHEMA",
    "BARS_SPEC",
    "DAY_FIELD",
    "TABLE_PROPERTIES",
    "TRADES",
    "TRADES_ORDER",
    "TRADES_SCHEMA",
    "TRADES_SPEC",
    "arrow_schema",
]

TRADES: Final = "trades"
BARS: Final = "bars_1m"
DAY_FIELD: Final = "day"  # the partition field's name in both tables

_PRICE = DecimalType(18, 8)

TRADES_SCHEMA = Schema(
    NestedField(1, "symbol", StringType(), required=True, doc="Binance symbol, e.g. BTCUSDT"),
    NestedField(2, "trade_id", LongType(), required=True, doc="Binance trade id, consecutive per symbol"),
    NestedField(3, "price", _PRICE, required=True, doc="exact price"),
    NestedField(4, "quantity", _PRICE, required=True, doc="exact base quantity"),
    NestedField(5, "trade_time", TimestamptzType(), required=True, doc="trade time, UTC"),
    NestedField(
        6, "event_time", TimestamptzType(), required=False, doc="event time, UTC; null from the archive"
    ),
    NestedField(7, "is_buyer_maker", BooleanType(), required=True, doc="the buyer was the maker"),
    NestedField(
        8,
        "received_at",
        TimestamptzType(),
        required=False,
        doc="collector clock at arrival; null from the archive",
    ),
)
TRADES_SPEC = PartitionSpec(
    PartitionField(source_id=5, field_id=1000, transform=DayTransform(), name=DAY_FIELD)
)
TRADES_ORDER = SortOrder(
    SortField(source_id=1, transform=IdentityTransform()),
    SortField(source_id=2, transform=IdentityTransform()),
)

BARS_SCHEMA = Schema(
    NestedField(1, "symbol", StringType(), required=True),
    NestedField(2, "minute", TimestamptzType(), required=True, doc="the minute's start, UTC"),
    NestedField(3, "open", _PRICE, required=True, doc="price of the minute's first trade (lowest trade id)"),
    NestedField(4, "high", _PRICE, required=True),
    NestedField(5, "low", _PRICE, required=True),
    NestedField(6, "close", _PRICE, required=True, doc="price of the minute's last trade (highest trade id)"),
    NestedField(7, "volume", DecimalType(38, 8), required=True, doc="sum of quantities"),
    NestedField(8, "quote_volume", DecimalType(38, 16), required=True, doc="sum of price x quantity, exact"),
    NestedField(9, "vwap", _PRICE, required=True, doc="quote_volume / volume, rounded half-even"),
    NestedField(10, "trade_count", LongType(), required=True),
    NestedField(
        11, "taker_buy_volume", DecimalType(38, 8), required=True, doc="quantity where the buyer took"
    ),
    NestedField(12, "taker_buy_quote_volume", DecimalType(38, 16), required=True),
    NestedField(13, "first_trade_id", LongType(), required=True),
    NestedField(14, "last_trade_id", LongType(), required=True),
)
BARS_SPEC = PartitionSpec(
    PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name=DAY_FIELD)
)
BARS_ORDER = SortOrder(
    SortField(source_id=1, transform=IdentityTransform()),
    SortField(source_id=2, transform=IdentityTransform()),
)

# For every engine that writes to the tables too (Athena's OPTIMIZE, Spark): Parquet in zstd,
# files of about 256 MB, the metadata files of the last 100 commits kept (older ones deleted on
# commit), manifests merged so that years of daily commits do not become years of manifests.
TABLE_PROPERTIES: Final = {
    "format-version": "2",
    "write.format.default": "parquet",
    "write.parquet.compression-codec": "zstd",
    "write.target-file-size-bytes": str(256 * 1024 * 1024),
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "100",
    "commit.manifest-merge.enabled": "true",
}


def arrow_schema(schema: Schema) -> pa.Schema:
    """The Arrow schema of a table's data files, with the Iceberg field ids they must carry."""
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    return schema_to_pyarrow(schema)
