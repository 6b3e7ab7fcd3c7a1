"""One process per directory: an exclusive advisory lock, held for the process's whole life.

`collector run` holds its spool's (`{spool}/.lock`) from before it reads anything there until it
exits; `collector import` (`{spool}/import/`, `{spool}/import-table/` with --into table) and
`collector compact` (`{spool}/compact/`) hold their staging directory's, through
`staging_directory`, which any command with a scratch directory of its own uses. A second
process on the same directory is refused at once, with the holder's PID and the directory.

The lock is `flock(2)` on the file: the kernel releases it when the holder's last descriptor
closes, so a process that dies, by SIGKILL too, never leaves a stale lock, and the next one
starts at once. The holder writes its PID into the file after locking (for the refusal message,
and for an operator: `cat spool/.lock`). The file is never removed: a process that opened it
just before a removal would lock a file nobody else can see, and two would run.

A shell waits for a holder with util-linux's `flock -w SECONDS DIR/.lock true` (the CodeDeploy
hook that starts a new release does).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from collector.exceptions import DirectoryBusy, SpoolError

__all__ = ["LOCK_NAME", "DirectoryLock", "holder_of", "staging_directory"]

LOCK_NAME = ".lock"


class DirectoryLock:
    """`with DirectoryLock(path, what="spool directory"):` or `acquire()` ... `release()`."""

    def __init__(self, directory: Path, *, what: str, fix: str) -> None:
        """`what` names the directory in the refusal ("spool directory"); `fix` says what to do."""
        self.directory = directory
        self.path = directory / LOCK_NAME
        self.what, self.fix = what, fix
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        """Take the lock or raise `DirectoryBusy` at once (no waiting); SpoolError when the
        directory cannot be made or the lock file opened."""
        if self._fd is not None:
            return self
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise SpoolError(
                f"cannot open the lock file {str(self.path)!r} of {self.what} {str(self.directory)!r}: "
                f"{exc.strerror}; make the directory writable or choose another"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DirectoryBusy(
                self.directory, holder_of(self.directory), what=self.what, fix=self.fix
            ) from None
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # the PID is for people; the lock holds without it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go (the file stays, emptied of the PID). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the descriptor releases the lock

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def holder_of(directory: Path) -> int | None:
    """The PID the lock file of `directory` names (None: none, or not a number)."""
    try:
        text = (directory / LOCK_NAME).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def staging_directory(directory: Path, *, command: str, emptied: bool = True) -> Iterator[Path]:
    """A scratch directory one `command` at a time uses: locked (a second one is refused with
    the holder's PID) and, `emptied`, cleared of what a stopped run left and again at the end, so
    a stopped run frees its disk (the lock file stays; see the module's docstring). Not
    `emptied`: the command keeps what must outlive a stopped run there (intents) and tidies the
    rest itself."""
    fix = (
        f"one `{command}` at a time per spool: wait for that one to finish, or give this one its "
        "own COLLECTOR_SPOOL_DIR"
    )
    with DirectoryLock(directory, what=f"{command} staging directory", fix=fix):
        if emptied:
            _empty(directory)
        try:
            yield directory
        finally:
            if emptied:
                _empty(directory)


def _empty(directory: Path) -> None:
    for path in directory.iterdir():
        if path.name == LOCK_NAME:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
