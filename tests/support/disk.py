"""A disk that fills up, for unit tests of what a write the kernel refuses does (the real small
filesystem is in tests/e2e/test_full_disk.py): `os` as one module sees it, whose write(2) takes
`room` more bytes (the last write short) and then says ENOSPC, until `room` is raised again."""

from __future__ import annotations

import errno
import os
from typing import Any


class FillingDisk:
    def __init__(self, room: int) -> None:
        self.room = room
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        if self.room <= 0:
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        taken = min(len(data), self.room)
        self.room -= taken
        return os.write(fd, bytes(data[:taken]))
