"""COLLECTOR_SYMBOLS=ALL end to end: a collector subprocess against a local market of 1,500
symbols (a real loopback WebSocket and HTTP server in a thread of the test) with listings and
delistings during the run; every trade of every symbol lands once, no subscription limit trips,
and a delisted symbol's minutes are marked through its delisting."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collector.feed.server import FeedServer
from collector.feed.simulated import Market, Schedule
from collector.feed.subscriptions import Limits
from collector.feed.tapes import MarketTape
from collector.lake.layout import parse_object_key
from tests.conftest import Proc, collector_env, stop_cleanly, wait_for
from tests.support.landing import ids_by_symbol
from tests.support.threaded_feed import ThreadedFeed

pytestmark = pytest.mark.slow

SYMBOLS = 1_500
PER_DAY = 17_280_000  # 200 trades a second in all; BTCUSDT about 43 a second
LIST_AFTER_S, DELIST_AFTER_S, REFRESH_S = 20.0, 35.0, 4.0


@pytest.fixture
def market_feed() -> Iterator[tuple[ThreadedFeed, list[str], list[str]]]:
    market = Market.whole_market(SYMBOLS, PER_DAY)
    # Listed: ten brisk ones just below the top; delisted: ten that trade about once a second
    # or less, so each has a few trades before its delisting.
    listed, delisted = list(market.symbols[12:22]), list(market.symbols[40:50])
    schedule = Schedule.after_start(
        dict.fromkeys(listed, LIST_AFTER_S), dict.fromkeys(delisted, DELIST_AFTER_S)
    )
    tape = MarketTape(market, time.time_ns() // 1000, schedule=schedule)
    server = FeedServer(tape, live=True, limits=Limits(ban_s=600.0))
    with ThreadedFeed(server) as feed:
        yield feed, listed, delisted


def test_a_whole_market_with_listings_and_delistings_lands_every_trade_once(
    procs: Callable[..., Proc], tmp_path: Path, market_feed: tuple[ThreadedFeed, list[str], list[str]]
) -> None:
    feed, listed, delisted = market_feed
    started = time.time()
    env = collector_env(feed.url, tmp_path, symbols="ALL", symbols_refresh_s=str(REFRESH_S),
                        marker_grace_s="1", max_batch_age_s="60")  # fmt: skip
    collector = procs("run", env=env)
    ready = collector.wait_event("collector.ready", timeout_s=120)
    ready_at = time.time()
    first_whole_minute = int(ready_at // 60) + 1  # every connection up from its start
    assert "1490 streams on 8 connections" in ready["stream"]  # 1,500 less the 10 not yet listed
    changes = wait_for(
        lambda: collector.named("collector.symbols_changed") or None, timeout_s=120, what="listings"
    )
    wait_for(lambda: time.time() > started + DELIST_AFTER_S + 2 * REFRESH_S, timeout_s=120, what="delistings")
    events = collector.named("collector.symbols_changed")
    assert sorted(s for e in events for s in e["listed"].split(",") if s) == sorted(listed), changes
    assert {s: st for e in events for s, st in e["delisted"].items()} == dict.fromkeys(delisted, "BREAK")
    # Every TRADING symbol on exactly one connection, none of the delisted.
    subscribed = [s for streams in feed.call(feed.server.subscriptions).values() for s in streams]
    trading = set(feed.server.tape.symbols) - set(delisted)
    assert sorted(subscribed) == sorted(trading)
    # Stop producing, let the queues drain, then wait until everything sent has landed.
    wait_for(lambda: time.time() > (first_whole_minute + 1) * 60 + 2, timeout_s=120,
             what="the first whole minute to pass")  # fmt: skip
    feed.pause()
    sent = feed.call(lambda: {s: [t.trade_id for t in ts] for s, ts in feed.server.history.items()})

    def all_landed() -> bool:  # by the objects' names: reading them would starve the feed's thread
        last: dict[str, int] = {}
        for path in (tmp_path / "landing").rglob("*.parquet"):
            name = parse_object_key(path.relative_to(tmp_path / "landing").as_posix())
            if name is not None:
                last[name.symbol] = max(last.get(name.symbol, -1), name.last_trade_id)
        recent = [s for s in sent if _trade_s(feed.server.history[s][-1]) > ready_at + 5]
        return all(last.get(s) == sent[s][-1] for s in recent)

    wait_for(all_landed, timeout_s=180, what="every trade sent to land")
    # A delisted symbol's minutes are marked through the minute it was dropped in (nothing trades
    # after a halt): its last trade's minute and the delisting's too.
    landing = tmp_path / "landing" / "Binance"
    delisted_minute = int(started + DELIST_AFTER_S) // 60
    for symbol in delisted:
        due = {int(_trade_s(feed.server.history[symbol][-1])) // 60, delisted_minute}
        wait_for(lambda s=symbol, d=due: d <= {_minute_of(p) for p in (landing / s).rglob("_SUCCESS")},
                 timeout_s=180, what=f"{symbol}'s markers through its delisting")  # fmt: skip
    from_start = set(feed.server.tape.symbols) - set(listed) - set(delisted)  # streamed from the start
    wait_for(lambda: _marked(tmp_path / "landing", first_whole_minute, from_start), timeout_s=180,
             what="the first whole minute's markers")  # fmt: skip
    stopped = stop_cleanly(collector)
    got = ids_by_symbol(tmp_path / "landing")
    for symbol, ids in sent.items():
        landed = got.get(symbol, [])
        # Captured from the start: from the collector's ready (or the listing's refresh) on.
        from_s = ready_at + 5 if symbol not in listed else started + LIST_AFTER_S + 2 * REFRESH_S + 5
        missed = [t for t in feed.server.history[symbol] if not landed or t.trade_id < landed[0]]
        assert not missed or _trade_s(missed[-1]) < from_s, (
            f"{symbol}: trades after the start were not captured"
        )
        if landed:
            assert landed == list(range(landed[0], ids[-1] + 1)), f"{symbol}: lost or doubled trades"
    _requests_match_the_cost_model(tmp_path / "landing", feed.server.history, first_whole_minute, from_start)
    control = feed.server.control
    assert (control.rate_violations, control.banned_handshakes, control.subscription_errors) == (0, 0, 0)
    assert stopped["subscription_failures"] == 0


def _marked(root: Path, minute: int, streamed: set[str]) -> bool:
    """Every symbol streamed from the start has its marker for `minute`, traded or not."""
    return all((root / "Binance" / s / _minute_path(minute) / "_SUCCESS").exists() for s in streamed)


def _minute_path(minute: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%Y/%m/%d/%H/%M")


def _requests_match_the_cost_model(
    root: Path, history: dict[str, list[Any]], minute: int, streamed: set[str]
) -> None:
    """The docs' cost model of the per-symbol layout, for one whole minute of the run: one
    object (one PUT) per symbol with a trade in the minute, one marker (one PUT) per symbol
    streamed since the start, whether or not it has traded (`streamed`: those from the start,
    the listed and delisted aside)."""
    traded = {s for s, ts in history.items() if any(int(_trade_s(t)) // 60 == minute for t in ts)}
    objects: dict[int, set[str]] = {}
    markers: set[str] = set()
    for path in root.rglob("*"):
        if path.is_file():
            if path.name == "_SUCCESS":
                if _minute_of(path) == minute:
                    markers.add(path.parts[-7])
            else:
                objects.setdefault(_minute_of(path), set()).add(path.parts[-7])
    assert objects[minute] == traded  # one object each: no split, no late straggler
    assert sum(1 for p in root.rglob("*.parquet") if _minute_of(p) == minute) == len(traded)
    captured = set().union(*(found for m, found in objects.items() if m <= minute)) & streamed
    assert markers & streamed == streamed
    # The quiet ones are marked too, the ones never seen trading as well.
    assert len(traded) > 300 and len(streamed) > len(captured) > len(traded & streamed)


def _trade_s(trade: Any) -> float:
    return json.loads(trade.payload_ms)["T"] / 1000


def _minute_of(marker: Path) -> int:
    year, month, day, hour, minute = (int(p) for p in marker.parts[-6:-1])
    from datetime import UTC, datetime

    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) // 60
