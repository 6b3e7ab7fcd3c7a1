"""The frame journal: every trade of an open batch, on disk, until that batch is spooled.

One append-only file per open batch, `{root}/{symbol}-{minute}-{first_trade_id}.frames`, one
line per trade: `<received_at_ns> <raw frame>`. The lines a chunk (one read of the socket)
adds to a batch are written with one unbuffered write(2), before anything else is done with
those trades, so they sit in the kernel's page cache as soon as they are accepted: a process
crash or `kill -9` cannot lose them. (A power loss can lose what the kernel had not yet written
back, a few seconds at most; the trade-id gap check and REST backfill cover that.)

When the batch has been encoded and written to the spool, its journal file is removed. On
start, the files that are left are exactly the batches that were open when the process died;
they are sealed again from their frames (same trades, same key, same bytes) and spooled.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from collector.exceptions import SpoolError

__all__ = ["Journal", "JournaledBatch"]

_SUFFIX = ".frames"


@dataclass(frozen=True, slots=True)
class JournaledBatch:
    batch_id: str
    path: Path

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """(received_at_ns, raw frame) per complete line; a torn last line is skipped."""
        with open(self.path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    return  # the write the crash interrupted: never acknowledged to anyone
                stamp, _, raw = line[:-1].partition(b" ")
                if stamp.isdigit() and raw:
                    yield int(stamp), raw


class Journal:
    """Append-only files of raw frames, one per open batch."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(
                f"cannot create journal directory {str(root)!r}: {exc.strerror}; set COLLECTOR_SPOOL_DIR"
            ) from exc
        self._fds: dict[str, int] = {}

    def append(self, batch_id: str, received_at_ns: int, frames: list[bytes]) -> None:
        """Journal frames that arrived together (one stamp) and went into one batch: one write."""
        fd = self._fds.get(batch_id)
        if fd is None:
            path = self.root / f"{batch_id}{_SUFFIX}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._fds[batch_id] = fd
        prefix = b"%d " % received_at_ns
        data = prefix + (b"\n" + prefix).join(frames) + b"\n"
        if data.count(b"\n") != len(frames):  # a frame with a raw newline: JSON whitespace, blank it
            data = b"".join(prefix + raw.replace(b"\n", b" ") + b"\n" for raw in frames)
        view = memoryview(data)
        while view:  # a large write to a regular file can be short (a signal, a full disk)
            written = os.write(fd, view)
            view = view[written:]

    def close(self, batch_id: str) -> None:
        fd = self._fds.pop(batch_id, None)
        if fd is not None:
            os.close(fd)

    def discard(self, batch_id: str) -> None:
        """The batch is safe in the spool: forget its frames."""
        self.close(batch_id)
        with contextlib.suppress(FileNotFoundError):
            (self.root / f"{batch_id}{_SUFFIX}").unlink()

    def close_all(self) -> None:
        for batch_id in list(self._fds):
            self.close(batch_id)

    def leftovers(self) -> list[JournaledBatch]:
        """Batches a previous run left open, oldest minute first."""
        found = [JournaledBatch(p.name[: -len(_SUFFIX)], p) for p in self.root.glob(f"*{_SUFFIX}")]
        return sorted(found, key=lambda b: _order(b.batch_id))


def _order(batch_id: str) -> tuple[int, str, int]:
    symbol, _, rest = batch_id.partition("-")
    minute, _, first = rest.partition("-")
    try:
        return int(minute), symbol, int(first)
    except ValueError:
        return 0, batch_id, 0
