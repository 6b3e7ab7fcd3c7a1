"""`collector audit` on the market-wide layout: a landing directory whose minutes MarketMinutes
really assembled from spooled batches and landed (real parts, real markers, a real LocalSink)
passes, each planted defect is found and said where, and the CLI audits both layouts at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from collector.audit.market import audit_market
from collector.audit.report import AuditReport, render
from collector.counters import Registry
from collector.lake.completion import UnfilledGap, build_manifest, landed_file
from collector.lake.layout import (
    marker_key,
    market_marker_key,
    market_object_key,
    market_prefix,
    market_source_key,
    object_key,
    parse_object_key,
)
from collector.lake.market_manifest import MarketFile, SymbolShare, build_market_manifest
from collector.lake.parquet import encode_batch
from collector.lake.sinks import LocalSink, sha256_b64
from collector.landing.market_minutes import MarketMinutes
from collector.landing.spool import Spool, Spooled
from collector.logs import get_logger
from tests.conftest import REPO
from tests.support.batches import batch, market_part

MINUTE = 29_400_000  # 2025-11-24T16:00Z
MINUTES = 5
A, B, QUIET = "AAAUSDT", "BBBUSDT", "QUIETUSDT"


class _Budget:
    def release(self, size: int) -> None: ...

    def holds(self, size: int) -> None: ...


class Lake:
    """A real landing directory: each market minute assembled by MarketMinutes from real spooled
    batches and landed the way an uploader lands it; per-symbol objects and markers beside it."""

    def __init__(self, tmp: Path, output_format: str = "parquet", part_rows: int = 10**6) -> None:
        self.output_format = output_format
        self.spool = Spool(tmp / "spool")
        self.root = tmp / "landing"
        self.sink = LocalSink(self.root)
        self.members: dict[str, int] = {}
        self.gaps: dict[tuple[str, int], list[UnfilledGap]] = {}
        self.next_id = {A: 1_000, B: 50_000, QUIET: 7}
        self.queued: list[Spooled] = []
        self.market = MarketMinutes(
            root=tmp / "spool" / "market", spool=self.spool, sink=self.sink, output_format=output_format,
            members=self.members.items, final=lambda s, m, now: True, still_expected=lambda s: True,
            gaps_in=lambda s, m: self.gaps.get((s, m), []), log=get_logger(), metrics=Registry(),
            part_rows=part_rows,
        )  # fmt: skip
        self.market.enqueue = self.queued.append
        self.market.budget = _Budget()

    def minute(self, minute: int, trades: dict[str, int], covered: tuple[str, ...] = ()) -> None:
        """Assemble and land `minute`: `trades[symbol]` trades each, ids continuing per symbol."""
        for symbol in (*trades, *covered):
            self.members.setdefault(symbol, minute)
        for symbol, n in trades.items():
            self._source(symbol, self.next_id[symbol], n, minute)
            self.next_id[symbol] += n
        self._assemble((minute + 1) * 60 + 30)

    def late(self, symbol: str, minute: int, first: int, n: int) -> None:
        """Trades that come after `minute` was marked: its next part and a marker revision."""
        self._source(symbol, first, n, minute)
        self._assemble((self.market.cursor or minute) * 60 + 40)

    def own(self, symbol: str, minute: int, first: int, n: int) -> str:
        """A per-symbol object (and that minute's per-symbol marker), as for a watched symbol."""
        b = batch(symbol, first, n, minute)
        key = object_key(symbol=symbol, minute=minute, first_trade_id=first, last_trade_id=first + n - 1)
        data = encode_batch(b, "parquet")
        self.sink.put(key, data)
        _, _, entry = landed_file(key, len(data), sha256_b64(data), n)  # type: ignore[misc]
        doc = build_manifest(symbol, minute, [entry], written_at_s=0)
        self.sink.put_marker(marker_key(symbol, minute), json.dumps(doc).encode())
        return key

    def _source(self, symbol: str, first: int, n: int, minute: int) -> None:
        b = batch(symbol, first, n, minute)
        key = market_source_key(object_key(symbol=symbol, minute=minute, first_trade_id=first,
                                           last_trade_id=first + n - 1))  # fmt: skip
        entry = self.spool.put(key, encode_batch(b, self.output_format))
        self.market.add_source(Spooled(entry, parse_object_key(key), b.rows))

    def _assemble(self, now_s: float) -> None:
        asyncio.run(self.market.assemble_once(now_s))
        for spooled in self.queued:
            self.sink.put(spooled.entry.key, self.spool.read(spooled.entry), source=spooled.entry.path)
            self.market.landed(spooled.entry.key)
            self.spool.remove(spooled.entry)
        self.queued.clear()

    # ---- reading and planting -----------------------------------------------------------------

    def folder(self, minute: int) -> Path:
        return self.root / market_prefix(minute)

    def marker(self, minute: int) -> Path:
        return self.root / market_marker_key(minute)

    def doc(self, minute: int) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.marker(minute).read_text())
        return doc

    def edit(self, minute: int, change: Any) -> None:
        doc = self.doc(minute)
        change(doc)
        self.marker(minute).write_text(json.dumps(doc))

    def part(self, minute: int, seq: int = 0) -> Path:
        (path,) = self.folder(minute).glob(f"part-{seq:03d}-*")
        return path

    def audit(self, end: int = MINUTE + MINUTES, **options: Any) -> AuditReport:
        return audit_market(self.sink, MINUTE, end, now_s=(MINUTE + 60) * 60, **options)


