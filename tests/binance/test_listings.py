"""COLLECTOR_SYMBOLS=ALL: the setting, exchangeInfo's market read, the change between two reads,
and what a symbol that stops trading leaves proven for its markers."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from collector.binance.listings import Listings, ListingsUnavailable, listing_change, trading_symbols
from collector.binance.rest import RestPage
from collector.config import load_settings
from collector.exceptions import ConfigError
from collector.lake.sinks import LocalSink
from collector.landing.markers import MarkerBook, MarkerScheduler, MarkerWriter


def row(symbol: str, status: str = "TRADING", quote: str = "USDT", **extra: Any) -> dict[str, Any]:
    return {"symbol": symbol, "status": status, "quoteAsset": quote, "isSpotTradingAllowed": True, **extra}


def test_all_takes_every_trading_spot_symbol_of_the_quote_assets() -> None:
    info = {"symbols": [
        row("BTCUSDT"), row("ETHBTC", quote="BTC"), row("LUNAUSDT", "BREAK"), row("XFDUSD", quote="FDUSD"),
        row("MARGINONLY", isSpotTradingAllowed=False, permissionSets=[["MARGIN"]]),
        row("OLDSTYLE", isSpotTradingAllowed=None, permissions=["SPOT"]), "junk", {"no": "symbol"},
    ]}  # fmt: skip
    statuses, trading = trading_symbols(info)
    assert trading == ("BTCUSDT", "ETHBTC", "OLDSTYLE", "XFDUSD")
    assert statuses["LUNAUSDT"] == "BREAK" and "MARGINONLY" not in statuses
    assert trading_symbols(info, ("USDT", "FDUSD"))[1] == ("BTCUSDT", "OLDSTYLE", "XFDUSD")
    with pytest.raises(ListingsUnavailable, match="no `symbols` list"):
        trading_symbols({"code": -1000})


def test_a_change_names_new_listings_and_each_dropped_symbols_status() -> None:
    statuses = {"BTCUSDT": "TRADING", "NEWUSDT": "TRADING", "LUNAUSDT": "BREAK"}
    change = listing_change({"BTCUSDT", "LUNAUSDT", "GONEUSDT"}, ("BTCUSDT", "NEWUSDT"), statuses)
    assert change.added == ("NEWUSDT",)
    assert change.removed == {"GONEUSDT": "not listed", "LUNAUSDT": "BREAK"}
    assert not listing_change({"BTCUSDT"}, ("BTCUSDT",), statuses)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("ALL", (True, ())), ("all:usdt, fdusd", (True, ("USDT", "FDUSD"))), ("BTCUSDT", (False, ()))],
)
def test_the_symbols_setting_reads_all_and_its_quote_assets(value: str, expected: tuple[Any, ...]) -> None:
    s = load_settings({"COLLECTOR_SYMBOLS": value})
    assert (s.all_symbols, s.quote_assets) == expected
    assert s.combined is expected[0]
    assert s.as_env()["COLLECTOR_SYMBOLS"] == (value.upper().replace(" ", "") if expected[0] else "BTCUSDT")
    assert "COLLECTOR_ALL_SYMBOLS" not in s.as_env()


def test_more_than_1024_symbols_are_a_valid_list_now() -> None:
    names = ",".join(f"S{i:04d}USDT" for i in range(1500))
    assert len(load_settings({"COLLECTOR_SYMBOLS": names}).symbols) == 1500


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COLLECTOR_SYMBOLS": "ALL:"}, "names no quote asset"),
        ({"COLLECTOR_SYMBOLS": "ALL:US-DT"}, "US-DT not a quote asset"),
        ({"COLLECTOR_STREAMS_PER_CONNECTION": "1025"}, "COLLECTOR_STREAMS_PER_CONNECTION"),
        ({"COLLECTOR_STREAMS_PER_CONNECTION": "0"}, "COLLECTOR_STREAMS_PER_CONNECTION"),
        ({"COLLECTOR_SYMBOLS_REFRESH_S": "-1"}, "COLLECTOR_SYMBOLS_REFRESH_S"),
    ],
)
def test_bad_whole_market_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def scheduler(tmp_path: Path, state: dict[str, tuple[bool, int]]) -> MarkerScheduler:
    writer = MarkerWriter(MarkerBook(tmp_path / "markers"), LocalSink(tmp_path / "lake"), grace_s=0.0,
                          log=None)  # fmt: skip
    return MarkerScheduler(writer, stream_state=lambda symbol: state[symbol], pending=lambda s: set(),
                           open_gap_from=lambda s: float("inf"), gaps_in=lambda s, m: [],
                           log=None)  # fmt: skip


def test_a_delisted_symbol_connected_since_its_last_trade_is_proven_to_the_end_of_that_minute(
    tmp_path: Path,
) -> None:
    state = {"AUSDT": (True, 0), "BUSDT": (True, 1)}
    markers = scheduler(tmp_path, state)
    trade_ms = (int(time.time()) - 30) * 1000
    now = time.monotonic()
    markers.saw_trades({"AUSDT": trade_ms, "BUSDT": trade_ms}, 1000, now - 30, 0)
    markers.retire("AUSDT")  # up since its trade: nothing can follow a halt
    markers.retire("BUSDT")  # an outage since (1 then, 0 at its trade): only its trade is proven
    retired_at = time.time()
    assert markers.proven_until("AUSDT") == (retired_at // 60 + 1) * 60
    assert markers.proven_until("BUSDT") == trade_ms / 1000
    state["AUSDT"] = (True, 5)
    assert markers.proven_until("AUSDT") == (retired_at // 60 + 1) * 60  # fixed: no longer streamed
    markers.reinstate("AUSDT")  # listed again: proven from its next trade on
    assert markers.proven_until("AUSDT") is None


class _Rest:
    """A stand-in for BinanceRest.exchange_info in a unit test of Listings.fetch alone."""

    base_url = "http://exchange.test"

    def __init__(self, page: Any) -> None:
        self.page = page

    def exchange_info(self) -> Any:
        if isinstance(self.page, Exception):
            raise self.page
        return self.page


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (OSError("connection refused"), "could not be reached at http://exchange.test: connection refused"),
        (RestPage(503, None, None, None, "maintenance"), "answered HTTP 503: maintenance"),
        (
            RestPage(200, [{"symbols": [row("LUNAUSDT", "BREAK")]}], None, None),
            "no TRADING spot symbol of USDT",
        ),
        (RestPage(200, [{"symbols": "garbage"}], None, None), "has no `symbols` list"),
    ],
)
def test_an_exchange_info_that_is_no_market_is_refused_with_the_reason(page: Any, message: str) -> None:
    listings = Listings(_Rest(page), quotes=("USDT",), refresh_s=300.0, log=None)  # type: ignore[arg-type]
    with pytest.raises(ListingsUnavailable, match=re.escape(message)):
        listings.fetch()
    assert listings.refreshes == 0
