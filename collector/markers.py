"""Minute completion markers: `.../HH/mm/_SUCCESS`, written last, when a minute is final.

A minute of a symbol is final when all of these hold (the caller checks the ones it owns):

- its end plus `grace_s` has passed on the wall clock;
- the stream has proven continuity past its end: a trade of a later time was accepted (so every
  earlier id was received or is a known gap), or the connection has stayed up since the last trade
  and the exchange's clock, extrapolated from that trade, is past the end (a quiet market);
- no batch of the minute is open, being encoded, spooled or uploading;
- no open gap can still hold trades of the minute.

The marker is a small JSON manifest (the contract is in the README): the minute's row count,
first and last trade id, every data file with its size, SHA-256 (base64, as S3's
x-amz-checksum-sha256) and ids, and the unfilled gaps that may fall inside it. A minute without
trades gets a marker with zero rows, so a sensor never waits forever on a quiet market. When data
lands later in a marked minute (a backfill, a trade delivered late), the marker is rewritten with
it and its `revision` goes up.

Bookkeeping lives under `spool/markers/`: `cursor.json` (the next minute to mark, per symbol)
and `landed.jsonl` (files landed in minutes not yet marked). A file is recorded after it has
landed and before it leaves the spool, so a crash between the two lands it again (the sink says
"already present") and records it again; records are keyed by file name, so that is harmless.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.layout import EXCHANGE, marker_key, parse_object_key
from collector.sinks import Sink
from collector.spool import read_jsonl, write_atomically

__all__ = [
    "MANIFEST_VERSION",
    "LandedFile",
    "MarkerBook",
    "MarkerWriter",
    "build_manifest",
    "landed_file",
    "merge_file",
    "minute_label",
    "parse_manifest",
    "write_marker",
]

MANIFEST_VERSION = 1


@dataclass(frozen=True, slots=True)
class LandedFile:
    """One data object of a minute, as its marker lists it."""

    name: str  # the file name inside the minute's partition
    bytes: int
    sha256: str  # base64 of the SHA-256 digest, as S3 reports ChecksumSHA256
    rows: int
    first_trade_id: int
    last_trade_id: int


def minute_label(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def build_manifest(
    symbol: str,
    minute: int,
    files: Iterable[LandedFile],
    unfilled_gaps: Iterable[dict[str, Any]] = (),
    *,
    revision: int = 1,
    written_at_s: float,
) -> dict[str, Any]:
    """The `_SUCCESS` document of one minute. Files are listed in trade-id order."""
    listed = sorted({f.name: f for f in files}.values(), key=lambda f: (f.first_trade_id, f.name))
    return {
        "manifest_version": MANIFEST_VERSION,
        "exchange": EXCHANGE,
        "symbol": symbol,
        "minute": minute_label(minute),
        "rows": sum(f.rows for f in listed),
        "first_trade_id": min((f.first_trade_id for f in listed), default=None),
        "last_trade_id": max((f.last_trade_id for f in listed), default=None),
        "files": [asdict(f) for f in listed],
        "unfilled_gaps": sorted(unfilled_gaps, key=lambda g: (g["first_missing"], g["last_missing"])),
        "revision": revision,
        "written_at": datetime.fromtimestamp(written_at_s, tz=UTC).isoformat(timespec="milliseconds"),
    }


_REQUIRED = {
    "manifest_version": int,
    "symbol": str,
    "minute": str,
    "rows": int,
    "files": list,
    "unfilled_gaps": list,
    "revision": int,
}


def parse_manifest(data: bytes) -> dict[str, Any]:
    """A marker's manifest, checked for the fields the contract promises. Raises ValueError."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    for field, kind in _REQUIRED.items():
        if not isinstance(doc.get(field), kind):
            raise ValueError(f"field {field!r} is missing or not a {kind.__name__}")
    for entry in doc["files"]:
        if not isinstance(entry, dict) or set(entry) != set(LandedFile.__slots__):
            raise ValueError(f"file entry {entry!r} does not have the fields {sorted(LandedFile.__slots__)}")
    return doc


