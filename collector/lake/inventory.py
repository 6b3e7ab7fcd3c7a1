"""What a local landing directory holds, per symbol: files, rows, id range, continuity."""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from collector.lake.layout import parse_marker_key, parse_object_key

__all__ = ["SymbolInventory", "last_trade_time_s", "read_trade_ids", "scan_local"]


@dataclass
class SymbolInventory:
    symbol: str
    files: int = 0
    bytes: int = 0
    trade_ids: list[int] = field(default_factory=list)
    minutes: set[int] = field(default_factory=set)  # minutes holding data
    marked: set[int] = field(default_factory=set)  # minutes with a _SUCCESS
    newest: tuple[int, Path] | None = None  # the file holding the highest trade id, and that id

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


def _read_table(path: Path, columns: list[str]) -> pa.Table:
    if path.name.endswith(".parquet"):
        return pq.read_table(path, columns=columns)
    table = pacsv.read_csv(io.BytesIO(gzip.decompress(path.read_bytes())))
    return table.select(columns)


def last_trade_time_s(path: Path) -> float:
    """The latest trade time in a landed file, in seconds since the epoch."""
    latest = pc.max(_read_table(path, ["trade_time"]).column("trade_time")).as_py()
    if isinstance(latest, str):  # CSV whose times were not taken for timestamps
        latest = datetime.fromisoformat(latest)
    if latest.tzinfo is None:
        latest = latest.replace(tzinfo=UTC)
    return float(latest.timestamp())


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
        if inv.newest is None or name.last_trade_id > inv.newest[0]:
            inv.newest = (name.last_trade_id, path)
    for symbol, minute in marked:
        if symbol in found:
            found[symbol].marked.add(minute)
    return found
