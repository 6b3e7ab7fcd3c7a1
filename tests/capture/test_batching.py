"""Minute batching with a hand-driven clock: size, age, minute close, memory bound."""

from __future__ import annotations

from collector.capture.batching import MinuteBatcher, SealedBatch
from collector.capture.decode import Trade

MINUTE_MS = 60_000
T0 = 1_723_161_240_000  # 2024-08-08 23:54:00 UTC, a minute boundary


def trade(trade_id: int, t: int, symbol: str = "BTCUSDT", raw_bytes: int = 200) -> Trade:
    received_ns = T0 * 1_000_000 + trade_id * 1000 + 999  # sub-µs digits are dropped on buffering
    return Trade(symbol, trade_id, 6183763000000, 2000000, t, t + 1, True, received_ns, raw_bytes)


def batcher(**overrides: float) -> MinuteBatcher:
    settings = {"max_batch_bytes": 2_000_000, "max_batch_age_s": 60.0, "minute_grace_s": 5.0}
    settings.update(overrides)
    return MinuteBatcher(time_unit="ms", **settings)  # type: ignore[arg-type]


def ids(batch: SealedBatch) -> list[int]:
    return list(batch.columns.trade_id)


def test_batch_never_spans_two_minutes() -> None:
    b = batcher()
    sealed = []
    for i in range(120):
        sealed += b.add(trade(i, T0 + i * 1000), now_s=i)  # one trade a second for two minutes
    sealed += b.tick(200.0)
    sealed += b.flush()
    assert [s.minute for s in sealed] == [T0 // MINUTE_MS, T0 // MINUTE_MS + 1]
    assert [ids(s) for s in sealed] == [list(range(60)), list(range(60, 120))]
    for s in sealed:
        assert all(t // MINUTE_MS == s.minute for t in s.columns.trade_time)


def test_size_flush_seals_exactly_when_the_threshold_is_reached() -> None:
    b = batcher(max_batch_bytes=1000)
    sealed = [s for i in range(4) for s in b.add(trade(i, T0 + i), now_s=0)]
    assert sealed == []  # 800 bytes
    sealed = b.add(trade(4, T0 + 4), now_s=0)  # 1000 bytes
    assert len(sealed) == 1
    assert sealed[0].reason == "size"
    assert sealed[0].raw_bytes == 1000
    assert ids(sealed[0]) == [0, 1, 2, 3, 4]
    assert b.buffered_trades == 0


def test_after_a_size_seal_the_minute_goes_on_until_its_end_not_a_grace_later() -> None:
    """The batch that follows a size seal in the same minute is sealed by size or by the
    minute's close, never `minute_grace_s` after it opened (that made a busy symbol land an
    object every five seconds for the rest of the minute)."""
    b = batcher(max_batch_bytes=1000, minute_grace_s=5.0)
    sealed = [s for i in range(5) for s in b.add(trade(i, T0 + 20_000 + i), now_s=20.0)]
    assert [s.reason for s in sealed] == ["size"]
    for second in range(22, 60, 2):  # a trade every 2 s to the minute's end: a batch fills in 10 s
        sealed += b.add(trade(100 + second, T0 + second * 1000), now_s=float(second))
        sealed += b.tick(float(second) + 1.5)
    assert [s.reason for s in sealed] == ["size"] * 4  # 19 trades: three more full batches
    assert b.tick(64.9) == []
    assert [s.reason for s in b.tick(65.0)] == ["minute_closed"]  # the minute's end and its grace


def test_age_flush_seals_at_the_age_threshold_and_not_before() -> None:
    b = batcher(max_batch_age_s=10.0)
    b.add(trade(1, T0), now_s=100.0)
    b.add(trade(2, T0 + 1), now_s=105.0)
    assert b.tick(109.99) == []
    sealed = b.tick(110.0)
    assert [(s.reason, ids(s)) for s in sealed] == [("age", [1, 2])]


def test_a_minute_is_sealed_after_the_next_minute_starts_and_the_grace_passes() -> None:
    b = batcher(minute_grace_s=5.0)
    b.add(trade(1, T0 + 59_000), now_s=0.0)
    b.add(trade(2, T0 + MINUTE_MS), now_s=1.0)  # next minute: grace starts
    b.add(trade(3, T0 + 59_999), now_s=3.0)  # a late trade of the old minute is still taken in
    assert b.tick(5.99) == []
    sealed = b.tick(6.0)
    assert [(s.reason, ids(s)) for s in sealed] == [("minute_closed", [1, 3])]
    assert b.buffered_trades == 1


def test_a_trade_arriving_after_its_minute_was_sealed_gets_its_own_batch() -> None:
    b = batcher(minute_grace_s=1.0)
    b.add(trade(1, T0), now_s=0.0)
    b.add(trade(2, T0 + MINUTE_MS), now_s=0.0)
    first = b.tick(1.0)
    b.add(trade(3, T0 + 10), now_s=2.0)  # very late
    late = b.tick(3.0)
    assert [ids(s) for s in first] == [[1]]
    assert [(s.minute, ids(s)) for s in late] == [(T0 // MINUTE_MS, [3])]


def test_symbols_are_batched_separately() -> None:
    b = batcher()
    b.add(trade(1, T0, "BTCUSDT"), 0)
    b.add(trade(7, T0, "ETHUSDT"), 0)
    sealed = sorted(b.flush(), key=lambda s: s.symbol)
    assert [(s.symbol, ids(s), s.reason) for s in sealed] == [
        ("BTCUSDT", [1], "shutdown"),
        ("ETHUSDT", [7], "shutdown"),
    ]


def test_memory_stays_bounded_when_trades_jump_between_many_minutes() -> None:
    """Adversarial input: every trade in another past minute. Open batches never exceed the bound."""
    b = batcher(max_batch_bytes=10_000)
    sealed = []
    most_open = 0
    for i in range(2000):
        minute_offset = (i * 7919) % 500  # scattered over 500 minutes
        sealed += b.add(trade(i, T0 + minute_offset * MINUTE_MS), now_s=0)
        most_open = max(most_open, len(b._open))
    sealed += b.flush()
    assert most_open <= b.max_open_minutes + 1
    assert b.buffered_bytes == 0
    assert sorted(i for s in sealed for i in ids(s)) == list(range(2000))


def test_first_and_last_ids_and_rows_describe_the_batch() -> None:
    b = batcher()
    for i in (10, 11, 12):
        b.add(trade(i, T0), 0)
    (s,) = b.flush()
    assert (s.first_trade_id, s.last_trade_id, s.rows) == (10, 12, 3)
    assert s.first_received_us == T0 * 1000 + 10  # the stamp of trade 10's read, in µs


def test_microsecond_trade_times_are_bucketed_by_minute() -> None:
    b = MinuteBatcher(time_unit="us", max_batch_bytes=10**6, max_batch_age_s=60, minute_grace_s=5)
    b.add(trade(1, T0 * 1000 + 59_999_999), 0)
    b.add(trade(2, (T0 + MINUTE_MS) * 1000), 0)
    assert sorted(s.minute for s in b.flush()) == [T0 // MINUTE_MS, T0 // MINUTE_MS + 1]


def test_a_quiet_symbol_s_minute_seals_once_its_end_and_grace_pass_by_the_trade_s_clock() -> None:
    b = batcher(max_batch_age_s=3600.0)
    assert b.add(trade(1, T0 + 50_000, "QUIETUSDT"), now_s=100.0) == []  # 10 s before the minute ends
    assert b.tick(114.9) == []  # 10 s to the end, 5 s of grace: not yet
    (sealed,) = b.tick(115.0)
    assert (sealed.reason, ids(sealed)) == ("minute_closed", [1])
    # A trade that arrives after its minute was sealed (a slow stream) seals once the rest of the
    # minute by its own clock (1 s) and the grace have passed.
    assert b.add(trade(2, T0 + 59_000, "QUIETUSDT"), now_s=200.0) == []
    assert b.tick(205.9) == []
    assert [s.reason for s in b.tick(206.0)] == ["minute_closed"]
    assert b.open_minutes("QUIETUSDT") == set()


def test_thousands_of_symbols_keep_their_open_minutes_apart() -> None:
    b = batcher()
    for i in range(3000):
        b.add(trade(i, T0 + (i % 2) * MINUTE_MS, f"S{i % 1500:04d}USDT"), now_s=1.0)
    assert b.open_minutes("S0007USDT") == {T0 // MINUTE_MS + 1}  # 7 and 1507: both odd
    assert b.open_minutes("S0008USDT") == {T0 // MINUTE_MS}
    assert b.buffered_trades == 3000
    assert len(b.flush()) == 1500
    assert b.open_minutes("S0007USDT") == set()


def test_sealing_the_largest_leaves_at_most_the_bytes_asked_for_and_keeps_the_count_exact() -> None:
    b = batcher()
    for symbol, count in (("BTCUSDT", 50), ("ETHUSDT", 30), ("SOLUSDT", 10), ("XRPUSDT", 5)):
        for i in range(count):
            b.add(trade(i, T0 + i, symbol), now_s=0)
    assert b.buffered_bytes == 95 * 200 and b.open_batches == 4
    assert b.seal_largest(19_000) == []  # already there
    sealed = b.seal_largest(4_000)
    assert [(s.symbol, s.reason) for s in sealed] == [("BTCUSDT", "budget"), ("ETHUSDT", "budget")]
    assert b.buffered_bytes == 15 * 200 and b.open_batches == 2
    b.flush()
    assert b.buffered_bytes == 0


def test_batches_that_cost_no_request_of_their_own_are_sealed_early_first() -> None:
    """A market source is merged into the minute's parts: sealing it early costs no PUT, so the
    unwatched symbols' batches go first, a watched symbol's only when they are not enough."""
    b = batcher()
    for symbol, count in (("WATCHEDUSDT", 50), ("AAAUSDT", 30), ("BBBUSDT", 10)):
        for i in range(count):
            b.add(trade(i, T0 + i, symbol), now_s=0)
    cheap = lambda symbol: symbol != "WATCHEDUSDT"  # noqa: E731
    assert [s.symbol for s in b.seal_largest(12_000, cheap)] == ["AAAUSDT"]  # 18 kB to 12
    assert [s.symbol for s in b.seal_largest(1_000, cheap)] == ["BBBUSDT", "WATCHEDUSDT"]
