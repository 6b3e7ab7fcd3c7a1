"""Minute completion markers at the edge: the durable book, the writer, and the scheduler.

    landed file ──▶ MarkerWriter.after_landing ──▶ MarkerBook (landed.jsonl)   or rewrite a marker
    MarkerScheduler, once a second ──▶ completion.final_minutes ──▶ MarkerWriter.mark_due ──▶ _SUCCESS

The rule for when a minute is final and the manifest's shape are pure and live in
`collector.lake.completion`; this module does the I/O around them. Bookkeeping lives under
`spool/markers/`: `cursor.json` (the next minute to mark, per symbol) and `landed.jsonl` (files
landed in minutes not yet marked; each line with its format version, collector.formats). A file
is recorded after it has landed and before it leaves the spool, so a crash between the two lands
it again (the sink says "already present") and records it again; records are keyed by file
name, so that is harmless.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from collector.counters import Registry
from collector.exceptions import SinkPermanentError, SinkUnavailable
from collector.files import append_whole, read_jsonl, write_atomically
from collector.formats import stamp, version_in
from collector.lake.completion import (
    LandedFile,
    UnfilledGap,
    build_manifest,
    final_minutes,
    landed_file,
    manifest_files,
    manifest_gaps,
    merge_file,
    merge_manifests,
    parse_manifest,
    proven_until,
)
from collector.lake.layout import marker_key
from collector.lake.market_manifest import symbol_final
from collector.lake.sinks import Sink, write_marker

__all__ = ["MarkerBook", "MarkerScheduler", "MarkerWriter"]

GapsIn = Callable[[str, int], list[UnfilledGap]]
MARK_EVERY_S = 1.0  # how often final minutes are looked for
# Markers written per hold of the writer's lock: uploads wait while it is held, and a backlog of
# hours (after an outage, an import) is marked a few minutes at a time in between.
MARK_PER_CALL = 16
# Records of marked minutes left in landed.jsonl before it is rewritten without them: they are
# harmless (ignored on load), and rewriting on every marked minute would cost an fsync each.
COMPACT_AFTER = 5_000


class MarkerBook:
    """The durable part: which minute is next to mark per symbol, and what landed in open minutes.

    Thread-safe: the uploaders record, the marker thread advances, the event loop notes new
    symbols (in memory only; `save` writes them from a worker thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.cursor_path = root / "cursor.json"
        self.landed_path = root / "landed.jsonl"
        self.cursor: dict[str, int] = {}
        self.problem: str | None = None  # what was wrong with the saved cursor, for the caller to log
        self._lock = threading.RLock()
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
        self._stale = 0  # lines in landed.jsonl for minutes already marked
        for record in read_jsonl(self.landed_path):
            version_in(record, "markers", self.landed_path)
            try:
                landed = LandedFile(**record["file"])
                symbol, minute = record["symbol"], int(record["minute"])
            except (ValueError, KeyError, TypeError):
                continue  # not a record of ours; a torn one's file lands again from the spool
            if self.is_marked(symbol, minute):
                self._stale += 1
            else:
                self.files.setdefault((symbol, minute), {})[landed.name] = landed
        self._fd: int | None = None  # landed.jsonl, opened for appending on the first record
        self._syncing = 0  # records written and not yet fsynced, by threads outside the lock
        self._retired: list[int] = []  # descriptors of compacted-away files, closed when no sync needs them

    def note(self, symbol: str, minute: int) -> int:
        """Mark `symbol` from `minute` on unless it has a cursor; its cursor. No I/O: `save` persists."""
        return self.cursor.setdefault(symbol, minute)

    def begin(self, symbol: str, minute: int) -> None:
        """`note`, and save at once."""
        self.note(symbol, minute)
        self.save()

    def save(self) -> None:
        with self._lock:
            write_atomically(self.cursor_path, json.dumps(dict(self.cursor), sort_keys=True).encode())

    def is_marked(self, symbol: str, minute: int) -> bool:
        cursor = self.cursor.get(symbol)
        return cursor is not None and minute < cursor

    def record(self, symbol: str, minute: int, landed: LandedFile, *, sync: bool = True) -> int:
        """A file landed in a minute not yet marked: remember it. Durable on return, or, with
        sync=False, once `sync()` of the returned descriptor returns (the fsync can then run
        outside the caller's own lock, and several threads' fsyncs overlap)."""
        line = (_landed_line(symbol, minute, landed) + "\n").encode()
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.landed_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            fd = self._fd
            append_whole(fd, line)  # whole or not at all: a full disk raises, the caller retries
            self.files.setdefault((symbol, minute), {})[landed.name] = landed
            self._syncing += 1
        if sync:
            self.sync(fd)
        return fd

    def sync(self, fd: int) -> None:
        try:
            os.fsync(fd)
        finally:
            with self._lock:
                self._syncing -= 1
                if not self._syncing:
                    for old in self._retired:
                        os.close(old)
                    self._retired.clear()

    def files_of(self, symbol: str, minute: int) -> list[LandedFile]:
        with self._lock:
            return list(self.files.get((symbol, minute), {}).values())

    def advance(self, symbol: str, next_minute: int) -> None:
        """Minutes before `next_minute` are marked: move the cursor and forget their files."""
        with self._lock:
            self.cursor[symbol] = next_minute
            self.save()
            stale = [k for k in self.files if k[0] == symbol and k[1] < next_minute]
            for key in stale:
                self._stale += len(self.files.pop(key))
            if self._stale > COMPACT_AFTER:
                self._compact()

    def _compact(self) -> None:
        """landed.jsonl rewritten with only the records of minutes not yet marked (under the lock)."""
        lines = [
            _landed_line(s, m, f) + "\n"
            for (s, m), by_name in sorted(self.files.items())
            for f in by_name.values()
        ]
        write_atomically(self.landed_path, "".join(lines).encode())
        old, self._fd = self._fd, None
        if old is not None and self._syncing:
            self._retired.append(old)  # a thread is about to fsync it: close it after
        elif old is not None:
            os.close(old)
        self._stale = 0


class MarkerWriter:
    """Writes the markers of final minutes, and rewrites them when data comes late.

    Blocking (sink calls): run its methods in a worker thread. The uploaders and the marker
    thread share it, so each method holds the lock for its whole read-modify-write."""

    def __init__(self, book: MarkerBook, sink: Sink, *, grace_s: float, log: Any) -> None:
        self.book = book
        self.sink = sink
        self.grace_s = grace_s
        self.log = log
        self.written = 0
        self.rewritten = 0
        self._lock = threading.Lock()

    def after_landing(
        self, key: str, size: int, sha256_b64: str, rows: int, gaps_in: GapsIn | None = None
    ) -> None:
        """A data object has landed: note it for its minute's marker, or update a marker already
        written (with the minute's unfilled gaps as they stand now, if `gaps_in` is given)."""
        found = landed_file(key, size, sha256_b64, rows)
        if found is None:
            return
        symbol, minute, landed = found
        with self._lock:
            if not self.book.is_marked(symbol, minute):
                fd = self.book.record(symbol, minute, landed, sync=False)
            else:
                fd = None
                self._merge(symbol, minute, landed, gaps_in)
        if fd is not None:
            self.book.sync(fd)  # outside the lock: other uploads and the markers need not wait for it

    def _merge(self, symbol: str, minute: int, landed: LandedFile, gaps_in: GapsIn | None) -> None:
        """A file landed in a minute already marked: the marker is rewritten with it."""
        doc = self._read_marker(symbol, minute, added=landed.name)
        if doc is None:
            return
        gaps = gaps_in(symbol, minute) if gaps_in is not None else None
        merged = merge_file(doc, landed, written_at_s=time.time(), unfilled_gaps=gaps)
        if merged is not None:
            self._rewrite(merged, symbol, minute, added=landed.name, added_rows=landed.rows)

    def refresh_gaps(self, symbol: str, minutes: Iterable[int], gaps_in: GapsIn) -> None:
        """Rewrite the unfilled gaps of marked minutes after a retried range was filled (or not)."""
        with self._lock:
            for minute in minutes:
                if not self.book.is_marked(symbol, minute):
                    continue
                doc = self._read_marker(symbol, minute, quiet=True)
                if doc is None:
                    continue
                gaps = sorted(gaps_in(symbol, minute))
                if gaps == manifest_gaps(doc):
                    continue
                updated = build_manifest(
                    symbol,
                    minute,
                    manifest_files(doc),
                    gaps,
                    revision=doc["revision"] + 1,
                    written_at_s=time.time(),
                )
                self._rewrite(updated, symbol, minute, was=len(doc["unfilled_gaps"]))

    def _read_marker(
        self, symbol: str, minute: int, *, added: str = "", quiet: bool = False
    ) -> dict[str, Any] | None:
        mkey = marker_key(symbol, minute)
        existing = self.sink.get(mkey)
        if existing is None:
            if not quiet:  # the minute predates this landing zone's markers: nobody waits on it
                self.log.info("collector.marker_not_found", key=self.sink.describe(mkey), added=added)
            return None
        try:
            return parse_manifest(existing)
        except ValueError as exc:
            if not quiet:
                self.log.error(
                    "collector.marker_unreadable",
                    key=self.sink.describe(mkey),
                    error=str(exc),
                    fix="run `collector audit` over this minute; the marker was left as it is",
                )
            return None

    def _rewrite(self, doc: dict[str, Any], symbol: str, minute: int, **facts: Any) -> None:
        key = write_marker(self.sink, doc, symbol, minute)
        self.rewritten += 1
        self.log.warning(
            "collector.marker_rewritten",
            key=self.sink.describe(key),
            rows=doc["rows"],
            unfilled_gaps=len(doc["unfilled_gaps"]),
            revision=doc["revision"],
            **facts,
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
        gaps_in: GapsIn,
        limit: int = MARK_PER_CALL,
    ) -> int:
        """Write the markers of the final minutes from the symbol's cursor on (at most `limit`);
        the count written."""
        with self._lock:
            cursor = self.book.cursor.get(symbol)
            if cursor is None:
                return 0
            due = final_minutes(
                cursor,
                now_s=now_s,
                grace_s=self.grace_s,
                proven_until_s=proven_until_s,
                open_gap_from_s=open_gap_from_s,
                pending=pending,
                limit=limit,
            )
            today = int(now_s // 86_400) * 1_440
            for minute in due:
                self._mark_one(symbol, minute, gaps_in(symbol, minute), now_s, look=minute < today)
            if due:
                self.book.advance(symbol, due.stop)
            return len(due)

    def _mark_one(
        self, symbol: str, minute: int, gaps: list[UnfilledGap], now_s: float, *, look: bool
    ) -> None:
        """Write a final minute's marker; with `look` (a day before today, which an import of
        Binance's archive may have marked while the collector was away), merged with the one
        the landing zone has."""
        files = self.book.files_of(symbol, minute)
        mine = build_manifest(symbol, minute, files, gaps, written_at_s=now_s)
        found = None
        raw = self.sink.get(marker_key(symbol, minute)) if look else None
        if raw is not None:
            try:
                found = parse_manifest(raw)
            except ValueError as exc:  # it cannot be merged with what it cannot read: left alone
                self.log.error(
                    "collector.marker_unreadable",
                    key=self.sink.describe(marker_key(symbol, minute)),
                    error=str(exc),
                    fix="run `collector audit` over this minute and the import of its day again",
                )
                return
        doc = mine if found is None else merge_manifests(found, mine, symbol, minute, written_at_s=now_s)
        if doc is not None:
            write_marker(self.sink, doc, symbol, minute)
            if found is None:
                self.written += 1
            else:
                self.rewritten += 1
        shown = doc or found or {}
        self.log.info(
            "collector.minute_marked",
            key=self.sink.describe(marker_key(symbol, minute)),
            rows=shown.get("rows"),
            files=len(files),
            unfilled_gaps=len(shown.get("unfilled_gaps", [])),
            **({"merged_with": "the marker found", "revision": shown.get("revision")} if found else {}),
        )


class MarkerScheduler:
    """Once a second, asks which minutes are final and has their markers written (in a thread).

    What it asks is passed in: whether the symbol's connection stayed up since its last trade
    (`stream_state(symbol)`: connected, and how many outages so far), the minutes of a symbol still
    open or landing (`pending`), the earliest trade time an open gap may hold (`open_gap_from`),
    and the unfilled ranges that fall in a minute (`gaps_in`)."""

    def __init__(
        self,
        writer: MarkerWriter,
        *,
        stream_state: Callable[[str], tuple[bool, int]],
        pending: Callable[[str], set[int]],
        open_gap_from: Callable[[str], float],
        gaps_in: GapsIn,
        log: Any,
        watched: Callable[[str], bool] = lambda symbol: True,
        metrics: Registry | None = None,
    ) -> None:
        self.writer = writer
        if metrics is not None:
            metrics.counter("markers_written", "Minute markers written.", read=lambda: writer.written)
            metrics.counter(
                "markers_rewritten", "Markers rewritten for late data.", read=lambda: writer.rewritten
            )
        self.watched = watched  # the others are marked market-wide (collector.landing.market_minutes)
        self.book = writer.book
        self.stream_state = stream_state
        self.pending = pending
        self.open_gap_from = open_gap_from
        self.gaps_in = gaps_in
        self.log = log
        # Per symbol: (trade time in s, monotonic receive time, stream outages then) of the last trade.
        self._last_seen: dict[str, tuple[float, float, int]] = {}
        # Retried gaps that closed: (symbol, minutes, still landing?) whose markers need new gap lists.
        self._refreshes: list[tuple[str, range, Callable[[], bool]]] = []
        # Symbols no longer streamed (they stopped trading): proven until this trade time, fixed.
        self._retired: dict[str, float | None] = {}
        self._unsaved = False

    def saw_trades(
        self,
        last_trade_time: dict[str, int],
        units_per_s: int,
        now_mono: float,
        outages: int,
        first_trade_time: dict[str, int] | None = None,
    ) -> None:
        """The last accepted trade time of each symbol in a read, in the stream's unit, and how
        many outages the stream has had (from the event loop, once per read: no I/O)."""
        last_seen = self._last_seen
        for symbol, trade_time in last_trade_time.items():
            if symbol not in last_seen and symbol not in self.book.cursor:
                # From the minute of the symbol's first trade, not of the read's last one.
                first = (first_trade_time or {}).get(symbol, trade_time)
                self.book.note(symbol, int(first / units_per_s // 60))
                self._unsaved = True
            last_seen[symbol] = (trade_time / units_per_s, now_mono, outages)

    def begin(self, symbol: str, minute: int) -> None:
        """Mark `symbol` from `minute` on, unless it is marked already (a symbol never seen
        trading, proven by the exchange: collector.gaps.quiet_proof)."""
        if symbol not in self.book.cursor:
            self.book.note(symbol, minute)
            self._unsaved = True

    def first_unmarked_s(self, symbol: str, trade_s: float) -> float:
        """Where a gap's time window opens when no trade before it is known (after a restart)."""
        if symbol not in self.book.cursor:
            self._unsaved = True
        return self.book.note(symbol, int(trade_s // 60)) * 60.0

    def refresh_later(self, symbol: str, minutes: range, landing: Callable[[], bool]) -> None:
        """Rewrite these minutes' gap lists once `landing()` says their files have all landed."""
        self._refreshes.append((symbol, minutes, landing))

    def retire(self, symbol: str) -> None:
        """The symbol stopped trading and is no longer streamed. Its connection was up since
        its last trade: no trade can follow (the exchange halted it), so its minutes are proven
        through the end of this one; otherwise only up to its last trade, as after any outage."""
        proven = self.proven_until(symbol)
        seen = self._last_seen.get(symbol)
        if proven is not None and seen is not None and proven > seen[0]:
            proven = (proven // 60 + 1) * 60
        self._retired[symbol] = proven

    def reinstate(self, symbol: str) -> None:
        """Streamed again (listed again): nothing is proven until its next trade."""
        if symbol in self._retired:
            del self._retired[symbol]
            self._last_seen.pop(symbol, None)

    def vouched(self, symbol: str, exchange_s: float, received_mono: float, outages: int) -> None:
        """The exchange said (collector.gaps.quiet_proof) the symbol had no trade we lack by its clock's
        `exchange_s`, answered at `received_mono`, its connection up since before (`outages` then)."""
        proven = self.proven_until(symbol)
        if symbol not in self._retired and (proven is None or proven < exchange_s):
            self._last_seen[symbol] = (exchange_s, received_mono, outages)

    def is_retired(self, symbol: str) -> bool:
        return symbol in self._retired

    def minute_final(self, symbol: str, minute: int, now_s: float) -> bool:
        """Is the symbol's share of this minute final (for the market-wide marker)?"""
        return symbol_final(
            minute,
            now_s=now_s,
            grace_s=self.writer.grace_s,
            proven_until_s=self.proven_until(symbol),
            open_gap_from_s=self.open_gap_from(symbol),
            pending=self.pending(symbol),
        )

    def proven_until(self, symbol: str) -> float | None:
        if symbol in self._retired:
            return self._retired[symbol]
        seen = self._last_seen.get(symbol)
        if seen is None:
            return None
        trade_s, received_mono, outages_then = seen
        connected, outages = self.stream_state(symbol)
        return proven_until(
            trade_s,
            connected_since_then=connected and outages == outages_then,
            seconds_since_then=time.monotonic() - received_mono,
        )

    async def run(self) -> None:
        while True:
            await asyncio.sleep(MARK_EVERY_S)
            await self.mark_once()

    async def mark_once(self) -> None:
        if self._unsaved:
            self._unsaved = False
            if await self._guarded(None, self.book.save) is False:  # a full disk: next time
                self._unsaved = True
        for refresh in list(self._refreshes):
            symbol, minutes, landing = refresh
            if landing():
                continue  # the retry's files are still on their way
            if (
                await self._guarded(symbol, self.writer.refresh_gaps, symbol, minutes, self.gaps_in)
                is not False
            ):
                self._refreshes.remove(refresh)
        for symbol in list(self.book.cursor):
            if not self.watched(symbol):
                continue  # its minutes are marked market-wide
            now, proven = time.time(), self.proven_until(symbol)
            if not self.writer.may_be_due(symbol, now, proven):
                continue  # most seconds of a minute: no thread, no I/O
            while (
                await self._guarded(
                    symbol,
                    self.writer.mark_due,
                    symbol,
                    now,
                    proven_until_s=proven,
                    open_gap_from_s=self.open_gap_from(symbol),
                    pending=self.pending(symbol),
                    gaps_in=self.gaps_in,
                )
                == MARK_PER_CALL
            ):
                pass  # a backlog: the next few, once the uploads have had the lock

    async def _guarded(self, symbol: str | None, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """What `call` returns, run in a thread; False when the sink or the book's disk failed
        (logged; tried again next time)."""
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except (SinkPermanentError, SinkUnavailable, OSError) as exc:
            self.log.warning(
                "collector.marker_failed", symbol=symbol, error=str(exc), retry_in_s=MARK_EVERY_S
            )
            return False


def _landed_line(symbol: str, minute: int, landed: LandedFile) -> str:
    return json.dumps({**stamp("markers"), "symbol": symbol, "minute": minute, "file": asdict(landed)})
