"""What an import did, file by file and in total: the values the importer fills and the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FileReport", "ImportSummary"]


@dataclass
class FileReport:
    name: str
    trades: int = 0  # in the archive file
    landed: int = 0  # of them, written (the rest the lake held)
    filled: int = 0  # trades the archive lacked, fetched from REST
    objects: int = 0
    markers_written: int = 0
    markers_rewritten: int = 0
    unfilled: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # read, fill, publish, mark
    unchecked: bool = False  # the REST API could not say what lies before its first row and after its last


@dataclass
class ImportSummary:
    files: list[FileReport] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # name, reason, message
    days: int = 0
    bytes_downloaded: int = 0
    seconds: float = 0.0

    def totals(self) -> dict[str, Any]:
        def total(name: str) -> int:
            return sum(getattr(f, name) for f in self.files)

        trades = total("trades")
        return {
            "days": self.days,
            "files": len(self.files),
            "skipped": self.skipped,
            "archive_trades": trades,
            "landed_trades": total("landed"),
            "already_in_lake": trades - total("landed"),
            "filled_from_rest": total("filled"),
            "objects": total("objects"),
            "minutes_marked": total("markers_written"),
            "markers_rewritten": total("markers_rewritten"),
            "gaps_unfilled": [g for f in self.files for g in f.unfilled],
            "warnings": [w for f in self.files for w in f.warnings],
            "unchecked": [f.name for f in self.files if f.unchecked],
            "bytes_downloaded": self.bytes_downloaded,
            "seconds": round(self.seconds, 3),
            "trades_per_s": round(trades / self.seconds) if self.seconds else None,
        }
