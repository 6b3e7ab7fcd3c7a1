"""The landing-zone layout: partition prefixes, object keys and marker keys.

This is the contract downstream reads (Airflow sensors, Athena partition projection, Spark):

    {prefix}Binance/{SYMBOL}/YYYY/MM/DD/HH/mm/batch-{first_trade_id}-{last_trade_id}.parquet

Names are a pure function of the batch's content (symbol, minute of trade time, first and
last trade id), so writing the same batch twice always targets the same key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "EXCHANGE",
    "EXTENSIONS",
    "ObjectName",
    "marker_key",
    "minute_of",
    "object_key",
    "parse_object_key",
    "partition_prefix",
]

EXCHANGE = "Binance"
EXTENSIONS = {"parquet": ".parquet", "csv.gz": ".csv.gz"}
_KEY_RE = re.compile(
    r"(?P<exchange>[A-Za-z]+)/(?P<symbol>[A-Z0-9]+)/(?P<y>\d{4})/(?P<mo>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/"
    r"(?P<mi>\d{2})/(?P<kind>batch|backfill)-(?P<first>\d+)-(?P<last>\d+)(?P<ext>\.parquet|\.csv\.gz)$"
)


@dataclass(frozen=True, slots=True)
class ObjectName:
    """What an object key says about its content."""

    symbol: str
    minute: int
    kind: str
    first_trade_id: int
    last_trade_id: int
    extension: str


def minute_of(timestamp_s: float) -> int:
    """Minutes since the Unix epoch for a UTC timestamp in seconds."""
    return int(timestamp_s // 60)


def partition_prefix(symbol: str, minute: int, prefix: str = "") -> str:
    """`{prefix}Binance/SYMBOL/YYYY/MM/DD/HH/mm/` for a minute since the epoch."""
    t = datetime.fromtimestamp(minute * 60, tz=UTC)
    return f"{prefix}{EXCHANGE}/{symbol}/{t:%Y/%m/%d/%H/%M}/"


def object_key(
    symbol: str,
    minute: int,
    first_trade_id: int,
    last_trade_id: int,
    *,
    output_format: str = "parquet",
    kind: str = "batch",
    prefix: str = "",
) -> str:
    return (
        f"{partition_prefix(symbol, minute, prefix)}{kind}-{first_trade_id}-{last_trade_id}"
        f"{EXTENSIONS[output_format]}"
    )


def marker_key(symbol: str, minute: int, prefix: str = "") -> str:
    return f"{partition_prefix(symbol, minute, prefix)}_SUCCESS"


def parse_object_key(key: str) -> ObjectName | None:
    """Read symbol, minute and id range back from a key (any prefix); None if it is not a data object."""
    match = _KEY_RE.search(key)
    if match is None:
        return None
    g = match.groupdict()
    t = datetime(int(g["y"]), int(g["mo"]), int(g["d"]), int(g["h"]), int(g["mi"]), tzinfo=UTC)
    return ObjectName(
        symbol=g["symbol"],
        minute=minute_of(t.timestamp()),
        kind=g["kind"],
        first_trade_id=int(g["first"]),
        last_trade_id=int(g["last"]),
        extension=g["ext"],
    )
