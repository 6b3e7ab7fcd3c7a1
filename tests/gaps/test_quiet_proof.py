"""Quiet symbols proven by the exchange's ticker after a restart or a reconnect: who is asked,
when, and what each answer does; and the local feed's ticker over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from collector.binance.rest import BinanceRest, RestPage
from collector.capture.sequence import SequenceTracker
from collector.counters import Registry
from collector.feed.server import FeedServer
from collector.feed.simulated import Market
from collector.feed.tapes import MarketTape
from collector.gaps.ledger import OpenGap
from collector.gaps.quiet_proof import BEHIND_S, QuietProof, ticker_ids
from collector.logs import get_logger
from tests.support.threaded_feed import ThreadedFeed


class _Ticker(BinanceRest):
    """The REST client with the ticker's answer given (a unit test of the policy)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__("http://127.0.0.1:9")
        self.rows, self.asked = rows, []  # type: ignore[var-annotated]

    def ticker_24h(self, symbols: list[str] | None = None) -> RestPage:
        self.asked.append(symbols)
        return RestPage(200, self.rows, 80, None)


class _Gaps:
    def __init__(self) -> None:
        self.registered: list[OpenGap] = []

    def register(self, gap: OpenGap) -> None:
        self.registered.append(gap)


Probe = tuple[QuietProof, "_Ticker", "_Gaps", SequenceTracker, list[Any]]


def _probe(rows: list[dict[str, Any]], proven: dict[str, float | None], last: dict[str, int],
           state: dict[str, tuple[bool, int]], adopted: list[str] | None = None) -> Probe:  # fmt: skip
    rest, gaps, sequence, proved = _Ticker(rows), _Gaps(), SequenceTracker(), []
    for symbol, trade_id in last.items():
        sequence.remember(symbol, trade_id)
    probe = QuietProof(
        rest, symbols=lambda: list(state), proven_until=proven.get, stream_state=state.__getitem__,
        last_id=sequence.last_id, proved=lambda *a: proved.append(a), gaps=gaps, sequence=sequence,  # type: ignore[arg-type]
        window_from=lambda symbol, close_s: 1_000.0, log=get_logger(), metrics=Registry(),
        adopt=(adopted if adopted is not None else []).append,
    )  # fmt: skip
    return probe, rest, gaps, sequence, proved


def test_a_symbol_never_seen_trading_is_proven_and_the_tickers_last_id_becomes_its_cursor() -> None:
    """Streamed, subscribed, no trade since the start: nothing since the subscription (the stream
    would have brought it), so it is proven like any quiet symbol, its markers start (adopted),
    and its last id is the ticker's: a later downtime's trades are a gap like any other's."""
    now = time.time()
    rows = [{"symbol": "NEWUSDT", "lastId": 500, "closeTime": int(now * 1000)},
            {"symbol": "EMPTYUSDT", "lastId": -1, "closeTime": int(now * 1000)}]  # fmt: skip
    state = {"NEWUSDT": (True, 1), "EMPTYUSDT": (True, 1), "GHOSTUSDT": (True, 1)}
    adopted: list[str] = []
    probe, rest, gaps, sequence, proved = _probe(rows, dict.fromkeys(state), {}, state, adopted)
    asyncio.run(probe.look(now))
    asyncio.run(probe.look(now + 15))
    assert rest.asked == [["EMPTYUSDT", "GHOSTUSDT", "NEWUSDT"]]
    assert sorted(p[0] for p in proved) == ["EMPTYUSDT", "NEWUSDT"] and sorted(adopted) == sorted(
        ["EMPTYUSDT", "NEWUSDT"]
    )  # GHOSTUSDT: the ticker does not know it, nothing can be said
    assert sequence.last_id("NEWUSDT") == 500 and sequence.last_id("EMPTYUSDT") is None  # no trade in 24 h
    assert gaps.registered == []
    # The stream's first trade of it, one the ticker counted before the stream brought it: taken.
    assert sequence.accept_run("NEWUSDT", [500, 501])[1] == 0


def test_a_symbol_behind_on_a_steady_connection_is_proven_by_an_unchanged_last_id() -> None:
    now = time.time()
    rows = [{"symbol": "QUIETUSDT", "lastId": 41, "closeTime": int(now * 1000)},
            {"symbol": "MOVEDUSDT", "lastId": 90, "closeTime": int(now * 1000)}]  # fmt: skip
    state = {"QUIETUSDT": (True, 3), "MOVEDUSDT": (True, 3), "FRESHUSDT": (True, 3), "DOWNUSDT": (False, 4)}
    proven = {"QUIETUSDT": None, "MOVEDUSDT": now - BEHIND_S - 5, "FRESHUSDT": now - 2, "DOWNUSDT": None}
    probe, rest, gaps, sequence, proved = _probe(rows, proven, {"QUIETUSDT": 41, "MOVEDUSDT": 80}, state)
    asyncio.run(probe.look(now))
    assert rest.asked == []  # first look: noted, not asked (the connection must stay up a look)
    asyncio.run(probe.look(now + 15))
    assert rest.asked == [["MOVEDUSDT", "QUIETUSDT"]]  # up to date and disconnected ones are not asked
    ((symbol, close_s, _, outages),) = proved
    assert (symbol, close_s, outages) == ("QUIETUSDT", int(now * 1000) / 1000, 3)
    (gap,) = gaps.registered  # trades happened while it was away: the backfill's
    assert (gap.symbol, gap.first_missing, gap.last_missing, gap.window_start_s) == (
        "MOVEDUSDT",
        81,
        90,
        1_000.0,
    )
    assert sequence.last_id("MOVEDUSDT") == 90  # the stream will not report the same gap again


