"""Recovery at start: journal leftovers resealed, the gaps they noted kept, the spool's ids remembered."""

from __future__ import annotations

import asyncio
import errno
import json
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from collector.capture.sequence import SequenceTracker
from collector.daemon.recovery import Recovery
from collector.exceptions import SpoolError
from collector.gaps.ledger import GapLedger, OpenGap
from collector.lake.layout import object_key, parse_object_key
from collector.lake.sinks import LocalSink
from collector.landing.journal import Journal
from collector.landing.spool import Spool
from tests.support.disk import FillingDisk
from tests.support.landing import trade_frame

LOG = structlog.get_logger()
T0 = 29_000_000 * 60_000  # a minute boundary, in ms


def recovery(root: Path) -> tuple[Recovery, SequenceTracker, GapLedger, Spool]:
    sequence, ledger = SequenceTracker(), GapLedger(root / "gaps")
    spool = Spool(root)
    found = Recovery(state_path=root / "state.json", sequence=sequence, ledger=ledger,
                     journal=Journal(root / "journal"), spool=spool, time_unit="ms",
                     output_format="parquet", log=LOG)  # fmt: skip
    return found, sequence, ledger, spool


def test_a_crash_s_open_batch_is_resealed_and_the_gap_it_noted_is_kept(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    frames = [trade_frame(i, T0 + i).encode() for i in (100, 101, 102, 110, 111)]
    journal.append("BTCUSDT-29000000-100", 5, frames[:3])
    journal.append("BTCUSDT-29000000-100", 6, frames[3:])
    gap = OpenGap(symbol="BTCUSDT", first_missing=103, last_missing=109, next_id=103, detected_at_ns=6,
                  window_start_s=T0 / 1000, window_end_s=T0 / 1000 + 0.11)  # fmt: skip
    journal.note_gap("BTCUSDT-29000000-100", gap.to_json())  # the crash came before the ledger saved it
    (tmp_path / "state.json").write_text(json.dumps({"BTCUSDT": 99}))
    found, sequence, ledger, spool = recovery(tmp_path)
    result = asyncio.run(found.run(LocalSink(tmp_path / "landing"), ("BTCUSDT",)))
    assert (result.resealed, result.gaps) == (1, 1)
    (entry,) = spool.pending()
    assert entry.key == object_key(symbol="BTCUSDT", minute=29_000_000, first_trade_id=100, last_trade_id=111)
    assert [(g.first_missing, g.last_missing) for g in GapLedger(tmp_path / "gaps").open] == [(103, 109)]
    assert json.loads((tmp_path / "state.json").read_text()) == {"BTCUSDT": 111}
    assert sequence.last_id("BTCUSDT") == 111 and ledger.open[0].window_start_s == T0 / 1000
    assert list((tmp_path / "journal").glob("*.frames")) == []  # resealed: the leftovers are gone
    again, _, _, _ = recovery(tmp_path)  # a second start finds nothing more to do
    assert asyncio.run(again.run(LocalSink(tmp_path / "landing"), ("BTCUSDT",))).resealed == 0


def test_a_gap_the_ledger_holds_already_is_not_added_twice(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal")
    journal.append("BTCUSDT-29000000-110", 5, [trade_frame(110, T0).encode()])
    gap = OpenGap(symbol="BTCUSDT", first_missing=103, last_missing=109, next_id=105, detected_at_ns=6)
    journal.note_gap("BTCUSDT-29000000-110", gap.to_json())
    GapLedger(tmp_path / "gaps").add(gap)  # saved in time, with its progress
    found, _, ledger, _ = recovery(tmp_path)
    assert asyncio.run(found.run(LocalSink(tmp_path / "landing"), ("BTCUSDT",))).gaps == 0
    assert [(g.first_missing, g.next_id) for g in ledger.open] == [(103, 105)]


def test_spooled_objects_are_remembered_and_the_landing_zone_asked_only_when_nothing_knows(
    tmp_path: Path,
) -> None:
    landing = LocalSink(tmp_path / "landing")
    landing.put(object_key(symbol="ETHUSDT", minute=int(__import__("time").time() // 60), first_trade_id=1,
                           last_trade_id=7_000), b"x")  # fmt: skip
    found, sequence, _, spool = recovery(tmp_path)
    spool.put(object_key(symbol="BTCUSDT", minute=29_000_000, first_trade_id=5, last_trade_id=90), b"y")
    result = asyncio.run(found.run(landing, ("BTCUSDT", "ETHUSDT", "SOLUSDT")))
    assert [parse_object_key(e.key).last_trade_id for e in result.spooled] == [90]  # type: ignore[union-attr]
    assert (sequence.last_id("BTCUSDT"), sequence.last_id("ETHUSDT"), sequence.last_id("SOLUSDT")) == (
        90,
        7_000,
        None,
    )


def test_an_unreadable_state_file_is_said_and_capture_goes_on(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("[1, 2")
    found, sequence, _, _ = recovery(tmp_path)
    with structlog.testing.capture_logs() as logs:
        asyncio.run(found.run(LocalSink(tmp_path / "landing"), ("BTCUSDT",)))
    assert [e["event"] for e in logs if e["event"] == "collector.state_unreadable"] == [
        "collector.state_unreadable"
    ]
    assert sequence.last_id("BTCUSDT") is None


def test_the_state_is_saved_only_after_the_gaps_before_it(tmp_path: Path) -> None:
    found, sequence, ledger, _ = recovery(tmp_path)
    sequence.remember("BTCUSDT", 500)
    ledger.add(OpenGap(symbol="BTCUSDT", first_missing=400, last_missing=450, next_id=400, detected_at_ns=1),
               save=False)  # fmt: skip
    found.save_state()
    assert json.loads((tmp_path / "state.json").read_text()) == {"BTCUSDT": 500}
    assert [g.first_missing for g in GapLedger(tmp_path / "gaps").open] == [400]


def test_the_start_says_where_each_symbol_goes_on_from_in_one_line_for_the_whole_market(
    tmp_path: Path,
) -> None:
    symbols = tuple(f"S{i:04d}USDT" for i in range(1_500))
    (tmp_path / "state.json").write_text(json.dumps({"S0000USDT": 99, "S0001USDT": 7}))
    landing = LocalSink(tmp_path / "landing")
    key = object_key(symbol="S0002USDT", minute=int(time.time() // 60), first_trade_id=1, last_trade_id=50)
    landing.put(key, b"landed")
    found, _, _, _ = recovery(tmp_path)
    with structlog.testing.capture_logs() as logs:
        asyncio.run(found.run(landing, symbols))
    lines = [e for e in logs if e["event"].startswith("collector.continuity")]
    (summary,) = [e for e in lines if e["log_level"] == "info"]
    assert summary == {"event": "collector.continuity", "log_level": "info", "symbols": 1_500,
                       "remembered": 2, "from_landing_zone": 1, "unknown": 1_497}  # fmt: skip
    details = [e for e in lines if e["log_level"] == "debug"]
    assert len(details) == 1_500
    assert {(e["symbol"], e["last_trade_id"]) for e in details if e["last_trade_id"]} == {
        ("S0000USDT", 99), ("S0001USDT", 7), ("S0002USDT", 50)}  # fmt: skip
    few, _, _, _ = recovery(tmp_path / "few")
    with structlog.testing.capture_logs() as logs:
        asyncio.run(few.run(landing, ("S0002USDT", "S0003USDT")))
    (line,) = [e for e in logs if e["event"] == "collector.continuity"]
    assert line["last_trade_ids"] == {"S0002USDT": 50, "S0003USDT": None}  # a few: listed


def test_the_state_never_claims_a_trade_the_journal_could_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import collector.files

    found, sequence, _, _ = recovery(tmp_path)
    sequence.remember("BTCUSDT", 100)
    found.save_state()
    disk = FillingDisk(room=0)
    monkeypatch.setattr(collector.files, "os", disk)
    found.journal.append("BTCUSDT-29000000-101", 5, [trade_frame(101, T0).encode()])  # kept in memory
    sequence.remember("BTCUSDT", 101)
    with pytest.raises(SpoolError, match=r"the journal cannot be written: .*No space left on device"):
        found.save_state()
    assert json.loads((tmp_path / "state.json").read_text()) == {"BTCUSDT": 100}
    disk.room = 10**6  # space again: the journal first, then the state
    found.save_state()
    assert json.loads((tmp_path / "state.json").read_text()) == {"BTCUSDT": 101}
    assert [b.batch_id for b in Journal(tmp_path / "journal").leftovers()] == ["BTCUSDT-29000000-101"]


def test_a_start_on_a_full_disk_waits_for_space_instead_of_exiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd restarts a collector that exits every few seconds, and gives up after 20 starts:
    a start whose journal cannot be resealed for want of space waits for it, and says so once."""
    monkeypatch.setattr("collector.daemon.recovery.FULL_RETRY_S", 0.01)
    Journal(tmp_path / "journal").append("BTCUSDT-29000000-100", 5, [trade_frame(100, T0).encode()])
    found, _, _, spool = recovery(tmp_path)
    refusals = iter(range(3))
    put = spool.put

    def full_three_times(key: str, data: bytes) -> Any:
        if next(refusals, None) is not None:
            raise SpoolError(f"cannot write {key}") from OSError(errno.ENOSPC, "No space left on device")
        return put(key, data)

    monkeypatch.setattr(spool, "put", full_three_times)
    with structlog.testing.capture_logs() as logs:
        result = asyncio.run(found.run(LocalSink(tmp_path / "landing"), ("BTCUSDT",)))
    assert result.resealed == 1 and len(spool.pending()) == 1
    assert [e["event"] for e in logs].count("collector.spool_unwritable") == 1


def test_a_start_on_a_spool_it_may_not_write_still_stops_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Journal(tmp_path / "journal").append("BTCUSDT-29000000-100", 5, [trade_frame(100, T0).encode()])
    found, _, _, spool = recovery(tmp_path)

    def denied(key: str, data: bytes) -> Any:
        raise SpoolError(f"cannot write {key}") from OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(spool, "put", denied)
    with pytest.raises(SpoolError, match="cannot write"):
        asyncio.run(found.run(LocalSink(tmp_path / "landing"), ("BTCUSDT",)))
