"""`collector audit`: check a landing zone against its own contract, as a downstream user would.

Over a range of minutes and symbols, on a local directory or an S3 prefix, it reads every
marker and data file and reports:

- missing_minute: no marker and no data;           missing_marker: data but no `_SUCCESS`;
- bad_marker: a marker that is not a valid manifest;
- missing_file / unlisted_file / size_mismatch / checksum_mismatch / row_count_mismatch:
  the marker and the files disagree;
- unreadable_file, schema_drift, name_mismatch (the ids inside differ from the name),
  misplaced_trades (trades of another minute);
- duplicate_trades and gap: trade-id continuity across files and minutes. A gap that a marker
  declares as unfilled is listed as known, not counted as a defect.

Minutes after a symbol's last marker are not final yet (the collector marks minutes in order,
once each is complete): they are reported as pending, with their trades, and not checked
against a marker; the summary says how much it checked of how much it found. It exits 1 when
it found a defect, 0 when the zone is clean.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import itertools
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from collector.audit.report import AuditReport, Problem, label
from collector.lake.completion import parse_manifest
from collector.lake.layout import (
    exchange_root,
    parse_marker_key,
    parse_object_key,
    partition_prefix,
    symbol_root,
)
from collector.lake.parquet import landing_parquet_schema
from collector.lake.sinks import Sink

__all__ = [
    "audit",
    "data_range",
    "day_folders",
    "last_marked_under",
    "misplaced",
    "read_columns",
    "symbols_in",
]

_SYMBOL = re.compile(r"[A-Z0-9]{2,20}")

# The trades a problem's list keeps in full; the counts are always complete.


@dataclass
class _File:
    key: str
    minute: int
    first: int
    last: int
    size: int
    extension: str
    data: bytes = b""
    ids: pa.Array | None = None


def day_folders(start_minute: int, end_minute: int) -> Iterable[str]:
    day = datetime.fromtimestamp(start_minute * 60, tz=UTC).date()
    last = datetime.fromtimestamp((end_minute - 1) * 60, tz=UTC).date()
    while day <= last:
        yield day.strftime("%Y/%m/%d/")
        day += timedelta(days=1)


def symbols_in(sink: Sink) -> list[str]:
    """Every symbol with anything under the exchange root."""
    return sorted(name for name in sink.list_dirs(exchange_root()) if _SYMBOL.fullmatch(name))


def data_range(sink: Sink, symbol: str) -> tuple[int, int] | None:
    """From the first minute holding anything for `symbol` to the last (end excluded)."""
    minutes = [m for key, _ in sink.list_keys(symbol_root(symbol)) if (m := _minute_of_key(key)) is not None]
    return (min(minutes), max(minutes) + 1) if minutes else None


def last_marked(sink: Sink, symbol: str, not_before: int, now_s: float) -> int | None:
    """The newest marked minute of `symbol`, looking back day by day from today (to `not_before`)."""

    def minute(key: str) -> int | None:
        marker = parse_marker_key(key)
        return marker[1] if marker is not None else None

    return last_marked_under(sink, symbol_root(symbol), minute, not_before, now_s)


def last_marked_under(
    sink: Sink, root: str, marker_minute: Callable[[str], int | None], not_before: int, now_s: float
) -> int | None:
    """The newest minute with a marker under `root` (`marker_minute(key)`: its minute, None for
    other keys), looking back day by day from today (to `not_before`)."""
    day = int(now_s // 86_400)
    while day * 1440 + 1440 > not_before:
        prefix = f"{root}{datetime.fromtimestamp(day * 86_400, tz=UTC):%Y/%m/%d}/"
        marked = [m for key, _ in sink.list_keys(prefix) if (m := marker_minute(key)) is not None]
        if marked:
            return max(marked)
        day -= 1
    return None


def _minute_of_key(key: str) -> int | None:
    if (marker := parse_marker_key(key)) is not None:
        return marker[1]
    name = parse_object_key(key)
    return name.minute if name is not None else None


def audit(
    sink: Sink,
    symbols: list[str],
    start_minute: int,
    end_minute: int,
    *,
    workers: int = 8,
    now_s: float | None = None,
    report: AuditReport | None = None,
) -> AuditReport:
    """Audit minutes [start_minute, end_minute) of each symbol (into `report`, if given)."""
    if report is None:
        report = AuditReport(sink.describe(), [], label(start_minute) or "", label(end_minute) or "")
    report.symbols.extend(symbols)
    now_s = time.time() if now_s is None else now_s
    for symbol in symbols:
        marked = last_marked(sink, symbol, start_minute, now_s)
        pending_from = start_minute if marked is None else max(start_minute, marked + 1)
        _audit_symbol(
            sink, symbol, start_minute, end_minute, report, workers=workers, pending_from=pending_from
        )
    return report


def _audit_symbol(
    sink: Sink, symbol: str, start: int, end: int, report: AuditReport, *, workers: int, pending_from: int
) -> None:
    files_by_minute, markers = _listing(sink, symbol, start, end, report)
    all_files = [f for files in files_by_minute.values() for f in files]
    if not markers and not all_files:
        pending_from = end  # nothing at all: every minute is simply missing
    with ThreadPoolExecutor(max_workers=workers) as pool:
        marker_docs = dict(zip(markers, pool.map(sink.get, markers.values()), strict=True))
        findings = list(pool.map(lambda f: _read_file(sink, f), all_files))
    for f, found in zip(all_files, findings, strict=True):
        if f.minute >= pending_from:
            report.pending_rows += len(f.ids) if f.ids is not None else 0
        else:
            report.files += 1 if f.data else 0
            report.bytes += len(f.data)
            report.rows += len(f.ids) if f.ids is not None else 0
        for kind, detail in found:
            report.add(kind, symbol, f.minute, detail)
    if pending_from < end:
        pending = range(pending_from, end)
        with_data = sum(1 for m in pending if m in files_by_minute)
        report.pending_minutes += len(pending)
        detail = f"{len(pending)} minute(s) from {label(pending_from)} on, {with_data} with data"
        report.pending.append(Problem("pending", symbol, label(pending_from), detail))
    declared: list[tuple[int, int, int]] = []  # (first, last, minute) of gaps markers declare
    for minute in range(start, min(end, pending_from)):
        report.minutes += 1
        files = files_by_minute.get(minute, [])
        report.max_files_per_minute = max(report.max_files_per_minute, len(files))
        raw = marker_docs.get(minute)
        if raw is None:
            kind = "missing_marker" if files else "missing_minute"
            report.add(kind, symbol, minute, partition_prefix(symbol, minute))
            continue
        report.markers += 1
        try:
            doc = parse_manifest(raw)
        except ValueError as exc:
            report.add("bad_marker", symbol, minute, f"{markers[minute]}: {exc}")
            continue
        declared.extend((g["first_missing"], g["last_missing"], minute) for g in doc["unfilled_gaps"])
        _check_marker(doc, files, report, symbol, minute)
    _check_continuity([f for f in all_files if f.minute < pending_from], declared, report, symbol)


def _listing(
    sink: Sink, symbol: str, start: int, end: int, report: AuditReport
) -> tuple[dict[int, list[_File]], dict[int, str]]:
    """The symbol's data files and markers of the range, by minute; strays are reported."""
    listed: list[tuple[str, int]] = []
    for day in day_folders(start, end):
        listed.extend(sink.list_keys(f"{symbol_root(symbol)}{day}"))
    files_by_minute: dict[int, list[_File]] = defaultdict(list)
    markers: dict[int, str] = {}
    for key, size in listed:
        if (marker := parse_marker_key(key)) is not None:
            if start <= marker[1] < end:
                markers[marker[1]] = key
            continue
        name = parse_object_key(key)
        if name is None:
            report.add("unexpected_object", symbol, None, key)
        elif start <= name.minute < end and name.symbol == symbol:
            files_by_minute[name.minute].append(
                _File(key, name.minute, name.first_trade_id, name.last_trade_id, size, name.extension)
            )
    return files_by_minute, markers


