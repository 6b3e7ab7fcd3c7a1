"""Minute completion markers: written last, complete, for quiet minutes too, rewritten for late data."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from collector.completion import (
    LandedFile,
    UnfilledGap,
    build_manifest,
    final_minutes,
    merge_file,
    parse_manifest,
)
from collector.layout import marker_key, parse_marker_key
from collector.logs import get_logger
from collector.markers import MarkerBook, MarkerWriter
from collector.sinks import LocalSink
from tests.conftest import Proc, collector_env, start_emulator, stop_cleanly, wait_for

# ---- the manifest ---------------------------------------------------------------------------


def _file(name: str, first: int, last: int, rows: int | None = None) -> LandedFile:
    return LandedFile(
        name=name,
        bytes=100,
        sha256="c2hhMjU2",
        rows=rows if rows is not None else last - first + 1,
        first_trade_id=first,
        last_trade_id=last,
    )


def test_a_manifest_sums_its_files_in_id_order() -> None:
    doc = build_manifest(
        "BTCUSDT",
        29_000_000,
        [_file("batch-11-20.parquet", 11, 20), _file("batch-1-10.parquet", 1, 10)],
        written_at_s=1.0,
    )
    assert doc["minute"] == "2025-02-19T21:20Z"
    assert (doc["rows"], doc["first_trade_id"], doc["last_trade_id"]) == (20, 1, 20)
    assert [f["name"] for f in doc["files"]] == ["batch-1-10.parquet", "batch-11-20.parquet"]
    assert parse_manifest(json.dumps(doc).encode()) == doc


def test_a_quiet_minute_has_a_manifest_with_zero_rows() -> None:
    doc = build_manifest("BTCUSDT", 29_000_000, [], written_at_s=1.0)
    assert (doc["rows"], doc["files"], doc["first_trade_id"], doc["last_trade_id"]) == (0, [], None, None)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"manifest_version": 1}', "'symbol' is missing"),
    ],
)
def test_a_broken_manifest_is_refused_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_manifest(data)


def test_merging_a_late_file_raises_the_revision_once() -> None:
    doc = build_manifest("BTCUSDT", 29_000_000, [_file("batch-1-10.parquet", 1, 10)], written_at_s=1.0)
    late = _file("backfill-11-12.parquet", 11, 12)
    merged = merge_file(doc, late, written_at_s=2.0)
    assert merged is not None
    assert (merged["rows"], merged["last_trade_id"], merged["revision"]) == (12, 12, 2)
    assert merge_file(merged, late, written_at_s=3.0) is None  # the same file again: nothing to say


# ---- deciding when a minute is final ---------------------------------------------------------

MINUTE = 29_000_000
END = (MINUTE + 1) * 60.0


def _writer(tmp_path: Path) -> tuple[MarkerWriter, LocalSink]:
    sink = LocalSink(tmp_path / "landing")
    writer = MarkerWriter(MarkerBook(tmp_path / "markers"), sink, grace_s=10.0, log=get_logger())
    writer.book.begin("BTCUSDT", MINUTE)
    return writer, sink


def _due(writer: MarkerWriter, now_s: float, **overrides: Any) -> int:
    args: dict[str, Any] = {
        "proven_until_s": END + 1,
        "open_gap_from_s": float("inf"),
        "pending": set(),
        "gaps_in": lambda symbol, minute: [],
    }
    args.update(overrides)
    return writer.mark_due("BTCUSDT", now_s, **args)


def test_a_minute_waits_for_grace_continuity_landing_and_gaps(tmp_path: Path) -> None:
    writer, sink = _writer(tmp_path)
    assert _due(writer, END + 9) == 0  # grace not over
    assert _due(writer, END + 11, proven_until_s=END - 0.001) == 0  # continuity not proven past the end
    assert _due(writer, END + 11, proven_until_s=None) == 0  # nothing seen yet
    assert _due(writer, END + 11, pending={MINUTE}) == 0  # a batch of it has not landed
    assert _due(writer, END + 11, open_gap_from_s=END - 30) == 0  # a gap may hold its trades
    assert sink.get(marker_key("BTCUSDT", MINUTE)) is None
    assert _due(writer, END + 11, open_gap_from_s=END) == 1  # a gap after its end does not matter
    doc = parse_manifest(sink.get(marker_key("BTCUSDT", MINUTE)) or b"")
    assert doc["rows"] == 0 and doc["revision"] == 1
    assert MarkerBook(tmp_path / "markers").cursor == {"BTCUSDT": MINUTE + 1}  # durable


def test_landed_files_go_into_the_marker_and_late_ones_rewrite_it(tmp_path: Path) -> None:
    writer, sink = _writer(tmp_path)
    key = "Binance/BTCUSDT/2025/02/19/21/20/batch-1-10.parquet"
    writer.after_landing(key, 123, "AAAA", 10)
    # A restart between landing and marking still knows the file.
    writer = MarkerWriter(MarkerBook(tmp_path / "markers"), sink, grace_s=10.0, log=get_logger())
    gap = UnfilledGap(11, 11, "rest_unavailable")
    assert _due(writer, END + 11, gaps_in=lambda s, m: [gap]) == 1
    first = parse_manifest(sink.get(marker_key("BTCUSDT", MINUTE)) or b"")
    listed = [{"first_missing": 11, "last_missing": 11, "reason": "rest_unavailable", "detail": ""}]
    assert (first["rows"], first["unfilled_gaps"], first["revision"]) == (10, listed, 1)
    assert first["files"][0] == {
        "name": "batch-1-10.parquet",
        "bytes": 123,
        "sha256": "AAAA",
        "rows": 10,
        "first_trade_id": 1,
        "last_trade_id": 10,
    }
    writer.after_landing("Binance/BTCUSDT/2025/02/19/21/20/backfill-11-11.parquet", 50, "BBBB", 1)
    writer.refresh_gaps("BTCUSDT", [MINUTE], lambda s, m: [])
    final = parse_manifest(sink.get(marker_key("BTCUSDT", MINUTE)) or b"")
    assert (final["rows"], final["last_trade_id"], final["unfilled_gaps"]) == (11, 11, [])
    assert final["revision"] == 3 and writer.rewritten == 2


def test_the_finality_rule_stops_at_the_first_minute_that_is_not_final() -> None:
    rule = {"now_s": END + 600, "grace_s": 10.0, "proven_until_s": END + 600, "open_gap_from_s": float("inf")}
    # Minute MINUTE + k ends at END + 60 k: ten of them end, with their grace, by END + 600.
    assert final_minutes(MINUTE, pending=set(), **rule) == range(MINUTE, MINUTE + 10)
    assert final_minutes(MINUTE, pending={MINUTE + 3}, **rule) == range(MINUTE, MINUTE + 3)
    assert final_minutes(MINUTE, pending=set(), limit=2, **rule) == range(MINUTE, MINUTE + 2)
    gap = {**rule, "open_gap_from_s": END + 125.0}  # a gap's trades may be in minute MINUTE + 3
    assert final_minutes(MINUTE, pending=set(), **gap) == range(MINUTE, MINUTE + 3)
    proven = {**rule, "proven_until_s": END + 60.0}  # nothing known after minute MINUTE + 1 ends
    assert final_minutes(MINUTE, pending=set(), **proven) == range(MINUTE, MINUTE + 2)
    assert final_minutes(MINUTE, pending=set(), **{**rule, "proven_until_s": None}) == range(MINUTE, MINUTE)


# ---- garbage on disk and in the landing zone ----------------------------------------------------


def test_an_unreadable_cursor_is_moved_aside_and_said_so(tmp_path: Path) -> None:
    (tmp_path / "markers").mkdir()
    (tmp_path / "markers" / "cursor.json").write_text('{"BTCUSDT": "soon"')
    book = MarkerBook(tmp_path / "markers")
    assert book.cursor == {}
    assert book.problem is not None and "is unreadable" in book.problem and "missing_marker" in book.problem
    assert [p.name.startswith("cursor.json.unreadable-") for p in (tmp_path / "markers").iterdir()] == [True]
    book.begin("BTCUSDT", MINUTE)
    assert MarkerBook(tmp_path / "markers").cursor == {"BTCUSDT": MINUTE}  # and it works again


def test_torn_and_foreign_lines_of_the_landed_record_are_skipped(tmp_path: Path) -> None:
    writer, _ = _writer(tmp_path)
    writer.after_landing("Binance/BTCUSDT/2025/02/19/21/20/batch-1-10.parquet", 123, "AAAA", 10)
    with open(tmp_path / "markers" / "landed.jsonl", "a") as handle:
        handle.write('[1, 2]\n{"symbol": "BTCUSDT", "minute": 5}\n{"symbol": "BTCUSDT", "minu')
    book = MarkerBook(tmp_path / "markers")
    assert [f.name for f in book.files_of("BTCUSDT", MINUTE)] == ["batch-1-10.parquet"]


def test_a_marker_that_is_not_a_manifest_is_reported_and_left_alone(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    writer, sink = _writer(tmp_path)
    assert _due(writer, END + 11) == 1
    key = marker_key("BTCUSDT", MINUTE)
    sink.put_marker(key, b"not a manifest")
    with capture_logs() as logs:
        writer.after_landing("Binance/BTCUSDT/2025/02/19/21/20/backfill-1-1.parquet", 50, "BBBB", 1)
    (event,) = [e for e in logs if e["event"] == "collector.marker_unreadable"]
    assert "not JSON" in event["error"] and "collector audit" in event["fix"]
    assert sink.get(key) == b"not a manifest"


# ---- the collector, end to end ----------------------------------------------------------------


def _minute_dirs(root: Path, symbol: str) -> dict[int, Path]:
    found = {}
    for path in (root / "Binance" / symbol).glob("*/*/*/*/*"):
        marker = parse_marker_key(f"{path.relative_to(root).as_posix()}/_SUCCESS")
        assert marker is not None
        found[marker[1]] = path
    return found


def _read_minute(path: Path) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
    marker = path / "_SUCCESS"
    doc = parse_manifest(marker.read_bytes()) if marker.exists() else None
    files = {p.name: p.read_bytes() for p in path.iterdir() if p.name != "_SUCCESS"}
    return doc, files


def _sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _ids(path: Path) -> list[int]:
    return [int(i) for i in pq.read_table(path, columns=["trade_id"]).column("trade_id").to_pylist()]


def test_markers_come_after_every_file_of_their_minute_and_quiet_minutes_get_one(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    # Trade times start 20 minutes ago and run 100 ms apart; after 1,200 trades the clock
    # jumps 200 s: at least two minutes without a trade, then 1,200 trades more.
    _, url = start_emulator(
        procs, "--count", "2400", "--rate", "400", "--clock-from-s", "1200",
        "--clock-step-ms", "100", "--clock-jump-every", "1200", "--clock-jump-s", "200",
    )  # fmt: skip
    collector = procs("run", env=collector_env(url, tmp_path))
    landing = tmp_path / "landing"
    last = collector.wait_event("collector.stats", lambda e: e["last_trade_id"].get("BTCUSDT") == 1_002_399)
    assert last["trades_received"] == {"BTCUSDT": 2400}
    dirs = wait_for(lambda: _minute_dirs(landing, "BTCUSDT") or None, what="partitions")
    first_minute = min(dirs)
    last_minute = max(m for m, p in _minute_dirs(landing, "BTCUSDT").items() if any(p.glob("*.parquet")))

    # Every minute before the last one with trades is final: continuity is proven past it.
    def all_marked() -> bool:
        found = _minute_dirs(landing, "BTCUSDT")
        return all(m in found and (found[m] / "_SUCCESS").exists() for m in range(first_minute, last_minute))

    wait_for(all_marked, what="a marker in every minute before the last")
    stop_cleanly(collector)

    dirs = _minute_dirs(landing, "BTCUSDT")
    assert set(range(first_minute, last_minute)) <= set(dirs)  # quiet minutes have a partition too
    quiet = 0
    ids: list[int] = []
    for minute in range(first_minute, last_minute):
        doc, files = _read_minute(dirs[minute])
        assert doc is not None, f"no marker for minute {minute}"
        # Written once, after all of the minute's data: it lists exactly the files there are.
        assert doc["revision"] == 1
        assert sorted(f["name"] for f in doc["files"]) == sorted(files)
        marker_written = (dirs[minute] / "_SUCCESS").stat().st_mtime_ns
        minute_ids: list[int] = []
        for entry in doc["files"]:
            data = files[entry["name"]]
            assert (entry["bytes"], entry["sha256"]) == (len(data), _sha(data))
            assert (dirs[minute] / entry["name"]).stat().st_mtime_ns <= marker_written
            file_ids = _ids(dirs[minute] / entry["name"])
            assert entry["rows"] == len(file_ids)
            assert (entry["first_trade_id"], entry["last_trade_id"]) == (min(file_ids), max(file_ids))
            minute_ids += file_ids
        assert doc["rows"] == len(minute_ids)
        assert doc["unfilled_gaps"] == []
        if doc["rows"] == 0:
            quiet += 1
            assert doc["first_trade_id"] is None and doc["files"] == []
        else:
            assert (doc["first_trade_id"], doc["last_trade_id"]) == (min(minute_ids), max(minute_ids))
        ids += minute_ids
    assert quiet >= 2
    assert sorted(ids) == list(range(1_000_000, 1_000_000 + len(ids)))


def test_a_gap_filled_on_retry_rewrites_the_markers_that_listed_it(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    # Trade 1,000,999 never comes on the stream; the first backfill meets five 503s and records
    # the id as unfilled (the minute's marker says so); the retry 8 s later fills it. (At 1 s the
    # retry could reopen the range before the marker pass on a loaded machine: no marker would
    # ever list the gap.)
    _, url = start_emulator(
        procs, "--count", "1500", "--rate", "300", "--clock-from-s", "1200", "--clock-step-ms", "100",
        "--skip-every", "1000", "--rest-unavailable-first", "5",
    )  # fmt: skip
    collector = procs("run", env=collector_env(url, tmp_path, backfill_retry_s="8"))
    unfilled = collector.wait_event("collector.gap_unfilled")
    assert (unfilled["first_missing"], unfilled["reason"]) == (1_000_999, "rest_unavailable")
    listed = collector.wait_event("collector.minute_marked", lambda e: e["unfilled_gaps"] == 1)
    collector.wait_event("collector.backfill_retry", lambda e: e["attempt"] == 2)
    collector.wait_event("collector.gap_filled")
    rewritten = collector.wait_event(
        "collector.marker_rewritten", lambda e: e["key"] == listed["key"] and e.get("unfilled_gaps") == 0
    )
    stop_cleanly(collector)

    doc = parse_manifest(Path(listed["key"]).read_bytes())
    assert doc["unfilled_gaps"] == [] and doc["revision"] == rewritten["revision"] >= 2
    # Never a marker without the gap and without the trades that filled it.
    for event in collector.named("collector.marker_rewritten"):
        assert event.get("unfilled_gaps") == 1 or event["rows"] == doc["rows"], event
    landed_ids = sorted(i for f in doc["files"] for i in _ids(Path(listed["key"]).parent / f["name"]))
    assert 1_000_999 in landed_ids and doc["rows"] == len(landed_ids)
    assert any(f["name"].startswith("backfill-") for f in doc["files"])


def test_a_past_minute_whose_marker_cannot_be_read_is_left_alone_not_overwritten(tmp_path: Path) -> None:
    """A marker of a day before today may be an import's: one the collector cannot read, it
    cannot merge with, so it leaves it (and says so) rather than list only its own files."""
    from structlog.testing import capture_logs

    writer, sink = _writer(tmp_path)
    key = marker_key("BTCUSDT", MINUTE)
    sink.put_marker(key, b'{"manifest_version": 1, "tor')
    with capture_logs() as logs:
        assert _due(writer, END + 86_400) == 1  # a day later; the minute is done with all the same
    (event,) = [e for e in logs if e["event"] == "collector.marker_unreadable"]
    assert "collector audit" in event["fix"] and sink.get(key) == b'{"manifest_version": 1, "tor'
    assert writer.book.cursor == {"BTCUSDT": MINUTE + 1}


def test_merging_with_a_marker_found_keeps_its_files_and_raises_its_revision_only_for_news() -> None:
    from collector.completion import merge_manifests

    archive = LandedFile(name="archive-1-10.parquet", bytes=100, sha256="AAAA", rows=10,
                         first_trade_id=1, last_trade_id=10)  # fmt: skip
    backfill = LandedFile(name="backfill-11-12.parquet", bytes=50, sha256="BBBB", rows=2,
                          first_trade_id=11, last_trade_id=12)  # fmt: skip
    found = build_manifest("BTCUSDT", MINUTE, [archive], revision=2, written_at_s=END)
    assert merge_manifests(found, build_manifest("BTCUSDT", MINUTE, [], written_at_s=END), "BTCUSDT",
                           MINUTE, written_at_s=END) is None  # fmt: skip
    mine = build_manifest(
        "BTCUSDT", MINUTE, [backfill], [UnfilledGap(13, 13, "not_served")], written_at_s=END
    )
    merged = merge_manifests(found, mine, "BTCUSDT", MINUTE, written_at_s=END + 1)
    assert merged is not None and merged["revision"] == 3 and merged["rows"] == 12
    assert [f["name"] for f in merged["files"]] == ["archive-1-10.parquet", "backfill-11-12.parquet"]
    assert [g["first_missing"] for g in merged["unfilled_gaps"]] == [13]
