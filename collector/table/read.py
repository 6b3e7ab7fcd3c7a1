"""A final day of the landing zone, read as its markers list it and checked against them.

    plan_day      every marker of the day read; the objects they list, with what each must hold
    DayReader     the objects fetched (size and SHA-256 checked as they come), decoded, their rows
                  and trade ids checked against the markers, and handed on in *slices*: whole
                  symbols in symbol order (a symbol bigger than a slice, whole minutes of it),
                  each slice sorted by symbol and trade id, times in UTC microseconds

Memory is a slice, not a day: `SLICE_ROWS` trades at a time, whatever the day holds. A
market-wide part (every unwatched symbol's minute) is read once for its checksum and kept in
the staging directory, then read again for each slice whose symbols it holds, row groups that
cannot hold them skipped by their statistics.

Anything that does not match is a `Defect`: the day is not committed, and each defect names
the object and what is wrong with it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from collector.exceptions import SinkError
from collector.lake.completion import minute_label, parse_manifest
from collector.lake.layout import MARKET, market_prefix, partition_prefix
from collector.lake.market_manifest import parse_market_manifest
from collector.lake.sinks import Sink
from collector.table.days import DayState

__all__ = ["SLICE_ROWS", "DayPlan", "DayReader", "Defect", "Piece", "plan_day"]

# Trades handed on at once: about 40 MB of Arrow, and the rows bars and files are made from.
# Two slices are in hand at a time (one read while the other is written): with the libraries'
# own 120 MB, a compaction stays near 300 MB whatever a day holds (bench/table.py).
SLICE_ROWS = 500_000
_DECIMAL = pa.decimal128(18, 8)
_MICROS = pa.timestamp("us", tz="UTC")
FETCHERS = 8  # objects fetched at once (S3 GETs wait on the network, not the CPU)


@dataclass(frozen=True, slots=True)
class Defect:
    kind: str  # missing_file, size, checksum, unreadable, rows, ids, duplicate_ids, marker
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.key}: {self.detail}"


@dataclass
class Piece:
    """One data object the day's markers list, and what it must hold."""

    key: str
    size: int
    sha256: str
    rows: int
    minute: int
    symbol: str | None  # None: a market-wide part
    first_id: int = 0
    last_id: int = 0


@dataclass
class DayPlan:
    day: date
    digest: str
    pieces: list[Piece]
    rows: dict[str, int]  # trades per symbol, as the markers say
    # market minutes: (minute, symbol) -> (rows, first id, last id), as the markers say
    market_shares: dict[tuple[int, str], tuple[int, int, int]] = field(default_factory=dict)
    unfilled_gaps: int = 0  # declared in the day's markers
    defects: list[Defect] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def plan_day(sink: Sink, state: DayState) -> DayPlan:
    """Read every marker of a ready day: the objects to read and what each must hold."""
    plan = DayPlan(state.day, state.digest(), [], defaultdict(int))
    markers = [
        (s.stream, minute, key) for s in state.streams.values() for minute, (key, _, _) in s.markers.items()
    ]
    with ThreadPoolExecutor(FETCHERS) as pool:
        bodies = list(pool.map(lambda m: _get(sink, m[2]), markers))
    for (stream, minute, key), body in zip(markers, bodies, strict=True):
        if isinstance(body, Defect):
            plan.defects.append(body)
            continue
        try:
            doc = parse_market_manifest(body) if stream == MARKET else parse_manifest(body)
        except ValueError as exc:
            plan.defects.append(Defect("marker", sink.describe(key), str(exc)))
            continue
        if doc["minute"] != minute_label(minute):
            plan.defects.append(
                Defect("marker", sink.describe(key), f"names another minute, {doc['minute']}")
            )
        elif stream == MARKET:
            _plan_market(plan, minute, doc)
        else:
            _plan_symbol(plan, stream, minute, doc)
    plan.rows = dict(plan.rows)
    return plan


def _plan_symbol(plan: DayPlan, symbol: str, minute: int, doc: dict[str, Any]) -> None:
    prefix = partition_prefix(symbol, minute)
    for entry in doc["files"]:
        key, ids = f"{prefix}{entry['name']}", (entry["first_trade_id"], entry["last_trade_id"])
        plan.pieces.append(Piece(key, entry["bytes"], entry["sha256"], entry["rows"], minute, symbol, *ids))
        plan.rows[symbol] += entry["rows"]
    plan.unfilled_gaps += len(doc["unfilled_gaps"])


