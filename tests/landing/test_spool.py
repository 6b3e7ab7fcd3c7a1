"""The durable spool: atomic files, checksums in names, recovery order, clear errors."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import pytest

from collector.exceptions import SpoolError
from collector.files import read_jsonl
from collector.landing.spool import Spool, SpoolEntry


def test_put_then_pending_returns_the_object_with_its_checksum(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    entry = spool.put("Binance/BTCUSDT/2024/08/08/23/54/batch-1-2.parquet", b"data")
    (found,) = spool.pending()
    assert found == entry
    assert spool.read(found) == b"data"
    assert spool.bytes_used() == 4


def test_pending_is_ordered_by_minute_then_trade_id(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    keys = [
        "Binance/BTCUSDT/2024/08/09/00/00/batch-100-200.parquet",
        "Binance/BTCUSDT/2024/08/08/23/59/batch-9-99.parquet",
        "Binance/BTCUSDT/2024/08/08/23/59/batch-1-8.parquet",
    ]
    for key in keys:
        spool.put(key, key.encode())
    assert [e.key for e in spool.pending()] == [keys[2], keys[1], keys[0]]


def test_leftover_temporary_files_are_discarded_on_recovery(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.put("Binance/BTCUSDT/2024/08/08/23/54/batch-1-2.parquet", b"ok")
    torn = (
        tmp_path
        / "objects"
        / "Binance"
        / "BTCUSDT"
        / "2024"
        / "08"
        / "08"
        / "23"
        / "54"
        / ".batch-3-4.parquet.1.tmp"
    )
    torn.write_bytes(b"half")
    assert [e.key for e in spool.pending()] == ["Binance/BTCUSDT/2024/08/08/23/54/batch-1-2.parquet"]
    assert not torn.exists()


def test_a_corrupted_spool_file_is_detected_and_moved_aside(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    entry = spool.put("Binance/BTCUSDT/2024/08/08/23/54/batch-1-2.parquet", b"good bytes")
    entry.path.write_bytes(b"flipped bits")
    with pytest.raises(SpoolError, match="is corrupt"):
        spool.read(entry)
    assert spool.pending() == []
    assert list((tmp_path / "corrupt").rglob("batch-1-2.parquet~*"))


def test_pruning_cleans_empty_partition_directories_and_keeps_full_ones(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    entry = spool.put("Binance/BTCUSDT/2024/08/08/23/54/batch-1-2.parquet", b"x")
    kept = spool.put("Binance/BTCUSDT/2024/08/08/23/55/batch-3-4.parquet", b"y")
    spool.remove(entry)
    assert spool.prune() == 1  # 23/54 only: 23/55 and its parents hold an object
    spool.remove(kept)
    assert spool.prune() == 7  # 23/55, then every parent up to Binance/
    assert list((tmp_path / "objects").iterdir()) == []


def test_puts_removes_and_pruning_in_one_minute_from_three_threads_never_fail(tmp_path: Path) -> None:
    """The sealer spools a minute's next batch while an uploader removes its last one and the
    housekeeping prunes empty directories: the put must never lose its directory."""
    spool = Spool(tmp_path)
    minute = "Binance/BTCUSDT/2024/08/08/23/54"
    entries: queue.Queue[SpoolEntry | None] = queue.Queue()
    failures: list[BaseException] = []

    def remover() -> None:
        while (entry := entries.get()) is not None:
            try:
                spool.remove(entry)
            except BaseException as exc:  # pragma: no cover - what the test is looking for
                failures.append(exc)

    done = threading.Event()

    def pruner() -> None:
        while not done.is_set():
            try:
                spool.prune()
            except BaseException as exc:  # pragma: no cover - what the test is looking for
                failures.append(exc)

    threads = [threading.Thread(target=remover), threading.Thread(target=pruner)]
    for thread in threads:
        thread.start()
    try:
        for i in range(1000):
            entries.put(spool.put(f"{minute}/batch-{i}-{i}.parquet", b"x"))
    finally:
        entries.put(None)
        done.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    assert spool.pending() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_an_unwritable_spool_directory_is_a_clear_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(SpoolError, match="COLLECTOR_SPOOL_DIR"):
            Spool(tmp_path / "spool")
    finally:
        tmp_path.chmod(0o700)


def test_a_spool_path_that_is_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SpoolError, match="cannot create spool directory"):
        Spool(tmp_path / "file")


def test_a_record_with_a_torn_or_foreign_line_keeps_its_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "record.jsonl"
    assert read_jsonl(path) == []  # none yet
    path.write_bytes(b'{"a": 1}\n[2]\n\xff\xfe\n{"b": 2}\n{"c": ')
    assert read_jsonl(path) == [{"a": 1}, {"b": 2}]
