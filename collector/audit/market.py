"""`collector audit` of the market-wide layout (`Binance/_market/`): each minute's parts against its marker.

Over a range of minutes it reads every market marker and part and reports, with the per-symbol
audit's kinds (collector.audit.symbols) where they mean the same:

- missing_marker / missing_minute: a minute from the layout's first key in the range to its last
  marker without `_SUCCESS` (with parts / without); bad_marker: not a valid market manifest, or
  one that contradicts itself (another minute, symbols it does not cover, files it does not list);
- missing_file / unlisted_file (a part readers following markers would miss) / size_mismatch /
  checksum_mismatch / row_count_mismatch, name_mismatch (the name's digest is not the part's
  SHA-256), unreadable_file, schema_drift, misplaced_trades, unexpected_object;
- per symbol, against the marker's `symbols`: row_count_mismatch, id_range_mismatch (first or last
  id), unlisted_symbol (its trades in a part the marker does not list for it), missing_symbol (a
  part listed for it that holds none of its trades); unsorted_trades: a part not in symbol,
  trade-id order, or, in a minute marked once (revision 1: its parts are one assembly), a part
  whose first row does not come after the last row of the part before it;
- duplicate_trades and gap: trade-id continuity per symbol within a minute and from one minute
  with its trades to the next. Ids the markers of those minutes declare in `unfilled_gaps` are
  known gaps, not defects; ids the symbol's own per-symbol objects hold (it was watched then) are
  no gap at all; stale_gap: ids a marker declares unfilled that its own minute's parts hold;
- both_layouts: a symbol with per-symbol objects in a minute whose market part holds its trades
  too, or whose market marker covers it (says it had no trade).

Minutes after the last market marker are not final yet: pending, with their trades, not checked.
Problems carry layout "market"; those of no one symbol name `_market` as their symbol.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from collector.audit.report import AuditReport, MarketFigures, Problem, label
from collector.audit.symbols import day_folders, last_marked_under, misplaced, read_columns, symbols_in
from collector.lake.layout import (
    MARKET,
    MarketName,
    market_prefix,
    market_root,
    parse_market_key,
    parse_market_marker_key,
    parse_object_key,
    partition_prefix,
    symbol_root,
)
from collector.lake.market_manifest import market_gaps, parse_market_manifest
from collector.lake.sinks import Sink

__all__ = ["audit_market", "market_range"]

ROOT = market_root()
# Minutes read at once: a whole market's day is gigabytes, a window of it some tens of megabytes.
_WINDOW = 16
Ranges = list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class _Summary:
    """Rows in symbol, trade-id order, per symbol: (rows, first id, last id), ids that repeat,
    and the holes inside (symbol, first missing, last missing)."""

    shares: dict[str, tuple[int, int, int]]
    duplicates: Counter[str]
    holes: list[tuple[str, int, int]]


@dataclass
class _Part:
    key: str
    name: MarketName
    size: int | None = None  # bytes read; None: not there any more
    sha256: str = ""  # base64, as the marker lists it
    hexdigest: str = ""
    rows: int = 0
    keys: tuple[pa.Array, pa.Array] | None = None  # the wanted (symbols, ids), sorted; None: unreadable
    summary: _Summary | None = None
    findings: list[tuple[str, str]] = field(default_factory=list)  # (kind, detail), of no one symbol


def market_range(sink: Sink) -> tuple[int, int] | None:
    """From the first minute holding anything market-wide to the last (end excluded)."""
    minutes = [m for key, _ in sink.list_keys(ROOT) if (m := _minute_of_key(key)) is not None]
    return (min(minutes), max(minutes) + 1) if minutes else None


def _minute_of_key(key: str) -> int | None:
    if (minute := parse_market_marker_key(key)) is not None:
        return minute
    name = parse_market_key(key)
    return name.minute if name is not None else None


def audit_market(
    sink: Sink,
    start_minute: int,
    end_minute: int,
    *,
    report: AuditReport | None = None,
    symbols: Iterable[str] | None = None,
    workers: int = 8,
    now_s: float | None = None,
) -> AuditReport:
    """Audit the market-wide layout's minutes [start_minute, end_minute) into `report` (a new
    one if None); `report.market` holds the figures, and stays None when the layout has no key
    in the range. `symbols`: check only their trades (markers and parts are checked whole)."""
    if report is None:
        report = AuditReport(sink.describe(), [], label(start_minute) or "", label(end_minute) or "")
    now_s = time.time() if now_s is None else now_s
    wanted = None if symbols is None else frozenset(symbols)
    _MarketAudit(sink, start_minute, end_minute, report, wanted=wanted, workers=workers).run(now_s)
    return report


class _MarketAudit:
    """One audit of the market-wide layout: the listing, then minute by minute (a window of
    minutes in memory at a time), then what runs across minutes (`_Continuity`)."""

    def __init__(
        self,
        sink: Sink,
        start: int,
        end: int,
        report: AuditReport,
        *,
        wanted: frozenset[str] | None,
        workers: int,
    ) -> None:
        self.sink, self.start, self.end, self.report, self.workers = sink, start, end, report, workers
        self.only = wanted
        self.wanted: Callable[[str], bool] = (lambda _: True) if wanted is None else wanted.__contains__
        self.figures = MarketFigures("", label(end) or "")
        self.across = _Continuity(report, self.wanted, self.figures)

    def fault(self, kind: str, minute: int | None, detail: str) -> None:
        """A problem of the layout, of no one symbol."""
        self.report.add(kind, MARKET, minute, detail, layout="market")

    def add(self, kind: str, symbol: str, minute: int, detail: str) -> None:
        self.report.add(kind, symbol, minute, detail, layout="market")

    def run(self, now_s: float) -> None:
        parts, markers = self._listing()
        if not parts and not markers:
            return  # no market-wide data in the range: nothing to report
        first = min([*parts, *markers])
        last = last_marked_under(self.sink, ROOT, parse_market_marker_key, self.start, now_s)
        pending_from = first if last is None else min(self.end, max(first, last + 1))
        self.figures.start = label(first) or ""
        self.report.market = self.figures
        self.across.folders = set(symbols_in(self.sink))
        for minute in range(first, pending_from):
            if minute not in markers:
                kind = "missing_marker" if minute in parts else "missing_minute"
                self.fault(kind, minute, f"{market_prefix(minute)} has no _SUCCESS")
        self.figures.minutes = max(0, pending_from - first)
        if pending_from < self.end:
            self.figures.pending_minutes = self.end - pending_from
            self.figures.pending_from = label(pending_from)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            for window in _windows(sorted(set(parts) | set(markers)), _WINDOW):
                self._window(pool, window, parts, markers, pending_from)
        self.across.finish(self.sink, first, pending_from)

    def _listing(self) -> tuple[dict[int, list[_Part]], dict[int, str]]:
        """The range's parts and markers, by minute; keys of neither kind are reported."""
        parts: defaultdict[int, list[_Part]] = defaultdict(list)
        markers: dict[int, str] = {}
        for day in day_folders(self.start, self.end):
            for key, _ in self.sink.list_keys(f"{ROOT}{day}"):
                if (minute := parse_market_marker_key(key)) is not None:
                    if self.start <= minute < self.end:
                        markers[minute] = key
                elif (name := parse_market_key(key)) is None:
                    self.fault("unexpected_object", None, key)
                elif self.start <= name.minute < self.end:
                    parts[name.minute].append(_Part(key, name))
        return parts, markers

    def _window(
        self,
        pool: ThreadPoolExecutor,
        minutes: list[int],
        parts: dict[int, list[_Part]],
        markers: dict[int, str],
        pending_from: int,
    ) -> None:
        """Fetch the window's markers and parts (in parallel), check each minute, let them go."""
        marker_keys = [markers[m] for m in minutes if m in markers and m < pending_from]
        raws = dict(zip(marker_keys, pool.map(self.sink.get, marker_keys), strict=True))
        list(
            pool.map(
                lambda p: _read_part(self.sink, p, self.only),
                [p for m in minutes for p in parts.get(m, [])],
            )
        )
        for minute in minutes:
            found = parts.pop(minute, [])
            if minute >= pending_from:
                self.figures.pending_rows += sum(p.rows for p in found)
            else:
                key = markers.get(minute)
                self._minute(minute, found, key, raws.get(key) if key else None)

    def _minute(self, minute: int, parts: list[_Part], key: str | None, raw: bytes | None) -> None:
        figures = self.figures
        figures.files += sum(1 for p in parts if p.size is not None)
        figures.bytes += sum(p.size or 0 for p in parts)
        figures.rows += sum(p.rows for p in parts)
        figures.max_files_per_minute = max(figures.max_files_per_minute, len(parts))
        for part in parts:
            for kind, detail in part.findings:
                self.fault(kind, minute, detail)
        doc = None
        if key is not None:
            figures.markers += 1
            doc = self._parse(key, raw, minute)
        listed: dict[str, dict[str, Any]] = {}
        if doc is not None and key is not None:
            listed = {entry["name"]: entry for entry in doc["files"]}
            self._check_marker(doc, minute, key)
            self.across.note_marker(doc, minute)
            self._check_files(listed, minute, parts)
            self._check_shares(doc, minute, parts)
            if doc["revision"] == 1:
                self._check_part_order(listed, minute, parts)
        self._check_names(listed, minute, parts)
        self.across.note_minute(minute, parts)

    def _parse(self, key: str, raw: bytes | None, minute: int) -> dict[str, Any] | None:
        try:
            if raw is None:
                raise ValueError("listed, but gone when it was read")
            return parse_market_manifest(raw)
        except ValueError as exc:
            self.fault("bad_marker", minute, f"{key}: {exc}")
            return None

    def _check_marker(self, doc: dict[str, Any], minute: int, key: str) -> None:
        """The marker against itself."""
        if doc["minute"] != label(minute):
            self.fault("bad_marker", minute, f"{key} is for minute {doc['minute']}")
        if doc["rows"] != sum(entry["rows"] for entry in doc["files"]):
            self.fault("row_count_mismatch", minute, f"{key}: its rows are not the sum of its files'")
        if doc["rows"] != sum(entry["rows"] for entry in doc["symbols"].values()):
            self.fault("row_count_mismatch", minute, f"{key}: its rows are not the sum of its symbols'")
        names, covered = {entry["name"] for entry in doc["files"]}, set(doc["covered"])
        for symbol, entry in doc["symbols"].items():
            if symbol not in covered:
                self.fault("bad_marker", minute, f"{key}: {symbol} has trades but is not covered")
            if stray := sorted(set(entry["files"]) - names):
                self.fault(
                    "bad_marker", minute, f"{key}: {symbol} is in {stray}, which its files do not list"
                )

    def _check_files(self, listed: dict[str, dict[str, Any]], minute: int, parts: list[_Part]) -> None:
        present = {p.name.file_name: p for p in parts}
        where = market_prefix(minute)
        for name in sorted(set(listed) - set(present)):
            self.fault("missing_file", minute, f"the marker lists {where}{name}, which is not there")
        for name in sorted(set(present) - set(listed)):
            trades = f"its {present[name].rows:,} trades" if present[name].keys is not None else "it"
            self.fault("unlisted_file", minute, f"{where}{name} is not in the minute's marker: "
                       f"readers following markers miss {trades}")  # fmt: skip
        for name in sorted(set(listed) & set(present)):
            entry, part = listed[name], present[name]
            if part.size is None:
                continue  # reported when it was read
            if entry["bytes"] != part.size:
                self.fault(
                    "size_mismatch", minute, f"{part.key}: {part.size} bytes, marker says {entry['bytes']}"
                )
            if entry["sha256"] != part.sha256:
                self.fault("checksum_mismatch", minute, f"{part.key}: sha256 {part.sha256}, "
                           f"marker says {entry['sha256']}")  # fmt: skip
            if part.keys is not None and entry["rows"] != part.rows:
                self.fault(
                    "row_count_mismatch", minute, f"{part.key}: {part.rows} rows, marker says {entry['rows']}"
                )

    def _check_part_order(self, listed: dict[str, dict[str, Any]], minute: int, parts: list[_Part]) -> None:
        """A minute's parts read in order are the minute sorted: part k's last (symbol, id) comes
        before part k+1's first. (A later revision adds parts of trades that came later, which
        may fall between; so only for a minute marked once.)"""
        ordered = sorted((p for p in parts if p.name.file_name in listed and p.keys is not None),
                         key=lambda p: p.name.seq)  # fmt: skip
        for before, after in itertools.pairwise(ordered):
            assert before.keys is not None and after.keys is not None
            if not len(before.keys[1]) or not len(after.keys[1]):
                continue
            last = (before.keys[0][-1].as_py(), before.keys[1][-1].as_py())
            first = (after.keys[0][0].as_py(), after.keys[1][0].as_py())
            if first <= last:
                self.fault("unsorted_trades", minute, f"{after.key} starts at {first[0]} {first[1]}, "
                           f"not after {before.name.file_name}'s last row, {last[0]} {last[1]}")  # fmt: skip

    def _check_names(self, listed: dict[str, dict[str, Any]], minute: int, parts: list[_Part]) -> None:
        """A part's name carries the start of its SHA-256. Bytes changed after they were listed
        are a checksum_mismatch already: a name is wrong when it disagrees with listed bytes."""
        for part in parts:
            entry = listed.get(part.name.file_name)
            changed = entry is not None and entry["sha256"] != part.sha256
            if part.size is not None and not changed and not part.hexdigest.startswith(part.name.digest):
                self.fault("name_mismatch", minute, f"{part.key}: its sha256 starts {part.hexdigest[:12]}")

    def _check_shares(self, doc: dict[str, Any], minute: int, parts: list[_Part]) -> None:
        """Each symbol's trades in the parts its marker lists against the marker's `symbols` entry."""
        listed = {entry["name"] for entry in doc["files"]}
        readable = {p.name.file_name: p.summary for p in parts if p.name.file_name in listed and p.summary}
        readable_names = set(readable)
        holding: defaultdict[str, dict[str, tuple[int, int, int]]] = defaultdict(dict)  # symbol: part: share
        for name, summary in readable.items():
            for symbol, share in summary.shares.items():
                holding[symbol][name] = share
        where = market_prefix(minute)
        for symbol in sorted(set(holding) | {s for s in doc["symbols"] if self.wanted(s)}):
            entry = doc["symbols"].get(symbol)
            named = set(entry["files"]) if entry is not None else set()
            for name in sorted(set(holding[symbol]) - named):
                count = holding[symbol][name][0]
                detail = (
                    f"{where}{name} holds {count} trades of {symbol}; the marker does not list it for them"
                )
                self.add("unlisted_symbol", symbol, minute, detail)
            if entry is None or not named <= readable_names:
                continue  # a listed part that is gone or unreadable is reported as such
            for name in sorted(named - set(holding[symbol])):
                detail = f"the marker lists {where}{name} for {symbol}, which holds none of its trades"
                self.add("missing_symbol", symbol, minute, detail)
            shares = [share for name, share in holding[symbol].items() if name in named]
            self._compare_share(symbol, entry, shares, minute, where)

    def _compare_share(
        self, symbol: str, entry: dict[str, Any], shares: list[tuple[int, int, int]], minute: int, prefix: str
    ) -> None:
        where = f"{prefix}{'+'.join(sorted(entry['files']))}"
        rows = sum(n for n, _, _ in shares)
        if rows != entry["rows"]:
            self.add("row_count_mismatch", symbol, minute,
                     f"{where}: {rows} trades of {symbol}, marker says {entry['rows']}")  # fmt: skip
        if rows:
            first, last = min(share[1] for share in shares), max(share[2] for share in shares)
            if (first, last) != (entry["first_trade_id"], entry["last_trade_id"]):
                self.add("id_range_mismatch", symbol, minute, f"{where}: {symbol} ids {first}..{last}, "
                         f"marker says {entry['first_trade_id']}..{entry['last_trade_id']}")  # fmt: skip


