"""How far an import has got, for a person: a progress line on a terminal, log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

__all__ = ["ImportProgress"]


class ImportProgress:
    """Files and trades done, the rate, and the time left by the files still to come."""

    def __init__(self, log: Any, stream: TextIO | None = None) -> None:
        self.log = log
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.files = self.done = 0
        self.trades = self.bytes = 0
        self.started = time.monotonic()
        self._shown = 0.0

    def begin(self, files: int, *, days: int, symbols: int) -> None:
        """`days`: UTC days, as the summary counts them (of each of the `symbols`)."""
        self.files = files
        self.started = time.monotonic()
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
        if self.tty:
            self._draw()
            if self.done == self.files:
                self.stream.write("\n")
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
        width = 24
        filled = int(width * self.done / max(1, self.files))
        elapsed = time.monotonic() - self.started
        left = elapsed / self.done * (self.files - self.done) if self.done else None
        eta = "--:--" if left is None else f"{int(left // 60):02d}:{int(left % 60):02d}"
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(
            f"\r[{bar}] files {self.done}/{self.files}  trades {self.trades:,}  {self.bytes / 1e6:,.1f} MB  "
            f"{self._rate():,.0f}/s  left {eta} "
        )
        self.stream.flush()