def _plan_market(plan: DayPlan, minute: int, doc: dict[str, Any]) -> None:
    prefix = market_prefix(minute)
    for entry in doc["files"]:
        plan.pieces.append(Piece(f"{prefix}{entry['name']}", entry["bytes"], entry["sha256"], entry["rows"],
                                 minute, None))  # fmt: skip
    for symbol, share in doc["symbols"].items():
        plan.market_shares[(minute, symbol)] = (
            share["rows"],
            share["first_trade_id"],
            share["last_trade_id"],
        )
        plan.rows[symbol] += share["rows"]
    plan.unfilled_gaps += sum(len(g) for g in doc["unfilled_gaps"].values())


def _get(sink: Sink, key: str) -> bytes | Defect:
    try:
        body = sink.get(key)
    except SinkError as exc:
        return Defect("missing_file", sink.describe(key), f"could not be read: {exc}")
    if body is None:
        return Defect("missing_file", sink.describe(key), "listed by its marker but not there")
    return body


class DayReader:
    """A planned day's trades in checked, sorted slices (see the module's docstring)."""

    def __init__(self, sink: Sink, plan: DayPlan, staging: Path, target: pa.Schema) -> None:
        self.sink, self.plan, self.staging, self.target = sink, plan, staging, target
        self.defects: list[Defect] = []
        self._last_id: dict[str, int] = {}
        self._by_symbol: dict[str, list[Piece]] = defaultdict(list)
        self._parts: list[Piece] = []
        for piece in plan.pieces:
            if piece.symbol is None:
                self._parts.append(piece)
            else:
                self._by_symbol[piece.symbol].append(piece)
        for pieces in self._by_symbol.values():
            pieces.sort(key=lambda p: p.first_id)

    def slices(self) -> Iterator[pa.Table]:
        """The day in slices; `defects` says what did not match once they are all read."""
        self._stage_parts()
        with ThreadPoolExecutor(2) as decoders:
            for symbols, minutes in self._slice_plan():
                tables = self._read_slice(symbols, minutes, decoders)
                if tables:
                    yield tables

    # ---- planning ---------------------------------------------------------------------------

    def _slice_plan(self) -> Iterator[tuple[list[str], range | None]]:
        """Symbols in order, in groups of at most SLICE_ROWS trades; a bigger symbol by minutes."""
        group: list[str] = []
        rows = 0
        for symbol in sorted(self.plan.rows):
            count = self.plan.rows[symbol]
            if count > SLICE_ROWS:
                if group:
                    yield group, None
                    group, rows = [], 0
                yield from (([symbol], span) for span in self._minute_spans(symbol))
                continue
            if group and rows + count > SLICE_ROWS:
                yield group, None
                group, rows = [], 0
            group.append(symbol)
            rows += count
        if group:
            yield group, None

    def _minute_spans(self, symbol: str) -> Iterator[range]:
        per_minute: dict[int, int] = defaultdict(int)
        for piece in self._by_symbol.get(symbol, []):
            per_minute[piece.minute] += piece.rows
        for (minute, name), (count, _, _) in self.plan.market_shares.items():
            if name == symbol:
                per_minute[minute] += count
        start, rows = None, 0
        for minute in sorted(per_minute):
            if start is not None and rows + per_minute[minute] > SLICE_ROWS:
                yield range(start, minute)
                start, rows = None, 0
            start = minute if start is None else start
            rows += per_minute[minute]
        if start is not None:
            yield range(start, max(per_minute) + 1)

    # ---- reading ----------------------------------------------------------------------------

    def _read_slice(
        self, symbols: list[str], minutes: range | None, decoders: ThreadPoolExecutor
    ) -> pa.Table | None:
        pieces = [
            p for s in symbols for p in self._by_symbol.get(s, []) if minutes is None or p.minute in minutes
        ]
        runs: dict[str, list[tuple[int, pa.Table]]] = defaultdict(list)
        for piece, table in zip(pieces, decoders.map(self._decode_piece, pieces), strict=True):
            if table is not None:
                runs[piece.symbol or ""].append((piece.first_id, table))
        self._read_parts(set(symbols), minutes, runs)
        ordered = []
        for symbol in sorted(runs):
            tables = [t for _, t in sorted(runs[symbol], key=lambda run: run[0])]
            ordered.append(self._in_order(symbol, self._unified(tables)))
        return pa.concat_tables(ordered) if ordered else None

    def _unified(self, tables: list[pa.Table]) -> pa.Table:
        """Tables of the landing's schemas (ms or µs, archive or live) as one of the table's: one
        cast per schema met, not per object."""
        groups: dict[pa.Schema, list[pa.Table]] = {}
        for table in tables:
            groups.setdefault(table.schema, []).append(table)
        if len(groups) == 1:
            return pa.concat_tables(tables).cast(self.target)
        # Several schemas: each object cast on its own, the order kept.
        return pa.concat_tables([table.cast(self.target) for table in tables])

    def _decode_piece(self, piece: Piece) -> pa.Table | None:
        """An object fetched, its size and SHA-256 checked, decoded, its rows and id range checked
        against its marker (the range from the file's own statistics, as a reader prunes by)."""
        body = _get(self.sink, piece.key)
        if isinstance(body, Defect):
            self.defects.append(body)
            return None
        if not self._intact(piece, body):
            return None
        where = self.sink.describe(piece.key)
        try:
            table, ids = _decode_object(body, piece.key, None)
        except (pa.ArrowException, ValueError, OSError, KeyError, EOFError) as exc:
            self.defects.append(Defect("unreadable", where, str(exc)[:300]))
            return None
        if table.num_rows != piece.rows:
            self.defects.append(Defect("rows", where, f"{table.num_rows} rows, its marker says {piece.rows}"))
            return None
        if table.num_rows and ids is None:
            low, high = pc.min_max(table["trade_id"]).values()
            ids = (low.as_py(), high.as_py())
        if table.num_rows and ids != (piece.first_id, piece.last_id):
            held = f"{ids[0]}..{ids[1]}" if ids else "unknown"
            self.defects.append(
                Defect("ids", where, f"ids {held}, its marker says {piece.first_id}..{piece.last_id}")
            )
            return None
        return table.select(self.target.names)

    def _intact(self, piece: Piece, body: bytes) -> bool:
        where = self.sink.describe(piece.key)
        if len(body) != piece.size:
            self.defects.append(Defect("size", where, f"{len(body)} bytes, its marker says {piece.size}"))
            return False
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        if digest != piece.sha256:
            self.defects.append(
                Defect("checksum", where, f"SHA-256 {digest}, its marker says {piece.sha256}")
            )
            return False
        return True

    def _decode(self, piece: Piece, body: bytes, symbols: tuple[str, str] | None = None) -> pa.Table | None:
        try:
            table, _ = _decode_object(body, piece.key, symbols)
            return table.select(self.target.names).cast(self.target)
        except (pa.ArrowException, ValueError, OSError, KeyError, EOFError) as exc:
            self.defects.append(Defect("unreadable", self.sink.describe(piece.key), str(exc)[:300]))
            return None

    def _in_order(self, symbol: str, table: pa.Table) -> pa.Table:
        """The symbol's trades strictly rising by id, across slices too; sorted if they came out of
        order; a repeated id is a defect (a trade id is in one object only)."""
        ids = table["trade_id"]
        if table.num_rows > 1 and not pc.all(pc.less(ids[:-1], ids[1:])).as_py():
            table = table.sort_by("trade_id")
            ids = table["trade_id"]
            repeated = pc.equal(ids[:-1], ids[1:])
            if pc.any(repeated).as_py():
                first = ids[pc.index(repeated, True).as_py()].as_py()
                self.defects.append(Defect("duplicate_ids", symbol, f"trade id {first} is in two objects"))
        if table.num_rows:
            first = ids[0].as_py()
            if first <= self._last_id.get(symbol, first - 1):
                self.defects.append(Defect("duplicate_ids", symbol, f"trade id {first} is in two objects"))
            self._last_id[symbol] = ids[-1].as_py()
        return table

    # ---- market-wide parts -----------------------------------------------------------------

    def _stage_parts(self) -> None:
        """Every market part fetched once, checked, and kept in the staging directory."""
        if not self._parts:
            return
        self.staging.mkdir(parents=True, exist_ok=True)

        def stage(piece: Piece) -> None:
            body = _get(self.sink, piece.key)
            if isinstance(body, Defect):
                self.defects.append(body)
            elif self._intact(piece, body):
                (self.staging / _staged_name(piece)).write_bytes(body)

        with ThreadPoolExecutor(FETCHERS) as pool:
            list(pool.map(stage, self._parts))

    def _read_parts(
        self, symbols: set[str], minutes: range | None, runs: dict[str, list[tuple[int, pa.Table]]]
    ) -> None:
        low, high = min(symbols), max(symbols)
        seen: dict[tuple[int, str], list[int]] = {}  # (minute, symbol) -> [rows, lowest id, highest id]
        wanted = pa.array(sorted(symbols))
        for piece in self._parts:
            if minutes is not None and piece.minute not in minutes:
                continue
            if not any((piece.minute, s) in self.plan.market_shares for s in symbols):
                continue
            path = self.staging / _staged_name(piece)
            if not path.exists():
                continue  # its defect is recorded already
            table = self._decode(piece, path.read_bytes(), (low, high))
            if table is None:
                continue
            for symbol, run in _runs(table.filter(pc.is_in(table["symbol"], wanted))):
                ids = run["trade_id"]
                first, last = ids[0].as_py(), ids[-1].as_py()
                runs[symbol].append((first, run))
                found = seen.setdefault((piece.minute, symbol), [0, first, last])
                found[0] += run.num_rows
                found[1], found[2] = min(found[1], first), max(found[2], last)
        for (minute, symbol), (rows, first, last) in self.plan.market_shares.items():
            if symbol in symbols and (minutes is None or minute in minutes):
                got = seen.get((minute, symbol), [0, None, None])
                if (got[0], got[1], got[2]) != (rows, first, last) and not (rows == got[0] == 0):
                    self.defects.append(Defect("rows", f"{market_prefix(minute)} {symbol}",
                                               f"{got[0]} rows, ids {got[1]}..{got[2]}; its marker says "
                                               f"{rows} rows, ids {first}..{last}"))  # fmt: skip