class _Continuity:
    """What runs across the minutes: each symbol's trade ids from one minute to the next, the
    gaps markers declare, and the symbol's per-symbol objects (the same minute in both layouts).
    Minute by minute it keeps each symbol's last id and the holes (few); every minute's id range
    only of the symbols with a per-symbol folder too (`folders`), for the check of both layouts."""

    def __init__(self, report: AuditReport, wanted: Callable[[str], bool], figures: MarketFigures) -> None:
        self.report, self.wanted, self.figures = report, wanted, figures
        self.folders: set[str] = set()  # the symbols with a per-symbol folder (Binance/{SYMBOL}/)
        self.last: dict[str, tuple[int, int]] = {}  # symbol: (minute, last id) so far
        # Of the symbols in `folders` only: minute: (first id, last id).
        self.runs: defaultdict[str, dict[int, tuple[int, int]]] = defaultdict(dict)
        self.holes: defaultdict[str, list[tuple[int, int, int, int]]] = defaultdict(list)  # ids, minutes
        self.declared: defaultdict[str, list[tuple[int, int, int]]] = defaultdict(list)  # ids, minute
        self.covered: dict[int, frozenset[str]] = {}  # per marked minute (one set for equal ones)

    def add(self, kind: str, symbol: str, minute: int, detail: str) -> None:
        self.report.add(kind, symbol, minute, detail, layout="market")

    def note_marker(self, doc: dict[str, Any], minute: int) -> None:
        covered = frozenset(s for s in doc["covered"] if self.wanted(s))
        previous = self.covered.get(minute - 1)
        if previous == covered:
            covered = previous  # one set for a run of equal ones: a whole market's day stays small
        else:
            self.figures.symbols.update(covered)
        self.covered[minute] = covered
        for symbol, gaps in market_gaps(doc).items():
            if self.wanted(symbol):
                self.declared[symbol] += [(g.first_missing, g.last_missing, minute) for g in gaps]

    def note_minute(self, minute: int, parts: list[_Part]) -> None:
        """Each symbol's ids of the minute (every part there, listed or not): duplicates and holes
        inside the minute, and its first and last id for the continuity across minutes."""
        readable = [(p.keys, p.summary) for p in parts if p.keys is not None and p.summary is not None]
        if not readable:
            return
        keys, summary = readable[0]
        if len(readable) > 1:  # ids of one symbol in two parts: sorted together
            symbols = pa.concat_arrays([symbols for (symbols, _), _ in readable])
            keys = _sorted(symbols, pa.concat_arrays([ids for (_, ids), _ in readable]))
            summary = _summarize(*keys)
        where = market_prefix(minute)
        for symbol, count in sorted(summary.duplicates.items()):
            detail = f"{count} trade ids of {symbol} appear more than once in {where}"
            self.add("duplicate_trades", symbol, minute, f"{detail} ({len(readable)} part(s) there)")
        for symbol, first, last in summary.holes:
            self.holes[symbol].append((first, last, minute, minute))
        for symbol, (_, first, last) in summary.shares.items():
            self._follow(symbol, minute, first, last)
        self.figures.symbols.update(summary.shares)
        self._stale_gaps(minute, keys, summary)

    def _follow(self, symbol: str, minute: int, first: int, last: int) -> None:
        """The minute's first id of `symbol` against its last id in the minute before it traded."""
        if (before := self.last.get(symbol)) is not None:
            m1, l1 = before
            if first <= l1:
                detail = (
                    f"{symbol}'s ids in {market_prefix(minute)} start at {first}, not after {l1}, the last"
                )
                self.add("duplicate_trades", symbol, minute, f"{detail} in {market_prefix(m1)}")
            elif first > l1 + 1:
                self.holes[symbol].append((l1 + 1, first - 1, m1, minute))
        self.last[symbol] = minute, max(last, before[1] if before is not None else last)
        if symbol in self.folders:
            self.runs[symbol][minute] = first, last

    def _stale_gaps(self, minute: int, keys: tuple[pa.Array, pa.Array], summary: _Summary) -> None:
        """Ids the minute's marker declares unfilled ("will not land") that its own parts hold: a
        marker rewritten for a late part must drop what that part filled."""
        for symbol in summary.shares:
            for a, b, declared_in in self.declared.get(symbol, []):
                if declared_in != minute:
                    continue
                symbols, ids = keys
                inside = pc.and_(
                    pc.equal(symbols, symbol), pc.and_(pc.greater_equal(ids, a), pc.less_equal(ids, b))
                )
                if held := pc.sum(inside).as_py():
                    detail = f"the marker of {market_prefix(minute)} declares ids {a}..{b} unfilled"
                    self.add("stale_gap", symbol, minute, f"{detail}, and its parts hold {held} of them")

    def finish(self, sink: Sink, first: int, end: int) -> None:
        own = self._per_symbol_objects(sink, first, end)
        for symbol, holes in sorted(self.holes.items()):
            for a, b, m1, m2 in holes:
                held = [(x, y) for m, x, y, _ in own.get(symbol, []) if m1 <= m <= m2]  # watched then: no gap
                for x, y in _subtract([(a, b)], held):
                    self._hole(symbol, x, y, m1, m2)
        for symbol, objects in sorted(own.items()):
            self._both_layouts(symbol, objects)

    def _per_symbol_objects(
        self, sink: Sink, first: int, end: int
    ) -> dict[str, list[tuple[int, int, int, str]]]:
        """(minute, first id, last id, name) of the per-symbol objects of each symbol the market
        holds or covers that has a per-symbol folder too (a symbol watched for a while)."""
        found: dict[str, list[tuple[int, int, int, str]]] = {}
        if end <= first:
            return found
        for symbol in sorted(set(self.runs).union(*self.covered.values()) & self.folders):
            found[symbol] = [
                (name.minute, name.first_trade_id, name.last_trade_id, name.file_name)
                for day in day_folders(first, end)
                for key, _ in sink.list_keys(f"{symbol_root(symbol)}{day}")
                if (name := parse_object_key(key)) is not None
                and name.symbol == symbol
                and first <= name.minute < end
            ]
        return found

    def _hole(self, symbol: str, first: int, last: int, m1: int, m2: int) -> None:
        """Ids missing between minute m1 and m2 (the same minute for a hole inside one): what the
        markers of m1 to m2 declare unfilled is a known gap, the rest a gap."""
        declared = [(a, b, m) for a, b, m in self.declared.get(symbol, []) if m1 <= m <= m2]
        undeclared = _subtract([(first, last)], [(a, b) for a, b, _ in declared])
        for a, b in _subtract([(first, last)], undeclared):
            minute = next((m for x, y, m in declared if x <= a and b <= y), declared[0][2])
            detail = f"ids {a}..{b} ({b - a + 1})"
            self.report.known_gaps.append(Problem("declared_gap", symbol, label(minute), detail, "market"))
        between = f"in {market_prefix(m1)}" if m1 == m2 else f"between {label(m1)} and {label(m2)}"
        uncovered = [m for m in range(m1 + 1, m2) if m in self.covered and symbol not in self.covered[m]]
        note = f"; {symbol} was not covered in {len(uncovered)} minute(s) between" if uncovered else ""
        for a, b in undeclared:
            self.add("gap", symbol, m2, f"ids {a}..{b} missing ({b - a + 1} trades) {between}{note}")

    def _both_layouts(self, symbol: str, objects: list[tuple[int, int, int, str]]) -> None:
        market = self.runs.get(symbol, {})
        by_minute: defaultdict[int, list[tuple[int, int, str]]] = defaultdict(list)
        for minute, a, b, name in objects:
            by_minute[minute].append((a, b, name))
        for minute, held in sorted(by_minute.items()):
            names = ", ".join(n for _, _, n in held[:3]) + (
                f" and {len(held) - 3} more" if len(held) > 3 else ""
            )
            ids = f"{min(a for a, _, _ in held)}..{max(b for _, b, _ in held)}"
            own = f"{partition_prefix(symbol, minute)} holds {names} (ids {ids})"
            if minute in market:
                first, last = market[minute]
                self.add("both_layouts", symbol, minute, f"{own}, and {market_prefix(minute)} holds its ids "
                         f"{first}..{last}: the same minute stored in both layouts")  # fmt: skip
            elif symbol in self.covered.get(minute, ()):
                self.add("both_layouts", symbol, minute, f"{own}, while the market marker of "
                         f"{market_prefix(minute)} covers {symbol} with no trade")  # fmt: skip


