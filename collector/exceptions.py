"""The collector's errors, rooted in one class.

    CollectorError                   root; `retryable` says whether trying again can help
    ├── ConfigError                  a setting is missing or wrong (fatal; names the setting)
    ├── ExchangeRefused              the exchange refuses us for good: 451/403, unknown symbol (fatal)
    ├── ConnectionLost               the stream dropped or could not connect (retryable)
    ├── SinkError                    landing an object failed
    │   ├── SinkUnavailable          timeouts, 5xx, throttling, connection resets (retryable)
    │   ├── SinkPermanentError       no such bucket, access denied, KMS key disabled (not retryable
    │   │                            by a quick retry; the data stays spooled and the message says
    │   │                            what to fix)
    │   └── LandingConflict          an object with the same key but other bytes already exists
    └── SpoolError                   the local spool cannot be written (disk full, permissions)
        ├── DirectoryBusy            another process holds the directory's lock (one process per spool)
        ├── NewerFormat              a file on disk was written by a newer release: upgrade
        └── SpoolWriteRefused        the spool's disk refused a write (full): tried again (retryable)

Malformed frames are not exceptions: the decoder returns them as values with a reason, so one
bad frame can never unwind the loop that carries the good ones.
"""

from __future__ import annotations

__all__ = [
    "CollectorError",
    "ConfigError",
    "ConnectionLost",
    "DirectoryBusy",
    "ExchangeRefused",
    "LandingConflict",
    "NewerFormat",
    "SinkError",
    "SinkPermanentError",
    "SinkUnavailable",
    "SpoolError",
    "SpoolWriteRefused",
    "is_retryable",
]


class CollectorError(Exception):
    """Root of every error the collector raises on purpose."""

    retryable: bool = False


class ConfigError(CollectorError):
    """One or more settings are invalid; each problem names its setting and the accepted values."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class ExchangeRefused(CollectorError):
    """The exchange refused the connection in a way retrying cannot fix."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ConnectionLost(CollectorError):
    """The WebSocket closed, failed to open, or went silent."""

    retryable = True


class SinkError(CollectorError):
    """Landing an object failed; `key` is the object that was being written."""

    def __init__(self, message: str, *, key: str) -> None:
        self.key = key
        super().__init__(message)


class SinkUnavailable(SinkError):
    """A transient failure: the same request may succeed later."""

    retryable = True


class SinkPermanentError(SinkError):
    """A failure only an operator can fix; the message says what to change."""


class LandingConflict(SinkError):
    """An object already exists at the key with different content. Never overwritten."""

    def __init__(self, message: str, *, key: str, existing_sha256: str, local_sha256: str) -> None:
        self.existing_sha256 = existing_sha256
        self.local_sha256 = local_sha256
        super().__init__(message, key=key)


class SpoolError(CollectorError):
    """The local spool could not be written or read."""


class DirectoryBusy(SpoolError):
    """Another process holds the directory's lock (`collector.lock`): names it and the directory."""

    def __init__(self, directory: object, pid: int | None, *, what: str, fix: str) -> None:
        self.directory, self.pid = directory, pid
        holder = f"process {pid}" if pid is not None else "another process (its PID is not recorded yet)"
        super().__init__(f"{what} {str(directory)!r} is in use by {holder}; {fix}")


class SpoolWriteRefused(SpoolError):
    """The spool's disk refused a write (full, over quota); the same write is tried again."""

    retryable = True


class NewerFormat(SpoolError):
    """A file on disk is in a format a newer release wrote (collector.formats): never misread it."""

    def __init__(self, where: object, kind: str, found: int, reads: int, *, written_by: str | None) -> None:
        self.where, self.kind, self.found, self.reads = where, kind, found, reads
        by = f" (collector {written_by})" if written_by and written_by[0].isdigit() else ""
        super().__init__(
            f"{where} was written by a newer release of the collector{by}: its {kind} format is "
            f"{found}, and this release reads up to {reads}. Upgrade the collector to that release "
            "or a later one and start it on this spool; the file was left as it is"
        )


def is_retryable(exc: BaseException) -> bool:
    """The retry policy in one place: our own errors say so; OS-level network errors are transient."""
    if isinstance(exc, CollectorError):
        return exc.retryable
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))
