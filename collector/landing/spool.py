"""The durable local spool: every sealed, encoded batch is here before any upload.

A spooled object lives at `{root}/objects/{key}~{sha256 hex}`: the key it will land under and
the checksum of its bytes, in one name, made visible by one atomic rename. Writing is
temporary file, fsync, rename, fsync of the directory, so after `put` returns the object
survives a process crash and a power loss. It is removed only once the sink has confirmed it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from collector.exceptions import SpoolError
from collector.files import TMP_SUFFIX, write_atomically
from collector.lake.layout import ObjectName, parse_object_key

__all__ = ["Spool", "SpoolEntry", "Spooled"]

_SEP = "~"
_PRUNE_RACES = 10  # a put retried this often when the pruning removes its directory under it


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    key: str
    sha256_hex: str
    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class Spooled:
    """An object in the spool, waiting for its upload (or, a market source, for its minute's part)."""

    entry: SpoolEntry
    name: ObjectName | None  # None: a market part (its key is collector.lake.layout's market kind)
    rows: int | None = None
    first_received_us: int | None = None
    reason: str = "recovered"


class Spool:
    """Encoded batches waiting for their upload, on local disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"
        try:
            self.objects.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolError(
                f"cannot create spool directory {str(self.objects)!r}: {exc.strerror}; "
                "set COLLECTOR_SPOOL_DIR to a writable directory"
            ) from exc
        if not os.access(self.objects, os.W_OK):
            raise SpoolError(
                f"spool directory {str(self.objects)!r} is not writable; "
                "fix its permissions or set COLLECTOR_SPOOL_DIR"
            )
        # Puts, removes and the pruning of empty directories run in worker threads at once,
        # with no lock between them: a put whose directory was pruned under it makes it again.
        self._aside = threading.Lock()

    def put(self, key: str, data: bytes) -> SpoolEntry:
        digest = hashlib.sha256(data).hexdigest()
        path = self.objects / f"{key}{_SEP}{digest}"
        try:
            for attempt in range(_PRUNE_RACES):
                try:
                    write_atomically(path, data)
                    break
                except (FileNotFoundError, FileExistsError):
                    # `prune` removed its directory while it was being made or written into
                    # (mkdir said "exists" and the directory was gone a moment later): again.
                    if attempt == _PRUNE_RACES - 1:
                        raise
        except OSError as exc:
            hint = "free disk space" if exc.errno == errno.ENOSPC else "check the spool directory"
            raise SpoolError(
                f"cannot write {len(data):,} bytes for {key} to spool {str(self.root)!r}: "
                f"{exc.strerror}; {hint}"
            ) from exc
        return SpoolEntry(key, digest, path, len(data))

    def read(self, entry: SpoolEntry) -> bytes:
        """The entry's bytes, verified against the checksum in its name."""
        data = entry.path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != entry.sha256_hex:
            raise SpoolError(
                f"spooled object {str(entry.path)!r} is corrupt (sha256 {actual}, expected "
                f"{entry.sha256_hex}); it was moved aside to {self._quarantine(entry)!r}"
            )
        return data

    def remove(self, entry: SpoolEntry) -> None:
        """The sink has the object: the spooled copy goes (its empty directory stays until `prune`)."""
        entry.path.unlink(missing_ok=True)

    def prune(self) -> int:
        """Remove empty directories under objects/ (deepest first); how many went."""
        removed = 0
        for folder, _, files in os.walk(self.objects, topdown=False):
            if folder != str(self.objects) and not files:
                with contextlib.suppress(OSError):  # not empty (a subfolder, a new put), or gone
                    os.rmdir(folder)
                    removed += 1
        return removed

    def pending(self) -> list[SpoolEntry]:
        """Every spooled object, oldest minute first, then by trade id. Removes stale temp files."""
        entries: list[tuple[tuple[int, str, int], SpoolEntry]] = []
        for path in self.objects.rglob("*"):
            if not path.is_file():
                continue
            if path.name.endswith(TMP_SUFFIX):
                path.unlink(missing_ok=True)  # a write the crash interrupted: never acknowledged
                continue
            name, sep, digest = path.name.rpartition(_SEP)
            if not sep or len(digest) != 64:
                continue
            key = str(path.parent.relative_to(self.objects) / name)
            parsed = parse_object_key(key)
            order = (parsed.minute, parsed.symbol, parsed.first_trade_id) if parsed else (0, key, 0)
            entries.append((order, SpoolEntry(key, digest, path, path.stat().st_size)))
        entries.sort(key=lambda item: item[0])
        return [entry for _, entry in entries]

    def set_aside(self, entry: SpoolEntry, folder: str) -> str:
        """Move a spooled object out of the way (`conflicts/`, `corrupt/`), keeping its path."""
        target = self.root / folder / entry.path.relative_to(self.objects)
        with self._aside:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(entry.path, target)
        return str(target)

    def bytes_used(self) -> int:
        return sum(entry.size for entry in self.pending())

    def _quarantine(self, entry: SpoolEntry) -> str:
        return self.set_aside(entry, "corrupt")
