"""What the lake holds already, for the writers that must never land a trade id twice: the
history import (over live data), and the collector's backfill of a gap in days an import may
have landed. Read from the sink itself: its objects of any kind, their trade ids, the markers.
"""

from __future__ import annotations

import base64
import bisect
import gzip
import hashlib
from array import array
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from collector.lake.completion import LandedFile, parse_manifest
from collector.lake.layout import (
    market_prefix,
    parse_marker_key,
    parse_market_key,
    parse_market_marker_key,
    parse_object_key,
    symbol_root,
)
from collector.lake.market_manifest import parse_market_manifest
from collector.lake.parquet import count_rows
from collector.lake.sinks import Sink

__all__ = ["IdRanges", "LakeDays", "LakeMinute", "latest_market_ids"]


class IdRanges:
    """A set of trade ids as sorted, disjoint, inclusive ranges."""

    def __init__(self) -> None:
        self._ranges: list[list[int]] = []

    def add(self, low: int, high: int) -> None:
        ranges = self._ranges
        if not ranges or low > ranges[-1][1] + 1:  # the usual: ids come in ascending order
            ranges.append([low, high])
            return
        if low >= ranges[-1][0]:
            ranges[-1][1] = max(ranges[-1][1], high)
            return
        starts = [r[0] for r in self._ranges]
        i = bisect.bisect_left(starts, low)
        if i and self._ranges[i - 1][1] >= low - 1:
            i -= 1
        j = i
        while j < len(self._ranges) and self._ranges[j][0] <= high + 1:
            low, high = min(low, self._ranges[j][0]), max(high, self._ranges[j][1])
            j += 1
        self._ranges[i:j] = [[low, high]]

    def add_sorted(self, ids: Any) -> None:
        """Add ids given in ascending order (a Python sequence), as the ranges they form."""
        start = prev = None
        for trade_id in ids:
            if prev is not None and trade_id == prev + 1:
                prev = trade_id
                continue
            if start is not None:
                self.add(start, prev)  # type: ignore[arg-type]
            start = prev = trade_id
        if start is not None:
            self.add(start, prev)  # type: ignore[arg-type]

    def missing(self, low: int, high: int) -> list[tuple[int, int]]:
        """The sub-ranges of [low, high] not in the set."""
        out, cursor = [], low
        for start, end in self._ranges:
            if end < cursor:
                continue
            if start > high:
                break
            if start > cursor:
                out.append((cursor, start - 1))
            cursor = max(cursor, end + 1)
        if cursor <= high:
            out.append((cursor, high))
        return out


@dataclass
class LakeMinute:
    """What the lake holds for one minute of a symbol."""

    files: dict[str, LandedFile] = field(default_factory=dict)
    marker: dict[str, Any] | None = None
    ids: array[int] = field(default_factory=lambda: array("q"))  # ascending


class LakeDays:
    """The lake's state for a file's days: one listing per day, the minutes with data read."""

    def __init__(
        self,
        sink: Sink,
        symbol: str,
        days_since_epoch: list[int],
        *,
        within: tuple[int, int] | None = None,
        markers: bool = True,
    ) -> None:
        """`within`: read only the objects whose names' id ranges meet these ids (the others
        are left out of `present`); `markers=False`: leave the markers unread."""
        self.sink = sink
        self.symbol = symbol
        self.present = IdRanges()
        self._minutes: dict[int, LakeMinute] = defaultdict(LakeMinute)
        self.data_keys: dict[int, list[str]] = defaultdict(list)
        self.marker_keys: dict[int, str] = {}
        from datetime import UTC, datetime

        for day in days_since_epoch:
            prefix = f"{symbol_root(symbol)}{datetime.fromtimestamp(day * 86_400, tz=UTC):%Y/%m/%d}/"
            for key, _ in sink.list_keys(prefix):
                if (marker := parse_marker_key(key)) is not None:
                    if markers:
                        self.marker_keys[marker[1]] = key
                elif (name := parse_object_key(key)) is not None and _wanted(name, symbol, within):
                    self.data_keys[name.minute].append(key)
        for minute in list(self.data_keys) + list(self.marker_keys):
            self._load(minute)

    def _load(self, minute: int) -> None:
        import pyarrow as pa
        from pyarrow import _parquet

        held = self._minutes[minute]
        if minute in self.marker_keys and held.marker is None:
            raw = self.sink.get(self.marker_keys[minute])
            if raw is not None:
                try:
                    held.marker = parse_manifest(raw)
                except ValueError:
                    held.marker = None  # unreadable: rewritten from the files found
        ids: list[int] = []
        for key in self.data_keys.get(minute, []):
            data = self.sink.get(key)
            name = parse_object_key(key)
            if data is None or name is None:
                continue
            if key.endswith(".parquet"):
                reader = _parquet.ParquetReader()
                reader.open(pa.BufferReader(data))
                column = reader.read_all(column_indices=[1]).column(0).to_pylist()
                reader.close()
            else:  # csv.gz: its first column
                column = [int(line.split(b",")[1]) for line in gzip.decompress(data).splitlines()[1:]]
            ids.extend(int(v) for v in column)
            digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
            entry = LandedFile(
                name=name.file_name,
                bytes=len(data),
                sha256=digest,
                rows=count_rows(data, "parquet" if key.endswith(".parquet") else "csv.gz"),
                first_trade_id=name.first_trade_id,
                last_trade_id=name.last_trade_id,
            )
            held.files[entry.name] = entry
        held.ids = array("q", sorted(set(ids)))
        self.present.add_sorted(held.ids)

    def minute(self, minute: int) -> LakeMinute:
        return self._minutes[minute] if minute in self._minutes else LakeMinute()


