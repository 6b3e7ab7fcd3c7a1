"""The local feed as a whole market: heavy-tailed counts, listings and delistings, exchangeInfo,
and the SUBSCRIBE protocol with Binance's limits, over real loopback WebSockets and HTTP."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from collector.feed.archive import ArchiveFeed
from collector.feed.server import FeedServer
from collector.feed.simulated import DAY_US, Market, Schedule, scheduled_names, split_symbol
from collector.feed.subscriptions import Limits
from collector.feed.tapes import MarketTape

DEADLINE_S = 30.0


async def until(condition: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    """Wait for `condition` (polled), failing with `what` after a generous deadline."""
    end = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def http_get(url: str) -> tuple[int, Any, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback http)
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


async def get(url: str) -> tuple[int, Any, dict[str, str]]:
    return await asyncio.to_thread(http_get, url)


async def request(ws: ClientConnection, message: dict[str, Any] | str) -> dict[str, Any]:
    """Send a control request; the first answer (a frame without "e" or "stream") back."""
    await ws.send(message if isinstance(message, str) else json.dumps(message))
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S))
        if "result" in frame or "error" in frame:
            return frame  # type: ignore[no-any-return]


def busy_market(*symbols: str, per_second: int = 20) -> Market:
    return Market(symbols, per_second * 86_400)


# -- the market's shape ------------------------------------------------------------------


def test_a_whole_market_is_heavy_tailed_and_plausibly_named() -> None:
    market = Market.whole_market(1500, 17_280_000)
    counts = market.per_day
    assert counts is not None and len(counts) == len(set(market.symbols)) == 1500
    assert market.symbols[:2] == ("BTCUSDT", "ETHUSDT")
    assert all(re.fullmatch(r"[A-Z0-9]{2,20}", s) for s in market.symbols)
    quotes = Counter(split_symbol(s)[1] for s in market.symbols)
    assert quotes.most_common(1)[0][0] == "USDT" and 0.4 < quotes["USDT"] / 1500 < 0.7
    assert {"FDUSD", "USDC", "BTC", "ETH", "BNB", "TRY", "EUR"} <= set(quotes)
    total = sum(counts)
    assert abs(total - 17_280_000) < 17_280
    assert list(counts) == sorted(counts, reverse=True)
    assert 0.50 < sum(counts[:10]) / total < 0.60  # the docstring says 55.6%
    assert min(counts) == 48 and sum(1 for c in counts if c <= 240) > 500  # many trade a few times an hour
    assert market.trades_per_day_of("BTCUSDT") == counts[0]
    assert Market.whole_market(1500, 17_280_000) == market  # deterministic


def test_per_symbol_counts_keep_times_rising_with_ids_across_a_day() -> None:
    market = Market(("BTCUSDT", "QUIETUSDT"), per_day=(200_000_000, 48))
    day = 20_000
    for symbol, per_day in (("BTCUSDT", 200_000_000), ("QUIETUSDT", 48)):
        first = market.first_id(symbol, day)
        assert market.first_id(symbol, day + 1) == first + per_day
        around_midnight = first + per_day - min(500, per_day)
        ids = range(around_midnight, around_midnight + 2 * min(500, per_day))
        times = [market.trade(symbol, i).time_us for i in ids]
        assert times == sorted(times)
        assert market.trade(symbol, first).time_us // DAY_US == day
        at = market.trade(symbol, first + 7).time_us
        assert market.first_at(symbol, at) == first + 7 and market.first_at(symbol, at + 1) == first + 8
    with pytest.raises(ValueError, match="per_day has 1 counts"):
        Market(("A1", "B1"), per_day=(5,))


def test_archive_rest_and_stream_agree_on_a_symbol_with_its_own_count() -> None:
    market = Market(("BTCUSDT", "QUIETUSDT"), per_day=(2_880, 96))
    yesterday = datetime.now(tz=UTC).date() - timedelta(days=1)
    number = (yesterday - datetime(1970, 1, 1, tzinfo=UTC).date()).days
    status, body = ArchiveFeed(market).answer(
        f"/data/spot/daily/trades/QUIETUSDT/QUIETUSDT-trades-{yesterday}.zip"
    )
    assert status == 200
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        rows = list(csv.reader(io.StringIO(archive.read(archive.namelist()[0]).decode())))
    assert len(rows) == 96
    micro = yesterday.year >= 2025
    archived = [(int(r[0]), r[1], r[2], int(r[4]) if micro else int(r[4]) * 1000) for r in rows]

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        start_us = (number * DAY_US) + DAY_US - 3 * 3600 * 1_000_000  # yesterday's last 3 hours
        server = FeedServer(MarketTape(market, start_us, count=5))
        url = await server.start()
        async with connect(url + "/ws/quietusdt@trade", compression=None) as ws:
            frames = [json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S)) for _ in range(5)]
        rest = url.replace("ws://", "http://") + "/api/v3/historicalTrades?symbol=QUIETUSDT"
        _, by_time, _ = await get(f"{rest}&startTime={number * 86_400_000}&limit=96")
        _, by_id, _ = await get(f"{rest}&fromId={frames[0]['t']}&limit=5")
        await server.close()
        return frames, by_time, by_id

    frames, by_time, by_id = asyncio.run(scenario())
    micro_rest = [(r["id"], r["price"], r["qty"], r["time"]) for r in by_time]
    assert [(i, p, q, t // 1000) for i, p, q, t in archived] == micro_rest  # REST times are ms
    streamed = [(f["t"], f["p"], f["q"], f["T"]) for f in frames]
    assert streamed == [(r["id"], r["price"], r["qty"], r["time"]) for r in by_id]
    assert {f["t"] for f in frames} <= {a[0] for a in archived}  # yesterday's last trades, archived too


# -- the tape ----------------------------------------------------------------------------


def test_the_heap_tape_merges_1500_symbols_in_time_order_within_their_windows_and_fast() -> None:
    market = Market.whole_market(1500, 172_800_000)  # 2,000 trades a second in all
    now_us = time.time_ns() // 1000
    listed, delisted = market.symbols[2], market.symbols[3]
    schedule = Schedule.after_start({listed: -10.0}, {delisted: -20.0}, origin_us=now_us)
    tape = MarketTape(market, now_us - 30_000_000, schedule=schedule)
    taken, cpu, wall = [], time.process_time(), time.perf_counter()
    while chunk := tape.take(512):
        taken += chunk
        if len(chunk) < 512:
            break
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert len(taken) > 50_000  # 30 s of a 2,000/s market
    times = [json.loads(t.payload_us)["T"] for t in taken]  # type: ignore[arg-type]
    assert times == sorted(times) and times[-1] <= time.time_ns() // 1000
    by_symbol: dict[str, list[int]] = {}
    for trade, at in zip(taken, times, strict=True):
        by_symbol.setdefault(trade.symbol, []).append(at)
        assert at >= now_us - 30_000_000
    assert min(by_symbol[listed]) >= now_us - 10_000_000
    assert max(by_symbol[delisted]) < now_us - 20_000_000
    for symbol in (market.symbols[0], listed):
        ids = [t.trade_id for t in taken if t.symbol == symbol]
        assert ids == list(range(ids[0], ids[0] + len(ids)))
    rate = len(taken) / cpu
    assert rate > 6_000, f"{rate:.0f} trades per CPU second"  # three times the 2,000/s it must sustain
    print(f"\nMarketTape.take, 1,500 symbols: {len(taken) / wall:,.0f} trades/s, {1e6 / rate:.1f} µs CPU")


def test_scheduled_names_list_brisk_newcomers_and_delist_the_quietest() -> None:
    symbols = Market.whole_market(30, 1_000_000).symbols
    listed, delisted = scheduled_names(symbols, 2, 3)
    assert listed == list(symbols[10:12]) and delisted == list(symbols[-3:])
    with pytest.raises(ValueError, match="leave none"):
        scheduled_names(symbols[:3], 2, 1)


# -- exchangeInfo, listings and delistings -------------------------------------------------


def test_exchange_info_follows_a_listing_and_a_delisting() -> None:
    market = busy_market("BTCUSDT", "ETHUSDT", "NEWUSDT", "OLDUSDT")
    schedule = Schedule.after_start({"NEWUSDT": 1.0}, {"OLDUSDT": 1.5})

    async def scenario() -> None:
        server = FeedServer(MarketTape(market, time.time_ns() // 1000, schedule=schedule), live=True)
        url = await server.start()
        rest = url.replace("ws://", "http://") + "/api/v3/exchangeInfo"
        status, info, _ = await get(rest)
        assert status == 200 and {r["symbol"]: r["status"] for r in info["symbols"]} == dict.fromkeys(
            ("BTCUSDT", "ETHUSDT", "OLDUSDT"), "TRADING"
        )
        assert set(info["symbols"][0]) == {"symbol", "status", "baseAsset", "quoteAsset",
                                           "isSpotTradingAllowed", "permissionSets"}  # fmt: skip
        assert (await get(rest + "?symbol=NEWUSDT"))[1]["code"] == -1121  # not listed yet
        hist = url.replace("ws://", "http://") + "/api/v3/historicalTrades?symbol="
        assert (await get(hist + "NEWUSDT"))[0] == 400
        async with connect(url + "/stream?streams=newusdt@trade/oldusdt@trade", compression=None) as ws:
            first_new = None
            while first_new is None:
                data = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S))["data"]
                if data["s"] == "NEWUSDT":
                    first_new = data["T"]
            assert first_new >= schedule.listed_us["NEWUSDT"] // 1000
        statuses: dict[str, str] = {}

        async def refresh() -> None:
            statuses.clear()
            statuses.update({r["symbol"]: r["status"] for r in (await get(rest))[1]["symbols"]})

        await refresh()
        while statuses.get("OLDUSDT") != "BREAK":
            await until(lambda: time.time_ns() // 1000 > schedule.delisted_us["OLDUSDT"], "the delisting")
            await refresh()
        assert statuses == {**dict.fromkeys(("BTCUSDT", "ETHUSDT", "NEWUSDT"), "TRADING"), "OLDUSDT": "BREAK"}
        _, trading, _ = await get(rest + "?symbolStatus=TRADING")
        assert [r["symbol"] for r in trading["symbols"]] == ["BTCUSDT", "ETHUSDT", "NEWUSDT"]
        _, old, _ = await get(rest + '?symbols=["OLDUSDT"]')
        assert old["symbols"][0]["status"] == "BREAK"
        status, mixed, _ = await get(rest + "?symbolStatus=TRADING&symbol=BTCUSDT")
        assert status == 400 and mixed["code"] == -1128
        assert (await get(rest + "?symbolStatus=SLEEPING"))[0] == 400
        _, rows, _ = await get(hist + "OLDUSDT&limit=20")
        assert rows and all(r["time"] * 1000 < schedule.delisted_us["OLDUSDT"] for r in rows)
        await asyncio.sleep(0)
        sent_old = [json.loads(t.payload_ms)["T"] for t in server.history.get("OLDUSDT", [])]
        sent_new = [json.loads(t.payload_ms)["T"] for t in server.history.get("NEWUSDT", [])]
        assert sent_old and max(sent_old) * 1000 < schedule.delisted_us["OLDUSDT"]
        assert sent_new and min(sent_new) * 1000 >= schedule.listed_us["NEWUSDT"] - 1000
        assert server.rest.exchange_info_calls >= 8
        await server.close()

    asyncio.run(scenario())


# -- SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS ----------------------------------------------


def test_subscribe_list_and_unsubscribe_on_a_bare_combined_connection() -> None:
    market = busy_market("BTCUSDT", "ETHUSDT", per_second=50)

    async def scenario() -> None:
        server = FeedServer(MarketTape(market, time.time_ns() // 1000))
        url = await server.start()
        async with connect(url + "/stream", compression=None) as ws:
            await until(lambda: bool(server.clients), "the connection")
            assert server.subscriptions() == {1: frozenset()}
            params = ["btcusdt@trade", "ethusdt@trade", "dogeusdt@trade"]  # DOGEUSDT is not listed: silent
            answer = await request(ws, {"method": "SUBSCRIBE", "params": params, "id": 1})
            assert answer == {"result": None, "id": 1}
            frames = [json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S)) for _ in range(40)]
            assert {f["stream"] for f in frames} == {"btcusdt@trade", "ethusdt@trade"}
            assert all(f["data"]["s"] == f["stream"].split("@")[0].upper() for f in frames)
            listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 2})
            assert listed == {"result": params, "id": 2}
            assert server.subscriptions() == {1: frozenset({"BTCUSDT", "ETHUSDT", "DOGEUSDT"})}
            answer = await request(ws, {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": 3})
            assert answer == {"result": None, "id": 3}
            after = [json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S)) for _ in range(40)]
            assert {f["stream"] for f in after} == {"ethusdt@trade"}  # nothing of BTC behind the answer
        assert server.subscribe_requests == 1 and server.subscription_errors == 0
        await server.close()

    asyncio.run(scenario())


def test_a_raw_connection_gets_its_subscribed_frames_unwrapped() -> None:
    async def scenario() -> None:
        server = FeedServer(MarketTape(busy_market("BTCUSDT", "ETHUSDT"), time.time_ns() // 1000))
        url = await server.start()
        async with connect(url + "/ws/btcusdt@trade", compression=None) as ws:
            answer = await request(ws, {"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 7})
            assert answer == {"result": None, "id": 7}
            seen: set[str] = set()
            while seen != {"BTCUSDT", "ETHUSDT"}:
                frame = json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S))
                assert frame["e"] == "trade"  # raw, no {"stream":..,"data":..}
                seen.add(frame["s"])
            listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 8})
            assert listed == {"result": ["btcusdt@trade", "ethusdt@trade"], "id": 8}
            combined = await request(ws, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 9})
            assert combined == {"result": None, "id": 9}
            while "stream" not in (frame := json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S))):
                pass
            assert frame["stream"].endswith("@trade")
        await server.close()

    asyncio.run(scenario())


def test_malformed_requests_are_answered_with_binance_errors() -> None:
    async def scenario() -> list[dict[str, Any]]:
        server = FeedServer(MarketTape(busy_market("BTCUSDT", per_second=1), time.time_ns() // 1000))
        url = await server.start()
        async with connect(url + "/ws", compression=None) as ws:
            answers = [
                await request(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": "one"}),
                await request(ws, {"method": "SUBSCRIBE_ALL", "params": [], "id": 2}),
                await request(ws, {"method": "SUBSCRIBE", "params": ["BTCUSDT@trade"], "id": 3}),
                await request(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 4}),
                await request(ws, "{not json"),
            ]
            assert server.subscription_errors == 5 and server.subscriptions() == {1: frozenset()}
        await server.close()
        return answers

    answers = asyncio.run(scenario())
    assert [(a["error"]["code"], a["id"]) for a in answers] == [(2, None), (2, 2), (2, 3), (2, 4), (3, None)]
    assert all(a["error"]["msg"].startswith(("Invalid request: ", "Invalid JSON: ")) for a in answers)
    assert "request ID must be an unsigned integer" in answers[0]["error"]["msg"]


def test_the_1025th_stream_is_refused_and_subscribes_nothing() -> None:
    async def scenario() -> None:
        server = FeedServer(MarketTape(busy_market("BTCUSDT", per_second=1), time.time_ns() // 1000))
        url = await server.start()
        async with connect(url + "/stream", compression=None) as ws:
            many = [f"s{i:04d}usdt@trade" for i in range(1024)]
            answer = await request(ws, {"method": "SUBSCRIBE", "params": many, "id": 1})
            assert answer == {"result": None, "id": 1}
            refused = await request(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 2})
            assert refused["id"] == 2 and "at most 1024 streams" in refused["error"]["msg"]
            listed = await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3})
            assert listed["result"] == many
        assert server.subscription_errors == 1 and server.subscribe_requests == 2
        await server.close()

    asyncio.run(scenario())


def test_a_url_naming_more_streams_than_allowed_is_refused_with_400() -> None:
    async def scenario() -> None:
        tape = MarketTape(busy_market("BTCUSDT", "ETHUSDT", "BNBUSDT"), time.time_ns() // 1000)
        server = FeedServer(tape, limits=Limits(max_streams=2))
        url = await server.start()
        with pytest.raises(InvalidStatus) as info:
            async with connect(url + "/stream?streams=btcusdt@trade/ethusdt@trade/bnbusdt@trade"):
                pass
        assert info.value.response.status_code == 400
        assert "at most 2" in json.loads(info.value.response.body)["msg"]
        async with connect(url + "/stream?streams=btcusdt@trade/ethusdt@trade", compression=None) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), DEADLINE_S))["stream"].endswith("@trade")
        await server.close()

    asyncio.run(scenario())


def test_a_handshake_url_over_8000_characters_is_answered_414() -> None:
    async def scenario() -> None:
        server = FeedServer(MarketTape(busy_market("BTCUSDT"), time.time_ns() // 1000))
        url = await server.start()
        with pytest.raises(InvalidStatus) as info:
            async with connect(url + "/ws/btcusdt@trade?pad=" + "x" * 8_000):
                pass
        assert info.value.response.status_code == 414
        assert json.loads(info.value.response.body)["msg"].startswith("URL of 8022 characters")
        await server.close()

    asyncio.run(scenario())


# -- the message rate and bans -------------------------------------------------------------


async def closed_by(ws: ClientConnection) -> tuple[int | None, str | None]:
    """Read until the server closes; its close code and reason."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), DEADLINE_S)
    except ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, None)


