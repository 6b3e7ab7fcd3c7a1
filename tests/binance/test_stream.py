"""The WebSocket edge against real loopback servers: reconnects, refusals, frames passed through."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
import structlog
import structlog.testing

from collector.binance.stream import MAX_FRAME_BYTES, MAX_READ_BYTES, Backoff, TradeStream
from collector.exceptions import ExchangeRefused
from tests.support.scripted_server import Script, ScriptedServer

LOG = structlog.get_logger()


async def collect(
    url: str, want: int, *, also: Callable[[list[bytes], int], None] | None = None, **kwargs: Any
) -> tuple[list[bytes], TradeStream]:
    got: list[bytes] = []
    done = asyncio.Event()

    def on_chunk(frames: list[bytes], received_at_ns: int) -> None:
        assert received_at_ns > 0
        assert frames
        if also is not None:
            also(frames, received_at_ns)
        got.extend(frames)
        if len(got) >= want:
            done.set()

    stream = TradeStream(url, on_chunk, log=LOG, initial_delay_s=0.01, max_delay_s=0.05, **kwargs)
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
    assert got == [b"a1", b"a2", b"b1", b"c1", b"c2"]
    assert stream.connections == 3
    assert server.paths[0] == "/ws/btcusdt@trade"


def test_refused_handshakes_are_retried_until_the_server_accepts() -> None:
    scripts = [Script([], status=503), Script([], status=503), Script(["ok"])]
    with ScriptedServer(scripts) as server:
        got, _ = asyncio.run(collect(server.url + "/ws/btcusdt@trade", 1))
    assert got == [b"ok"]
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


def test_a_fragmented_message_arrives_whole() -> None:
    with ScriptedServer([Script(["before", ['{"e":', '"trade"', "}"], "after"])]) as server:
        got, _ = asyncio.run(collect(server.url + "/ws/btcusdt@trade", 3))
    assert got == [b"before", b'{"e":"trade"}', b"after"]


def test_a_message_over_the_size_limit_is_dropped_and_the_stream_goes_on() -> None:
    huge = ["x" * (MAX_FRAME_BYTES // 2)] * 3  # 1.5 MB in fragments that are each within limits
    with ScriptedServer([Script(["a", huge, "b"], close_after=True), Script(["c"])]) as server:
        got, _ = asyncio.run(collect(server.url + "/ws/btcusdt@trade", 3))
    assert got == [b"a", b"b", b"c"]


def test_the_close_code_and_reason_of_a_dropped_connection_are_logged() -> None:
    scripts = [Script(["a"], close_after=True, close_code=1001, close_reason="going away"), Script(["b"])]
    with ScriptedServer(scripts) as server, structlog.testing.capture_logs() as logs:
        got, stream = asyncio.run(collect(server.url + "/ws/btcusdt@trade", 2))
    assert got == [b"a", b"b"]
    (dropped,) = [e for e in logs if e["event"] == "collector.disconnected"]
    assert (dropped["code"], dropped["reason"]) == (1001, "going away")
    assert stream.reconnects == 1


def test_an_exception_from_the_consumer_ends_run_with_it() -> None:
    class Full(Exception):
        pass

    def on_chunk(frames: list[bytes], received_at_ns: int) -> None:
        raise Full("spool full")

    async def main() -> None:
        stream = TradeStream(server.url + "/ws/btcusdt@trade", on_chunk, log=LOG)
        await asyncio.wait_for(stream.run(), timeout=60)

    with ScriptedServer([Script(["a", "b"])]) as server, pytest.raises(Full, match="spool full"):
        asyncio.run(main())


def test_holding_back_stops_reading_the_socket_until_released() -> None:
    """The consumer's flow control: reading stops (TCP pushes back), then every frame arrives."""
    frames = [f"frame-{i:05d}-{'x' * 200}" for i in range(20_000)]

    async def main() -> tuple[list[bytes], bool, int]:
        got: list[bytes] = []
        done = asyncio.Event()
        first = asyncio.Event()

        def on_chunk(chunk: list[bytes], received_at_ns: int) -> None:
            got.extend(chunk)
            if not first.is_set():
                first.set()
                stream.hold_back(True)
            if len(got) >= len(frames):
                done.set()

        stream = TradeStream(server.url + "/ws/btcusdt@trade", on_chunk, log=LOG)
        task = asyncio.create_task(stream.run())
        try:
            await asyncio.wait_for(first.wait(), timeout=60)
            conn = stream._active
            assert conn is not None
            reading = conn.transport.underlying_transport.is_reading()
            stream.hold_back(False)
            await asyncio.wait_for(done.wait(), timeout=60)
            return got, reading, stream.pauses
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    with ScriptedServer([Script(list(frames))]) as server:
        got, reading_while_held, pauses = asyncio.run(main())
    assert not reading_while_held
    assert pauses == 1
    assert got == [f.encode() for f in frames]