def _wanted(name: Any, symbol: str, within: tuple[int, int] | None) -> bool:
    if name.symbol != symbol:
        return False
    return within is None or (name.first_trade_id <= within[1] and name.last_trade_id >= within[0])


def latest_market_ids(
    sink: Sink, now_s: float, *, lookback_hours: int = 48, max_minutes: int = 60
) -> dict[str, int]:
    """The highest trade id landed market-wide per symbol, for a start without local state: the
    newest market minutes first, their markers' `symbols` (and any part no marker lists yet,
    read), until every symbol the newest marker covers is found or `max_minutes` were read."""
    found: dict[str, int] = {}
    wanted: set[str] | None = None
    read = 0
    now_minute = int(now_s // 60)
    for back in range(lookback_hours + 1):
        hour = (now_minute // 60 - back) * 60
        minutes: dict[int, list[str]] = defaultdict(list)
        hour_prefix = market_prefix(hour).rsplit("/", 2)[0] + "/"  # Binance/_market/YYYY/MM/DD/HH/
        for key, _ in sink.list_keys(hour_prefix):
            minute = parse_market_marker_key(key)
            name = parse_market_key(key)
            if minute is not None or name is not None:
                minutes[minute if minute is not None else name.minute].append(key)  # type: ignore[union-attr]
        for minute in sorted(minutes, reverse=True):
            covered = _market_minute_ids(sink, minutes[minute], found)
            wanted = set(covered) if wanted is None else wanted
            read += 1
            if read >= max_minutes or (wanted and wanted <= found.keys()):
                return found
    return found


def _market_minute_ids(sink: Sink, keys: list[str], found: dict[str, int]) -> list[str]:
    """Add one market minute's last ids to `found` (newer minutes' stay); the symbols it covers."""
    import pyarrow as pa
    from pyarrow import _parquet

    listed: set[str] = set()
    covered: list[str] = []
    for key in keys:
        if parse_market_marker_key(key) is not None and (raw := sink.get(key)) is not None:
            try:
                doc = parse_market_manifest(raw)
            except ValueError:
                continue  # unreadable: its parts are read below
            listed = {f["name"] for f in doc["files"]}
            covered = list(doc["covered"])
            for symbol, entry in doc["symbols"].items():
                found.setdefault(symbol, entry["last_trade_id"])
    for key in keys:
        name = parse_market_key(key)
        if name is None or name.file_name in listed or not key.endswith(".parquet"):
            continue
        data = sink.get(key)  # landed, but not yet in a marker (the collector stopped in between)
        if data is None:
            continue
        reader = _parquet.ParquetReader()
        reader.open(pa.BufferReader(data))
        table = reader.read_all(column_indices=[0, 1])
        reader.close()
        last: dict[str, int] = {}
        for symbol, trade_id in zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True):
            last[symbol] = max(last.get(symbol, -1), trade_id)
        for symbol, trade_id in last.items():
            found[symbol] = max(found.get(symbol, -1), trade_id)
    return covered