def test_a_reconnect_between_the_question_and_the_answer_proves_nothing() -> None:
    now = time.time()
    state = {"QUIETUSDT": (True, 3)}
    probe, rest, gaps, _, proved = _probe(
        [{"symbol": "QUIETUSDT", "lastId": 41, "closeTime": int(now * 1000)}], {"QUIETUSDT": None},
        {"QUIETUSDT": 41}, state,
    )  # fmt: skip
    asyncio.run(probe.look(now))
    original = rest.ticker_24h

    def reconnecting(symbols: list[str] | None = None) -> RestPage:
        state["QUIETUSDT"] = (True, 4)
        return original(symbols)

    rest.ticker_24h = reconnecting  # type: ignore[method-assign]
    asyncio.run(probe.look(now + 15))
    assert rest.asked and proved == [] and gaps.registered == []


def test_a_symbol_the_ticker_cannot_vouch_for_is_not_asked_again_until_its_connection_changes() -> None:
    now = time.time()
    state = {"DEADUSDT": (True, 1)}
    probe, rest, _, _, proved = _probe(
        [{"symbol": "DEADUSDT", "lastId": -1, "closeTime": int(now * 1000)}], {"DEADUSDT": None},
        {"DEADUSDT": 7}, state,
    )  # fmt: skip
    for look in range(4):
        asyncio.run(probe.look(now + 15 * look))
    assert len(rest.asked) == 1 and proved == []
    state["DEADUSDT"] = (True, 2)
    for look in range(4, 6):
        asyncio.run(probe.look(now + 15 * look))
    assert len(rest.asked) == 2


def test_the_local_feed_answers_the_ticker_with_each_symbols_last_trade_by_now(tmp_path: Path) -> None:
    """As Binance's ticker does: every listed symbol's last trade, whether the stream has sent it
    yet or not (a quiet one that has not traded since the feed started included)."""
    market = Market.whole_market(30, 2_592_000)
    server = FeedServer(MarketTape(market, time.time_ns() // 1000), live=True)
    with ThreadedFeed(server) as feed:
        rest = BinanceRest(feed.url.replace("ws://", "http://"))
        deadline = time.monotonic() + 60
        while not feed.call(lambda: dict(feed.server.history)) and time.monotonic() < deadline:
            time.sleep(0.05)
        feed.pause()
        history = feed.call(lambda: {s: ts[-1].trade_id for s, ts in feed.server.history.items()})
        frontier = feed.call(lambda: feed.server.tape.frontier_us)
        rows = ticker_ids(rest, None)
        some = ticker_ids(rest, sorted(history)[:3])
        whole = rest.ticker_24h(None).used_weight or 0
        three = rest.ticker_24h(sorted(history)[:3]).used_weight or 0
    by_symbol = {r["symbol"]: r["lastId"] for r in rows}
    assert len(rows) == 30 and all(by_symbol[s] == last for s, last in history.items())
    for row in rows:  # the market's last trade by the tape's clock (stopped with the feed)
        assert row["lastId"] == market.first_at(row["symbol"], frontier) - 1
        assert row["firstId"] <= row["lastId"] and row["count"] == row["lastId"] - row["firstId"] + 1
    assert set(by_symbol) - set(history)  # quiet since the feed started: their last trade all the same
    assert [r["symbol"] for r in some] == sorted(history)[:3]
    # Binance's weights, counted: 80 for the whole market, 2 for up to 20 (unless a minute began between)
    assert whole >= 80 and (three - whole == 2 or three == 2)
    assert json.dumps(rows)  # plain JSON rows


def test_a_ticker_that_does_not_answer_with_rows_is_an_error_that_says_so_and_proves_nothing() -> None:
    now = time.time()
    state = {"QUIETUSDT": (True, 3)}
    probe, rest, gaps, _, proved = _probe([], {"QUIETUSDT": None}, {"QUIETUSDT": 41}, state)
    rest.ticker_24h = lambda symbols=None: RestPage(503, None, None, None, "Service unavailable")  # type: ignore[method-assign]
    asyncio.run(probe.look(now))
    with pytest.raises(ValueError, match="ticker/24hr answered HTTP 503: Service unavailable"):
        asyncio.run(probe.look(now + 15))
    assert proved == [] and gaps.registered == []
    rest.ticker_24h = lambda symbols=None: RestPage(200, [{"symbol": "QUIETUSDT"}, "junk"], 80, None)  # type: ignore[method-assign]
    asyncio.run(probe.look(now + 30))  # rows without lastId or closeTime are not read as proof
    assert proved == [] and gaps.registered == []
