"""Binance's public trade archive (data.binance.vision): which files, fetched, checked, read.

    {base}/data/spot/daily/trades/{SYMBOL}/{SYMBOL}-trades-YYYY-MM-DD.zip      + .zip.CHECKSUM
    {base}/data/spot/monthly/trades/{SYMBOL}/{SYMBOL}-trades-YYYY-MM.zip       + .zip.CHECKSUM

One CSV per zip: trade id, price, qty, quoteQty, time, isBuyerMaker, isBestMatch, with no
header row in spot files (futures files gained one in 2022: either is read). `time` is in
milliseconds up to 2024-12-31 and in microseconds from 2025-01-01. A zip is checked against its
CHECKSUM before a row of it is read; the rows are then streamed in blocks (pyarrow's CSV
reader), prices and quantities parsed exactly (never through a float), and every row checked
to be of the file's symbol's days. A matching checksum proves the download, not the archive:
trade-id continuity (collector.history.importer) is what proves a file complete.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import queue
import threading
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from collector.binance.zipped import open_member
from collector.exceptions import CollectorError

__all__ = [
    "ArchiveBatch",
    "ArchiveFile",
    "ArchiveProblem",
    "StagingError",
    "decimal_to_scaled",
    "download",
    "plan_files",
    "read_trades",
    "write_staged",
]

MICROSECONDS_FROM = date(2025, 1, 1)
_EPOCH = date(1970, 1, 1)
_CHUNK = 1 << 20
_COLUMNS = ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"]
# CSV parsed per block: about 4 MB, 55,000 trades or so; two blocks at once (pyarrow's parser
# lets go of the GIL), the next inflated meanwhile: a 3.3 million-trade day in 0.49 s against
# 0.70 s one block at a time (bench/table.py's BTCUSDT day, this 2-core machine).
_BLOCK_BYTES = 4 << 20
_PARSERS = 2
_T = TypeVar("_T")
# Prices and quantities: exact decimals of at most 10 integer digits and 8 decimals, as the
# landing schema's DECIMAL(18,8); a value with more is refused, not rounded.
_DECIMAL_PRECISION, _DECIMAL_SCALE = 18, 8
_MAX_SCALED = 10**18 - 1  # the largest DECIMAL(18,8) value, scaled


class StagingError(CollectorError):
    """The import's staging directory cannot be written (a full disk, permissions): the
    import stops, since every file would meet it."""

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(
            f"cannot write {path}: {exc.strerror or exc}; free space there or set "
            "COLLECTOR_SPOOL_DIR (an import stages each file under it before publishing)"
        )


def write_staged(out: Any, data: bytes, path: Path) -> None:
    try:
        out.write(data)
    except OSError as exc:
        raise StagingError(path, exc) from exc


class ArchiveProblem(CollectorError):
    """A file that cannot be imported, and why; nothing of it lands. `not_published` files may
    appear later (a day is published hours, sometimes days, after it ends)."""

    def __init__(self, file: ArchiveFile, reason: str, message: str) -> None:
        self.file = file
        self.reason = reason  # not_published, checksum_mismatch, not_a_zip, wrong_content, unreachable
        super().__init__(f"{file.name}: {message}")


@dataclass(frozen=True)
class ArchiveFile:
    """One zip of the archive: a symbol's day or month."""

    symbol: str
    period: str  # "daily" or "monthly"
    first_day: date
    last_day: date

    @property
    def when(self) -> str:
        return self.first_day.isoformat() if self.period == "daily" else self.first_day.isoformat()[:7]

    @property
    def name(self) -> str:
        return f"{self.symbol}-trades-{self.when}.zip"

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/data/spot/{self.period}/trades/{self.symbol}/{self.name}"

    @property
    def days(self) -> list[date]:
        return [self.first_day + timedelta(days=i) for i in range((self.last_day - self.first_day).days + 1)]

    @property
    def unit(self) -> str:
        """The unit of its times: µs from 2025-01-01 (a month's file is all one side of it)."""
        return "us" if self.first_day >= MICROSECONDS_FROM else "ms"

    def bounds(self) -> tuple[int, int]:
        """[start, end) of its days, in its unit since the epoch."""
        per_day = 86_400_000_000 if self.unit == "us" else 86_400_000
        start = (self.first_day - _EPOCH).days * per_day
        return start, start + len(self.days) * per_day


def plan_files(symbols: list[str], first: date, last: date, today: date | None = None) -> list[ArchiveFile]:
    """Monthly files for whole months already over, daily files for the rest; oldest first."""
    today = today or datetime.now(tz=UTC).date()
    files: list[ArchiveFile] = []
    for symbol in symbols:
        day = first
        while day <= last:
            month_end = (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
            if day.day == 1 and month_end <= last and month_end < today.replace(day=1):
                files.append(ArchiveFile(symbol, "monthly", day, month_end))
                day = month_end + timedelta(days=1)
            else:
                files.append(ArchiveFile(symbol, "daily", day, day))
                day += timedelta(days=1)
    return sorted(files, key=lambda f: (f.first_day, f.symbol))


def _get(url: str, timeout_s: float) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "trade-lake-collector"})  # noqa: S310 (http(s) from settings)
    return urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310


