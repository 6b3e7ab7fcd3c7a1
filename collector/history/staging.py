"""What an import lands, minute by minute: the trades of the archive the lake lacks, staged as
objects on local disk, and each minute's manifest.

Nothing is published while a file is read: its objects wait in a staging directory until the
whole file has been read and checked, so a file that turns out not to be what its name says
lands nothing. A trade id the lake holds already is never staged a second time.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
from array import array
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.binance.archive import ArchiveBatch, ArchiveFile, StagingError
from collector.capture.batching import SealedBatch, TimeUnit, _Columns
from collector.lake.completion import (
    LandedFile,
    UnfilledGap,
    build_manifest,
    manifest_files,
    manifest_gaps,
)
from collector.lake.holdings import IdRanges, LakeDays, LakeMinute
from collector.lake.layout import Kind, object_key, parse_object_key
from collector.lake.parquet import encode_batch

__all__ = ["MinuteStager", "Staged", "follow_ids", "minute_manifest"]

_IN_FLIGHT = 16  # minutes handed to the encoders and not yet written


@dataclass(frozen=True)
class Staged:
    """An object written to the staging directory, waiting for its file to be checked."""

    key: str
    path: Path
    minute: int
    entry: LandedFile


def follow_ids(
    file: ArchiveFile,
    ids: Any,
    times: Any,
    ends: tuple[tuple[int, int] | None, tuple[int, int] | None],
    holes: list[tuple[int, int, int, int]],
) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """A block of a file's ids (Arrow int64, with their times) after the blocks before it, whose
    first and last (id, time) are `ends`: the new ends, and every jump appended to `holes` as
    (first missing, last missing, time before, time after). Raises ArchiveProblem for ids out of
    order or twice: a file that is not what its name says."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from collector.binance.archive import ArchiveProblem

    first, last = ends
    if not len(ids):
        return first, last
    steps = (
        pc.subtract(ids.slice(1), ids.slice(0, len(ids) - 1)) if len(ids) > 1 else pa.array([], pa.int64())
    )
    if len(steps) and pc.min(steps).as_py() < 1:
        raise ArchiveProblem(file, "wrong_content", "holds trade ids out of order or twice")
    first_id, first_time = ids[0].as_py(), times[0].as_py()
    if last is not None:
        if first_id <= last[0]:
            raise ArchiveProblem(file, "wrong_content", "holds trade ids out of order or twice")
        if first_id > last[0] + 1:
            holes.append((last[0] + 1, first_id - 1, last[1], first_time))
    else:
        first = (first_id, first_time)
    for index in pc.indices_nonzero(pc.greater(steps, 1)).to_pylist():
        holes.append((ids[index].as_py() + 1, ids[index + 1].as_py() - 1, times[index].as_py(),
                      times[index + 1].as_py()))  # fmt: skip
    return first, (ids[-1].as_py(), times[-1].as_py())


def _q(values: Any) -> array[int]:
    """An Arrow int64 array (or a slice of one) as array('q'), by one copy of its buffer."""
    values = values.combine_chunks() if hasattr(values, "combine_chunks") else values
    out = array("q")
    out.frombytes(values.buffers()[1].to_pybytes()[values.offset * 8 : (values.offset + len(values)) * 8])
    return out


