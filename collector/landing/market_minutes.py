"""The market-wide layout at the edge: a final minute of every unwatched symbol as a few objects.

    sealed batch of an unwatched symbol ─▶ Landing: encoded and spooled as a *source* (`_parts/`)
    MarketMinutes, once a second: is the next minute final for every covered symbol?
        ─▶ assemble (a worker thread): its sources, merged by symbol and trade id whatever the
           order they came in (collector.lake.market_parts) ▶ for each part of at most
           COLLECTOR_MARKET_PART_ROWS rows: intent saved ▶ part spooled ─▶ sources removed
           ▶ cursor saved ─▶ Uploads (as any object)
        ─▶ every part of the assembly landed ▶ the market `_SUCCESS` written ▶ intents removed
    sources of a minute already assembled (a gap filled late) ─▶ the next parts, a marker revision

Why: the per-symbol layout costs a PUT per symbol and minute for the data and another for the
marker, about 4 million requests a day for the whole market. This costs two a minute (and a
PUT more per million trades in the minute).

Bookkeeping under `spool/market/`, each file with its format version (collector.formats):
`cursor.json` (the next minute to assemble) and an intent
per part not yet marked (`intents/{minute}-{seq}.json`: its key, size, checksum, shares; the
assembly's sources, covered symbols and gaps; its first part's number and how many parts it
made). A crash at any step is taken up where it stopped (`MarketIntents.recover`): an assembly
whose every part got into the spool has its sources removed and its parts uploaded; one cut
short before that (a part missing) is dropped, parts and intents (its sources are still there,
and are assembled again into the same parts); parts that left the spool have landed, and once
all of an assembly's have, its marker is written.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from collector.counters import Registry
from collector.exceptions import SinkPermanentError, SinkUnavailable, SpoolError
from collector.files import write_atomically
from collector.formats import stamp, version_in
from collector.lake.completion import UnfilledGap
from collector.lake.layout import (
    ObjectName,
    market_marker_key,
    market_object_key,
    market_prefix,
    parse_market_key,
)
from collector.lake.market_manifest import (
    MarketFile,
    SymbolShare,
    build_market_manifest,
    merge_market_parts,
    parse_market_manifest,
    with_gaps,
)
from collector.lake.market_parts import MarketSource, market_parts
from collector.lake.parquet import count_rows
from collector.lake.sinks import Sink
from collector.landing.spool import Spool, Spooled, SpoolEntry

__all__ = ["MarketIntents", "MarketMarkers", "MarketMinutes"]

ASSEMBLE_EVERY_S = 1.0
GapsIn = Callable[[str, int], list[UnfilledGap]]


class MarketMinutes:
    """Holds the spooled sources of market minutes and turns each final minute into its parts."""

    def __init__(
        self,
        *,
        root: Path,
        spool: Spool,
        sink: Sink,
        output_format: str,
        members: Callable[[], Iterable[tuple[str, int]]],
        final: Callable[[str, int, float], bool],
        still_expected: Callable[[str], bool],
        gaps_in: GapsIn,
        log: Any,
        metrics: Registry,
        part_rows: int = 1_048_576,
    ) -> None:
        """`members()`: (symbol, first minute captured) of every unwatched symbol captured;
        `final(symbol, minute, now_s)`: is its share of the minute final; `still_expected(symbol)`:
        is it streamed now (one that is not, and whose minute is not final, is left uncovered);
        `part_rows`: the most rows a part holds (COLLECTOR_MARKET_PART_ROWS)."""
        self.spool, self.sink, self.output_format = spool, sink, output_format
        self.members, self.final, self.still_expected, self.gaps_in = members, final, still_expected, gaps_in
        self.part_rows = part_rows
        self.log = log
        self.enqueue: Callable[[Spooled], None] = lambda spooled: None  # set by Landing
        self.budget: Any = None  # Landing's SpoolBudget
        self.cursor_path = root / "cursor.json"
        self.cursor: int | None = None
        if self.cursor_path.exists():
            try:
                saved = json.loads(self.cursor_path.read_text())
                version_in(saved, "market", self.cursor_path)
                self.cursor = int(saved["next_minute"])
            except (ValueError, KeyError, TypeError) as exc:
                log.error("collector.market_cursor_unreadable", path=str(self.cursor_path), error=str(exc),
                          fix="it starts again at the oldest source waiting in the spool")  # fmt: skip
        self.sources: defaultdict[int, dict[str, Spooled]] = defaultdict(dict)  # minute: key: source
        self.marks = MarketMarkers(sink, log)
        self.intents = MarketIntents(root / "intents", spool, self.marks, log)
        self._blocker: str | None = None  # the symbol the next minute waited on last time
        self._assembled: list[Spooled] = []  # parts spooled, waiting for the cursor past them
        self._cursor_unsaved = False
        self.parts_written = 0
        metrics.counter("market_parts", "Market-wide parts assembled.", read=lambda: self.parts_written)
        metrics.counter("market_markers", "Market-wide markers written.", read=lambda: self.marks.written)
        metrics.gauge("market_sources_waiting", "Symbol-minutes spooled for a market part.",
                      lambda: sum(len(v) for v in self.sources.values()))  # fmt: skip

    # ---- what comes in ----------------------------------------------------------------------

    def add_source(self, spooled: Spooled) -> None:
        self.sources[_named(spooled).minute][spooled.entry.key] = spooled

    def recover(self, entries: list[SpoolEntry]) -> list[SpoolEntry]:
        """At start, before anything is queued: take up intents a previous run left; the entries
        that are neither sources nor parts of an intent go back to the caller."""
        left, assembled = self.intents.recover(entries)
        if assembled is not None:
            self.cursor = max(self.cursor or 0, assembled + 1)
        return left

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(ASSEMBLE_EVERY_S)
            try:
                await self.assemble_once(time.time())
            except (SinkPermanentError, SinkUnavailable, SpoolError, OSError) as exc:
                self.log.warning(
                    "collector.market_assembly_failed", error=str(exc), retry_in_s=ASSEMBLE_EVERY_S
                )
            except Exception as exc:  # a defect must not end the market's markers without a word
                self.log.error("collector.market_assembly_failed", error=str(exc), kind=type(exc).__name__,
                               retry_in_s=ASSEMBLE_EVERY_S)  # fmt: skip

    async def assemble_once(self, now_s: float) -> None:
        await self._release()
        await asyncio.to_thread(self.intents.mark_landed)
        if self.cursor is None:
            firsts = [first for _, first in self.members()] + list(self.sources)
            if not firsts:
                return
            self.cursor = min(firsts)
        for minute in sorted(m for m in self.sources if m < self.cursor):
            if not self.intents.of_minute(minute):  # the parts before these are marked
                await self._assemble(minute, late=True)
        while now_s >= (self.cursor + 1) * 60 and (covered := self._covered(self.cursor, now_s)) is not None:
            await self._assemble(self.cursor, covered=covered)

    def _covered(self, minute: int, now_s: float) -> list[str] | None:
        """The symbols the minute covers, once it is final for every one still expected; None
        while one still holds it (asked first next time: one look a second while it waits)."""
        covered = []
        blocker = self._blocker
        if blocker is not None and self.still_expected(blocker) and not self.final(blocker, minute, now_s):
            return None
        for symbol, first in self.members():
            if first > minute:
                continue
            if self.final(symbol, minute, now_s):
                covered.append(symbol)
            elif self.still_expected(symbol):
                self._blocker = symbol
                return None
        self._blocker = None
        return covered

    async def _assemble(self, minute: int, *, covered: list[str] | None = None, late: bool = False) -> None:
        sources = sorted(
            self.sources.pop(minute, {}).values(), key=lambda s: (_named(s).symbol, _named(s).first_trade_id)
        )
        symbols = covered if covered is not None else sorted({_named(s).symbol for s in sources})
        # Later parts name their symbols' gaps as they stand now, none too: that replaces what
        # the marker declared (a retried range that filled is no longer unfilled).
        gaps = {s: found for s in symbols if (found := self.gaps_in(s, minute)) or late}
        try:
            parts = await asyncio.to_thread(self._assemble_parts, minute, sources, symbols, gaps, late)
        except BaseException:
            for source in sources:  # tried again next time
                self.add_source(source)
            raise
        if not late:
            self.cursor, self._cursor_unsaved = minute + 1, True
        self._assembled.extend(parts)
        await self._release()

    async def _release(self) -> None:
        """Parts go to the uploads once the cursor past their minute is on disk: a part landed
        and marked while the cursor still named its minute would be assembled again after a
        restart, from no sources, into an empty marker over its own. A cursor the disk refused
        (full) is saved again before anything else next time."""
        if self._cursor_unsaved:
            cursor = json.dumps({**stamp("market"), "next_minute": self.cursor}).encode()
            await asyncio.to_thread(write_atomically, self.cursor_path, cursor)
            self._cursor_unsaved = False
        while self._assembled:
            self.enqueue(self._assembled.pop(0))

    def _assemble_parts(
        self,
        minute: int,
        sources: list[Spooled],
        covered: list[str],
        gaps: dict[str, list[UnfilledGap]],
        late: bool,
    ) -> list[Spooled]:
        """In a worker thread: the minute's parts, each spooled after its intent (or, for a
        minute without trades, the marker alone). The sources go once every part is spooled."""
        sources, rows = self._readable(sources, gaps)
        if not sources:  # no trades, or every source corrupt (logged): the marker says so
            self.marks.write({"minute": minute, "seq": 0, "key": None, "covered": covered,
                              "gaps": _gaps_record(gaps), "shares": [], "late": late})  # fmt: skip
            return []
        first_seq = self._next_seq(minute) if late else 0
        assembly = {**stamp("market"), "minute": minute, "sources": [s.entry.key for s in sources],
                    "covered": covered, "gaps": _gaps_record(gaps), "late": late, "first_seq": first_seq,
                    "parts": -(-sum(rows) // self.part_rows)}  # fmt: skip
        received = min(s.first_received_us or 0 for s in sources) or None
        merged = market_parts(
            [MarketSource(n.symbol, n.first_trade_id, n.last_trade_id, partial(self.spool.read, s.entry))
             for s in sources if (n := _named(s))], self.output_format, self.part_rows,
        )  # fmt: skip
        parts = []
        for seq, part in enumerate(merged, start=first_seq):
            digest = hashlib.sha256(part.data)
            key = market_object_key(minute, seq, digest.hexdigest(), self.output_format)
            self.intents.save({**assembly, "seq": seq, "key": key, "bytes": len(part.data), "rows": part.rows,
                               "sha256": base64.b64encode(digest.digest()).decode(),
                               "shares": [asdict(share) for share in part.shares]})  # fmt: skip
            parts.append(Spooled(self.spool.put(key, part.data), None, part.rows, received, "market"))
        for source in sources:
            self.spool.remove(source.entry)
            self.budget.release(source.entry.size)
        for part_ in parts:
            self.budget.holds(part_.entry.size)
        self.parts_written += len(parts)
        return parts

    def _readable(
        self, sources: list[Spooled], gaps: dict[str, list[UnfilledGap]]
    ) -> tuple[list[Spooled], list[int]]:
        """The sources whose bytes read back intact, and their rows (read one at a time: nothing
        is kept). A corrupt one (moved aside by the spool) is logged, and its ids named in the
        marker as an unfilled gap."""
        kept, rows = [], []
        for source in sources:
            try:
                data = self.spool.read(source.entry)
            except (SpoolError, OSError) as exc:
                self.log.error("collector.spool_corrupt", key=source.entry.key, error=str(exc),
                               fix="its trades are listed as unfilled in the minute's marker")  # fmt: skip
                name = _named(source)
                gaps.setdefault(name.symbol, []).append(
                    UnfilledGap(name.first_trade_id, name.last_trade_id, "spool_corrupt", source.entry.key)
                )
                self.budget.release(source.entry.size)
                continue
            kept.append(source)
            rows.append(source.rows if source.rows is not None else count_rows(data, self.output_format))
        return kept, rows

    def _next_seq(self, minute: int) -> int:
        """One past the highest part the minute has landed (0 for none)."""
        seqs = [
            n.seq for key, _ in self.sink.list_keys(market_prefix(minute)) if (n := parse_market_key(key))
        ]
        return max(seqs, default=-1) + 1

    def landed(self, key: str) -> None:
        """A market part landed (in an uploader's thread): once its assembly's every part has,
        the minute's marker, then their intents go."""
        self.intents.landed(key)


class MarketIntents:
    """The intents of parts not yet marked: saved before each part is spooled, taken up after a
    crash, and turned into the minute's marker once every part of their assembly has landed.
    An assembly is known by its minute and its first part's number (`first_seq`); an intent
    written before parts were split (no `parts`) is an assembly of one."""

    def __init__(self, root: Path, spool: Spool, marks: MarketMarkers, log: Any) -> None:
        self.root, self.spool, self.marks, self.log = root, spool, marks, log
        root.mkdir(parents=True, exist_ok=True)
        self._landed: dict[tuple[int, int], set[int]] = {}  # assembly: the seqs landed so far
        self._unmarked: list[list[Path]] = []  # assemblies found landed at start: marked by the loop
        self._lock = threading.Lock()

    def save(self, intent: dict[str, Any]) -> None:
        write_atomically(self._path(intent["minute"], intent["seq"]), json.dumps(intent).encode())

    def of_minute(self, minute: int) -> bool:
        return any(self.root.glob(f"{minute}-*.json"))

    def _path(self, minute: int, seq: int) -> Path:
        return self.root / f"{minute}-{seq}.json"

    def recover(self, entries: list[SpoolEntry]) -> tuple[list[SpoolEntry], int | None]:
        """The spool's entries less those the intents account for, and the last minute an
        assembly (not a late one) had finished with."""
        by_key = {e.key: e for e in entries}
        assemblies: defaultdict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
        for path in sorted(self.root.glob("*.json")):
            try:
                intent = json.loads(path.read_text())
                version_in(intent, "market", path)
                intent["key"], intent["sources"], intent["minute"], intent["seq"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                aside = path.with_suffix(".unreadable")
                path.rename(aside)
                self.log.error("collector.market_intent_unreadable", path=str(aside), error=str(exc),
                               fix="its sources, if still spooled, are assembled again; `collector audit` "
                               "names a part no marker lists")  # fmt: skip
                continue
            assemblies[(intent["minute"], intent.get("first_seq", intent["seq"]))].append(intent)
        assembled = None
        for (minute, first), intents in sorted(assemblies.items()):
            spooled = [i["key"] in by_key for i in intents]
            sources_left = any(key in by_key for key in intents[0]["sources"])
            if len(intents) == intents[0].get("parts", 1) and (all(spooled) or not sources_left):
                for key in intents[0]["sources"]:  # every part is spooled: its sources are in them
                    if key in by_key:
                        self.spool.remove(by_key.pop(key))
                if not intents[0].get("late"):
                    assembled = minute if assembled is None else max(assembled, minute)
                landed = {i["seq"] for i, there in zip(intents, spooled, strict=True) if not there}
                self._landed[(minute, first)] = landed
                if len(landed) == len(intents):  # all landed: only the marker is missing
                    self._unmarked.append([self._path(minute, i["seq"]) for i in intents])
            else:  # cut short: its sources are all still there, and make the same parts again
                for intent in intents:
                    if intent["key"] in by_key:
                        self.spool.remove(by_key.pop(intent["key"]))
                    self._path(minute, intent["seq"]).unlink()
        return list(by_key.values()), assembled

    def mark_landed(self) -> None:
        """The markers of assemblies found landed at start (blocking)."""
        while self._unmarked:
            paths = self._unmarked[0]
            self.marks.mark_assembly(paths)
            self._unmarked.pop(0)
            self._landed.pop(_assembly_of(paths[0]), None)

    def landed(self, key: str) -> None:
        """A part landed (an uploader's thread): the marker once its assembly's every part has."""
        name = parse_market_key(key)
        if name is None:
            return
        try:
            intent = json.loads(self._path(name.minute, name.seq).read_text())
        except FileNotFoundError:
            return  # marked already (landed again after a crash)
        first, count = intent.get("first_seq", name.seq), intent.get("parts", 1)
        with self._lock:
            done = self._landed.setdefault((name.minute, first), set())
            done.add(name.seq)
            if len(done) < count:
                return
            del self._landed[(name.minute, first)]
        self.marks.mark_assembly([self._path(name.minute, seq) for seq in range(first, first + count)])


def _assembly_of(path: Path) -> tuple[int, int]:
    """(minute, first seq) of the assembly an intent's path belongs to (read from the intent)."""
    try:
        intent = json.loads(path.read_text())
        return int(intent["minute"]), int(intent.get("first_seq", intent["seq"]))
    except (OSError, ValueError, KeyError, TypeError):
        minute, seq = path.stem.split("-")
        return int(minute), int(seq)


class MarketMarkers:
    """Writes a market minute's `_SUCCESS` from its parts' intents, and merges later parts into it.
    Blocking (sink calls); the uploaders' threads share it, so each write holds the lock."""

    def __init__(self, sink: Sink, log: Any) -> None:
        self.sink, self.log = sink, log
        self.written = 0
        self._lock = threading.Lock()

    def mark_assembly(self, paths: list[Path]) -> None:
        """The marker of one assembly's parts (their intents, then removed)."""
        intents = []
        for path in paths:
            try:
                intents.append(json.loads(path.read_text()))
            except FileNotFoundError:
                continue  # marked already (landed again after a crash)
        if intents:
            self.write(intents[0], intents)
        for path in paths:
            path.unlink(missing_ok=True)

    def write(self, intent: dict[str, Any], parts: list[dict[str, Any]] | None = None) -> None:
        """The marker of `intent`'s minute, with `parts` (intents of one assembly; none: a minute
        whose assembly made no part)."""
        minute, now, key = intent["minute"], time.time(), market_marker_key(intent["minute"])
        gaps = {s: [UnfilledGap(**g) for g in found] for s, found in intent["gaps"].items()}
        files = [(_market_file(p), [SymbolShare(**s) for s in p["shares"]]) for p in parts or []]
        with self._lock:
            if intent.get("first_seq", intent["seq"]) > 0 or intent.get("late"):
                doc = self._merged(key, intent, files, gaps, now_s=now)
            else:
                doc = build_market_manifest(minute, files, intent["covered"], gaps, written_at_s=now)
            if doc is None:
                return
            self.sink.put_marker(key, (json.dumps(doc, indent=1) + "\n").encode())
        self.written += 1
        self.log.info("collector.market_minute_marked", key=self.sink.describe(key), rows=doc["rows"],
                      symbols=len(doc["symbols"]), covered=len(doc["covered"]), revision=doc["revision"],
                      parts=len(files),
                      unfilled_gaps=sum(len(g) for g in doc["unfilled_gaps"].values()))  # fmt: skip

    def _merged(
        self,
        key: str,
        intent: dict[str, Any],
        files: list[tuple[MarketFile, list[SymbolShare]]],
        gaps: dict[str, list[UnfilledGap]],
        *,
        now_s: float,
    ) -> dict[str, Any] | None:
        """The minute's marker with later parts (or, with none, new gaps) merged in; None when
        there is nothing to write (listed already, no marker to correct, or one unreadable)."""
        raw = self.sink.get(key)
        if raw is None:
            if not files:
                return None  # a minute without a market marker: nothing to correct
            return build_market_manifest(intent["minute"], files, intent["covered"], gaps,
                                         written_at_s=now_s)  # fmt: skip
        try:
            found = parse_market_manifest(raw)
        except ValueError as exc:  # left as it is: what cannot be read cannot be merged
            self.log.error("collector.marker_unreadable", key=self.sink.describe(key), error=str(exc),
                           added=intent["key"], fix="run `collector audit` over this minute")  # fmt: skip
            return None
        if not files:
            return with_gaps(found, gaps, written_at_s=now_s)
        return merge_market_parts(found, files, intent["covered"], gaps, written_at_s=now_s)


def _market_file(intent: dict[str, Any]) -> MarketFile:
    name = parse_market_key(intent["key"])
    assert name is not None, intent["key"]
    return MarketFile(name.file_name, intent["bytes"], intent["sha256"], intent["rows"])


def _named(source: Spooled) -> ObjectName:
    """A source's name: what its key says (every source has one; its key is an object key)."""
    assert source.name is not None, source.entry.key
    return source.name


def _gaps_record(gaps: dict[str, list[UnfilledGap]]) -> dict[str, list[dict[str, Any]]]:
    return {s: [asdict(g) for g in found] for s, found in gaps.items()}
