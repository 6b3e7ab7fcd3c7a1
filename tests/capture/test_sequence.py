"""Trade-id continuity per symbol."""

from __future__ import annotations

from collector.capture.sequence import Gap, SequenceTracker


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