def clean(tmp: Path, output_format: str = "parquet", part_rows: int = 10**6) -> Lake:
    """Five minutes of three symbols: QUIETUSDT covered in every minute, trading in one; the
    second minute has a late part (two ids that came after its marker)."""
    lake = Lake(tmp, output_format, part_rows)
    lake.minute(MINUTE, {A: 5, B: 3}, covered=(QUIET,))
    lake.minute(MINUTE + 1, {A: 5, B: 3})
    lake.next_id[A] += 2  # 1010 and 1011 come late, after minute 1 was marked
    lake.minute(MINUTE + 2, {A: 5, QUIET: 2})
    lake.late(A, MINUTE + 1, 1_010, 2)
    lake.minute(MINUTE + 3, {A: 5, B: 3})
    lake.minute(MINUTE + 4, {A: 5})
    return lake


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return clean(tmp_path)


def _only(report: AuditReport, kind: str) -> str:
    """The one problem of `kind`: where and what, as the text report prints it."""
    (problem,) = [p for p in report.problems if p.kind == kind]
    assert problem.layout == "market"
    return f"{problem.symbol} {problem.minute}: {problem.detail}"


def test_a_clean_market_lake_passes_with_its_figures(lake: Lake) -> None:
    assert lake.doc(MINUTE + 1)["revision"] == 2 and len(lake.doc(MINUTE + 1)["files"]) == 2
    report = lake.audit()
    assert report.ok, report.problems
    market = report.as_dict()["market"]
    assert (market["minutes"], market["markers"], market["files"], market["symbols"]) == (5, 5, 6, 3)
    assert market["rows"] == sum(lake.doc(MINUTE + i)["rows"] for i in range(MINUTES)) == 38
    assert market["bytes"] == sum(p.stat().st_size for p in lake.root.rglob("part-*"))
    assert market["max_files_per_minute"] == 2 and market["pending_minutes"] == 0
    text = render(report)
    assert "for the market-wide layout" in text and "checked 38 trades of 3 symbols in 5 minutes" in text
    assert text.endswith("OK: no defects found")


def test_gzip_csv_parts_are_audited_the_same_way(tmp_path: Path) -> None:
    lake = clean(tmp_path, "csv.gz")
    assert lake.part(MINUTE).name.endswith(".csv.gz")
    report = lake.audit()
    assert report.ok and report.market is not None and report.market.rows == 38, report.problems
    lake.edit(MINUTE + 3, lambda doc: doc["symbols"][B].update(first_trade_id=50_005))
    victim = lake.part(MINUTE + 4)
    victim.write_bytes(victim.read_bytes()[:-3])
    report = lake.audit()
    assert report.counts == {"id_range_mismatch": 1, "unreadable_file": 1, "size_mismatch": 1,
                             "checksum_mismatch": 1}, report.problems  # fmt: skip
    assert victim.name in _only(report, "unreadable_file")


@pytest.mark.parametrize("output_format", ["parquet", "csv.gz"])
def test_minutes_in_several_parts_audit_clean(tmp_path: Path, output_format: str) -> None:
    lake = clean(tmp_path, output_format, part_rows=3)
    assert len(lake.doc(MINUTE)["files"]) == 3  # 8 trades: 3, 3 and 2
    report = lake.audit()
    assert report.ok, report.problems
    assert report.market is not None and report.market.rows == 38 and report.market.files == 15


