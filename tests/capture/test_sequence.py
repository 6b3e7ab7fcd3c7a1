"""Trade-id continuity per symbol."""

from __future__ import annotations

from collector.capture.sequence import Gap, SequenceTracker, Stretch


def test_consecutive_ids_are_accepted_without_a_gap() -> None:
    tracker = SequenceTracker()
    assert [tracker.observe("BTCUSDT", i) for i in (5, 6, 7)] == [(True, None)] * 3
    assert tracker.last_id("BTCUSDT") == 7


def test_a_repeat_or_an_older_id_is_a_duplicate() -> None:
    tracker = SequenceTracker({"BTCUSDT": 10})
    assert tracker.observe("BTCUSDT", 10) == (False, None)
    assert tracker.observe("BTCUSDT", 3) == (False, None)
    assert tracker.last_id("BTCUSDT") == 10


def test_a_jump_opens_a_gap_of_exactly_the_missing_ids() -> None:
    tracker = SequenceTracker({"BTCUSDT": 10})
    accepted, gap = tracker.observe("BTCUSDT", 14)
    assert accepted
    assert gap == Gap("BTCUSDT", 11, 13)
    assert gap.size == 3


def test_symbols_are_tracked_independently() -> None:
    tracker = SequenceTracker()
    tracker.observe("BTCUSDT", 100)
    assert tracker.observe("ETHUSDT", 5) == (True, None)
    assert tracker.observe("BTCUSDT", 101) == (True, None)


def test_an_id_far_below_the_remembered_one_starts_a_new_series() -> None:
    """State from another series (a demo's ids) must not turn every live trade into a duplicate."""
    tracker = SequenceTracker({"BTCUSDT": 1_795_393_030_305})
    assert tracker.observe("BTCUSDT", 5_012_345_678) == (True, None)
    assert tracker.resets == [("BTCUSDT", 1_795_393_030_305, 5_012_345_678)]
    assert tracker.observe("BTCUSDT", 5_012_345_678) == (False, None)
    assert tracker.observe("BTCUSDT", 5_012_345_679) == (True, None)


def test_a_last_id_the_ticker_reported_takes_the_streams_first_trade_even_at_or_below_it() -> None:
    """A symbol never seen trading gets its cursor from the ticker, which may count a trade the
    stream delivers a moment later: that trade is not a duplicate."""
    tracker = SequenceTracker()
    tracker.remember_reported("QUIETUSDT", 100)
    assert tracker.accept_run("QUIETUSDT", [100, 101]) == ([Stretch(0, 2)], 0)
    assert tracker.accept_run("QUIETUSDT", [101]) == ([], 1)  # from now on, a duplicate is one
    tracker.remember_reported("OTHERUSDT", 50)
    assert tracker.observe_run("OTHERUSDT", [51, 52]) and tracker.last_id("OTHERUSDT") == 52
    tracker.remember_reported("GAPUSDT", 50)
    (stretch,), _ = tracker.accept_run("GAPUSDT", [55])
    assert stretch.gap is not None and (stretch.gap.first_missing, stretch.gap.last_missing) == (51, 54)
    tracker.remember("SEENUSDT", 7)
    tracker.remember_reported("SEENUSDT", 3)  # a symbol with a last id of its own keeps it
    assert tracker.last_id("SEENUSDT") == 7