def download(file: ArchiveFile, base: str, target: Path, *, timeout_s: float = 60.0) -> int:
    """Fetch a zip to `target` and check it against its CHECKSUM; its size. Raises ArchiveProblem."""
    url = file.url(base)
    try:
        with _get(url + ".CHECKSUM", timeout_s) as response:
            expected = response.read().decode("ascii", "replace").split()[0].lower()
        digest = hashlib.sha256()
        size = 0
        partial = target.with_name(target.name + ".part")
        with _get(url, timeout_s) as response:
            try:
                out = open(partial, "wb")  # noqa: SIM115 (closed by the `with` just below)
            except OSError as exc:
                raise StagingError(partial, exc) from exc
            with out:
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    write_staged(out, chunk, partial)
                    size += len(chunk)
    except StagingError:
        partial.unlink(missing_ok=True)
        raise
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            message = (
                f"not published at {url} yet (HTTP 404); a day appears hours, sometimes days, "
                "after it ends: import it later"
            )
            raise ArchiveProblem(file, "not_published", message) from exc
        raise ArchiveProblem(file, "unreachable", f"{url} answered HTTP {exc.code}; try again later") from exc
    except (OSError, IndexError) as exc:
        target.with_name(target.name + ".part").unlink(missing_ok=True)
        message = f"cannot fetch {url}: {exc}; check COLLECTOR_ARCHIVE_URL and the network"
        raise ArchiveProblem(file, "unreachable", message) from exc
    if digest.hexdigest() != expected:
        partial.unlink(missing_ok=True)
        message = (
            f"sha256 {digest.hexdigest()} does not match its CHECKSUM {expected}; nothing of it "
            "was imported: download it again later"
        )
        raise ArchiveProblem(file, "checksum_mismatch", message)
    partial.replace(target)
    return size


@dataclass(frozen=True)
class ArchiveBatch:
    """A block of a file's rows as Arrow arrays: ids, prices and quantities scaled by 10**8,
    times in the file's unit, the maker flag."""

    ids: Any
    prices: Any
    quantities: Any
    times: Any
    makers: Any