def test_a_read_takes_at_most_max_read_bytes_however_far_behind_the_consumer_is() -> None:
    """A consumer slower than the link: the socket fills, and still no read (no chunk) holds more
    than MAX_READ_BYTES of frames, so one read's Python objects stay a bounded amount of memory."""
    frames = [f"frame-{i:05d}-{'x' * 200}" for i in range(40_000)]  # 8.5 MB
    sizes: list[int] = []

    def slow(chunk: list[bytes], received_at_ns: int) -> None:
        sizes.append(sum(map(len, chunk)))
        time.sleep(0.002)  # a consumer far slower than loopback: the socket's buffer fills

    with ScriptedServer([Script([], bulk=frames)]) as server:
        got, _ = asyncio.run(collect(server.url + "/ws/btcusdt@trade", len(frames), also=slow))
    assert got == [f.encode() for f in frames]
    assert max(sizes) <= MAX_READ_BYTES
    assert len(sizes) >= 8_500_000 // MAX_READ_BYTES


# ---- reconnect policy ---------------------------------------------------------------------------


def test_backoff_grows_by_doubling_up_to_its_cap_with_jitter_and_resets() -> None:
    low = Backoff(0.5, 30.0, rng=lambda: 0.0)
    assert [low.next_delay_s() for _ in range(8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    high = Backoff(0.5, 30.0, rng=lambda: 1.0)
    assert [high.next_delay_s() for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    high.reset()
    assert (high.failures, high.next_delay_s()) == (0, 0.5)


def test_a_server_that_accepts_and_hangs_up_at_once_is_backed_off_from() -> None:
    """The delay resets only once a connection has delivered for a while, not at each handshake."""
    seconds = 3.0

    async def main() -> TradeStream:
        stream = TradeStream(server.url + "/ws/btcusdt@trade", lambda f, s: None, log=LOG)  # default delays
        task = asyncio.create_task(stream.run())
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return stream

    with ScriptedServer([Script(["a"], close_after=True)]) as server:
        stream = asyncio.run(main())
    # Delays of at least 0.25, 0.5, 1 and 2 s: at most four connections in three seconds
    # (before, every handshake reset the backoff and 250 connections were made in under 3 s).
    assert 2 <= server.connections <= 4
    assert stream.reconnects == server.connections - 1


def test_every_attempt_is_counted_the_refused_ones_too() -> None:
    scripts = [Script([], status=503), Script([], status=503), Script(["ok"])]
    with ScriptedServer(scripts) as server:
        _, stream = asyncio.run(collect(server.url + "/ws/btcusdt@trade", 1))
    assert (stream.attempts, stream.reconnects, stream.connections) == (3, 2, 1)


def test_after_a_few_failures_one_line_names_the_host_the_cause_and_what_to_check() -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> None:
        stream = TradeStream(f"ws://127.0.0.1:{port}/ws/btcusdt@trade", lambda f, s: None, log=LOG,
                             initial_delay_s=0.01, max_delay_s=0.02)  # fmt: skip
        task = asyncio.create_task(stream.run())
        deadline = asyncio.get_running_loop().time() + 60
        while stream.attempts < 5 and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110 (a counter, no event)
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with structlog.testing.capture_logs() as logs:
        asyncio.run(main())
    (explained,) = [e for e in logs if e["event"] == "collector.cannot_connect"]
    assert explained["host"] == f"127.0.0.1:{port}" and explained["cause"].startswith("refused")
    assert "COLLECTOR_WS_URL" in explained["check"] and "collector demo" in explained["note"]
    assert len([e for e in logs if e["event"] == "collector.reconnecting"]) >= 4


def test_an_exception_from_the_consumer_while_held_frames_are_handed_over_ends_run_with_it() -> None:
    """A rotation's held frames go through the same delivery as any other, failures included."""

    class Full(Exception):
        pass

    async def main() -> None:
        stream: TradeStream

        def on_chunk(frames: list[bytes], received_at_ns: int) -> None:
            if frames and frames[0].startswith(b"new"):
                raise Full("spool full")
            stream.request_rotation("test")

        stream = TradeStream(server.url + "/ws/btcusdt@trade", on_chunk, log=LOG, handover_s=0.0)
        await asyncio.wait_for(stream.run(), timeout=60)

    with (
        ScriptedServer([Script(["old"]), Script(["new"])]) as server,
        pytest.raises(Full, match="spool full"),
    ):
        asyncio.run(main())
