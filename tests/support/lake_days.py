"""Whole final days of a landing zone, written with the collector's own encoders and markers:
every minute of the day marked, a few of them holding trades, in either layout."""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import date
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from collector.lake.completion import LandedFile, build_manifest
from collector.lake.layout import marker_key, market_marker_key, market_object_key, object_key
from collector.lake.market_manifest import MarketFile, SymbolShare, build_market_manifest
from collector.lake.parquet import encode_parquet
from collector.lake.sinks import LocalSink, sha256_b64
from collector.table.days import day_minutes
from tests.support.batches import batch, market_part

__all__ = ["land_market_day", "land_symbol_day", "landed_trades"]


def land_symbol_day(sink: LocalSink, symbol: str, day: date, first_id: int, busy: dict[int, int]) -> int:
    """Every minute of `day` marked for `symbol`; `busy` maps a minute of the day (0-1439) to its
    trades. Returns the next trade id."""
    next_id = first_id
    for offset, minute in enumerate(day_minutes(day)):
        files = []
        if busy.get(offset):
            sealed = batch(symbol, next_id, busy[offset], minute)
            data = encode_parquet(sealed)
            key = object_key(symbol=symbol, minute=minute, first_trade_id=next_id,
                             last_trade_id=next_id + busy[offset] - 1)  # fmt: skip
            _put(sink, key, data)
            files.append(LandedFile(name=key.rsplit("/", 1)[1], bytes=len(data), sha256=sha256_b64(data),
                                    rows=busy[offset], first_trade_id=next_id,
                                    last_trade_id=next_id + busy[offset] - 1))  # fmt: skip
            next_id += busy[offset]
        _put(
            sink,
            marker_key(symbol, minute),
            _json(build_manifest(symbol, minute, files, written_at_s=time.time())),
        )
    return next_id


def land_market_day(
    sink: LocalSink, day: date, symbols: dict[str, tuple[int, dict[int, int]]]
) -> dict[str, int]:
    """Every minute of `day` marked market-wide; `symbols` maps each symbol to its first id and its
    busy minutes. Returns each symbol's next id."""
    next_ids = {s: first for s, (first, _) in symbols.items()}
    for offset, minute in enumerate(day_minutes(day)):
        sources, shares = [], []
        for symbol in sorted(symbols):
            count = symbols[symbol][1].get(offset, 0)
            if count:
                sources.append(batch(symbol, next_ids[symbol], count, minute))
                shares.append(SymbolShare(symbol, count, next_ids[symbol], next_ids[symbol] + count - 1))
                next_ids[symbol] += count
        parts = []
        if sources:
            data = market_part(sources)
            key = market_object_key(minute, 0, hashlib.sha256(data).hexdigest())
            _put(sink, key, data)
            file = MarketFile(key.rsplit("/", 1)[1], len(data), sha256_b64(data), sum(s.rows for s in shares))
            parts.append((file, shares))
        doc = build_market_manifest(minute, parts, sorted(symbols), {}, written_at_s=time.time())
        _put(sink, market_marker_key(minute), _json(doc))
    return next_ids


def _put(sink: LocalSink, key: str, data: bytes) -> None:
    """The same bytes at the same key as the sink writes, without its fsyncs: thousands of
    markers a day, made for a test and thrown away."""
    path = sink.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _json(doc: dict[str, object]) -> bytes:
    import json

    return (json.dumps(doc, indent=1) + "\n").encode()


def landed_trades(sink: LocalSink, day: date) -> dict[tuple[str, int], tuple[Decimal, Decimal, int, bool]]:
    """Every trade the landing zone holds in `day`'s folders, read with pyarrow straight from the
    files: (symbol, trade id) -> (price, quantity, trade time in µs, buyer is maker)."""
    found: dict[tuple[str, int], tuple[Decimal, Decimal, int, bool]] = {}
    for key, _ in sink.list_keys("Binance/"):
        if f"/{day:%Y/%m/%d}/" not in key or not key.endswith(".parquet"):
            continue
        table = pq.read_table(sink.root / key)
        times = table["trade_time"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
        for row, micros in zip(table.to_pylist(), times, strict=True):
            assert (row["symbol"], row["trade_id"]) not in found, f"{row['trade_id']} twice in the landing"
            found[(row["symbol"], row["trade_id"])] = (
                row["price"],
                row["quantity"],
                micros,
                row["is_buyer_maker"],
            )
    return found


def digest_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()