def read_trades(file: ArchiveFile, path: Path) -> Iterator[ArchiveBatch]:
    """The zip's rows in blocks. Raises ArchiveProblem for a file that is not what its name says."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pyarrow import csv

    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ArchiveProblem(file, "not_a_zip", f"not a zip ({exc}); download it again") from exc
    with archive:
        members = archive.namelist()
        expected = file.name.removesuffix(".zip") + ".csv"
        if members != [expected]:
            raise ArchiveProblem(file, "wrong_content", f"holds {members}, not the one file {expected}")
        decimal = pa.decimal128(_DECIMAL_PRECISION, _DECIMAL_SCALE)
        read_options = csv.ReadOptions(column_names=_COLUMNS, use_threads=False, block_size=_BLOCK_BYTES)
        convert_options = csv.ConvertOptions(
            column_types={
                "id": pa.int64(),
                "price": decimal,
                "qty": decimal,
                "time": pa.int64(),
                "is_buyer_maker": pa.bool_(),
            },
            include_columns=["id", "price", "qty", "time", "is_buyer_maker"],
            true_values=["True", "true"],
            false_values=["False", "false"],
        )
        try:
            with archive.open(expected) as handle:
                header = _is_header(handle.readline())
            last_time = file.bounds()[0]
            with open_member(archive, path, expected) as handle, ThreadPoolExecutor(_PARSERS) as pool:

                def parse(chunk: bytes) -> tuple[Any, Any, Any]:
                    block = csv.read_csv(pa.py_buffer(chunk), read_options, convert_options=convert_options)
                    return (
                        block,
                        _scaled(file, block.column("price"), "price"),
                        _scaled(file, block.column("qty"), "qty"),
                    )

                for block, prices, quantities in _in_order(pool, parse, _lines(handle, skip_first=header)):
                    if not len(block):
                        continue  # blank lines only
                    _check_block(file, block, last_time)
                    times = block.column("time")
                    last_time = pc.max(times).as_py()
                    yield ArchiveBatch(
                        block.column("id"), prices, quantities, times, block.column("is_buyer_maker")
                    )
        except (pa.ArrowInvalid, zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise ArchiveProblem(file, "wrong_content", f"unreadable: {exc}") from exc


# A header row's first field (futures files have one, spot files none): anything else on the
# first line is a row, parsed and refused if it is not a trade, never skipped unread.
_HEADER_FIELDS = frozenset({"id", "trade_id", "tradeid", "trade id", "agg_trade_id"})


def _is_header(line: bytes) -> bool:
    field = line.removeprefix(b"\xef\xbb\xbf").split(b",", 1)[0].strip().lower()
    return field.decode("ascii", "replace") in _HEADER_FIELDS


def _check_block(file: ArchiveFile, block: Any, after: int) -> None:
    """Every row of a block: no empty id, time or maker; times within the file's days and in
    order (each not before the one before it, and not before `after`, the previous block's)."""
    import pyarrow.compute as pc

    for column in ("id", "time", "is_buyer_maker"):
        if block.column(column).null_count:
            raise ArchiveProblem(file, "wrong_content", f"column {column} has empty values")
    start, end = file.bounds()
    times = block.column("time")
    low, high = pc.min(times).as_py(), pc.max(times).as_py()
    if low < start or high >= end:
        message = f"holds trade times outside {file.when} (in {file.unit}: {low}..{high})"
        raise ArchiveProblem(file, "wrong_content", message)
    ordered = times.combine_chunks()
    steps = pc.subtract(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
    if ordered[0].as_py() < after or (len(steps) and pc.min(steps).as_py() < 0):
        raise ArchiveProblem(file, "wrong_content", "holds trade times out of order")


def _in_order(pool: ThreadPoolExecutor, work: Callable[[bytes], _T], items: Iterator[bytes]) -> Iterator[_T]:
    """`work` of each item, done `_PARSERS` at a time in `pool`, handed out in the items' order."""
    started: collections.deque[Future[_T]] = collections.deque()
    try:
        for item in items:
            started.append(pool.submit(work, item))
            if len(started) >= _PARSERS:
                yield started.popleft().result()
        while started:
            yield started.popleft().result()
    finally:
        for future in started:
            future.cancel()


def _lines(handle: Any, *, skip_first: bool) -> Iterator[bytes]:
    """The decompressed CSV in blocks of whole lines, about _BLOCK_BYTES each, inflated in a
    thread of its own (ISA-L and zlib let go of the GIL) while the blocks before are parsed.
    Parsed a few blocks at a time (rather than by pyarrow's streaming reader, whose memory grew
    with the file: 300 MB resident for a day of 3.3 million trades), memory stays that of a few
    blocks."""
    blocks: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def inflate() -> None:
        try:
            rest = b""
            if skip_first:
                handle.readline()
            elif handle.peek(3)[:3] == b"\xef\xbb\xbf":
                handle.read(3)  # a byte-order mark before the first row
            while not stop.is_set():
                data = handle.read(_BLOCK_BYTES)
                if not data:
                    if rest.strip():
                        blocks.put(rest if rest.endswith(b"\n") else rest + b"\n")
                    break
                data = rest + data
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                if cut:
                    blocks.put(data[:cut])
            blocks.put(None)
        except BaseException as exc:  # handed to the reader, which raises it
            blocks.put(exc)

    worker = threading.Thread(target=inflate, name="inflate", daemon=True)
    worker.start()
    try:
        while (block := blocks.get()) is not None:
            if isinstance(block, BaseException):
                raise block
            yield block
    finally:
        stop.set()
        while worker.is_alive():  # let it see `stop` if it waits to put a block
            with contextlib.suppress(queue.Empty):
                blocks.get(timeout=0.1)
        worker.join()


def _scaled(file: ArchiveFile, values: Any, column: str) -> Any:
    """A DECIMAL(18,8) column (parsed exactly by the CSV reader, never through a float) as
    int64 scaled by 10**8."""
    try:
        return decimal_to_scaled(values)
    except ValueError as exc:
        raise ArchiveProblem(file, "wrong_content", f"column {column} {exc}") from exc


def decimal_to_scaled(values: Any) -> Any:
    """A DECIMAL(p, 8) Arrow column as int64 scaled by 10**8, exactly: the low half of each
    128-bit value, checked to fit DECIMAL(18,8). ValueError for nulls, negatives, or more."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = values.combine_chunks() if hasattr(values, "combine_chunks") else values
    if pa.types.is_decimal64(values.type):  # already 64-bit: a cast keeps the scaled integers
        values = values.cast(pa.decimal128(values.type.precision, values.type.scale))
    if values.null_count:
        raise ValueError("has empty values")
    words = memoryview(values.buffers()[1]).cast("q")[values.offset * 2 : (values.offset + len(values)) * 2]
    high = words[1::2].tobytes()
    if high.count(0) != len(high):  # the high halves: 0 for every value in 0 <= v < 2**64
        raise ValueError("has negative values" if high.count(b"\xff") else "exceeds DECIMAL(18,8)")
    scaled = pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(words[::2].tobytes())])
    if len(scaled):
        low, top = pc.min(scaled).as_py(), pc.max(scaled).as_py()
        if low < 0 or top > _MAX_SCALED:  # a low half of 2**63 or more, or more than 18 digits
            raise ValueError("exceeds DECIMAL(18,8)")
    return scaled
