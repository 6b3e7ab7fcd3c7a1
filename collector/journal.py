"""The frame journal: every trade of an open batch, on disk, until that batch is spooled.

One append-only file per open batch, `{root}/{symbol}-{minute}-{first_trade_id}.frames`, one
line per trade: `<received_at_ns> <raw frame>`. Each line is written with one unbuffered
write(2), so it sits in the kernel's page cache the moment the trade is accepted: a process
crash or `kill -9` cannot lose it. (A power loss can lose what the kernel had not yet written
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

    def append(self, batch_id: str, received_at_ns: int, raw: str | bytes) -> None:
        fd = self._fds.get(batch_id)
        if fd is None:
            path = self.root / f"{batch_id}{_SUFFIX}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._fds[batch_id] = fd
        data = raw.encode() if isinstance(raw, str) else raw
        os.write(fd, b"%d %s\n" % (received_at_ns, data.replace(b"\n", b" ")))

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
