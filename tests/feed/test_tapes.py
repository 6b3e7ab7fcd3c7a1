"""The generated tape's emulated clock and ids: a demo's past minutes pass fast, then it trades live."""

from __future__ import annotations

import json
import time

from collector.feed.tapes import GeneratedTape, TapeTrade


def _times_ms(trades: list[TapeTrade]) -> list[int]:
    return [json.loads(t.payload_ms)["T"] for t in trades]


def test_a_clock_that_catches_up_runs_fast_then_keeps_to_the_wall_clock_never_ahead() -> None:
    start_ms = int(time.time() * 1000) - 90_000
    tape = GeneratedTape(("BTCUSDT", "ETHUSDT"), clock_start_ms=start_ms, clock_step_ms=50, catch_up=True)
    early = _times_ms(tape.take(1_000))
    assert early[:3] == [start_ms, start_ms + 50, start_ms + 100]  # ten times 200 trades a second's pace
    later = _times_ms(tape.take(2_000))  # past the 90 s: the wall clock's
    now_ms = int(time.time() * 1000)
    times = early + later
    assert times == sorted(times) and max(times) <= now_ms
    assert later[-1] >= now_ms - 5_000 and later[-1] == later[-2]  # a read's trades share its moment
    free = GeneratedTape(("BTCUSDT",), clock_start_ms=start_ms, clock_step_ms=50)
    assert max(_times_ms(free.take(3_000))) > now_ms  # without catch_up it runs on into the future


def test_ids_go_on_per_symbol_where_asked() -> None:
    tape = GeneratedTape(("BTCUSDT", "ETHUSDT"), first_id=5_000, first_ids={"ETHUSDT": 777})
    firsts: dict[str, int] = {}
    for trade in tape.take(50):
        firsts.setdefault(trade.symbol, trade.trade_id)
    assert firsts == {"BTCUSDT": 5_000, "ETHUSDT": 777}
