"""Files that survive a crash and a full disk: written whole or not at all, and records read
back past a torn line.

Shared by everything that keeps state on disk (the spool, the journal and its neighbours, the
gap ledger, the marker book, the local landing directory, the import's staging). An append that
fails (ENOSPC, EDQUOT, EIO) is taken back to the last whole record, so the next one never
follows a torn line: a write either lands whole or raises with the file as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["TMP_SUFFIX", "append_line", "append_whole", "fsync_directory", "read_jsonl", "write_atomically"]

TMP_SUFFIX = ".tmp"  # a file being written; never taken for a finished one


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of an append-only record, one per line. A line that is not a JSON object
    (a crash mid-append tears at most the last one) is skipped, so one bad line never stops a start."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """Write `data` to `path` durably. With replace=False an existing file is kept: returns False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if present: never overwrites
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
        fsync_directory(path.parent)
        return True
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def append_whole(fd: int, data: bytes, size: int | None = None) -> None:
    """Append `data` to the file open (O_APPEND) at `fd`, all of it or none: a write cut short (a
    full disk) is truncated away again (shrinking a file needs no space) and the error raised.
    `size`: the file's size now, when the caller keeps count (saves a stat on a hot path)."""
    size = os.fstat(fd).st_size if size is None else size
    view = memoryview(data)
    try:
        while view:  # a large write to a regular file can be short (a signal, a full disk)
            view = view[os.write(fd, view) :]
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


def append_line(path: Path, line: bytes) -> None:
    """One record appended to `path` durably (fsync), whole or not at all (see `append_whole`)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        append_whole(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
