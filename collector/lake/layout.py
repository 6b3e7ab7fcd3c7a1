"""The landing-zone layout: every key the collector writes, built and parsed in this one place.

This is the contract downstream reads (Airflow sensors, Athena partition projection, Spark):

    {prefix}Binance/{SYMBOL}/YYYY/MM/DD/HH/mm/{kind}-{first_trade_id}-{last_trade_id}.parquet
    {prefix}Binance/{SYMBOL}/YYYY/MM/DD/HH/mm/_SUCCESS

The market-wide layout (COLLECTOR_WATCHED_SYMBOLS: every captured symbol not watched) puts
one minute of all those symbols together, sorted by symbol and trade id:

    {prefix}Binance/_market/YYYY/MM/DD/HH/mm/part-{seq:03d}-{digest}.parquet
    {prefix}Binance/_market/YYYY/MM/DD/HH/mm/_SUCCESS

Parts 000 to n-1 are the minute as it was final, split by rows (COLLECTOR_MARKET_PART_ROWS) and
in order: read one after the other, they are the minute sorted. Later parts hold trades that
came after (a filled gap), with a marker revision. `digest` is the start of the part's SHA-256, so a part
rebuilt after a crash from the same trades has the same key. `_market` is not a symbol (those
are [A-Z0-9]+), and readers that skip `_`-paths (Spark, Hive) leave it out of `Binance/`.
Before it is assembled, a symbol's share of a market minute waits in the spool as a *part
source* under `_parts/`, named as that symbol's own object would be.

Data objects come in kinds, by where their trades came from (`KINDS`): `batch` (the live
stream), `backfill` (REST, filling a gap), `archive` (Binance's public trade archive). Names
are a pure function of the content (symbol, minute of trade time, kind, first and last trade
id), so writing the same trades twice always targets the same key. Sinks, the audit, recovery
and the marker writer all go through these functions; none of them spells a key itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Literal

__all__ = [
    "EXCHANGE",
    "EXTENSIONS",
    "KINDS",
    "MARKER_NAME",
    "MARKET",
    "Kind",
    "MarketName",
    "ObjectName",
    "exchange_root",
    "hour_prefix",
    "is_market_source",
    "latest_trade_id",
    "marker_key",
    "market_marker_key",
    "market_object_key",
    "market_prefix",
    "market_source_key",
    "minute_of",
    "object_key",
    "parse_marker_key",
    "parse_market_key",
    "parse_market_marker_key",
    "parse_object_key",
    "partition_prefix",
    "symbol_root",
]

EXCHANGE: Final = "Binance"
EXTENSIONS: Final = {"parquet": ".parquet", "csv.gz": ".csv.gz"}
Kind = Literal["batch", "backfill", "archive"]
KINDS: Final[dict[str, str]] = {
    "batch": "captured from the live stream",
    "backfill": "filled in from the REST API after a gap",
    "archive": "imported from Binance's public trade archive",
}
MARKER_NAME: Final = "_SUCCESS"
MARKET: Final = "_market"  # the market-wide layout's folder under Binance/
_SOURCES: Final = "_parts/"  # spool-only: a symbol's share of a market minute, before assembly

_PARTITION = r"(?P<symbol>[A-Z0-9]+)/(?P<y>\d{4})/(?P<mo>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/(?P<mi>\d{2})/"
_OBJECT_RE = re.compile(
    rf"(?:^|/){EXCHANGE}/{_PARTITION}(?P<kind>{'|'.join(KINDS)})-(?P<first>\d+)-(?P<last>\d+)"
    r"(?P<ext>\.parquet|\.csv\.gz)$"
)
_MARKER_RE = re.compile(rf"(?:^|/){EXCHANGE}/{_PARTITION}{MARKER_NAME}$")
_MINUTE_PATH = r"(?P<y>\d{4})/(?P<mo>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/(?P<mi>\d{2})/"
_MARKET_RE = re.compile(
    rf"(?:^|/){EXCHANGE}/{MARKET}/{_MINUTE_PATH}part-(?P<seq>\d{{3,}})-(?P<digest>[0-9a-f]{{12}})"
    r"(?P<ext>\.parquet|\.csv\.gz)$"
)
_MARKET_MARKER_RE = re.compile(rf"(?:^|/){EXCHANGE}/{MARKET}/{_MINUTE_PATH}{MARKER_NAME}$")


@dataclass(frozen=True, slots=True)
class MarketName:
    """What a market part's key says: its minute, its number within the minute, its digest."""

    minute: int
    seq: int
    digest: str
    extension: str

    @property
    def file_name(self) -> str:
        return f"part-{self.seq:03d}-{self.digest}{self.extension}"


@dataclass(frozen=True, slots=True)
class ObjectName:
    """What a data object's key says about its content."""

    symbol: str
    minute: int
    kind: Kind
    first_trade_id: int
    last_trade_id: int
    extension: str

    @property
    def file_name(self) -> str:
        return f"{self.kind}-{self.first_trade_id}-{self.last_trade_id}{self.extension}"


