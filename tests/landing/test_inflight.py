"""The bytes between the socket and the spool: the stream held back at the budget, let go at half,
and open batches sealed early when they alone hold too much."""

from __future__ import annotations

from collector.capture.batching import MinuteBatcher, SealedBatch
from collector.capture.decode import Trade
from collector.landing.inflight import PER_BATCH_BYTES, InFlight
from tests.support.batches import MINUTE, batch


def test_sealed_batches_past_the_budget_hold_the_stream_back_until_half_is_spooled() -> None:
    held: list[bool] = []
    inflight = InFlight(100_000, hold_back=held.append)
    one = batch("BTCUSDT", 1, 200)  # 30,000 bytes of frames
    queued = [one, batch("BTCUSDT", 201, 200), batch("BTCUSDT", 401, 200)]
    for b in queued:
        inflight.sealed(b)
    assert held == [] and inflight.bytes == 3 * (30_000 + PER_BATCH_BYTES)
    inflight.sealed(batch("BTCUSDT", 601, 200))
    assert held == [True]
    inflight.spooled(queued[:1])
    assert held == [True]  # 93 kB: not yet half
    inflight.spooled(queued[1:])
    assert held == [True, False]  # 31 kB
    assert inflight.peak_bytes == 4 * (30_000 + PER_BATCH_BYTES)


def test_a_stall_holds_back_until_the_count_is_down_to_half() -> None:
    held: list[bool] = []
    inflight = InFlight(100_000, hold_back=held.append)
    inflight.sealed(one := batch("BTCUSDT", 1, 400))  # 61 kB
    inflight.stall()
    inflight.check()
    assert held == [True]
    inflight.spooled([one])
    assert held == [True, False]


def test_open_batches_holding_more_than_half_are_sealed_largest_first() -> None:
    """Open batches leave memory only once sealed: when they alone keep the count above half,
    the largest are sealed at once, down to a quarter, and reading goes on once they are spooled."""
    held: list[bool] = []
    sealed: list[SealedBatch] = []
    batcher = MinuteBatcher(time_unit="ms", max_batch_bytes=10**9, max_batch_age_s=1e9, minute_grace_s=1e9)
    inflight = InFlight(1_000_000, hold_back=held.append)
    inflight.open_bytes = lambda: batcher.buffered_bytes

    def shed(down_to: int) -> None:
        for b in batcher.seal_largest(down_to):
            sealed.append(b)
            inflight.sealed(b)

    inflight.shed = shed
    base = MINUTE * 60_000
    for n, symbol in enumerate(["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"]):
        for i in range(1_000 * (5 - n)):  # 750, 600, 450, 300, 150 kB of frames
            batcher.add(Trade(symbol, i, 1, 1, base + i, base + i, False, 0, 150), now_s=0)
    inflight.check()
    assert held == [True]
    assert [b.symbol for b in sealed] == ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    assert all(b.reason == "budget" for b in sealed)
    assert batcher.buffered_bytes == 150_000  # a quarter of the budget at most
    inflight.spooled(sealed)
    assert held == [True, False]