class MinuteStager:
    """Reads a file's batches, splits them by minute, and stages what the lake lacks."""

    def __init__(
        self,
        file: ArchiveFile,
        lake: LakeDays,
        staging: Path,
        *,
        output_format: str,
        encoder: Executor | None = None,
    ) -> None:
        self.file = file
        self.lake = lake
        self.staging = staging
        self.output_format = output_format
        self.unit: TimeUnit = "us" if file.unit == "us" else "ms"
        self.per_minute = 60_000_000 if self.unit == "us" else 60_000
        self.staged: list[Staged] = []
        self.holes: list[tuple[int, int, int, int]] = []  # (first, last missing, time before, time after)
        self.first: tuple[int, int] | None = None  # (id, time) of the file's first trade
        self.last: tuple[int, int] | None = None
        self.rows = 0
        self.new_rows = 0
        self.in_file = IdRanges()  # the ids the file holds
        self._pending: list[Any] = []  # record batches of the minute not yet complete
        self._pending_minute: int | None = None
        # Minutes are encoded in worker threads (Parquet and zstd let go of the GIL) while the
        # file is read; at most _IN_FLIGHT wait, so memory does not grow with a day's size.
        self._encoder = encoder
        self._encoding: deque[Future[Staged]] = deque()
        staging.mkdir(parents=True, exist_ok=True)

    def feed(self, batch: ArchiveBatch) -> None:
        import pyarrow as pa

        table = pa.table(
            {
                "id": batch.ids,
                "price": batch.prices,
                "qty": batch.quantities,
                "time": batch.times,
                "maker": batch.makers,
            }
        )
        if not len(table):
            return
        self.first, self.last = follow_ids(
            self.file, table.column("id"), table.column("time"), (self.first, self.last), self.holes
        )
        self.rows += len(table)
        self._split(table)

    def _split(self, table: Any) -> None:
        times = _q(table.column("time"))
        start = 0
        while start < len(times):
            minute = times[start] // self.per_minute
            stop = bisect.bisect_left(times, (minute + 1) * self.per_minute, lo=start)
            if minute != self._pending_minute:
                self.flush()
                self._pending_minute = minute
            self._pending.append(table.slice(start, stop - start))
            start = stop

    def flush(self) -> None:
        """Stage the minute being gathered (at a minute's end, and at the file's)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self._pending_minute is None or not self._pending:
            return
        minute, table = self._pending_minute, pa.concat_tables(self._pending).combine_chunks()
        self._pending, self._pending_minute = [], None
        ids = _q(table.column("id"))
        self.in_file.add(ids[0], ids[-1]) if ids[-1] - ids[0] == len(ids) - 1 else self.in_file.add_sorted(
            ids
        )
        held = self.lake.minute(minute).ids
        if held:
            keep = pa.array(
                [
                    bisect.bisect_left(held, i) == len(held) or held[bisect.bisect_left(held, i)] != i
                    for i in ids
                ]
            )
            table = table.filter(keep)
            ids = _q(table.column("id"))
        if not len(table):
            return
        columns = _Columns(
            trade_id=ids,
            price=_q(table.column("price")),
            quantity=_q(table.column("qty")),
            trade_time=_q(table.column("time")),
        )
        flags = pc.cast(table.column("maker"), pa.int8()).combine_chunks()
        makers = array("b")
        makers.frombytes(flags.buffers()[1].to_pybytes()[flags.offset : flags.offset + len(flags)])
        columns.is_buyer_maker = makers
        batch = SealedBatch(
            symbol=self.file.symbol,
            minute=minute,
            time_unit=self.unit,
            columns=columns,
            raw_bytes=0,
            reason="archive",
            source="archive",
            id_range=(ids[0], ids[-1]),
        )
        self.new_rows += batch.rows
        if self._encoder is None:
            self.stage(batch, "archive")
            return
        while len(self._encoding) >= _IN_FLIGHT:
            self.staged.append(self._encoding.popleft().result())
        self._encoding.append(self._encoder.submit(self._encode, batch, "archive"))

    def finish(self) -> None:
        """Wait for the minutes still being encoded (after the file's last flush)."""
        while self._encoding:
            self.staged.append(self._encoding.popleft().result())

    def stage(self, batch: SealedBatch, kind: Kind) -> Staged:
        staged = self._encode(batch, kind)
        self.staged.append(staged)
        return staged

    def _encode(self, batch: SealedBatch, kind: Kind) -> Staged:
        key = object_key(
            symbol=batch.symbol,
            minute=batch.minute,
            first_trade_id=batch.first_trade_id,
            last_trade_id=batch.last_trade_id,
            kind=kind,
            output_format=self.output_format,
        )
        data = encode_batch(batch, self.output_format)
        path = self.staging / key.replace("/", "_")
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise StagingError(path, exc) from exc
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        name = parse_object_key(key)
        assert name is not None
        entry = LandedFile(
            name=name.file_name,
            bytes=len(data),
            sha256=digest,
            rows=batch.rows,
            first_trade_id=batch.first_trade_id,
            last_trade_id=batch.last_trade_id,
        )
        return Staged(key, path, batch.minute, entry)


def minute_manifest(
    symbol: str,
    minute: int,
    *,
    held: LakeMinute,
    new: list[LandedFile],
    gaps: list[UnfilledGap],
    present: IdRanges,
    now_s: float,
) -> tuple[dict[str, Any] | None, str]:
    """The minute's manifest after an import, and what it is: "written" (a first marker),
    "rewritten" (revision + 1), or "unchanged" (None: nothing to write)."""
    files = dict(held.files)
    if held.marker is not None:
        files.update({f.name: f for f in manifest_files(held.marker)})
    files.update({f.name: f for f in new})
    kept: list[UnfilledGap] = []
    for gap in (manifest_gaps(held.marker) if held.marker else []) + gaps:
        kept += [
            UnfilledGap(lo, hi, gap.reason, gap.detail)
            for lo, hi in present.missing(gap.first_missing, gap.last_missing)
        ]
    if held.marker is None:
        return build_manifest(symbol, minute, files.values(), kept, written_at_s=now_s), "written"
    if set(files) == {f.name for f in manifest_files(held.marker)} and sorted(set(kept)) == manifest_gaps(
        held.marker
    ):
        return None, "unchanged"
    doc = build_manifest(
        symbol, minute, files.values(), kept, revision=held.marker["revision"] + 1, written_at_s=now_s
    )
    return doc, "rewritten"