def test_parts_of_one_assembly_out_of_order_are_found(tmp_path: Path) -> None:
    """Part k's last (symbol, id) must come before part k+1's first in a minute marked once: a
    reader of the minute's parts in order, or of their statistics, is misled otherwise."""
    lake = Lake(tmp_path)
    lake.members.update({A: MINUTE})
    first, second = market_part([batch(A, 1_003, 3)]), market_part([batch(A, 1_000, 3)])
    files = []
    for seq, data in enumerate((first, second)):
        key = market_object_key(MINUTE, seq, hashlib.sha256(data).hexdigest())
        lake.sink.put(key, data)
        files.append((MarketFile(key.rsplit("/", 1)[1], len(data), sha256_b64(data), 3),
                      [SymbolShare(A, 3, 1_003 - 3 * seq, 1_005 - 3 * seq)]))  # fmt: skip
    doc = build_market_manifest(MINUTE, files, [A], {}, written_at_s=0)
    lake.sink.put_marker(market_marker_key(MINUTE), json.dumps(doc).encode())
    report = lake.audit(MINUTE + 1)
    assert report.counts == {"unsorted_trades": 1}, report.problems
    assert f"{files[1][0].name} starts at {A} 1000, not after {files[0][0].name}'s last row, {A} 1005" in (
        _only(report, "unsorted_trades")
    )


def test_minutes_after_the_last_market_marker_are_pending_not_missing(lake: Lake) -> None:
    lake.marker(MINUTE + 4).unlink()
    report = lake.audit()
    assert report.ok, report.problems
    assert (
        report.market is not None and report.market.pending_minutes == 1 and report.market.pending_rows == 5
    )
    assert "market pending: 1 minutes (5 trades) from 2025-11-24T16:04Z on" in render(report)


def test_a_range_without_market_data_reports_nothing_of_it(lake: Lake) -> None:
    report = audit_market(lake.sink, MINUTE - 600, MINUTE - 1, now_s=(MINUTE + 60) * 60)
    assert report.ok and report.market is None


def test_a_missing_marker_and_a_missing_minute_are_found(lake: Lake) -> None:
    lake.marker(MINUTE + 1).unlink()
    report = lake.audit()
    assert report.counts == {"missing_marker": 1}
    assert (
        _only(report, "missing_marker")
        == "_market 2025-11-24T16:01Z: Binance/_market/2025/11/24/16/01/ has no _SUCCESS"
    )
    shutil.rmtree(lake.folder(MINUTE + 2))  # the whole minute: no marker and no part
    report = lake.audit()
    assert report.counts["missing_minute"] == 1 and "16/02/ has no _SUCCESS" in _only(
        report, "missing_minute"
    )
    assert report.counts["gap"] == 1 and "ids 1012..1016 missing" in _only(
        report, "gap"
    )  # AAAUSDT's, gone too


@pytest.mark.parametrize(
    ("plant", "says"),
    [
        (lambda path: path.write_text("{not json"), "not JSON"),
        (lambda path: path.write_text(json.dumps({**json.loads(path.read_text()), "covered": None})),
         "field 'covered' is missing or not a list"),
    ],
)  # fmt: skip
def test_an_unreadable_marker_is_named_with_the_error(lake: Lake, plant: Any, says: str) -> None:
    plant(lake.marker(MINUTE + 3))
    report = lake.audit()
    assert report.counts == {"bad_marker": 1}
    where = _only(report, "bad_marker")
    assert (
        where.startswith("_market 2025-11-24T16:03Z: Binance/_market/2025/11/24/16/03/_SUCCESS: ")
        and says in where
    )


def test_a_part_with_a_corrupted_byte_or_a_wrong_size_is_found(lake: Lake) -> None:
    victim = lake.part(MINUTE + 2)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    report = lake.audit()
    assert report.counts["checksum_mismatch"] == 1 and "name_mismatch" not in report.counts
    listed = lake.doc(MINUTE + 2)["files"][0]["sha256"]
    assert _only(report, "checksum_mismatch") == (
        f"_market 2025-11-24T16:02Z: {victim.relative_to(lake.root)}: sha256 {sha256_b64(bytes(data))}, "
        f"marker says {listed}"
    )
    victim.write_bytes(bytes(data) + b"\0")
    report = lake.audit()
    assert f"{victim.name}: {len(data) + 1} bytes, marker says {len(data)}" in _only(report, "size_mismatch")


def test_a_part_its_marker_does_not_list_is_found(lake: Lake) -> None:
    data = market_part([batch("CCCUSDT", 1, 4, MINUTE + 3)])
    key = market_object_key(MINUTE + 3, 1, hashlib.sha256(data).hexdigest())
    (lake.root / key).write_bytes(data)
    report = lake.audit()
    assert report.counts == {"unlisted_file": 1}
    assert _only(report, "unlisted_file") == (
        f"_market 2025-11-24T16:03Z: {key} is not in the minute's marker: "
        "readers following markers miss its 4 trades"
    )


