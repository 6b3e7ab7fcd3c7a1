"""The gap ledger: every open trade-id gap and every range recorded unfilled, durably on disk.

    spool/gaps/open.json        gaps still to fill, in their turn order (rewritten whole, atomically)
    spool/gaps/unfilled.jsonl   ranges that will not land, with the reason (appended)

Each gap and each line carries its format version (collector.formats, kind "gaps").

`OpenGap` and `UnfilledRange` are the values the capture, the filler, the backfill and the
import share; they live here, below all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from collector.files import append_line, read_jsonl, write_atomically
from collector.formats import stamp, version_in
from collector.lake.completion import UnfilledGap

__all__ = ["MAX_ATTEMPTS", "RETRYABLE", "GapLedger", "OpenGap", "UnfilledRange"]


# Reasons that may pass: the range is tried again later, up to MAX_ATTEMPTS times in all.
RETRYABLE = frozenset({"rest_unavailable", "banned", "lake_unavailable"})
MAX_ATTEMPTS = 5


@dataclass(kw_only=True)
class OpenGap:
    """Ids first_missing..last_missing of symbol are missing; next_id is where filling resumes."""

    symbol: str
    first_missing: int
    last_missing: int
    next_id: int
    detected_at_ns: int
    # The missing trades happened between these trade times (epoch seconds): after the last trade
    # accepted before the gap (or the first minute not yet marked) and at or before the one after.
    window_start_s: float | None = None
    window_end_s: float | None = None
    attempt: int = 1  # 2 and up: a retry of a range recorded unfilled for a passing reason

    @property
    def size(self) -> int:
        return self.last_missing - self.first_missing + 1

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> OpenGap:
        return cls(**{k: v for k, v in record.items() if k in _OPEN_FIELDS})


@dataclass(frozen=True, kw_only=True)
class UnfilledRange:
    """A range recorded as unfillable, with its reason and the trade-time window it falls in."""

    symbol: str
    first_missing: int
    last_missing: int
    reason: str
    detail: str = ""
    window_start_s: float | None = None
    window_end_s: float | None = None
    detected_at_ns: int = 0
    attempt: int = 1
    recorded_at: float = 0.0
    retried: bool = False  # reopened for another attempt: no longer unfilled for now

    @property
    def size(self) -> int:
        return self.last_missing - self.first_missing + 1

    def falls_in(self, start_s: float, end_s: float) -> bool:
        """May its trades have happened in [start_s, end_s)? Unknown windows fall nowhere."""
        lo, hi = self.window_start_s, self.window_end_s
        return not self.retried and lo is not None and hi is not None and lo < end_s and hi >= start_s

    def as_gap(self) -> UnfilledGap:
        return UnfilledGap(self.first_missing, self.last_missing, self.reason, self.detail)


_OPEN_FIELDS = frozenset(f.name for f in fields(OpenGap))


_UNFILLED_FIELDS = frozenset(f.name for f in fields(UnfilledRange))


class GapLedger:
    """Open gaps on disk (so a restart resumes them), and the record of what could not be filled.

    Thread-safe: the event loop adds gaps in memory; `save` runs in worker threads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.open_path = root / "open.json"
        self.unfilled_path = root / "unfilled.jsonl"
        self.open: list[OpenGap] = []
        if self.open_path.exists():
            saved = json.loads(self.open_path.read_text())
            self.open = [OpenGap.from_record(g) for g in saved if version_in(g, "gaps", self.open_path)]
        self.unfilled: list[UnfilledRange] = []
        for record in read_jsonl(self.unfilled_path):
            version_in(record, "gaps", self.unfilled_path)
            with contextlib.suppress(TypeError, ValueError):  # not a record of ours
                self.unfilled.append(
                    UnfilledRange(**{k: v for k, v in record.items() if k in _UNFILLED_FIELDS})
                )
        self._lock = threading.Lock()
        self._dirty = False

    @property
    def unfilled_count(self) -> int:
        return len(self.unfilled)

    def unfilled_since(self, seconds: float) -> int:
        """Ranges recorded in the last `seconds`: what an alarm should still be about."""
        cutoff = time.time() - seconds
        return sum(1 for r in self.unfilled if r.recorded_at >= cutoff)

    def knows(self, symbol: str, first_missing: int) -> bool:
        return any(
            g.symbol == symbol and g.first_missing <= first_missing <= g.last_missing for g in self.open
        ) or any(
            r.symbol == symbol and r.first_missing <= first_missing <= r.last_missing for r in self.unfilled
        )

    def to_back(self, gap: OpenGap) -> None:
        """The gap's turn is over: it waits behind every other open gap (saved: the order survives)."""
        self.open.remove(gap)
        self.open.append(gap)
        self.save()

    def add(self, gap: OpenGap, *, save: bool = True) -> None:
        self.open.append(gap)
        self._dirty = True
        if save:
            self.save()

    def save(self) -> None:
        with self._lock:
            self._dirty = False
            gaps = [{**stamp("gaps"), **asdict(g)} for g in list(self.open)]
            try:
                write_atomically(self.open_path, json.dumps(gaps).encode())
            except BaseException:  # a full disk: saved again by the next save_if_dirty
                self._dirty = True
                raise

    def save_if_dirty(self) -> None:
        if self._dirty:
            self.save()

    def close(self, gap: OpenGap) -> None:
        self.open = [g for g in self.open if g is not gap]
        self.save()

    def record_unfilled(self, unfilled: UnfilledRange) -> UnfilledRange:
        record = dataclasses.replace(unfilled, recorded_at=time.time())
        with self._lock:
            append_line(self.unfilled_path, (json.dumps({**stamp("gaps"), **asdict(record)}) + "\n").encode())
        self.unfilled.append(record)
        return record

    def unfilled_between(self, symbol: str, start_s: float, end_s: float) -> list[UnfilledRange]:
        """Unfilled ranges whose trades may have happened in [start_s, end_s)."""
        return [r for r in self.unfilled if r.symbol == symbol and r.falls_in(start_s, end_s)]

    def due_for_retry(self, now_s: float, after_s: float) -> list[UnfilledRange]:
        """Unfilled ranges whose reason may have passed, recorded at least `after_s` ago."""
        return [
            r
            for r in self.unfilled
            if r.reason in RETRYABLE
            and not r.retried
            and r.attempt < MAX_ATTEMPTS
            and r.recorded_at + after_s <= now_s
            and r.window_start_s is not None
        ]

    def reopen(self, record: UnfilledRange) -> OpenGap:
        """Try a recorded range again: it becomes an open gap, the record is marked as retried."""
        self.unfilled = [dataclasses.replace(r, retried=True) if r is record else r for r in self.unfilled]
        with self._lock:
            write_atomically(
                self.unfilled_path,
                "".join(json.dumps({**stamp("gaps"), **asdict(r)}) + "\n" for r in self.unfilled).encode(),
            )
        gap = OpenGap(
            symbol=record.symbol,
            first_missing=record.first_missing,
            last_missing=record.last_missing,
            next_id=record.first_missing,
            detected_at_ns=record.detected_at_ns or time.time_ns(),
            window_start_s=record.window_start_s,
            window_end_s=record.window_end_s,
            attempt=record.attempt + 1,
        )
        self.add(gap)
        return gap
