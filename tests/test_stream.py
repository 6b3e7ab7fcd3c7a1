"""The WebSocket edge against real loopback servers: reconnects, refusals, frames passed through."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from collector.exceptions import ExchangeRefused
from collector.stream import TradeStream
from tests.scripted_server import Script, ScriptedServer

LOG = structlog.get_logger()


async def collect(url: str, want: int, **kwargs: Any) -> tuple[list[str | bytes], TradeStream]:
    got: list[str | bytes] = []
    done = asyncio.Event()

    async def on_frame(raw: str | bytes, received_at_ns: int) -> None:
        assert received_at_ns > 0
        got.append(raw)
        if len(got) >= want:
            done.set()

    stream = TradeStream(url, on_frame, log=LOG, initial_delay_s=0.01, max_delay_s=0.05, **kwargs)
    task = asyncio.create_task(stream.run())
    waiter = asyncio.create_task(done.wait())
    finished, _ = await asyncio.wait({task, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
    task.cancel()
    waiter.cancel()
    await asyncio.gather(task, waiter, return_exceptions=True)
    if task in finished and task.exception():
        raise task.exception()  # type: ignore[misc]
    assert waiter in finished, f"only {len(got)} of {want} frames arrived"
    return got, stream


def test_frames_arrive_in_order_across_reconnects() -> None:
    scripts = [Script(["a1", "a2"], close_after=True), Script(["b1"], close_after=True), Script(["c1", "c2"])]
    with ScriptedServer(scripts) as server:
        got, stream = asyncio.run(collect(server.url + "/ws/btcusdt@trade", 5))
    assert got == ["a1", "a2", "b1", "c1", "c2"]
    assert stream.connections == 3
    assert server.paths[0] == "/ws/btcusdt@trade"


def test_refused_handshakes_are_retried_until_the_server_accepts() -> None:
    scripts = [Script([], status=503), Script([], status=503), Script(["ok"])]
    with ScriptedServer(scripts) as server:
        got, _ = asyncio.run(collect(server.url + "/ws/btcusdt@trade", 1))
    assert got == ["ok"]
    assert server.connections == 3


@pytest.mark.parametrize("status", [451, 403])
def test_a_location_refusal_stops_with_a_message_that_says_what_to_do(status: int) -> None:
    with ScriptedServer([Script([], status=status)]) as server, pytest.raises(ExchangeRefused) as info:
        asyncio.run(collect(server.url + "/ws/btcusdt@trade", 1))
    message = str(info.value)
    assert f"HTTP {status}" in message
    assert "another region" in message
    assert server.connections == 1  # not retried


def test_an_unknown_stream_path_is_not_retried_forever() -> None:
    with (
        ScriptedServer([Script([], status=400)]) as server,
        pytest.raises(ExchangeRefused, match="COLLECTOR_SYMBOLS"),
    ):
        asyncio.run(collect(server.url + "/ws/nosuch@trade", 1))