def _read_part(sink: Sink, part: _Part, only: frozenset[str] | None) -> None:
    """Fetch, checksum and parse one part (in a worker thread); findings stay on the part."""
    data = sink.get(part.key)
    if data is None:
        part.findings.append(("missing_file", f"{part.key} was listed but could not be read"))
        return
    digest = hashlib.sha256(data)
    part.size, part.hexdigest = len(data), digest.hexdigest()
    part.sha256 = base64.b64encode(digest.digest()).decode()
    try:
        columns, drift = read_columns(data, part.name.extension, ["symbol", "trade_id", "trade_time"])
    except Exception as exc:  # whatever the reader says is the finding
        part.findings.append(("unreadable_file", f"{part.key}: {exc}"))
        return
    if drift is not None:
        part.findings.append(("schema_drift", f"{part.key}: {drift}"))
    part.rows = len(columns["trade_id"])
    symbols, ids = _checked_order(part, columns)
    if only is not None:
        mask = pc.is_in(symbols, value_set=pa.array(sorted(only), pa.string()))
        symbols, ids = symbols.filter(mask), ids.filter(mask)
    part.keys, part.summary = (symbols, ids), _summarize(symbols, ids)


def _checked_order(part: _Part, columns: dict[str, pa.Array]) -> tuple[pa.Array, pa.Array]:
    """The part's (symbols, ids) in symbol, trade-id order; trades of another minute and rows
    out of that order become the part's findings."""
    symbols, ids = columns["symbol"], columns["trade_id"]
    wrong = misplaced(columns["trade_time"], part.name.minute)
    if count := pc.sum(wrong).as_py() or 0:
        whose = ", ".join(sorted(pc.unique(pc.filter(symbols, wrong)).to_pylist())[:5])
        part.findings.append(("misplaced_trades", f"{part.key}: {count} trades of another minute ({whose})"))
    if len(ids) < 2:
        return symbols, ids
    same = pc.equal(symbols[1:], symbols[:-1])
    back = pc.or_(pc.less(symbols[1:], symbols[:-1]), pc.and_(same, pc.less(ids[1:], ids[:-1])))
    if not (count := pc.sum(back).as_py() or 0):
        return symbols, ids
    whose = ", ".join(sorted(pc.unique(pc.filter(symbols[1:], back)).to_pylist())[:5])
    part.findings.append(
        ("unsorted_trades", f"{part.key}: {count} rows out of symbol, trade-id order ({whose})")
    )
    return _sorted(symbols, ids)


