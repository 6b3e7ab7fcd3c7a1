"""The frame journal: what a crash leaves is read back, and garbage in it is passed over."""

from __future__ import annotations

from pathlib import Path

from collector.journal import Journal


def test_appended_frames_read_back_in_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("BTCUSDT-100-5", 11, [b'{"e":"trade","t":5}'])
    journal.append("BTCUSDT-100-5", 12, [b'{"e":"trade","t":6}', b'{"e":"trade","t":7}'])
    (left,) = journal.leftovers()
    assert left.batch_id == "BTCUSDT-100-5"
    assert list(left.frames()) == [
        (11, b'{"e":"trade","t":5}'),
        (12, b'{"e":"trade","t":6}'),
        (12, b'{"e":"trade","t":7}'),  # a chunk's frames share its read's stamp
    ]


def test_a_torn_last_line_and_garbage_lines_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "BTCUSDT-100-5.frames").write_bytes(
        b'11 {"t":5}\nnot-a-stamp {"t":6}\n\n13 {"t":7}\n14 {"t":8'  # the last write was cut short
    )
    (left,) = Journal(tmp_path).leftovers()
    assert list(left.frames()) == [(11, b'{"t":5}'), (13, b'{"t":7}')]


def test_discard_removes_the_file_and_leftovers_are_ordered_by_minute(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    for batch_id in ("ETHUSDT-101-9", "BTCUSDT-100-5", "BTCUSDT-101-7"):
        journal.append(batch_id, 1, [b"{}"])
    journal.discard("ETHUSDT-101-9")
    journal.close_all()
    assert [b.batch_id for b in journal.leftovers()] == ["BTCUSDT-100-5", "BTCUSDT-101-7"]


def test_frames_with_newlines_cannot_split_a_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("BTCUSDT-1-1", 5, [b'{"a":\n1}', b'{"b":2}'])
    (left,) = journal.leftovers()
    assert list(left.frames()) == [(5, b'{"a": 1}'), (5, b'{"b":2}')]
