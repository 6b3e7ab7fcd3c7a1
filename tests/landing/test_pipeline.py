"""Landing: the spool budget's rule, and sealed batches through a real spool to a real directory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import structlog

from collector.capture.batching import MinuteBatcher, SealedBatch
from collector.capture.decode import Trade
from collector.counters import Registry
from collector.exceptions import SinkPermanentError, SpoolError
from collector.lake.parquet import count_rows
from collector.lake.sinks import LocalSink
from collector.landing.inflight import InFlight
from collector.landing.journal import Journal
from collector.landing.markers import MarkerBook, MarkerWriter
from collector.landing.pipeline import Landing, SpoolBudget
from collector.landing.spool import Spool

LOG = structlog.get_logger()
MINUTE = 29_000_000


# ---- the spool budget --------------------------------------------------------------------------


def test_the_budget_admits_until_full_then_nothing_until_drained_to_half() -> None:
    budget = SpoolBudget(1000)
    assert budget.admit(600) and budget.admit(300)
    assert not budget.admit(200)  # 1,100 would not fit: full now
    assert not budget.admit(10)  # full: even what would fit is refused, so the kept data is contiguous
    budget.release(300)
    assert not budget.admit(10)  # 600 used: more than half
    budget.release(100)
    assert budget.admit(10)  # 500 used: drained to half, new data is taken again
    assert budget.used_bytes == 510


# ---- a landing, in process -----------------------------------------------------------------------


def batches(count: int, per_minute: int = 50) -> list[SealedBatch]:
    """`count` batches, one per minute, of `per_minute` trades each."""
    batcher = MinuteBatcher(time_unit="ms", max_batch_bytes=2**40, max_batch_age_s=1e9, minute_grace_s=1e9,
                            max_open_minutes=2**31)  # fmt: skip
    trade_id = 1
    for m in range(count):
        for i in range(per_minute):
            t = (MINUTE + m) * 60_000 + i
            batcher.add(
                Trade("BTCUSDT", trade_id, 6_000_000_000_000, 1_000_000, t, t, True, t * 10**6, 150), 0
            )
            trade_id += 1
    return batcher.flush("minute_closed")


class Setup:
    def __init__(
        self, tmp: Path, *, spool_max_bytes: int = 10**9, sink: Any = None, buffer_max_bytes: int = 10**9
    ) -> None:
        self.sink = sink or LocalSink(tmp / "landing")
        self.spool = Spool(tmp / "spool")
        self.journal = Journal(tmp / "spool" / "journal")
        self.writer = MarkerWriter(MarkerBook(tmp / "spool" / "markers"), self.sink, grace_s=10, log=LOG)
        self.held: list[bool] = []
        self.inflight = InFlight(buffer_max_bytes, hold_back=self.held.append)
        self.states = 0
        self.metrics = Registry()
        self.landing = Landing(spool=self.spool, journal=self.journal, sink=self.sink, markers=self.writer,
                               budget=SpoolBudget(spool_max_bytes), output_format="parquet",
                               save_state=self._save, gaps_in=lambda s, m: [], inflight=self.inflight,
                               log=LOG, metrics=self.metrics)  # fmt: skip

    def _save(self) -> None:
        self.states += 1

    async def land(self, sealed: list[SealedBatch], *, timeout_s: float = 60) -> None:
        tasks = [
            asyncio.create_task(self.landing.run_sealer()),
            asyncio.create_task(self.landing.uploads.run()),
        ]
        for batch in sealed:
            self.landing.submit(batch)
        self.landing.close()
        try:
            async with asyncio.timeout(timeout_s):
                await self.landing.drained()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def test_sealed_batches_land_once_each_with_their_minutes_recorded_for_markers(tmp_path: Path) -> None:
    setup = Setup(tmp_path)
    sealed = batches(40)
    for batch in sealed:
        setup.journal.append(batch.batch_id, 1, [b"{}"])
    asyncio.run(setup.land(sealed))
    landed = sorted((tmp_path / "landing").rglob("*.parquet"))
    assert len(landed) == 40 and sum(count_rows(p.read_bytes(), "parquet") for p in landed) == 2000
    assert setup.spool.pending() == [] and setup.landing.pending_minutes("BTCUSDT") == set()
    assert {m for (_, m) in setup.writer.book.files} == set(range(MINUTE, MINUTE + 40))
    assert setup.metrics.value("batches_landed") == 40
    assert setup.metrics.value("trades_landed") == {"BTCUSDT": 2000}
    assert 1 <= setup.states < 40  # the state is saved once per group of batches, not per batch
    setup.journal.close_all()
    assert Journal(tmp_path / "spool" / "journal").leftovers() == []  # every journal record retired


def test_a_queue_past_the_byte_budget_holds_the_stream_back_and_releases_it(tmp_path: Path) -> None:
    """Counted in bytes: five batches of 2,000 trades (300 kB of frames each) pass a 1 MB budget,
    though they are few and small in trades."""
    setup = Setup(tmp_path, buffer_max_bytes=1_000_000)
    asyncio.run(setup.land(batches(5, per_minute=2_000)))
    assert setup.held[0] is True and setup.held[-1] is False
    assert setup.inflight.sealed_bytes == 0
    assert 1_000_000 <= setup.inflight.peak_bytes <= 5 * (2_000 * 150 + 1024)


def test_a_full_spool_records_exactly_what_it_dropped_and_the_minutes_name_it(tmp_path: Path) -> None:
    setup = Setup(tmp_path, spool_max_bytes=12_000)
    sealed = batches(10)
    asyncio.run(setup.land(sealed))
    records = [json.loads(line) for line in (tmp_path / "spool" / "dropped.jsonl").read_text().splitlines()]
    landed = len(list((tmp_path / "landing").rglob("*.parquet")))
    assert records and landed + len(records) == 10
    assert sum(r["trades"] for r in records) == setup.metrics.value("dropped_trades") == 50 * len(records)
    first = records[0]
    gaps = setup.landing.dropped_in("BTCUSDT", first["minute"])
    assert [(g.first_missing, g.last_missing, g.reason) for g in gaps] == [
        (*first["trade_id_ranges"][0], "spool_full")
    ]


class Refusing:
    """A destination whose policy denies every write, until `allow` is set."""

    def __init__(self, root: Path) -> None:
        self.local = LocalSink(root)
        self.allow = False

    def put(self, key: str, data: bytes, *, source: Path | None = None) -> Any:
        if not self.allow:
            raise SinkPermanentError("access denied; grant s3:PutObject", key=key)
        return self.local.put(key, data, source=source)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.local, name)


def test_a_permanent_error_blocks_every_uploader_with_one_line_and_keeps_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import collector.landing.pipeline

    monkeypatch.setattr(collector.landing.pipeline, "PERMANENT_ERROR_RETRY_S", 0.5)
    sink = Refusing(tmp_path / "landing")
    setup = Setup(tmp_path, sink=sink)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(1.2, lambda: setattr(sink, "allow", True))
        await setup.land(batches(12))

    with structlog.testing.capture_logs() as logs:
        asyncio.run(main())
    blocked = [e for e in logs if e["event"] == "collector.upload_blocked"]
    assert 1 <= len(blocked) <= 3  # one per block period, not one per uploader and object
    assert len(list((tmp_path / "landing").rglob("*.parquet"))) == 12
    assert setup.metrics.value("upload_errors")["permanent"] >= 1


# ---- a full disk under the spool -----------------------------------------------------------------


class FullFor(Spool):
    """A spool whose disk refuses the first `refusals` puts (ENOSPC), then takes them."""

    def __init__(self, root: Path, refusals: int) -> None:
        super().__init__(root)
        self.refusals = refusals

    def put(self, key: str, data: bytes) -> Any:
        if self.refusals > 0:
            self.refusals -= 1
            raise SpoolError(f"cannot write {len(data)} bytes for {key}: No space left on device")
        return super().put(key, data)


def test_a_state_save_the_disk_refuses_keeps_the_journals_until_one_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("collector.landing.pipeline.SPOOL_RETRY_S", 0.01)
    setup = Setup(tmp_path)
    refusals = [OSError(28, "No space left on device")]

    def save() -> None:
        if refusals:
            raise refusals.pop()
        setup.states += 1

    setup.landing.save_state = save
    sealed = batches(3)
    for batch in sealed:
        setup.journal.append(batch.batch_id, 1, [b"{}"])
    with structlog.testing.capture_logs() as logs:
        asyncio.run(setup.land(sealed))
    assert len(list((tmp_path / "landing").rglob("*.parquet"))) == 3  # landed all the same
    (failed,) = [e for e in logs if e["event"] == "collector.spool_failed"]
    assert "the state of capture cannot be saved: [Errno 28] No space left on device" in failed["error"]
    assert setup.states == 1 and setup.landing.spool_error is None  # saved once the disk took it
    setup.journal.close_all()
    assert Journal(tmp_path / "spool" / "journal").leftovers() == []  # and only then retired


def test_backfilled_batches_the_disk_refuses_are_spooled_once_it_takes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("collector.landing.pipeline.SPOOL_RETRY_S", 0.01)
    setup = Setup(tmp_path)
    setup.landing.spool = setup.landing.uploads.spool = FullFor(tmp_path / "spool", refusals=2)
    sealed = batches(3)

    async def main() -> None:
        await setup.landing.land_backfill(sealed)  # returns once every batch is spooled
        assert setup.landing.spool_error is None
        await setup.land([])

    asyncio.run(main())
    assert len(list((tmp_path / "landing").rglob("*.parquet"))) == 3
    assert setup.landing.pending_minutes("BTCUSDT") == set()
