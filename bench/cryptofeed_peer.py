"""cryptofeed on the benchmark's feed: Binance trades, a callback that only counts, no storage.

    <python with cryptofeed> bench/cryptofeed_peer.py ws://127.0.0.1:PORT 200000 [BTCUSDT,ETHUSDT,...]

Run by bench/throughput.py with --cryptofeed-python (an interpreter with cryptofeed installed,
kept out of the project's own environment). cryptofeed's Binance feed subscribes to
`btcusdt@aggTrade` on a combined stream and reads exchange info over REST before it connects;
here its address is pointed at the local feed and its symbol table is set directly, and
everything else is cryptofeed as its users run it (its FeedHandler, its event loop choice, its
parsing into Trade objects with Decimal price and amount). Prints one JSON line when the last
trade reaches the callback, then exits.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from typing import Any, ClassVar

from cryptofeed import FeedHandler
from cryptofeed.connection import WebsocketEndpoint
from cryptofeed.defines import SPOT, TRADES
from cryptofeed.exchanges import Binance
from cryptofeed.symbols import Symbols


def main() -> None:
    url, trades = sys.argv[1], int(sys.argv[2])
    symbols = sys.argv[3].split(",") if len(sys.argv) > 3 else ["BTCUSDT"]
    info: dict[str, Any] = defaultdict(dict)
    names = {}
    for symbol in symbols:  # BTCUSDT -> BTC-USDT, as cryptofeed names pairs
        quote = next(q for q in ("USDT", "FDUSD", "USDC", "BTC", "ETH", "BNB") if symbol.endswith(q))
        name = f"{symbol[: -len(quote)]}-{quote}"
        names[name] = symbol
        info["tick_size"][name] = "0.01000000"
        info["instrument_type"][name] = SPOT
    Symbols.set(Binance.id, names, info)

    class LocalBinance(Binance):  # type: ignore[misc]
        websocket_endpoints: ClassVar[list[Any]] = [WebsocketEndpoint(url)]

    seen = 0

    async def on_trade(trade: Any, receipt_timestamp: float) -> None:
        nonlocal seen
        seen += 1
        if seen == 1:
            print(json.dumps({"event": "cryptofeed.first_trade", "at": time.time()}), flush=True)
        if seen == trades:
            print(json.dumps({"event": "cryptofeed.done", "at": time.time(), "trades": seen}), flush=True)
            os._exit(0)  # the parent reads CPU time and peak RSS from this process's exit

    handler = FeedHandler(config={"log": {"disabled": True}})
    handler.add_feed(LocalBinance(symbols=list(names), channels=[TRADES], callbacks={TRADES: on_trade}))
    handler.run()


if __name__ == "__main__":
    main()