def _sorted(symbols: pa.Array, ids: pa.Array) -> tuple[pa.Array, pa.Array]:
    order = pc.sort_indices(
        pa.table({"s": symbols, "i": ids}), sort_keys=[("s", "ascending"), ("i", "ascending")]
    )
    return symbols.take(order), ids.take(order)


def _summarize(symbols: pa.Array, ids: pa.Array) -> _Summary:
    """A few vectorised passes over rows in symbol, trade-id order (a whole market's minute is
    a hundred thousand rows of a thousand and more symbols)."""
    if not len(ids):
        return _Summary({}, Counter(), [])
    same = pc.equal(symbols[1:], symbols[:-1])
    step = pc.subtract(ids[1:], ids[:-1])
    starts = [0, *(i + 1 for i in pc.indices_nonzero(pc.invert(same)).to_pylist())]
    ends = [*starts[1:], len(ids)]
    firsts = ids.take(pa.array(starts, pa.int64())).to_pylist()
    lasts = ids.take(pa.array([e - 1 for e in ends], pa.int64())).to_pylist()
    names = symbols.take(pa.array(starts, pa.int64())).to_pylist()
    shares = {
        s: (e - b, f, last) for s, b, e, f, last in zip(names, starts, ends, firsts, lasts, strict=True)
    }
    repeated = pc.indices_nonzero(pc.and_(same, pc.equal(step, 0)))
    at = pc.indices_nonzero(pc.and_(same, pc.greater(step, 1)))
    holes = zip(symbols.take(at).to_pylist(), pc.add(ids.take(at), 1).to_pylist(),
                pc.subtract(ids.take(pc.add(at, 1)), 1).to_pylist(), strict=True)  # fmt: skip
    return _Summary(shares, Counter(symbols.take(repeated).to_pylist()), list(holes))


def _windows(minutes: list[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(minutes), size):
        yield minutes[i : i + size]


def _subtract(ranges: Ranges, holes: Iterable[tuple[int, int]]) -> Ranges:
    """The inclusive id ranges of `ranges` that no range of `holes` covers."""
    left = list(ranges)
    for a, b in holes:
        left = [
            piece
            for x, y in left
            for piece in ((x, min(y, a - 1)), (max(x, b + 1), y))
            if piece[0] <= piece[1]
        ]
    return left