def test_a_symbols_rows_or_ids_that_disagree_with_the_marker_are_found(lake: Lake) -> None:
    part = lake.part(MINUTE).name

    def fewer_rows(doc: dict[str, Any]) -> None:
        doc["symbols"][B]["rows"] -= 1
        doc["rows"] -= 1
        doc["files"][0]["rows"] -= 1

    lake.edit(MINUTE, fewer_rows)
    report = lake.audit()
    assert report.counts == {"row_count_mismatch": 2}
    details = [f"{p.symbol}: {p.detail}" for p in report.problems]
    assert f"BBBUSDT: Binance/_market/2025/11/24/16/00/{part}: 3 trades of BBBUSDT, marker says 2" in details
    assert f"_market: Binance/_market/2025/11/24/16/00/{part}: 8 rows, marker says 7" in details

    lake.edit(MINUTE, lambda doc: doc["symbols"][B].update(rows=3, last_trade_id=50_003))
    lake.edit(MINUTE, lambda doc: doc.update(rows=8) or doc["files"][0].update(rows=8))
    report = lake.audit()
    assert report.counts == {"id_range_mismatch": 1}
    assert _only(report, "id_range_mismatch").endswith(
        f"{part}: BBBUSDT ids 50000..50002, marker says 50000..50003"
    )


def test_trades_in_a_part_the_marker_does_not_list_for_their_symbol_are_found(lake: Lake) -> None:
    def without_b(doc: dict[str, Any]) -> None:
        del doc["symbols"][B]
        doc["rows"] -= 3
        doc["files"][0]["rows"] -= 3

    lake.edit(MINUTE + 1, without_b)
    report = lake.audit()
    assert report.counts == {"unlisted_symbol": 1, "row_count_mismatch": 1}  # the part's own rows too
    part = lake.part(MINUTE + 1).name
    assert _only(report, "unlisted_symbol") == (
        f"BBBUSDT 2025-11-24T16:01Z: Binance/_market/2025/11/24/16/01/{part} holds 3 trades of BBBUSDT; "
        "the marker does not list it for them"
    )
    assert "_market/BBBUSDT 2025-11-24T16:01Z" in render(report)


def test_a_hole_in_a_symbols_ids_is_a_gap_unless_a_marker_declares_it(tmp_path: Path) -> None:
    def hole(lake: Lake) -> AuditReport:
        lake.minute(MINUTE, {A: 5, B: 3})
        lake.next_id[A] += 4  # 1005..1008 never land
        lake.minute(MINUTE + 1, {A: 5, B: 3})
        lake.minute(MINUTE + 2, {A: 5, B: 3})
        return lake.audit(MINUTE + 3)

    report = hole(Lake(tmp_path / "undeclared"))
    assert report.counts == {"gap": 1} and not report.known_gaps
    assert _only(report, "gap") == (
        "AAAUSDT 2025-11-24T16:01Z: ids 1005..1008 missing (4 trades) "
        "between 2025-11-24T16:00Z and 2025-11-24T16:01Z"
    )
    declared = Lake(tmp_path / "declared")
    declared.gaps[(A, MINUTE + 1)] = [UnfilledGap(1_005, 1_008, "rest_unavailable")]
    report = hole(declared)
    assert report.ok, report.problems
    (known,) = report.known_gaps
    assert (known.kind, known.symbol, known.minute, known.detail, known.layout) == (
        "declared_gap", A, "2025-11-24T16:01Z", "ids 1005..1008 (4)", "market")  # fmt: skip
    partly = Lake(tmp_path / "partly")
    partly.gaps[(A, MINUTE)] = [UnfilledGap(1_005, 1_006, "not_served")]
    report = hole(partly)
    assert report.counts == {"gap": 1} and "ids 1007..1008 missing (2 trades)" in _only(report, "gap")


def test_the_same_trades_twice_in_a_minutes_parts_are_duplicates(lake: Lake) -> None:
    lake.late(B, MINUTE + 3, 50_007, 2)  # BBBUSDT's ids of minute 3 are 50006..50008: two of them again
    assert len(lake.doc(MINUTE + 3)["files"]) == 2
    report = lake.audit()
    assert report.counts == {"duplicate_trades": 1}
    assert _only(report, "duplicate_trades") == (
        "BBBUSDT 2025-11-24T16:03Z: 2 trade ids of BBBUSDT appear more than once in "
        "Binance/_market/2025/11/24/16/03/ (2 part(s) there)"
    )


