"""The frame journal: every trade of an open batch, on disk, until that batch is spooled.

Append-only segment files, `{root}/{number:012d}.frames`, shared by all open batches. Each
read of the socket is one record group written with one unbuffered write(2), before anything
else is done with its trades, so they sit in the kernel's page cache as soon as they are
accepted: a process crash or `kill -9` cannot lose them. (A power loss can lose what the kernel
had not yet written back, a few seconds at most; the trade-id gap check and REST backfill cover
that.) One file for everything, rather than one per batch, means no file is created on the
event loop per batch (on ext4 a create can wait behind another thread's fsync) and a whole
market's thousands of open batches cost one file handle.

Records, one or more lines each, after a segment's first line `V <format>` (collector.formats;
a segment without one is version 1):

    B <batch_id> <received_at_ns> <n>\\n   then n lines, one raw frame each
    G <batch_id> <gap json>\\n             a gap the batch's trades revealed (see collector.gaps.filler)
    D <batch_id>\\n                        the batch is spooled: its records are no longer needed

A segment is deleted once it, and every older one, holds no record of a batch still open, so a
`D` is never lost before the records it retires.

A write the disk refuses (full) is taken back to the last whole record and kept in memory, in
order, with everything after it, until a write succeeds (`flush`, or the next append): `failure`
says why meanwhile, and the caller holds the stream back. The state file is never saved past a
record not yet written (daemon.recovery flushes first), so a crash meanwhile costs a gap that
REST fills, never a trade the state claims. On start, the records of batches without a
`D` are exactly the batches open when the process died; they are sealed again from their
frames (same trades, same key, same bytes) and spooled. A record the crash cut short was never
acknowledged to anyone and is skipped.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from collector.exceptions import SpoolError
from collector.files import append_whole
from collector.formats import VERSIONS, check

__all__ = ["Journal", "JournaledBatch"]

_SUFFIX = ".frames"
# Rotate to a new segment past this size: a segment goes once no open batch has records in
# it, so this bounds the disk a long-open batch can pin behind it to a few segments.
SEGMENT_BYTES = 64 * 2**20


@dataclass(slots=True)
class JournaledBatch:
    """A batch a previous run left open: its frames and the gaps it noted, in journal order."""

    batch_id: str
    records: list[tuple[int, bytes]] = field(default_factory=list)  # (received_at_ns, frame)
    gap_notes: list[bytes] = field(default_factory=list)

    def frames(self) -> Iterator[tuple[int, bytes]]:
        yield from self.records

    def gaps(self) -> Iterator[bytes]:
        yield from self.gap_notes


class Journal:
    """Append-only segments of raw frames, shared by every open batch.

    The event loop appends; the sealer's worker thread retires batches (`discard`). A lock
    guards the bookkeeping of which segment holds which open batch."""

    def __init__(self, root: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.root = root
        self.segment_bytes = segment_bytes
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(
                f"cannot create journal directory {str(root)!r}: {exc.strerror}; set COLLECTOR_SPOOL_DIR"
            ) from exc
        self._lock = threading.Lock()
        self._old = sorted(self._segments())  # a previous run's: read by leftovers(), then removed
        self._number = (self._old[-1][0] if self._old else 0) + 1
        self._fd: int | None = None
        self._size = 0
        # Open batches with records, per segment number, oldest first; and each batch's segments.
        self._live: dict[int, set[str]] = {self._number: set()}
        self._segments_of: dict[str, set[int]] = {}
        # Records a refused write left, in order: written before anything else (to the current
        # segment, which does not rotate meanwhile, so the bookkeeping above stays true).
        self._unwritten = bytearray()
        self.failure: OSError | None = None  # why the last write failed, until one succeeds

    @property
    def unwritten_bytes(self) -> int:
        return len(self._unwritten)

    def flush(self) -> bool:
        """Write what a refused write left; True when nothing is left unwritten (thread-safe)."""
        with self._lock:
            return self._flush_locked()

    # ---- writing ----------------------------------------------------------------------------

    def append(self, batch_id: str, received_at_ns: int, frames: list[bytes]) -> None:
        """Journal frames that arrived together (one stamp) and went into one batch: one write."""
        self.append_read(received_at_ns, [(batch_id, frames)])

    def append_read(self, received_at_ns: int, parts: list[tuple[str, list[bytes]]]) -> None:
        """Everything one read brought, for every batch it went into: one write."""
        if len(parts) == 1:  # the usual read
            batch_id, frames = parts[0]
            body = b"\n".join(frames)
            if body.count(b"\n") == len(frames) - 1:
                data = b"B %s %d %d\n%s\n" % (batch_id.encode(), received_at_ns, len(frames), body)
                with self._lock:
                    number = self._write_locked(data)
                    live = self._live[number]
                    if batch_id not in live:
                        live.add(batch_id)
                        self._segments_of.setdefault(batch_id, set()).add(number)
                return
        chunks = []
        for batch_id, frames in parts:
            body = b"\n".join(frames)
            if body.count(b"\n") != len(frames) - 1:  # a frame with a raw newline: JSON whitespace
                body = b"\n".join(raw.replace(b"\n", b" ") for raw in frames)
            chunks.append(b"B %s %d %d\n%s\n" % (batch_id.encode(), received_at_ns, len(frames), body))
        self._write(b"".join(chunks), [batch_id for batch_id, _ in parts])

    def note_gap(self, batch_id: str, gap_json: bytes) -> None:
        """A gap revealed by this batch's trades: one record, in the page cache at once."""
        self._write(b"G %s %s\n" % (batch_id.encode(), gap_json.replace(b"\n", b" ")), [batch_id])

    def discard(self, batch_id: str) -> None:
        """The batch is safe in the spool: retire its records (thread-safe)."""
        gone: list[Path] = []
        with self._lock:
            if self._segments_of.pop(batch_id, None) is None:
                return
            self._write_locked(b"D %s\n" % batch_id.encode())
            for live in self._live.values():
                live.discard(batch_id)
            gone = self._retire_locked()
        for path in gone:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _write(self, data: bytes, batch_ids: list[str]) -> None:
        with self._lock:
            number = self._write_locked(data)
            live = self._live[number]
            for batch_id in batch_ids:
                if batch_id not in live:  # the usual read: a batch already in this segment
                    live.add(batch_id)
                    self._segments_of.setdefault(batch_id, set()).add(number)

    def _write_locked(self, data: bytes) -> int:
        """Append a record group (or keep it, behind the others a full disk left); its segment."""
        if self._unwritten:
            self._unwritten += data
            self._flush_locked()
            return self._number
        try:
            if self._fd is None:
                self._rotate_locked()
            elif self._size >= self.segment_bytes:
                with contextlib.suppress(OSError):  # no new segment yet: on in the current one
                    self._rotate_locked()
            assert self._fd is not None
            append_whole(self._fd, data, self._size)
        except OSError as exc:
            self.failure = exc
            self._unwritten += data
        else:
            self._size += len(data)
        return self._number

    def _flush_locked(self) -> bool:
        if not self._unwritten:
            return True
        try:
            if self._fd is None:  # no segment could be made yet: the one the records were kept for
                self._rotate_locked()
            assert self._fd is not None
            append_whole(self._fd, bytes(self._unwritten), self._size)
        except OSError as exc:
            self.failure = exc
            return False
        self._size += len(self._unwritten)
        self._unwritten.clear()
        self.failure = None
        return True

    def _rotate_locked(self) -> None:
        """The next segment, begun with its format; on a failure nothing changes (the records go
        on into the current one, or wait for a segment to be made)."""
        number = self._number + 1 if self._fd is not None else self._number
        path = self._path(number)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        header = b"V %d\n" % VERSIONS["journal"]
        try:
            append_whole(fd, header, 0)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._number, self._size = fd, number, len(header)
        self._live.setdefault(number, set())

    def _retire_locked(self) -> list[Path]:
        """The oldest segments with nothing open in them, the current one excepted."""
        gone = []
        for number in sorted(self._live):
            if self._live[number] or number == self._number:
                break
            del self._live[number]
            gone.append(self._path(number))
        return gone

    def close_all(self) -> bool:
        """Close the current segment; remove every segment no open batch needs (a clean stop).
        False: records a full disk refused are still unwritten, and go with the process (the
        state file never claimed their trades: a gap, filled from REST at the next start)."""
        with self._lock:
            written = self._flush_locked()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            current = self._number
            self._number += 1  # the closed segment may go too
            gone = self._retire_locked()
            self._number = current
        for path in gone:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return written

    # ---- reading back -----------------------------------------------------------------------

    def leftovers(self) -> list[JournaledBatch]:
        """Batches a previous run left open (no `D` record), oldest minute first."""
        open_batches: dict[str, JournaledBatch] = {}
        for number, path in self._old:
            legacy = path.name[: -len(_SUFFIX)] if number == 0 else None  # one file per batch, by name
            for kind, named, payload in _records(path.read_bytes()):
                batch_id = legacy or named
                if kind == b"V":
                    check("journal", int(named) if named.isdigit() else named, path)
                    continue
                if kind == b"D":
                    open_batches.pop(batch_id, None)
                    continue
                batch = open_batches.setdefault(batch_id, JournaledBatch(batch_id))
                if kind == b"G":
                    batch.gap_notes.append(payload[0][1])
                else:
                    batch.records.extend(payload)
        return sorted(open_batches.values(), key=lambda b: _order(b.batch_id))

    def forget_leftovers(self) -> None:
        """The previous run's segments are resealed and spooled: remove them."""
        for _, path in self._old:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._old = []

    def _segments(self) -> Iterator[tuple[int, Path]]:
        for path in self.root.glob(f"*{_SUFFIX}"):
            stem = path.name[: -len(_SUFFIX)]
            if stem.isdigit():
                yield int(stem), path
            else:  # a journal file of the earlier per-batch layout: read it as a segment
                yield 0, path

    def _path(self, number: int) -> Path:
        return self.root / f"{number:012d}{_SUFFIX}"