def merge_file(
    doc: dict[str, Any],
    landed: LandedFile,
    *,
    written_at_s: float,
    unfilled_gaps: list[dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The manifest with `landed` added, and its unfilled gaps replaced if given (None if it
    lists that file already, with the same checksum)."""
    files = [LandedFile(**f) for f in doc["files"]]
    if any(f.name == landed.name and f.sha256 == landed.sha256 for f in files):
        return None
    files = [f for f in files if f.name != landed.name] + [landed]
    minute = int(datetime.strptime(doc["minute"], "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC).timestamp() // 60)
    return build_manifest(
        doc["symbol"],
        minute,
        files,
        doc["unfilled_gaps"] if unfilled_gaps is None else unfilled_gaps,
        revision=doc["revision"] + 1,
        written_at_s=written_at_s,
    )


class MarkerBook:
    """The durable part: which minute is next to mark per symbol, and what landed in open minutes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.cursor_path = root / "cursor.json"
        self.landed_path = root / "landed.jsonl"
        self.cursor: dict[str, int] = {}
        self.problem: str | None = None  # what was wrong with the saved cursor, for the caller to log
        if self.cursor_path.exists():
            try:
                saved = json.loads(self.cursor_path.read_text())
                self.cursor = {str(s): int(m) for s, m in saved.items()}
            except (ValueError, AttributeError, TypeError) as exc:
                aside = self.cursor_path.with_name(f"cursor.json.unreadable-{int(time.time())}")
                os.replace(self.cursor_path, aside)
                self.problem = (
                    f"{self.cursor_path} is unreadable ({exc}); it was moved to {aside}. Markers start "
                    "again at the next trade's minute; minutes before it get none (`collector audit` "
                    "lists them as missing_marker)"
                )
        self.files: dict[tuple[str, int], dict[str, LandedFile]] = {}
        for record in read_jsonl(self.landed_path):
            try:
                landed = LandedFile(**record["file"])
                self.files.setdefault((record["symbol"], int(record["minute"])), {})[landed.name] = landed
            except (ValueError, KeyError, TypeError):
                continue  # not a record of ours; a torn one's file lands again from the spool

    def begin(self, symbol: str, minute: int) -> None:
        """Mark from `minute` on, unless this symbol already has a cursor."""
        if symbol not in self.cursor:
            self.cursor[symbol] = minute
            self._save_cursor()

    def is_marked(self, symbol: str, minute: int) -> bool:
        cursor = self.cursor.get(symbol)
        return cursor is not None and minute < cursor

    def record(self, symbol: str, minute: int, landed: LandedFile) -> None:
        """A file landed in a minute not yet marked: remember it, durably."""
        self.files.setdefault((symbol, minute), {})[landed.name] = landed
        line = json.dumps({"symbol": symbol, "minute": minute, "file": asdict(landed)}) + "\n"
        with open(self.landed_path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def files_of(self, symbol: str, minute: int) -> list[LandedFile]:
        return list(self.files.get((symbol, minute), {}).values())

    def advance(self, symbol: str, next_minute: int) -> None:
        """Minutes before `next_minute` are marked: move the cursor and forget their files."""
        self.cursor[symbol] = next_minute
        self._save_cursor()
        stale = [k for k in self.files if k[0] == symbol and k[1] < next_minute]
        for key in stale:
            del self.files[key]
        if stale:
            lines = [
                json.dumps({"symbol": s, "minute": m, "file": asdict(f)}) + "\n"
                for (s, m), by_name in sorted(self.files.items())
                for f in by_name.values()
            ]
            write_atomically(self.landed_path, "".join(lines).encode())

    def _save_cursor(self) -> None:
        write_atomically(self.cursor_path, json.dumps(self.cursor, sort_keys=True).encode())


def landed_file(key: str, size: int, sha256_b64: str, rows: int) -> tuple[str, int, LandedFile] | None:
    """(symbol, minute, LandedFile) for a data object's key; None if the key is not a data object."""
    name = parse_object_key(key)
    if name is None:
        return None
    file_name = key.rsplit("/", 1)[-1]
    return (
        name.symbol,
        name.minute,
        LandedFile(file_name, size, sha256_b64, rows, name.first_trade_id, name.last_trade_id),
    )


def write_marker(sink: Sink, doc: dict[str, Any], symbol: str, minute: int) -> str:
    key = marker_key(symbol, minute)
    sink.put_marker(key, (json.dumps(doc, indent=1) + "\n").encode())
    return key


class MarkerWriter:
    """Decides which minutes are final, writes their markers, and rewrites them when data comes late.

    Blocking (sink calls): run its methods in a worker thread. The uploader thread and the
    marker thread share the book, so both take the lock.
    """

    def __init__(self, book: MarkerBook, sink: Sink, *, grace_s: float, log: Any) -> None:
        self.book = book
        self.sink = sink
        self.grace_s = grace_s
        self.log = log
        self.written = 0
        self.rewritten = 0
        self._lock = threading.Lock()

    def after_landing(
        self,
        key: str,
        size: int,
        sha256_b64: str,
        rows: int,
        gaps_in: Callable[[str, int], list[dict[str, Any]]] | None = None,
    ) -> None:
        """A data object has landed: note it for its minute's marker, or update a marker already
        written (with the minute's unfilled gaps as they stand now, if `gaps_in` is given)."""
        found = landed_file(key, size, sha256_b64, rows)
        if found is None:
            return
        symbol, minute, landed = found
        with self._lock:
            if not self.book.is_marked(symbol, minute):
                self.book.record(symbol, minute, landed)
                return
            mkey = marker_key(symbol, minute)
            existing = self.sink.get(mkey)
            if existing is None:
                # The minute predates this landing zone's markers: nobody waits on it.
                self.log.info("collector.marker_not_found", key=self.sink.describe(mkey), added=landed.name)
                return
            try:
                doc = parse_manifest(existing)
            except ValueError as exc:
                self.log.error(
                    "collector.marker_unreadable",
                    key=self.sink.describe(mkey),
                    error=str(exc),
                    fix="run `collector audit` over this minute; the marker was left as it is",
                )
                return
            gaps = gaps_in(symbol, minute) if gaps_in is not None else None
            merged = merge_file(doc, landed, written_at_s=time.time(), unfilled_gaps=gaps)
            if merged is None:
                return
            write_marker(self.sink, merged, symbol, minute)
            self.rewritten += 1
            self.log.warning(
                "collector.marker_rewritten",
                key=self.sink.describe(mkey),
                added=landed.name,
                added_rows=landed.rows,
                rows=merged["rows"],
                unfilled_gaps=len(merged["unfilled_gaps"]),
                revision=merged["revision"],
            )

    def refresh_gaps(
        self, symbol: str, minutes: Iterable[int], gaps_in: Callable[[int], list[dict[str, Any]]]
    ) -> None:
        """Rewrite the unfilled gaps of marked minutes after a retried range was filled (or not)."""
        with self._lock:
            for minute in minutes:
                if not self.book.is_marked(symbol, minute):
                    continue
                mkey = marker_key(symbol, minute)
                existing = self.sink.get(mkey)
                if existing is None:
                    continue
                try:
                    doc = parse_manifest(existing)
                except ValueError:
                    continue  # reported where it is read for files; left as it is
                gaps = sorted(gaps_in(minute), key=lambda g: (g["first_missing"], g["last_missing"]))
                if gaps == doc["unfilled_gaps"]:
                    continue
                files = [LandedFile(**f) for f in doc["files"]]
                updated = build_manifest(
                    symbol, minute, files, gaps, revision=doc["revision"] + 1, written_at_s=time.time()
                )
                write_marker(self.sink, updated, symbol, minute)
                self.rewritten += 1
                self.log.warning(
                    "collector.marker_rewritten",
                    key=self.sink.describe(mkey),
                    unfilled_gaps=len(gaps),
                    was=len(doc["unfilled_gaps"]),
                    rows=updated["rows"],
                    revision=updated["revision"],
                )

    def may_be_due(self, symbol: str, now_s: float, proven_until_s: float | None) -> bool:
        """A cheap first look (no I/O): could the symbol's next minute be final now?"""
        cursor = self.book.cursor.get(symbol)
        if cursor is None or proven_until_s is None:
            return False
        end_s = (cursor + 1) * 60
        return now_s >= end_s + self.grace_s and proven_until_s >= end_s

    def mark_due(
        self,
        symbol: str,
        now_s: float,
        *,
        proven_until_s: float | None,
        open_gap_from_s: float,
        pending: set[int],
        gaps_in: Callable[[int], list[dict[str, Any]]],
        limit: int = 240,
    ) -> int:
        """Write the markers of every final minute from the symbol's cursor on; the count written."""
        with self._lock:
            cursor = self.book.cursor.get(symbol)
            if cursor is None or proven_until_s is None:
                return 0
            minute = cursor
            while minute - cursor < limit:
                end_s = (minute + 1) * 60
                if (
                    now_s < end_s + self.grace_s
                    or proven_until_s < end_s
                    or open_gap_from_s < end_s
                    or minute in pending
                ):
                    break
                files = self.book.files_of(symbol, minute)
                doc = build_manifest(symbol, minute, files, gaps_in(minute), written_at_s=now_s)
                key = write_marker(self.sink, doc, symbol, minute)
                self.written += 1
                self.log.info(
                    "collector.minute_marked",
                    key=self.sink.describe(key),
                    rows=doc["rows"],
                    files=len(files),
                    unfilled_gaps=len(doc["unfilled_gaps"]),
                )
                minute += 1
            if minute != cursor:
                self.book.advance(symbol, minute)
            return minute - cursor
