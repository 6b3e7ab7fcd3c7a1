"""How far an import has got, for a person: a progress line on a terminal, log lines otherwise.

On a terminal the bar is the last line of the screen and the log lines scroll above it: each
log line first clears the bar and then draws it again below itself (TerminalLines).
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import Any, TextIO

from collector.logs import log_stream, send_logs_to

__all__ = ["ImportProgress", "TerminalLines"]

_CLEAR = "\r\x1b[K"  # to the line's start, and erase it


class TerminalLines:
    """A terminal stream with a status line kept below what is written: whole lines written go
    above it (the status is cleared first and drawn again after them); `show` replaces it.
    Thread-safe: the import's workers log while the bar is drawn."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.status = ""
        self._lock = threading.RLock()
        self._in_line = False  # a line written in parts is not finished yet: keep the status away

    def write(self, text: str) -> int:
        if not text:
            return 0
        with self._lock:
            if self.status and not self._in_line:
                self.stream.write(_CLEAR)
            self.stream.write(text)
            self._in_line = not text.endswith("\n")
            if self.status and not self._in_line:
                self.stream.write(self.status)
        return len(text)

    def show(self, status: str) -> None:
        """Draw `status` in place of the previous one (cut to the terminal's width: a line that
        wraps could not be erased whole)."""
        width = shutil.get_terminal_size((80, 24)).columns
        with self._lock:
            self.status = status[: max(1, width - 1)]
            if not self._in_line:
                self.stream.write(_CLEAR + self.status)
            self.stream.flush()

    def end(self) -> None:
        """Leave the last status on screen, on a line of its own, and stop keeping it."""
        with self._lock:
            if self.status:
                self.stream.write("\n")
                self.status = ""
            self.stream.flush()

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


class ImportProgress:
    """Files and trades done, the rate, and the time left by the files still to come."""

    def __init__(self, log: Any, stream: TextIO | None = None) -> None:
        self.log = log
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.lines = TerminalLines(self.stream) if self.tty else None
        self.files = self.done = 0
        self.trades = self.bytes = 0
        self.started = time.monotonic()
        self._shown = 0.0

    def begin(self, files: int, *, days: int, symbols: int) -> None:
        """`days`: UTC days, as the summary counts them (of each of the `symbols`)."""
        self.files = files
        self.started = time.monotonic()
        if self.lines is not None and log_stream() is self.stream:
            send_logs_to(self.lines)  # log lines above the bar, never through it
        self.log.info("collector.import_started", files=files, days=days, symbols=symbols)

    def rows(self, count: int) -> None:
        self.trades += count
        now = time.monotonic()
        if self.tty and now - self._shown >= 0.5:
            self._shown = now
            self._draw()

    def file_done(self, file: Any, summary: Any) -> None:
        self.done += 1
        self.bytes = summary.bytes_downloaded
        if self.lines is not None:
            self._draw()
            if self.done == self.files:
                self.lines.end()
        else:
            self.log.info(
                "collector.import_progress",
                file=file.name,
                files_done=self.done,
                files=self.files,
                trades=self.trades,
                mb_downloaded=round(self.bytes / 1e6, 1),
                trades_per_s=round(self._rate()),
            )

    def _rate(self) -> float:
        return self.trades / max(1e-9, time.monotonic() - self.started)

    def _draw(self) -> None:
        assert self.lines is not None
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.files - self.done) if self.done else None
        eta = "--:--" if left is None else f"{int(left // 60):02d}:{int(left % 60):02d}"
        figures = (
            f"files {self.done}/{self.files}  trades {self.trades:,}  {self.bytes / 1e6:,.1f} MB  "
            f"{self._rate():,.0f}/s  left {eta}"
        )
        width = min(24, shutil.get_terminal_size((80, 24)).columns - len(figures) - 4)
        if width < 5:  # a narrow terminal: the figures alone
            self.lines.show(figures)
            return
        filled = int(width * self.done / max(1, self.files))
        self.lines.show(f"[{'#' * filled}{'.' * (width - filled)}] {figures}")
