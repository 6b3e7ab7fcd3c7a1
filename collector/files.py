"""Files that survive a crash: written whole or not at all, and records read back past a torn line.

Shared by everything that keeps state on disk (the spool, the journal's neighbours, the gap
ledger, the marker book, the local landing directory, the import's staging).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["TMP_SUFFIX", "fsync_directory", "read_jsonl", "write_atomically"]

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
