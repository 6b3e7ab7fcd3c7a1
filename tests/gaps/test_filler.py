"""Gap filling: registration never blocks the event loop, every record is durable, and capture notes gaps."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from collector.binance.rest import BinanceRest
from collector.counters import Registry
from collector.exceptions import SinkUnavailable
from collector.gaps.backfill import Backfiller
from collector.gaps.filler import GapFiller
from collector.gaps.ledger import RETRYABLE, GapLedger, OpenGap, UnfilledRange
from collector.lake.sinks import LocalSink

LOG = structlog.get_logger()


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every fsync from now on: (thread name, the path of what was synced)."""
    seen: list[tuple[str, str]] = []
    real = os.fsync

    def recording(fd: int) -> None:
        seen.append((threading.current_thread().name, os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return seen


def filler(root: Path) -> GapFiller:
    rest = Backfiller(BinanceRest("http://127.0.0.1:9"), log=LOG)
    return GapFiller(GapLedger(root), rest, time_unit="ms", max_batch_bytes=2_000_000, max_trades=10**6,
                     retry_s=900, log=LOG, metrics=Registry())  # fmt: skip


def test_registering_a_gap_does_no_fsync_on_the_event_loop_yet_saves_it(
    tmp_path: Path, fsyncs: list[tuple[str, str]]
) -> None:
    gaps = filler(tmp_path)

    async def main() -> str:
        gaps.register(OpenGap(symbol="BTCUSDT", first_missing=5, last_missing=9, next_id=5, detected_at_ns=1))
        loop_thread = threading.current_thread().name
        deadline = asyncio.get_running_loop().time() + 60
        while not fsyncs and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 (a list, no event)
            await asyncio.sleep(0.01)
        return loop_thread

    loop_thread = asyncio.run(main())
    assert fsyncs and all(thread != loop_thread for thread, _ in fsyncs)
    assert [(g.first_missing, g.last_missing) for g in GapLedger(tmp_path).open] == [(5, 9)]


def test_an_unfilled_range_is_fsynced_when_recorded(tmp_path: Path, fsyncs: list[tuple[str, str]]) -> None:
    ledger = GapLedger(tmp_path)
    ledger.record_unfilled(
        UnfilledRange(symbol="BTCUSDT", first_missing=1, last_missing=2, reason="not_served")
    )
    assert str(ledger.unfilled_path) in [path for _, path in fsyncs]


def test_the_earliest_open_window_says_which_minutes_a_gap_may_still_hold(tmp_path: Path) -> None:
    gaps = filler(tmp_path)
    ledger = gaps.ledger
    assert gaps.open_gap_from("BTCUSDT") == float("inf")
    ledger.add(OpenGap(symbol="BTCUSDT", first_missing=5, last_missing=9, next_id=5, detected_at_ns=1,
                       window_start_s=600.0), save=False)  # fmt: skip
    ledger.add(OpenGap(symbol="BTCUSDT", first_missing=50, last_missing=59, next_id=50, detected_at_ns=1,
                       window_start_s=300.0), save=False)  # fmt: skip
    ledger.add(
        OpenGap(symbol="ETHUSDT", first_missing=5, last_missing=9, next_id=5, detected_at_ns=1), save=False
    )
    assert gaps.open_gap_from("BTCUSDT") == 300.0
    assert gaps.open_gap_from("ETHUSDT") == float("-inf")  # no window known: it may be in any minute


def test_a_gap_in_days_the_lake_cannot_be_read_for_is_recorded_for_a_retry_not_fetched(
    tmp_path: Path,
) -> None:
    """Yesterday's ids may be in the lake (an import): if the lake cannot be read, fetching
    them could land them twice, so the range waits for a retry instead."""

    class Unreachable(LocalSink):
        def list_keys(self, prefix: str) -> list[tuple[str, int]]:
            raise SinkUnavailable("s3://lake/ is unreachable (test)", key=prefix)

    gaps = filler(tmp_path / "spool")
    gaps.lake = Unreachable(tmp_path / "landing")
    yesterday_s = time.time() - 86_400
    gap = OpenGap(symbol="BTCUSDT", first_missing=5, last_missing=9, next_id=5, detected_at_ns=1,
                  window_start_s=yesterday_s, window_end_s=yesterday_s + 60)  # fmt: skip
    gaps.ledger.add(gap, save=False)
    asyncio.run(gaps._fill(gap))
    (record,) = gaps.ledger.unfilled
    assert (record.first_missing, record.last_missing, record.reason) == (5, 9, "lake_unavailable")
    assert "unreachable (test)" in record.detail and "lake_unavailable" in RETRYABLE
    assert gaps.backfiller.requests == 0  # nothing asked of REST
    today = OpenGap(symbol="BTCUSDT", first_missing=20, last_missing=29, next_id=20, detected_at_ns=1,
                    window_start_s=time.time() - 60, window_end_s=time.time())  # fmt: skip
    assert gaps._missing_in_lake(today) == [(20, 29)]  # today's ids: no import can hold them yet


def test_capture_journals_the_gap_beside_the_trade_that_revealed_it(tmp_path: Path) -> None:
    from collector.config import Settings
    from collector.daemon.app import Collector
    from collector.landing.journal import Journal
    from tests.support.landing import trade_frame

    settings = Settings(destination=tmp_path / "landing", spool_dir=tmp_path / "spool", health_port=0)
    t0 = 29_000_000 * 60_000

    async def main() -> Any:
        collector = Collector(settings)
        collector.core.sequence.remember("BTCUSDT", 99)
        frames = [trade_frame(100, t0).encode(), trade_frame(105, t0 + 1).encode()]
        collector.capture.on_chunk(frames, 7, collector.stream.slots[0].stream)
        return collector

    collector = asyncio.run(main())
    collector.journal.close_all()
    (left,) = Journal(tmp_path / "spool" / "journal").leftovers()
    (note,) = [OpenGap.from_record(__import__("json").loads(line)) for line in left.gaps()]
    assert (note.first_missing, note.last_missing, note.window_end_s) == (101, 104, (t0 + 1) / 1000)
    assert [(g.first_missing, g.last_missing) for g in collector.gaps.ledger.open] == [(101, 104)]