def minute_of(timestamp_s: float) -> int:
    """Minutes since the Unix epoch for a UTC timestamp in seconds."""
    return int(timestamp_s // 60)


def exchange_root(prefix: str = "") -> str:
    """`{prefix}Binance/`: everything the collector writes is under it."""
    return f"{prefix}{EXCHANGE}/"


def symbol_root(symbol: str, prefix: str = "") -> str:
    return f"{exchange_root(prefix)}{symbol}/"


def hour_prefix(symbol: str, timestamp_s: float, prefix: str = "") -> str:
    """`{prefix}Binance/SYMBOL/YYYY/MM/DD/HH/`: the hour holding `timestamp_s`."""
    return f"{symbol_root(symbol, prefix)}{time.strftime('%Y/%m/%d/%H', time.gmtime(timestamp_s))}/"


def partition_prefix(symbol: str, minute: int, prefix: str = "") -> str:
    """`{prefix}Binance/SYMBOL/YYYY/MM/DD/HH/mm/` for a minute since the epoch."""
    t = datetime.fromtimestamp(minute * 60, tz=UTC)
    return f"{symbol_root(symbol, prefix)}{t:%Y/%m/%d/%H/%M}/"


def object_key(
    *,
    symbol: str,
    minute: int,
    first_trade_id: int,
    last_trade_id: int,
    kind: Kind = "batch",
    output_format: str = "parquet",
    prefix: str = "",
) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown object kind {kind!r}; the layout knows {', '.join(KINDS)}")
    return (
        f"{partition_prefix(symbol, minute, prefix)}{kind}-{first_trade_id}-{last_trade_id}"
        f"{EXTENSIONS[output_format]}"
    )


def marker_key(symbol: str, minute: int, prefix: str = "") -> str:
    return f"{partition_prefix(symbol, minute, prefix)}{MARKER_NAME}"


def market_root(prefix: str = "") -> str:
    """`{prefix}Binance/_market/`: the market-wide layout's every minute is under it."""
    return f"{exchange_root(prefix)}{MARKET}/"


def market_prefix(minute: int, prefix: str = "") -> str:
    """`{prefix}Binance/_market/YYYY/MM/DD/HH/mm/` for a minute since the epoch."""
    t = datetime.fromtimestamp(minute * 60, tz=UTC)
    return f"{exchange_root(prefix)}{MARKET}/{t:%Y/%m/%d/%H/%M}/"


def market_object_key(
    minute: int, seq: int, sha256_hex: str, output_format: str = "parquet", prefix: str = ""
) -> str:
    return f"{market_prefix(minute, prefix)}part-{seq:03d}-{sha256_hex[:12]}{EXTENSIONS[output_format]}"


def market_marker_key(minute: int, prefix: str = "") -> str:
    return f"{market_prefix(minute, prefix)}{MARKER_NAME}"


def market_source_key(object_key_: str) -> str:
    """The spool key a symbol's share of a market minute waits under (never landed as such)."""
    return f"{_SOURCES}{object_key_}"


def is_market_source(key: str) -> bool:
    return key.startswith(_SOURCES)


def parse_market_key(key: str) -> MarketName | None:
    match = _MARKET_RE.search(key)
    if match is None:
        return None
    return MarketName(_minute(match), int(match["seq"]), match["digest"], match["ext"])


def parse_market_marker_key(key: str) -> int | None:
    """The minute of a market `_SUCCESS` key; None if the key is not one."""
    match = _MARKET_MARKER_RE.search(key)
    return None if match is None else _minute(match)


def _minute(match: re.Match[str]) -> int:
    g = match.groupdict()
    t = datetime(int(g["y"]), int(g["mo"]), int(g["d"]), int(g["h"]), int(g["mi"]), tzinfo=UTC)
    return minute_of(t.timestamp())


def parse_object_key(key: str) -> ObjectName | None:
    """Symbol, minute, kind and id range back from a data object's key (under any prefix);
    None if the key is not a data object of the layout."""
    match = _OBJECT_RE.search(key)
    if match is None:
        return None
    return ObjectName(
        symbol=match["symbol"],
        minute=_minute(match),
        kind=match["kind"],  # type: ignore[arg-type]
        first_trade_id=int(match["first"]),
        last_trade_id=int(match["last"]),
        extension=match["ext"],
    )


def parse_marker_key(key: str) -> tuple[str, int] | None:
    """(symbol, minute) of a `_SUCCESS` key; None if the key is not a marker."""
    match = _MARKER_RE.search(key)
    return None if match is None else (match["symbol"], _minute(match))


def latest_trade_id(
    keys_under: Callable[[str], Iterable[str]], symbol: str, now_s: float, lookback_hours: int = 48
) -> int | None:
    """The highest trade id landed for `symbol` in the last `lookback_hours`, hour by hour back
    from now (the first hour holding any data object holds it). `keys_under(prefix)` lists keys."""
    for back in range(lookback_hours + 1):
        ids = [
            name.last_trade_id
            for key in keys_under(hour_prefix(symbol, now_s - back * 3600))
            if (name := parse_object_key(key)) is not None and name.symbol == symbol
        ]
        if ids:
            return max(ids)
    return None