def test_six_messages_in_a_second_close_with_1008_and_the_third_violation_bans() -> None:
    async def scenario() -> None:
        server = FeedServer(
            MarketTape(busy_market("BTCUSDT", per_second=1), time.time_ns() // 1000),
            limits=Limits(ban_s=60.0),
        )
        url = await server.start()
        async with connect(url + "/ws", compression=None) as ws:  # five in a second are fine
            for i in range(5):
                assert (await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": i}))["id"] == i
        assert server.rate_violations == 0
        for violation in range(3):
            async with connect(url + "/ws", compression=None) as ws:
                for i in range(6):
                    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
                assert await closed_by(ws) == (1008, "Too many requests")
            assert server.rate_violations == violation + 1
        with pytest.raises(InvalidStatus) as info:
            async with connect(url + "/ws"):
                pass
        response = info.value.response
        assert response.status_code == 418 and 0 < int(response.headers["Retry-After"]) <= 60
        assert json.loads(response.body)["code"] == -1003
        assert server.banned_handshakes == 1
        await server.close()

    asyncio.run(scenario())


def test_client_pings_count_against_the_message_rate() -> None:
    async def scenario() -> None:
        server = FeedServer(MarketTape(busy_market("BTCUSDT", per_second=1), time.time_ns() // 1000))
        url = await server.start()
        async with connect(url + "/ws", compression=None, ping_interval=None) as ws:
            await until(lambda: bool(server.clients), "the connection")
            for _ in range(6):
                await ws.ping()
            assert await closed_by(ws) == (1008, "Too many requests")
        assert server.rate_violations == 1
        await server.close()

    asyncio.run(scenario())


def test_a_ban_expires_after_ban_s() -> None:
    async def scenario() -> None:
        server = FeedServer(
            MarketTape(busy_market("BTCUSDT", per_second=1), time.time_ns() // 1000),
            limits=Limits(ban_after=1, ban_s=0.5),
        )
        url = await server.start()
        async with connect(url + "/ws", compression=None) as ws:
            for i in range(6):
                await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
            assert (await closed_by(ws))[0] == 1008
        with pytest.raises(InvalidStatus):
            async with connect(url + "/ws"):
                pass
        banned_until = time.monotonic() + 0.5
        await until(lambda: time.monotonic() > banned_until, "the end of the ban")
        async with connect(url + "/ws", compression=None) as ws:
            assert (await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}))["result"] == []
        await server.close()

    asyncio.run(scenario())


# -- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--market-symbols", "0"], "must be at least 1"),
        (["--market-symbols", "5", "--listings", "x"], "is not a whole number"),
        (["--market-symbols", "5", "--listings", "2"], "--listings/--list-after-s: give both"),
        (["--market", "--delistings", "1", "--delist-after-s", "5"], "add --market-symbols N"),
        (
            [
                "--market-symbols",
                "3",
                "--listings",
                "1",
                "--list-after-s",
                "1",
                "--delistings",
                "3",
                "--delist-after-s",
                "1",
            ],
            "leave none",
        ),
    ],
)
def test_emulate_argument_errors_exit_2_with_a_reason(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import collector.cli.feed
    from collector.cli.main import main

    # In this process, not a subprocess: logging must not be bound to this test's captured stdout.
    monkeypatch.setattr(collector.cli.feed, "configure_logging", lambda *a, **k: None)

    try:
        code = main(["emulate", "--port", "0", *argv])
    except SystemExit as exc:  # argparse's own refusals
        code = int(exc.code or 0)
    assert code == 2 and reason in capsys.readouterr().err