def _records(data: bytes) -> Iterator[tuple[bytes, str, list[tuple[int, bytes]]]]:
    """(kind, batch id, payload) of each complete record; stops at a torn or unknown one."""
    lines = data.split(b"\n")
    complete = len(lines) - 1  # the piece after the last newline is never a whole line
    i = 0
    while i < complete:
        line = lines[i]
        kind, _, rest = line.partition(b" ")
        i += 1
        if kind == b"B":
            batch_id, stamp, count = [*rest.split(b" "), b"", b""][:3]
            if not (stamp.isdigit() and count.isdigit()) or i + int(count) > complete:
                return
            n = int(count)
            yield kind, batch_id.decode(), [(int(stamp), raw) for raw in lines[i : i + n]]
            i += n
        elif kind in (b"G", b"D"):
            batch_id, _, payload = rest.partition(b" ")
            yield kind, batch_id.decode(), [(0, payload)]
        elif kind == b"V":  # the segment's format
            yield kind, rest.decode(errors="replace"), []
        elif line:
            stamp, _, raw = line.partition(b" ")  # the earlier layout: "<stamp> <frame>" per line
            if stamp.isdigit() and raw:
                yield b"B", "", [(int(stamp), raw)]


def _order(batch_id: str) -> tuple[int, str, int]:
    symbol, _, rest = batch_id.partition("-")
    minute, _, first = rest.partition("-")
    try:
        return int(minute), symbol, int(first)
    except ValueError:
        return 0, batch_id, 0
