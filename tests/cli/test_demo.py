"""`collector demo`'s tape: a minute over within the run, and a second demo going on from the first."""

from __future__ import annotations

import time
from pathlib import Path

from collector.cli.demo import SPEEDUP, demo_tape
from collector.cli.parser import build_parser
from collector.feed.tapes import GeneratedTape
from collector.lake.inventory import scan_local
from collector.lake.layout import object_key
from collector.lake.parquet import encode_batch
from collector.lake.sinks import LocalSink
from tests.support.batches import batch


def test_a_fresh_demo_starts_its_trades_at_the_previous_minute_and_runs_ahead_to_now() -> None:
    args = build_parser().parse_args(["demo"])
    now = 1_764_700_000.5  # 18:26:40.5 UTC
    tape = demo_tape(args, {}, now)
    assert isinstance(tape, GeneratedTape) and tape.catch_up
    assert tape.clock_start_ms == (now // 60 - 1) * 60_000  # a whole minute, 18:25, to see marked
    assert tape.clock_step_ms == SPEEDUP * 1000 / 200  # at 200 trades/s: over in 60 / SPEEDUP s
    assert tape.first_ids == {} and tape.first_id == 1_764_700_000_000


def test_a_second_demo_goes_on_from_the_last_trade_the_first_left(tmp_path: Path) -> None:
    now = time.time()
    minute = int(now // 60)
    sealed = batch("BTCUSDT", 1_000, 100, minute)  # landed this minute, its last trade at :00.198
    key = object_key(symbol="BTCUSDT", minute=minute, first_trade_id=1_000, last_trade_id=1_099)
    LocalSink(tmp_path).put(key, encode_batch(sealed, "parquet"))
    args = build_parser().parse_args(["demo", "--destination", str(tmp_path)])
    tape = demo_tape(args, scan_local(tmp_path), now)
    assert isinstance(tape, GeneratedTape)
    assert tape.first_ids == {"BTCUSDT": 1_100}  # one series: no gap of made-up ids
    assert tape.clock_start_ms == minute * 60_000 + 198 + 1  # after its last trade, not before
    firsts: dict[str, int] = {}
    for trade in tape.take(100):
        firsts.setdefault(trade.symbol, trade.trade_id)
    assert firsts["BTCUSDT"] == 1_100 and firsts["ETHUSDT"] != 1_100
