"""The frame journal: what a crash leaves is read back, retired batches are not, torn tails are skipped."""

from __future__ import annotations

import errno
import queue
import threading
from pathlib import Path

import pytest

from collector.landing.journal import Journal
from tests.support.disk import FillingDisk


def reopened(root: Path) -> Journal:
    """The journal a restart sees."""
    return Journal(root)


def test_appended_frames_read_back_in_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("BTCUSDT-100-5", 11, [b'{"e":"trade","t":5}'])
    journal.append("BTCUSDT-100-5", 12, [b'{"e":"trade","t":6}', b'{"e":"trade","t":7}'])
    (left,) = reopened(tmp_path).leftovers()
    assert left.batch_id == "BTCUSDT-100-5"
    assert list(left.frames()) == [
        (11, b'{"e":"trade","t":5}'),
        (12, b'{"e":"trade","t":6}'),
        (12, b'{"e":"trade","t":7}'),  # a chunk's frames share its read's stamp
    ]


def test_one_read_into_several_batches_is_one_record_group(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append_read(9, [("BTCUSDT-100-1", [b"a", b"b"]), ("ETHUSDT-100-7", [b"c"])])
    journal.note_gap("ETHUSDT-100-7", b'{"first_missing": 5}')
    left = {b.batch_id: b for b in reopened(tmp_path).leftovers()}
    assert list(left["BTCUSDT-100-1"].frames()) == [(9, b"a"), (9, b"b")]
    assert list(left["ETHUSDT-100-7"].frames()) == [(9, b"c")]
    assert list(left["ETHUSDT-100-7"].gaps()) == [b'{"first_missing": 5}']


def test_a_torn_last_record_is_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("BTCUSDT-100-5", 11, [b'{"t":5}'])
    journal.append("BTCUSDT-100-6", 12, [b'{"t":6}', b'{"t":7}'])
    journal.close_all()
    (segment,) = tmp_path.glob("*.frames")
    segment.write_bytes(segment.read_bytes()[:-5])  # the last write was cut short
    (left,) = reopened(tmp_path).leftovers()
    assert (left.batch_id, list(left.frames())) == ("BTCUSDT-100-5", [(11, b'{"t":5}')])


def test_discarded_batches_are_not_left_over_and_leftovers_are_ordered_by_minute(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    for batch_id in ("ETHUSDT-101-9", "BTCUSDT-101-7", "BTCUSDT-100-5"):
        journal.append(batch_id, 1, [b"{}"])
    journal.discard("ETHUSDT-101-9")
    assert [b.batch_id for b in reopened(tmp_path).leftovers()] == ["BTCUSDT-100-5", "BTCUSDT-101-7"]


def test_frames_with_newlines_cannot_split_a_record(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("BTCUSDT-1-1", 5, [b'{"a":\n1}', b'{"b":2}'])
    (left,) = reopened(tmp_path).leftovers()
    assert list(left.frames()) == [(5, b'{"a": 1}'), (5, b'{"b":2}')]


def test_segments_go_oldest_first_once_nothing_open_needs_them(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=100)

    def segments() -> list[int]:
        return sorted(int(p.name.split(".")[0]) for p in tmp_path.glob("*.frames"))

    for i in range(6):  # each record fills a segment: one segment per batch
        journal.append(f"BTCUSDT-100-{i}", 1, [b"x" * 120])
    assert segments() == [1, 2, 3, 4, 5, 6]
    journal.discard("BTCUSDT-100-1")  # the oldest is still open: nothing can go
    assert segments()[:6] == [1, 2, 3, 4, 5, 6]
    journal.discard("BTCUSDT-100-0")
    assert segments()[:4] == [3, 4, 5, 6]  # the segments of batches 0 and 1 are gone
    assert {b.batch_id for b in reopened(tmp_path).leftovers()} == {f"BTCUSDT-100-{i}" for i in range(2, 6)}
    for i in range(2, 6):
        journal.discard(f"BTCUSDT-100-{i}")
    journal.close_all()
    assert list(tmp_path.glob("*.frames")) == []  # a clean stop leaves nothing


def test_a_batch_still_open_at_a_stop_keeps_its_segment(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append("BTCUSDT-100-5", 1, [b"{}"])
    journal.close_all()
    assert [b.batch_id for b in reopened(tmp_path).leftovers()] == ["BTCUSDT-100-5"]


def test_a_journal_of_the_earlier_one_file_per_batch_layout_is_read(tmp_path: Path) -> None:
    legacy = b'11 {"t":5}\nnot-a-stamp {"t":6}\n\n13 {"t":7}\n14 {"t":8'  # its last write cut short
    (tmp_path / "BTCUSDT-100-5.frames").write_bytes(legacy)
    (left,) = Journal(tmp_path).leftovers()
    assert (left.batch_id, list(left.frames())) == ("BTCUSDT-100-5", [(11, b'{"t":5}'), (13, b'{"t":7}')])


def test_appends_and_discards_from_two_threads_keep_every_open_batch(tmp_path: Path) -> None:
    """The event loop appends while the sealer's thread retires batches, across many segments."""
    journal = Journal(tmp_path, segment_bytes=4096)
    appended: queue.Queue[str | None] = queue.Queue()

    def retire() -> None:
        while (batch_id := appended.get()) is not None:
            journal.discard(batch_id)

    worker = threading.Thread(target=retire)
    worker.start()
    for i in range(2000):
        journal.append(f"S-1-{i}", i, [b"frame-%d" % i])
        if i % 2 == 0:
            appended.put(f"S-1-{i}")
    appended.put(None)
    worker.join(60)
    left = reopened(tmp_path).leftovers()
    assert sorted(int(b.batch_id.rsplit("-", 1)[1]) for b in left) == list(range(1, 2000, 2))


def test_a_write_the_full_disk_refuses_is_kept_whole_and_written_in_order_once_it_takes_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import collector.files

    journal = Journal(tmp_path)
    journal.append("BTCUSDT-100-1", 1, [b'{"t":1}'])
    disk = FillingDisk(room=20)  # the next record fits in part: a short write, then ENOSPC
    monkeypatch.setattr(collector.files, "os", disk)
    journal.append("BTCUSDT-100-1", 2, [b'{"t":2}', b'{"t":3}'])
    journal.note_gap("ETHUSDT-100-9", b'{"first_missing": 4}')
    journal.append("ETHUSDT-100-9", 3, [b'{"t":9}'])
    assert journal.failure is not None and journal.failure.errno == errno.ENOSPC
    assert journal.unwritten_bytes > 0 and not journal.flush()
    (segment,) = tmp_path.glob("*.frames")
    assert segment.read_bytes() == b'V 1\nB BTCUSDT-100-1 1 1\n{"t":1}\n'  # the torn record was taken back
    left = {b.batch_id: list(b.frames()) for b in reopened(tmp_path).leftovers()}
    assert left == {"BTCUSDT-100-1": [(1, b'{"t":1}')]}  # a crash now: what was written, no torn line

    disk.room = 10**6  # space again
    journal.discard("BTCUSDT-100-1")  # behind the kept records, in order
    assert journal.flush() and journal.failure is None and journal.unwritten_bytes == 0
    journal.append("ETHUSDT-100-9", 4, [b'{"t":10}'])
    (left,) = reopened(tmp_path).leftovers()
    assert (left.batch_id, list(left.frames()), list(left.gaps())) == (
        "ETHUSDT-100-9",
        [(3, b'{"t":9}'), (4, b'{"t":10}')],
        [b'{"first_missing": 4}'],
    )


def test_a_segment_that_cannot_be_begun_keeps_its_records_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import collector.files

    disk = FillingDisk(room=0)  # not even the first segment's header
    monkeypatch.setattr(collector.files, "os", disk)
    journal = Journal(tmp_path)
    journal.append("BTCUSDT-100-1", 1, [b'{"t":1}'])
    assert journal.unwritten_bytes and list(tmp_path.glob("*.frames")) == []  # no empty segment left
    disk.room = 10**6
    assert journal.flush()
    (left,) = reopened(tmp_path).leftovers()
    assert list(left.frames()) == [(1, b'{"t":1}')]
