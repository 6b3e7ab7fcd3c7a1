"""What a local landing directory holds, per symbol: files, rows, id range, continuity."""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from collector.lake.layout import parse_marker_key, parse_object_key

__all__ = ["SymbolInventory", "read_trade_ids", "scan_local"]


@dataclass
class SymbolInventory:
    symbol: str
    files: int = 0
    bytes: int = 0
    trade_ids: list[int] = field(default_factory=list)
    minutes: set[int] = field(default_factory=set)  # minutes holding data
    marked: set[int] = field(default_factory=set)  # minutes with a _SUCCESS

    @property
    def rows(self) -> int:
        return len(self.trade_ids)

    @property
    def duplicates(self) -> int:
        return len(self.trade_ids) - len(set(self.trade_ids))

    @property
    def missing(self) -> int:
        if not self.trade_ids:
            return 0
        unique = set(self.trade_ids)
        return max(unique) - min(unique) + 1 - len(unique)


def read_trade_ids(path: Path) -> list[int]:
    if path.name.endswith(".parquet"):
        return [int(v) for v in pq.read_table(path, columns=["trade_id"]).column("trade_id").to_pylist()]
    table = pacsv.read_csv(io.BytesIO(gzip.decompress(path.read_bytes())))
    return [int(v) for v in table.column("trade_id").to_pylist()]


def scan_local(root: Path) -> dict[str, SymbolInventory]:
    found: dict[str, SymbolInventory] = {}
    marked: list[tuple[str, int]] = []
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix() if path.is_file() else ""
        if (marker := parse_marker_key(key)) is not None:
            marked.append(marker)
        name = parse_object_key(key)
        if name is None:
            continue
        inv = found.setdefault(name.symbol, SymbolInventory(name.symbol))
        inv.minutes.add(name.minute)
        inv.files += 1
        inv.bytes += path.stat().st_size
        inv.trade_ids.extend(read_trade_ids(path))
    for symbol, minute in marked:
        if symbol in found:
            found[symbol].marked.add(minute)
    return found
