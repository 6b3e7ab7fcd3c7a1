"""The symbols' streams over several connections: slots within Binance's limits, and subscription
changes paced, acknowledged and confirmed, against a real loopback WebSocket server."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import structlog
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from collector.binance.connections import MAX_URL_CHARS, StreamPool
from collector.binance.stream import streams_in
from collector.config import Settings

LOG = structlog.get_logger()
DEADLINE_S = 60.0


def settings(url: str = "ws://127.0.0.1:9", **kwargs: Any) -> Settings:
    return Settings(ws_url=url, symbols=("BTCUSDT", "ETHUSDT"), reconnect_initial_delay_s=0.01,
                    reconnect_max_delay_s=0.05, **kwargs)  # fmt: skip


def test_symbols_are_spread_over_slots_of_at_most_the_configured_streams() -> None:
    pool = StreamPool(settings(streams_per_connection=3), log=LOG)
    names = [f"S{i:03d}USDT" for i in range(10)]
    assert pool.add(names) == names
    assert [len(s.symbols) for s in pool.slots] == [3, 3, 3, 1]
    assert pool.add(["S000USDT"]) == []  # already streamed
    for slot in pool.slots:
        assert streams_in(slot.stream.url) == {f"{s.lower()}@trade" for s in slot.symbols}
        assert slot.subscriptions.desired == streams_in(slot.stream.url)
    # A symbol stays on its slot; removing frees room that the next new symbol takes.
    first = pool.where["S000USDT"]
    assert pool.remove(["S001USDT", "NOPEUSDT"]) == ["S001USDT"]
    assert pool.where["S000USDT"] is first
    pool.add(["NEWUSDT"])
    assert pool.where["NEWUSDT"] is first
    # A slot left without symbols is closed.
    pool.remove(["S009USDT"])
    assert len(pool.slots) == 3


def test_long_symbols_are_split_by_url_length_before_the_stream_count() -> None:
    pool = StreamPool(settings(streams_per_connection=1024), log=LOG)
    names = [f"{'X' * 16}{i:04d}" for i in range(1024)]  # 20-letter symbols: 26 characters a stream
    pool.add(names)
    assert all(len(s.stream.url) <= MAX_URL_CHARS for s in pool.slots)
    assert len(pool.slots) == 4
    assert sum(len(s.symbols) for s in pool.slots) == 1024


class SubscribeServer:
    """A stream server that answers SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS as Binance does,
    records every message with its time, and can be told to accept a SUBSCRIBE without acting."""

    def __init__(self, *, ignore_first_subscribe: bool = False) -> None:
        self.ignore_first_subscribe = ignore_first_subscribe
        self.messages: list[tuple[float, int, dict[str, Any]]] = []  # (time, connection, request)
        self.subscribed: dict[int, set[str]] = {}
        self.paths: list[str] = []
        self.url = ""
        self._server: Any = None

    async def __aenter__(self) -> SubscribeServer:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request else ""
        self.paths.append(path)
        number = len(self.paths)
        streams = set(parse_qs(urlsplit(path).query).get("streams", [""])[0].split("/")) - {""}
        self.subscribed[number] = streams
        try:
            async for text in ws:
                request = json.loads(text)
                self.messages.append((time.monotonic(), number, request))
                method, params = request["method"], request.get("params", [])
                if method == "SUBSCRIBE":
                    if self.ignore_first_subscribe:
                        self.ignore_first_subscribe = False  # "accepted", and silently not done
                    else:
                        streams.update(params)
                    answer: Any = None
                elif method == "UNSUBSCRIBE":
                    streams.difference_update(params)
                    answer = None
                else:
                    answer = sorted(streams)
                await ws.send(json.dumps({"result": answer, "id": request["id"]}))
        except ConnectionClosed:
            pass


async def running(pool: StreamPool, check: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.create_task(pool.run())
    try:
        async with asyncio.timeout(DEADLINE_S):
            await pool.wait_connected()
            await check()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_listings_are_subscribed_paced_confirmed_and_delistings_unsubscribed() -> None:
    async def main() -> None:
        async with SubscribeServer() as server:
            pool = StreamPool(settings(server.url, streams_per_connection=1000), log=LOG)
            confirmed: list[str] = []
            pool.confirmed = confirmed.extend
            pool.add(["BTCUSDT", "ETHUSDT"])
            new = [f"N{i:03d}USDT" for i in range(250)]

            async def check() -> None:
                pool.add(new)
                want = {f"{s.lower()}@trade" for s in ["BTCUSDT", "ETHUSDT", *new]}
                await until(lambda: server.subscribed[1] == want and len(server.messages) == 4, "subscribed")
                pool.remove(new[:10])
                await until(
                    lambda: len(server.subscribed[1]) == 242 and len(server.messages) == 6, "unsubscribed"
                )

            await running(pool, check)
            methods = [m["method"] for _, _, m in server.messages]
            assert methods == ["SUBSCRIBE"] * 3 + ["LIST_SUBSCRIPTIONS", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS"]
            assert [len(m.get("params", [])) for _, _, m in server.messages[:3]] == [100, 100, 50]
            times = [t for t, _, _ in server.messages]
            assert min(b - a for a, b in itertools.pairwise(times)) >= 0.45  # paced: 2 a second
            assert len({m["id"] for _, _, m in server.messages}) == 6  # every request its own id
            assert len(server.paths) == 1  # no reconnect was needed
            # The URL's two, then the 250 once LIST_SUBSCRIPTIONS showed them: each once.
            assert sorted(confirmed) == sorted(["BTCUSDT", "ETHUSDT", *new])

    asyncio.run(main())


def test_a_streams_subscription_is_confirmed_once_it_is_certainly_on() -> None:
    """A connection's URL streams once it delivers; a SUBSCRIBE's once LIST_SUBSCRIPTIONS shows
    it (not when it is sent, not when it is merely answered); and again on a new connection."""

    async def main() -> None:
        async with SubscribeServer(ignore_first_subscribe=True) as server:
            pool = StreamPool(settings(server.url), log=LOG)
            confirmed: list[tuple[int, list[str]]] = []
            pool.confirmed = lambda symbols: confirmed.append((len(server.paths), symbols))
            pool.add(["BTCUSDT"])

            async def check() -> None:
                await until(lambda: confirmed == [(1, ["BTCUSDT"])], "the URL's stream confirmed")
                pool.add(["ETHUSDT"])  # the first SUBSCRIBE is accepted and silently not done
                await until(lambda: len(server.paths) == 2 and len(confirmed) == 2, "a new connection")

            await running(pool, check)
            # Never confirmed on the first connection; on the second, by its URL (it names both).
            assert confirmed == [(1, ["BTCUSDT"]), (2, ["BTCUSDT", "ETHUSDT"])]

    asyncio.run(main())


def test_a_subscribe_that_silently_does_nothing_is_found_and_answered_by_a_rotation() -> None:
    async def main() -> None:
        async with SubscribeServer(ignore_first_subscribe=True) as server:
            pool = StreamPool(settings(server.url), log=LOG)
            pool.add(["BTCUSDT"])

            async def check() -> None:
                pool.add(["ETHUSDT"])
                await until(
                    lambda: len(server.paths) == 2 and pool.slots[0].stream.rotations == 1, "rotation"
                )

            with structlog.testing.capture_logs() as logs:
                await running(pool, check)
            failed = [e for e in logs if e["event"] == "collector.subscription_failed"]
            assert failed and "LIST_SUBSCRIPTIONS lists 1 streams where 2" in failed[0]["error"]
            # The new connection's URL names both streams: it starts right.
            assert streams_in(server.url + server.paths[1]) == {"btcusdt@trade", "ethusdt@trade"}
            assert pool.slots[0].subscriptions.failures == 1

    asyncio.run(main())


@pytest.mark.parametrize("answer", ["none", "error"])
def test_an_unanswered_or_refused_subscribe_rotates(answer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from collector.binance import subscriptions

    monkeypatch.setattr(subscriptions, "ANSWER_TIMEOUT_S", 0.5)

    async def handle(ws: ServerConnection) -> None:
        paths.append(ws.request.path if ws.request else "")
        try:
            async for text in ws:
                request = json.loads(text)
                if answer == "error":
                    await ws.send(
                        json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": request["id"]})
                    )
        except ConnectionClosed:
            pass

    paths: list[str] = []

    async def main() -> None:
        async with serve(handle, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            pool = StreamPool(settings(f"ws://127.0.0.1:{port}"), log=LOG)
            pool.add(["BTCUSDT"])
            for slot in pool.slots:
                slot.subscriptions.answer_timeout_s = 0.5

            async def check() -> None:
                pool.add(["ETHUSDT"])
                await until(lambda: len(paths) >= 2 and pool.slots[0].stream.rotations >= 1, "rotation")

            with structlog.testing.capture_logs() as logs:
                await running(pool, check)
            error = next(e for e in logs if e["event"] == "collector.subscription_failed")["error"]
            assert (
                "no answer to SUBSCRIBE" if answer == "none" else "SUBSCRIBE of 1 streams refused"
            ) in error
            assert "ethusdt@trade" in paths[1]

    asyncio.run(main())
