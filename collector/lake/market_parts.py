"""A market minute's sources merged into its parts: sorted by symbol then trade id, whatever the
order the rows arrived in, at most `part_rows` rows a part, in memory bounded whatever the
minute holds. Pure: the caller hands each source's bytes over when asked for them.

    sources (one symbol's batch each: live, backfill, late; their ranges may interleave: a
    gap's backfill falls inside the live batch that revealed it) ─▶ read when the merge reaches
    their first id ─▶ runs of rising ids ─▶ merged by (symbol, trade id), slice by slice
    ─▶ row groups of MARKET_ROW_GROUP_ROWS ─▶ a part every `part_rows` rows

Each part is sorted, and part k's last (symbol, trade id) comes before part k+1's first, so the
minute's parts read in order are the minute sorted. The same sources always give the same
parts, byte for byte (a part's key carries its digest: rebuilt after a crash, it is found landed).

What is in memory: the sources whose ids overlap where the merge is (one, or a few where a
backfill interleaves), the row group being gathered and the part being written, compressed
(about 7 bytes a row). A minute of 6 million trades is six parts of a million rows, never one
table of 6 million (about 105 bytes a row, 700 MB, as it was).
"""

from __future__ import annotations

import gzip
import io
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import le
from typing import Any

import pyarrow as pa
from pyarrow import _parquet

from collector.lake.market_manifest import SymbolShare
from collector.lake.parquet import COLUMNS, market_writer

__all__ = ["MARKET_ROW_GROUP_ROWS", "MarketPart", "MarketSource", "market_parts"]

# Row groups of this many rows, with min/max statistics on `symbol`, let a reader of a few
# symbols skip the rest of a busy minute (BTCUSDT alone is about a fifth of the market's trades).
MARKET_ROW_GROUP_ROWS = 16_384


@dataclass(frozen=True, slots=True)
class MarketSource:
    """One symbol's trades of the minute, as its spooled name says (ids are its lowest and
    highest), and how to get its bytes (Parquet or gzip CSV, as the batch was encoded)."""

    symbol: str
    first_trade_id: int
    last_trade_id: int
    read: Callable[[], bytes]


@dataclass(frozen=True, slots=True)
class MarketPart:
    data: bytes
    rows: int
    shares: list[SymbolShare]  # per symbol in the part, in symbol order


class _Run:
    """Rows of one source whose ids rise: the rows (a table, or CSV lines), their ids, how far
    the merge has taken them."""

    __slots__ = ("ids", "pos", "rows", "stop")

    def __init__(self, rows: Any, ids: Sequence[int], start: int, stop: int) -> None:
        self.rows, self.ids, self.pos, self.stop = rows, ids, start, stop

    @property
    def head(self) -> int:
        return self.ids[self.pos]


def market_parts(sources: Iterable[MarketSource], output_format: str, part_rows: int) -> Iterator[MarketPart]:
    """The minute's parts, in order: every row of every source once, sorted by symbol then id."""
    ordered = sorted(sources, key=lambda s: (s.symbol, s.first_trade_id))
    writer = _CsvParts(part_rows) if output_format == "csv.gz" else _ParquetParts(part_rows)
    for symbol, mine in groupby(ordered, key=lambda s: s.symbol):
        for rows, ids in _merged(list(mine), writer.load):
            yield from writer.add(symbol, rows, ids)
    yield from writer.finish()


def _merged(
    sources: list[MarketSource], load: Callable[[bytes], tuple[Any, Sequence[int]]]
) -> Iterator[tuple[Any, Sequence[int]]]:
    """One symbol's rows in id order, as (rows, their ids) slices of its runs. A source is read
    only once the merge has reached its first id, and let go once taken whole."""
    pending = list(reversed(sources))  # by first id, the next at the end
    active: list[_Run] = []
    while pending or active:
        while pending and (not active or pending[-1].first_trade_id <= min(r.head for r in active)):
            rows, ids = load(pending.pop().read())
            active += _runs(rows, ids)
        if not active:
            continue
        run = min(active, key=lambda r: r.head)
        bound = min((r.head for r in active if r is not run), default=None)
        if pending and (bound is None or pending[-1].first_trade_id < bound):
            bound = pending[-1].first_trade_id
        stop = run.stop if bound is None else max(run.pos + 1, bisect_left(run.ids, bound, run.pos, run.stop))
        yield _slice(run.rows, run.pos, stop), run.ids[run.pos : stop]
        run.pos = stop
        if run.pos == run.stop:
            active.remove(run)


def _runs(rows: Any, ids: Sequence[int]) -> list[_Run]:
    """The source's stretches of rising ids (one, unless its rows came out of order)."""
    count = len(ids)
    if not count:
        return []
    if all(map(le, ids[:-1], ids[1:])):  # the usual source: in order, checked in C
        return [_Run(rows, ids, 0, count)]
    starts = [0, *(i for i in range(1, count) if ids[i] < ids[i - 1])]
    return [_Run(rows, ids, a, b) for a, b in zip(starts, [*starts[1:], count], strict=True)]


def _slice(rows: Any, start: int, stop: int) -> Any:
    return rows[start:stop] if isinstance(rows, list) else rows.slice(start, stop - start)