def test_a_symbol_in_both_layouts_in_the_same_minute_is_found(lake: Lake) -> None:
    own = lake.own(B, MINUTE + 1, 50_003, 3)  # the very trades its market part holds
    lake.own(QUIET, MINUTE + 1, 5, 2)  # covered market-wide, with no trade there
    report = lake.audit()
    assert report.counts == {"both_layouts": 2}
    b, quiet = sorted((p for p in report.problems), key=lambda p: p.symbol)
    assert (b.symbol, b.minute, b.layout) == (B, "2025-11-24T16:01Z", "market")
    assert b.detail == (
        f"Binance/BBBUSDT/2025/11/24/16/01/ holds {own.rsplit('/', 1)[1]} (ids 50003..50005), and "
        "Binance/_market/2025/11/24/16/01/ holds its ids 50003..50005: the same minute stored in both layouts"
    )
    assert quiet.detail.endswith(
        "while the market marker of Binance/_market/2025/11/24/16/01/ covers QUIETUSDT with no trade"
    )


def test_a_gap_the_marker_declares_unfilled_while_its_parts_hold_it_is_stale(lake: Lake) -> None:
    gap = {"first_missing": 1_019, "last_missing": 1_025, "reason": "rest_unavailable", "detail": ""}
    lake.edit(MINUTE + 3, lambda doc: doc["unfilled_gaps"].update({A: [gap]}))
    report = lake.audit()
    assert report.counts == {"stale_gap": 1}
    assert _only(report, "stale_gap") == (
        "AAAUSDT 2025-11-24T16:03Z: the marker of Binance/_market/2025/11/24/16/03/ declares ids 1019..1025 "
        "unfilled, and its parts hold 3 of them"
    )


def test_a_gap_filled_by_a_late_part_is_no_longer_declared(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.minute(MINUTE, {A: 5})
    lake.next_id[A] += 2
    lake.gaps[(A, MINUTE + 1)] = [UnfilledGap(1_005, 1_006, "rest_unavailable")]
    lake.minute(MINUTE + 1, {A: 5})
    lake.gaps.clear()  # the retry filled it: nothing is missing any more
    lake.late(A, MINUTE + 1, 1_005, 2)
    report = lake.audit(MINUTE + 2)
    assert report.ok, report.problems


def test_the_cli_audits_both_layouts_and_says_where_a_defect_is(lake: Lake) -> None:
    for minute in range(MINUTE, MINUTE + MINUTES):  # a watched symbol beside the market
        lake.own("WATCHUSDT", minute, 9_000 + 10 * (minute - MINUTE), 10)
    done = _cli(lake.root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "for WATCHUSDT and the market-wide layout, 2025-11-24T16:00Z to 2025-11-24T16:05Z" in done.stdout
    assert "checked 50 trades in 5 minutes" in done.stdout  # per symbol
    assert (
        "market-wide (Binance/_market/), 2025-11-24T16:00Z to 2025-11-24T16:05Z: checked 38 trades"
        in done.stdout
    )
    assert done.stdout.rstrip().endswith("OK: no defects found")

    lake.marker(MINUTE + 2).unlink()
    victim = lake.part(MINUTE + 3)
    victim.write_bytes(victim.read_bytes()[:-1])
    done = _cli(lake.root)
    assert done.returncode == 1, done.stderr
    # The unreadable part's trades are missing too: AAAUSDT's ids of that minute are a gap.
    assert (
        "DEFECTS: checksum_mismatch 1, gap 1, missing_marker 1, size_mismatch 1, unreadable_file 1"
        in done.stdout
    )
    assert (
        "missing_marker _market 2025-11-24T16:02Z: Binance/_market/2025/11/24/16/02/ has no _SUCCESS"
        in done.stdout
    )
    assert f"size_mismatch _market 2025-11-24T16:03Z: {victim.relative_to(lake.root)}: " in done.stdout
    done = _cli(lake.root, "--json", "--from", "2025-11-24T16:00", "--to", "2025-11-24T16:05")
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["symbols"] == ["WATCHUSDT"] and report["minutes"] == 5
    assert report["market"]["markers"] == 4 and report["market"]["minutes"] == 5
    missing = next(p for p in report["problems"] if p["kind"] == "missing_marker")
    assert missing == {
        "kind": "missing_marker",
        "symbol": "_market",
        "minute": "2025-11-24T16:02Z",
        "detail": "Binance/_market/2025/11/24/16/02/ has no _SUCCESS",
        "layout": "market",
    }
    # --symbols: that symbol in whichever layout holds it; a market-only one is not "missing" per symbol
    done = _cli(lake.root, "--json", "--symbols", "QUIETUSDT")
    report = json.loads(done.stdout)
    assert (
        report["symbols"] == []
        and report["market"]["symbols"] == 1
        and "missing_minute" not in report["problem_counts"]
    )


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "audit", str(root), *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done