def _staged_name(piece: Piece) -> str:
    return piece.key.replace("/", "~")


def _runs(table: pa.Table) -> Iterator[tuple[str, pa.Table]]:
    """A table sorted by symbol as (symbol, its rows) runs, zero-copy."""
    if not table.num_rows:
        return
    ends = pc.run_end_encode(table["symbol"].combine_chunks()).run_ends.to_pylist()
    values = pc.run_end_encode(table["symbol"].combine_chunks()).values.to_pylist()
    start = 0
    for end, symbol in zip(ends, values, strict=True):
        yield symbol, table.slice(start, end - start)
        start = end


def _decode_object(
    body: bytes, key: str, symbols: tuple[str, str] | None
) -> tuple[pa.Table, tuple[int, int] | None]:
    """A landed object's rows (Parquet, row groups that cannot hold `symbols` skipped; or gzip
    CSV), and its lowest and highest trade id from the file's statistics when it has them."""
    if key.endswith(".parquet"):
        from pyarrow import _parquet

        reader = _parquet.ParquetReader()
        reader.open(pa.BufferReader(body))
        try:
            meta = reader.metadata
            groups = list(range(meta.num_row_groups))
            if symbols is not None:
                groups = [g for g in groups if _may_hold(meta.row_group(g), symbols)]
            table = (
                reader.read_row_groups(groups, use_threads=False)
                if groups
                else reader.schema_arrow.empty_table()
            )
            return table, (_id_range(meta) if symbols is None else None)
        finally:
            reader.close()
    if key.endswith(".csv.gz"):
        from pyarrow import csv

        types = {"symbol": pa.string(), "trade_id": pa.int64(), "price": _DECIMAL, "quantity": _DECIMAL,
                 "trade_time": _MICROS, "event_time": _MICROS, "is_buyer_maker": pa.bool_(),
                 "received_at": _MICROS}  # fmt: skip
        options = csv.ConvertOptions(column_types=types, strings_can_be_null=True, null_values=[""])
        return csv.read_csv(io.BytesIO(gzip.decompress(body)), convert_options=options), None
    raise ValueError("not a data object of the layout")


def _id_range(meta: Any) -> tuple[int, int] | None:
    """(lowest, highest) trade id by the row groups' statistics (the landing writes them)."""
    low = high = None
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(1).statistics  # trade_id: the second column
        if stats is None or not stats.has_min_max:
            return None
        low = stats.min if low is None else min(low, stats.min)
        high = stats.max if high is None else max(high, stats.max)
    return None if low is None or high is None else (int(low), int(high))


def _may_hold(group: Any, symbols: tuple[str, str]) -> bool:
    column = group.column(0)  # symbol: the first column of the landing schema
    stats = column.statistics
    if stats is None or not stats.has_min_max:
        return True
    return not (stats.max < symbols[0] or stats.min > symbols[1])
