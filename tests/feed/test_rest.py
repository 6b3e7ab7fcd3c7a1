"""The local feed's REST API counts every endpoint's weight as Binance does, and keeps the most
any minute used, for tests that hold the collector to its budget."""

from __future__ import annotations

import time

from collector.binance.rest import BinanceRest
from collector.feed.server import FeedServer
from collector.feed.simulated import Market
from collector.feed.tapes import MarketTape
from tests.conftest import wait_for
from tests.support.threaded_feed import ThreadedFeed


def test_every_endpoint_is_weighed_and_the_busiest_minute_is_kept() -> None:
    market = Market.whole_market(30, 2_592_000)
    server = FeedServer(MarketTape(market, time.time_ns() // 1000), live=True)
    with ThreadedFeed(server) as feed:
        rest = BinanceRest(feed.url.replace("ws://", "http://"))
        symbol = market.symbols[0]
        wait_for(lambda: time.time() % 60 < 50, timeout_s=15, what="room in this minute for four requests")
        pages = [
            rest.exchange_info(),
            rest.ticker_24h([symbol]),
            rest.historical_trades(symbol, market.first_at(symbol, time.time_ns() // 1000 - 60_000_000), 10),
        ]
        rest.first_trade_id_from(symbol, int(time.time() * 1000) - 60_000)
        peak = feed.call(lambda: feed.server.rest.peak_weight)
    assert [p.status for p in pages] == [200, 200, 200]
    assert pages[-1].used_weight == 47 and peak == 51  # 20 + 2 + 25, then aggTrades' 4