def _read_file(sink: Sink, f: _File) -> list[tuple[str, str]]:
    """Fetch and parse one data file (in a worker thread); the findings, for the caller to add."""
    data = sink.get(f.key)
    if data is None:
        return [("missing_file", f"{f.key} was listed but could not be read")]
    f.data = data
    findings: list[tuple[str, str]] = []
    kind = parse_object_key(f.key)
    try:
        columns, drift = read_columns(data, f.extension, ["trade_id", "trade_time"],
                                    archive=kind is not None and kind.kind == "archive")  # fmt: skip
    except Exception as exc:  # whatever the reader says is the finding
        return [("unreadable_file", f"{f.key}: {exc}")]
    if drift is not None:
        findings.append(("schema_drift", f"{f.key}: {drift}"))
    ids = columns["trade_id"]
    f.ids = ids
    if len(ids) and (pc.min(ids).as_py(), pc.max(ids).as_py()) != (f.first, f.last):
        findings.append(("name_mismatch", f"{f.key} holds ids {pc.min(ids).as_py()}..{pc.max(ids).as_py()}"))
    wrong = pc.sum(misplaced(columns["trade_time"], f.minute)).as_py() or 0
    if wrong:
        findings.append(("misplaced_trades", f"{f.key}: {wrong} trades of another minute"))
    return findings


