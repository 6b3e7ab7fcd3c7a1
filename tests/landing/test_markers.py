"""Minute completion markers: written last, complete, for quiet minutes too, rewritten for late data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collector.lake.completion import (
    LandedFile,
    UnfilledGap,
    build_manifest,
    final_minutes,
    merge_file,
    parse_manifest,
)
from collector.lake.layout import marker_key
from collector.lake.sinks import LocalSink
from collector.landing.markers import MarkerBook, MarkerWriter
from collector.logs import get_logger

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
    from collector.lake.completion import merge_manifests

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


def test_a_record_the_full_disk_refuses_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import collector.files
    from tests.support.disk import FillingDisk

    book = MarkerBook(tmp_path)
    first = LandedFile(
        name="batch-1-2.parquet", bytes=9, sha256="x", rows=2, first_trade_id=1, last_trade_id=2
    )
    book.record("BTCUSDT", 5, first)
    monkeypatch.setattr(collector.files, "os", FillingDisk(room=30))  # a short write, then ENOSPC
    later = LandedFile(
        name="batch-3-4.parquet", bytes=9, sha256="y", rows=2, first_trade_id=3, last_trade_id=4
    )
    with pytest.raises(OSError, match="No space left on device"):
        book.record("BTCUSDT", 5, later)
    monkeypatch.undo()
    assert [f.name for f in book.files_of("BTCUSDT", 5)] == ["batch-1-2.parquet"]  # as if never tried
    book.record("BTCUSDT", 5, later)  # the uploader's retry, once there is room
    assert [f.name for f in MarkerBook(tmp_path).files_of("BTCUSDT", 5)] == [
        "batch-1-2.parquet",
        "batch-3-4.parquet",
    ]
