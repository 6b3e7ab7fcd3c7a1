"""Reading a landing zone back, independently of the collector's own bookkeeping."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from collector.lake.layout import parse_object_key

MINUTE_MS = 60_000


@dataclass(frozen=True)
class Row:
    symbol: str
    trade_id: int
    price: str
    quantity: str
    trade_time_ms: int
    key: str


def read_landing(root: Path) -> list[Row]:
    """Every row of every data object under `root`; asserts each object sits in its own minute."""
    rows: list[Row] = []
    for path in sorted(root.rglob("*.parquet")):
        key = path.relative_to(root).as_posix()
        name = parse_object_key(key)
        assert name is not None, f"unexpected object {key}"
        table = pq.read_table(path)
        ids = table.column("trade_id").to_pylist()
        assert (min(ids), max(ids)) == (name.first_trade_id, name.last_trade_id), key
        symbols = set(table.column("symbol").to_pylist())
        assert symbols == {name.symbol}, key
        for trade_id, price, qty, t in zip(
            ids,
            table.column("price").to_pylist(),
            table.column("quantity").to_pylist(),
            table.column("trade_time").cast("int64").to_pylist(),
            strict=True,
        ):
            assert t // MINUTE_MS == name.minute, (
                f"{key}: trade {trade_id} at {t} is outside the object's minute"
            )
            rows.append(Row(name.symbol, trade_id, format(price, "f"), format(qty, "f"), t, key))
    return rows


def download_bucket(client: Any, bucket: str, target: Path, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            keys.append(key)
            path = target / key[len(prefix) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    return keys


def recorded_trades(path: Path) -> dict[int, dict[str, Any]]:
    """trade id -> the recording's `data` object, for every trade frame in a recording."""
    out: dict[int, dict[str, Any]] = {}
    with gzip.open(path, "rt") as handle:
        for line in handle:
            data = json.loads(line.partition(" ")[2]).get("data", {})
            if data.get("e") == "trade":
                out[data["t"]] = data
    return out


def trade_frame(trade_id: int, t_ms: int, symbol: str = "BTCUSDT", price: str = "61837.63000000") -> str:
    return json.dumps(
        {
            "e": "trade",
            "E": t_ms + 1,
            "s": symbol,
            "t": trade_id,
            "p": price,
            "q": "0.01000000",
            "T": t_ms,
            "m": trade_id % 2 == 0,
            "M": True,
        },
        separators=(",", ":"),
    )


def ids_by_symbol(root: Path) -> dict[str, list[int]]:
    """Sorted trade ids per symbol of everything landed under `root`."""
    found: dict[str, list[int]] = {}
    for row in read_landing(root):
        found.setdefault(row.symbol, []).append(row.trade_id)
    return {symbol: sorted(ids) for symbol, ids in found.items()}