class _Shares:
    """Each symbol's rows and id range in the part being written."""

    def __init__(self) -> None:
        self.by_symbol: dict[str, list[int]] = {}

    def add(self, symbol: str, first: int, last: int, count: int) -> None:
        share = self.by_symbol.get(symbol)
        if share is None:
            self.by_symbol[symbol] = [count, first, last]
        else:
            share[0] += count
            share[1], share[2] = min(share[1], first), max(share[2], last)

    def take(self) -> list[SymbolShare]:
        shares = [SymbolShare(s, n, a, b) for s, (n, a, b) in sorted(self.by_symbol.items())]
        self.by_symbol = {}
        return shares


class _ParquetParts:
    """Parts as Parquet: rows gathered into row groups, each written (compressed) as it fills."""

    def __init__(self, part_rows: int) -> None:
        self.part_rows = part_rows
        self.shares = _Shares()
        self.group: list[pa.Table] = []
        self.group_rows = 0
        self.part_rows_so_far = 0
        self.sink: pa.BufferOutputStream | None = None
        self.writer: Any = None

    @staticmethod
    def load(data: bytes) -> tuple[pa.Table, Sequence[int]]:
        reader = _parquet.ParquetReader()
        reader.open(pa.BufferReader(data))
        try:
            table = reader.read_all().combine_chunks()
        finally:
            reader.close()
        ids = table.column("trade_id")
        if not len(ids):
            return table, []
        chunk = ids.chunk(0)
        view = memoryview(chunk.buffers()[1]).cast("q")  # the ids in place: no copy, no object each
        return table, view[chunk.offset : chunk.offset + len(chunk)]

    def add(self, symbol: str, rows: pa.Table, ids: Sequence[int]) -> Iterator[MarketPart]:
        """A merged slice of one symbol's rows and their ids; the parts it completes."""
        taken, count = 0, len(ids)
        while taken < count:
            n = min(self.part_rows - self.part_rows_so_far, count - taken)
            self.shares.add(symbol, ids[taken], ids[taken + n - 1], n)
            self._gather(rows.slice(taken, n))
            taken += n
            self.part_rows_so_far += n
            if self.part_rows_so_far == self.part_rows:
                yield self._part()

    def _gather(self, piece: pa.Table) -> None:
        self.group.append(piece)
        self.group_rows += piece.num_rows
        while self.group_rows >= MARKET_ROW_GROUP_ROWS:
            table = pa.concat_tables(self.group)
            self._write(table.slice(0, MARKET_ROW_GROUP_ROWS))
            rest = table.slice(MARKET_ROW_GROUP_ROWS)
            self.group, self.group_rows = ([rest] if rest.num_rows else []), rest.num_rows

    def _write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.sink = pa.BufferOutputStream()
            self.writer = market_writer(self.sink, table.schema)
        self.writer.write_table(table, row_group_size=MARKET_ROW_GROUP_ROWS)

    def _part(self) -> MarketPart:
        if self.group:
            self._write(pa.concat_tables(self.group))
            self.group, self.group_rows = [], 0
        self.writer.close()
        assert self.sink is not None
        data: bytes = self.sink.getvalue().to_pybytes()
        part = MarketPart(data, self.part_rows_so_far, self.shares.take())
        self.writer, self.sink, self.part_rows_so_far = None, None, 0
        return part

    def finish(self) -> Iterator[MarketPart]:
        if self.part_rows_so_far:
            yield self._part()


class _CsvParts:
    """Parts as gzip CSV: the header, then the merged lines, compressed as they come."""

    def __init__(self, part_rows: int) -> None:
        self.part_rows = part_rows
        self.shares = _Shares()
        self.rows = 0
        self.buffer: io.BytesIO | None = None
        self.out: gzip.GzipFile | None = None

    @staticmethod
    def load(data: bytes) -> tuple[list[bytes], Sequence[int]]:
        lines = gzip.decompress(data).split(b"\n")[1:]  # the header off
        if lines and not lines[-1]:
            lines.pop()
        return lines, [int(line.split(b",", 2)[1]) for line in lines]

    def add(self, symbol: str, lines: list[bytes], ids: Sequence[int]) -> Iterator[MarketPart]:
        taken, count = 0, len(ids)
        while taken < count:
            n = min(self.part_rows - self.rows, count - taken)
            piece = lines[taken : taken + n]
            self.shares.add(symbol, ids[taken], ids[taken + n - 1], n)
            if self.out is None:
                self.buffer = io.BytesIO()
                self.out = gzip.GzipFile(fileobj=self.buffer, mode="wb", compresslevel=6, mtime=0)
                self.out.write((",".join(COLUMNS) + "\n").encode())
            self.out.write(b"\n".join(piece) + b"\n")
            taken += n
            self.rows += n
            if self.rows == self.part_rows:
                yield self._part()

    def _part(self) -> MarketPart:
        assert self.out is not None and self.buffer is not None
        self.out.close()
        part = MarketPart(self.buffer.getvalue(), self.rows, self.shares.take())
        self.out, self.buffer, self.rows = None, None, 0
        return part

    def finish(self) -> Iterator[MarketPart]:
        if self.rows:
            yield self._part()