def read_columns(
    data: bytes, extension: str, columns: list[str], *, archive: bool = False
) -> tuple[dict[str, pa.Array], str | None]:
    """The `columns` of a landed object by name (`symbol` as string, `trade_id` as int64,
    `trade_time` as UTC microseconds), and its schema when that is not the landing schema
    (drift). Raises what the reader raises on a file it cannot read."""
    drift = None
    if extension == ".parquet":
        parquet = pq.ParquetFile(io.BytesIO(data))
        if not any(parquet.schema.equals(landing_parquet_schema(u, archive=archive)) for u in ("ms", "us")):
            drift = str(parquet.schema_arrow)
        table = parquet.read(columns=columns)
    else:
        table = pacsv.read_csv(io.BytesIO(gzip.decompress(data))).select(columns)
    wanted = {"trade_id": pa.int64(), "trade_time": pa.timestamp("us", tz="UTC"), "symbol": pa.string()}
    arrays = {c: table.column(c).combine_chunks() for c in columns}
    return {c: a.cast(wanted[c], safe=False) if c in wanted else a for c, a in arrays.items()}, drift


def misplaced(times: pa.Array, minute: int) -> pa.Array:
    """True for each trade time (UTC microseconds) that is not in `minute`."""
    return pc.not_equal(pc.divide(times.cast(pa.int64()), 60_000_000), minute)


def _check_marker(
    doc: dict[str, Any], files: list[_File], report: AuditReport, symbol: str, minute: int
) -> None:
    present = {f.key.rsplit("/", 1)[-1]: f for f in files}
    listed = {entry["name"]: entry for entry in doc["files"]}
    for name in sorted(set(listed) - set(present)):
        report.add("missing_file", symbol, minute, f"the marker lists {name}, which is not there")
    for name in sorted(set(present) - set(listed)):
        report.add("unlisted_file", symbol, minute, f"{name} is not in the minute's marker")
    for name in sorted(set(listed) & set(present)):
        entry, f = listed[name], present[name]
        if not f.data:
            continue
        if entry["bytes"] != len(f.data):
            report.add(
                "size_mismatch", symbol, minute, f"{name}: {len(f.data)} bytes, marker says {entry['bytes']}"
            )
        digest = base64.b64encode(hashlib.sha256(f.data).digest()).decode()
        if entry["sha256"] != digest:
            report.add(
                "checksum_mismatch", symbol, minute, f"{name}: sha256 {digest}, marker says {entry['sha256']}"
            )
        if f.ids is not None and entry["rows"] != len(f.ids):
            report.add(
                "row_count_mismatch",
                symbol,
                minute,
                f"{name}: {len(f.ids)} rows, marker says {entry['rows']}",
            )
    if doc["rows"] != sum(entry["rows"] for entry in doc["files"]):
        report.add("row_count_mismatch", symbol, minute, "the marker's rows are not the sum of its files'")


def _check_continuity(
    files: list[_File], declared: list[tuple[int, int, int]], report: AuditReport, symbol: str
) -> None:
    arrays = [f.ids for f in files if f.ids is not None and len(f.ids)]
    if not arrays:
        return
    combined = pa.chunked_array(arrays).combine_chunks()
    ordered = combined.take(pc.sort_indices(combined))
    step = pc.subtract(ordered[1:], ordered[:-1])
    duplicates = pc.sum(pc.equal(step, 0)).as_py() or 0
    if duplicates:
        owners = Counter(f.key.rsplit("/", 1)[-1] for f in files if f.ids is not None)
        detail = f"{duplicates} trade ids appear more than once"
        if any(n > 1 for n in owners.values()):
            detail += f"; files with the same name: {[k for k, n in owners.items() if n > 1]}"
        overlapping = _overlapping_files(files)
        if overlapping:
            detail += f"; overlapping files: {overlapping[:5]}"
        report.add("duplicate_trades", symbol, None, detail)
    jumps = pc.indices_nonzero(pc.greater(step, 1))
    for index in jumps.to_pylist():
        before, after = ordered[index].as_py(), ordered[index + 1].as_py()
        first, last = before + 1, after - 1
        known = [d for d in declared if d[0] <= first and last <= d[1]]
        if known:
            report.known_gaps.append(
                Problem(
                    "declared_gap", symbol, label(known[0][2]), f"ids {first}..{last} ({last - first + 1})"
                )
            )
        else:
            report.add("gap", symbol, None, f"ids {first}..{last} missing ({last - first + 1} trades)")


def _overlapping_files(files: list[_File]) -> list[str]:
    ordered = sorted(files, key=lambda f: (f.first, f.last))
    return [
        f"{a.key.rsplit('/', 1)[-1]} & {b.key.rsplit('/', 1)[-1]}"
        for a, b in itertools.pairwise(ordered)
        if b.first <= a.last
    ]
