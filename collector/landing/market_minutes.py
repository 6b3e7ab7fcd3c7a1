"""The market-wide layout at the edge: a final minute of every unwatched symbol as one object.

    sealed batch of an unwatched symbol ─▶ Landing: encoded and spooled as a *source* (`_parts/`)
    MarketMinutes, once a second: is the next minute final for every covered symbol?
        ─▶ assemble (a worker thread): its sources ▶ one part, sorted by symbol and trade id
           ▶ intent saved ▶ part spooled ▶ sources removed ▶ cursor saved ─▶ Uploads (as any object)
        ─▶ landed ▶ the market `_SUCCESS` written ▶ intent removed
    sources of a minute already assembled (a gap filled late) ─▶ the next part, a marker revision

Why: the per-symbol layout costs a PUT per symbol and minute for the data and another for the
marker, about 4 million requests a day for the whole market. This costs two a minute.

Bookkeeping under `spool/market/`, each file with its format version (collector.formats):
`cursor.json` (the next minute to assemble) and an intent per part not yet marked
(`intents/{minute}-{seq}.json`: its key, size, checksum, sources, shares, covered symbols and
gaps). A crash at any step is taken up where it stopped: an intent
whose part is spooled has its sources removed and is uploaded; one whose part never got into
the spool is dropped (its sources are still there, and are assembled again); one whose part
left the spool has landed, and only its marker is written.
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
    merge_market_part,
    parse_market_manifest,
    with_gaps,
)
from collector.lake.parquet import encode_market
from collector.lake.sinks import Sink
from collector.landing.spool import Spool, Spooled, SpoolEntry

__all__ = ["MarketMarkers", "MarketMinutes"]

ASSEMBLE_EVERY_S = 1.0
GapsIn = Callable[[str, int], list[UnfilledGap]]


class MarketMinutes:
    """Holds the spooled sources of market minutes and turns each final minute into a part."""

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
    ) -> None:
        """`members()`: (symbol, first minute captured) of every unwatched symbol captured;
        `final(symbol, minute, now_s)`: is its share of the minute final; `still_expected(symbol)`:
        is it streamed now (one that is not, and whose minute is not final, is left uncovered)."""
        self.spool, self.sink, self.output_format = spool, sink, output_format
        self.members, self.final, self.still_expected, self.gaps_in = members, final, still_expected, gaps_in
        self.log = log
        self.enqueue: Callable[[Spooled], None] = lambda spooled: None  # set by Landing
        self.budget: Any = None  # Landing's SpoolBudget
        self.intents = root / "intents"
        self.intents.mkdir(parents=True, exist_ok=True)
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
        self._unmarked: list[Path] = []  # intents found at start whose part has landed
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
        by_key = {e.key: e for e in entries}
        for path in sorted(self.intents.glob("*.json")):
            try:
                intent = json.loads(path.read_text())
                version_in(intent, "market", path)
                intent["key"], intent["sources"], intent["minute"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                aside = path.with_suffix(".unreadable")
                path.rename(aside)
                self.log.error("collector.market_intent_unreadable", path=str(aside), error=str(exc),
                               fix="its sources, if still spooled, are assembled again; `collector audit` "
                               "names a part no marker lists")  # fmt: skip
                continue
            if intent["key"] in by_key:  # spooled: its sources are in it
                for key in intent["sources"]:
                    if key in by_key:
                        self.spool.remove(by_key.pop(key))
                self.cursor = max(self.cursor or 0, intent["minute"] + 1)
            elif all(key in by_key for key in intent["sources"]):
                path.unlink()  # never spooled: assembled again from the same sources
            else:  # it left the spool, so it landed: only its marker is missing (written by run)
                self._unmarked.append(path)
        return list(by_key.values())

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
        while self._unmarked:
            await asyncio.to_thread(self.marks.mark_intent, self._unmarked[0])
            self._unmarked.pop(0)
        if self.cursor is None:
            firsts = [first for _, first in self.members()] + list(self.sources)
            if not firsts:
                return
            self.cursor = min(firsts)
        for minute in sorted(m for m in self.sources if m < self.cursor):
            if not any(self.intents.glob(f"{minute}-*.json")):  # the part before it is marked
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
        # A later part names its symbols' gaps as they stand now, none too: that replaces what
        # the marker declared (a retried range that filled is no longer unfilled).
        gaps = {s: found for s in symbols if (found := self.gaps_in(s, minute)) or late}
        try:
            part = await asyncio.to_thread(self._assemble_part, minute, sources, symbols, gaps, late)
        except BaseException:
            for source in sources:  # tried again next time
                self.add_source(source)
            raise
        if not late:
            self.cursor, self._cursor_unsaved = minute + 1, True
        if part is not None:
            self._assembled.append(part)
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

    def _assemble_part(
        self,
        minute: int,
        sources: list[Spooled],
        covered: list[str],
        gaps: dict[str, list[UnfilledGap]],
        late: bool,
    ) -> Spooled | None:
        """In a worker thread: the part (or, for a minute without trades, the marker alone)."""
        if not sources:
            self.marks.write({"minute": minute, "seq": 0, "key": None, "covered": covered,
                                "gaps": _gaps_record(gaps), "shares": []})  # fmt: skip
            return None
        sources, datas = self._readable(sources, gaps)
        if not sources:  # every one was corrupt (logged): the marker names their ids
            self.marks.write({"minute": minute, "seq": 0, "key": None, "covered": covered,
                                "gaps": _gaps_record(gaps), "shares": [], "late": late})  # fmt: skip
            return None
        data, rows = encode_market(datas, self.output_format)
        seq = self._next_seq(minute) if late else 0
        key = market_object_key(minute, seq, hashlib.sha256(data).hexdigest(), self.output_format)
        shares = [
            asdict(SymbolShare(_named(s).symbol, n, _named(s).first_trade_id, _named(s).last_trade_id))
            for s, n in zip(sources, rows, strict=True)
        ]
        intent = {**stamp("market"), "minute": minute, "seq": seq, "key": key, "bytes": len(data),
                  "rows": sum(rows), "sha256": base64.b64encode(hashlib.sha256(data).digest()).decode(),
                  "sources": [s.entry.key for s in sources], "shares": shares, "covered": covered,
                  "gaps": _gaps_record(gaps), "late": late}  # fmt: skip
        write_atomically(self.intents / f"{minute}-{seq}.json", json.dumps(intent).encode())
        entry = self.spool.put(key, data)
        for source in sources:
            self.spool.remove(source.entry)
            self.budget.release(source.entry.size)
        self.budget.holds(entry.size)
        self.parts_written += 1
        return Spooled(
            entry, None, sum(rows), min(s.first_received_us or 0 for s in sources) or None, "market"
        )

    def _readable(
        self, sources: list[Spooled], gaps: dict[str, list[UnfilledGap]]
    ) -> tuple[list[Spooled], list[bytes]]:
        """The sources whose bytes read back intact, and their bytes. A corrupt one (moved aside
        by the spool) is logged, and its ids named in the marker as an unfilled gap."""
        kept, datas = [], []
        for source in sources:
            try:
                datas.append(self.spool.read(source.entry))
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
        return kept, datas

    def _next_seq(self, minute: int) -> int:
        """One past the highest part the minute has landed (0 for none)."""
        seqs = [
            n.seq for key, _ in self.sink.list_keys(market_prefix(minute)) if (n := parse_market_key(key))
        ]
        return max(seqs, default=-1) + 1

    def landed(self, key: str) -> None:
        """A market part landed (in an uploader's thread): its marker, then its intent goes."""
        name = parse_market_key(key)
        if name is not None:
            self.marks.mark_intent(self.intents / f"{name.minute}-{name.seq}.json")


class MarketMarkers:
    """Writes a market minute's `_SUCCESS` from a part's intent, and merges later parts into it.
    Blocking (sink calls); the uploaders' threads share it, so each write holds the lock."""

    def __init__(self, sink: Sink, log: Any) -> None:
        self.sink, self.log = sink, log
        self.written = 0
        self._lock = threading.Lock()

    def mark_intent(self, path: Path) -> None:
        try:
            intent = json.loads(path.read_text())
        except FileNotFoundError:
            return  # marked already (landed again after a crash)
        self.write(intent)
        path.unlink(missing_ok=True)

    def write(self, intent: dict[str, Any]) -> None:
        minute, now, key = intent["minute"], time.time(), market_marker_key(intent["minute"])
        gaps = {s: [UnfilledGap(**g) for g in found] for s, found in intent["gaps"].items()}
        shares = [SymbolShare(**s) for s in intent["shares"]]
        part = None
        if intent["key"] is not None:
            name = parse_market_key(intent["key"])
            part = MarketFile(name.file_name, intent["bytes"], intent["sha256"], intent["rows"])  # type: ignore[union-attr]
        with self._lock:
            if intent["seq"] > 0 or intent.get("late"):
                doc = self._merged(key, intent, part, shares, gaps, now_s=now)
            else:
                doc = build_market_manifest(minute, [(part, shares)] if part else [], intent["covered"], gaps,
                                            written_at_s=now)  # fmt: skip
            if doc is None:
                return
            self.sink.put_marker(key, (json.dumps(doc, indent=1) + "\n").encode())
        self.written += 1
        self.log.info("collector.market_minute_marked", key=self.sink.describe(key), rows=doc["rows"],
                      symbols=len(doc["symbols"]), covered=len(doc["covered"]), revision=doc["revision"],
                      unfilled_gaps=sum(len(g) for g in doc["unfilled_gaps"].values()))  # fmt: skip

    def _merged(
        self,
        key: str,
        intent: dict[str, Any],
        part: MarketFile | None,
        shares: list[SymbolShare],
        gaps: dict[str, list[UnfilledGap]],
        *,
        now_s: float,
    ) -> dict[str, Any] | None:
        """The minute's marker with a later part (or, with none, new gaps) merged in; None when
        there is nothing to write (listed already, no marker to correct, or one unreadable)."""
        raw = self.sink.get(key)
        if raw is None:
            if part is None:
                return None  # a minute without a market marker: nothing to correct
            return build_market_manifest(intent["minute"], [(part, shares)], intent["covered"], gaps,
                                         written_at_s=now_s)  # fmt: skip
        try:
            found = parse_market_manifest(raw)
        except ValueError as exc:  # left as it is: what cannot be read cannot be merged
            self.log.error("collector.marker_unreadable", key=self.sink.describe(key), error=str(exc),
                           added=intent["key"], fix="run `collector audit` over this minute")  # fmt: skip
            return None
        if part is None:
            return with_gaps(found, gaps, written_at_s=now_s)
        return merge_market_part(found, part, shares, intent["covered"], gaps, written_at_s=now_s)


def _named(source: Spooled) -> ObjectName:
    """A source's name: what its key says (every source has one; its key is an object key)."""
    assert source.name is not None, source.entry.key
    return source.name


def _gaps_record(gaps: dict[str, list[UnfilledGap]]) -> dict[str, list[dict[str, Any]]]:
    return {s: [asdict(g) for g in found] for s, found in gaps.items()}
