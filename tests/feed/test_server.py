"""The local Binance-compatible feed, spoken to by a real WebSocket client."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from collector.capture.decode import Trade, decode_frame
from collector.feed.server import FeedServer
from collector.feed.tapes import GeneratedTape, load_replay
from tests.conftest import RECORDING_2023, recording


async def receive(server: FeedServer, path: str, n: int) -> list[str]:
    url = await server.start()
    try:
        async with connect(url + path, compression=None) as ws:
            return [str(await asyncio.wait_for(ws.recv(), 60)) for _ in range(n)]
    finally:
        await server.close()


def test_raw_stream_serves_consecutive_valid_trades() -> None:
    frames = asyncio.run(
        receive(FeedServer(GeneratedTape(("BTCUSDT",), count=500)), "/ws/btcusdt@trade", 500)
    )
    trades = [decode_frame(f, 0) for f in frames]
    assert all(isinstance(t, Trade) for t in trades)
    ids = [t.trade_id for t in trades]  # type: ignore[union-attr]
    assert ids == list(range(ids[0], ids[0] + 500))
    assert all(t.price > 0 and t.quantity > 0 for t in trades)  # type: ignore[union-attr]


def test_combined_stream_wraps_frames_and_carries_both_symbols() -> None:
    tape = GeneratedTape(("BTCUSDT", "ETHUSDT"), count=300)
    frames = asyncio.run(receive(FeedServer(tape), "/stream?streams=btcusdt@trade/ethusdt@trade", 600))
    streams = {json.loads(f)["stream"] for f in frames}
    assert streams == {"btcusdt@trade", "ethusdt@trade"}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        ids = [json.loads(f)["data"]["t"] for f in frames if json.loads(f)["data"]["s"] == symbol]
        assert ids == list(range(ids[0], ids[0] + 300))


def test_microsecond_time_unit_is_honoured() -> None:
    frames = asyncio.run(
        receive(FeedServer(GeneratedTape(("BTCUSDT",), count=5)), "/ws/btcusdt@trade?timeUnit=MICROSECOND", 5)
    )
    assert all(len(str(json.loads(f)["T"])) == 16 for f in frames)


def test_paced_generation_sends_at_the_requested_rate_order_of_magnitude() -> None:
    tape = GeneratedTape(("BTCUSDT",), count=20)
    frames = asyncio.run(receive(FeedServer(tape, rate=200), "/ws/btcusdt@trade", 20))
    assert len(frames) == 20


@pytest.mark.parametrize("path", ["/ws/dogeusdt@trade", "/ws/btcusdt@depth", "/nope"])
def test_streams_it_does_not_serve_are_refused_with_400(path: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        asyncio.run(receive(FeedServer(GeneratedTape(("BTCUSDT",), count=1)), path, 1))
    assert info.value.response.status_code == 400


def test_replay_serves_the_recorded_frames_byte_for_byte() -> None:
    source = recording(RECORDING_2023)
    tape = load_replay(source)
    expected = []
    with gzip.open(source, "rt") as handle:
        for line in handle:
            frame = line.rstrip("\n").partition(" ")[2]
            if json.loads(frame).get("data", {}).get("e") == "trade":
                expected.append(frame)
    assert len(tape.trades) == len(expected) == 3144
    frames = asyncio.run(receive(FeedServer(tape), "/stream?streams=btcusdt@trade", len(expected)))
    assert frames == expected


def test_a_recording_without_trades_is_a_clear_error(tmp_path: object) -> None:
    path = tmp_path / "empty.txt"  # type: ignore[operator]
    path.write_text('1 {"stream":"btcusdt@bookTicker","data":{"u":1}}\n')
    with pytest.raises(ValueError, match="holds no trade frames"):
        load_replay(path)


def test_rest_historical_trades_rejects_garbage_and_pages_from_an_id() -> None:
    import urllib.error
    import urllib.request

    async def scenario() -> tuple[list[dict[str, object]], int, int]:
        server = FeedServer(GeneratedTape(("BTCUSDT",), count=50))
        url = (await server.start()).replace("ws://", "http://")
        async with connect(url.replace("http://", "ws://") + "/ws/btcusdt@trade", compression=None) as ws:
            for _ in range(50):
                await asyncio.wait_for(ws.recv(), 60)

        def get(path: str) -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(url + path, timeout=10) as response:  # noqa: S310 (loopback http)
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        status, body = await asyncio.to_thread(
            get, "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=1000010&limit=5"
        )
        bad_id, _ = await asyncio.to_thread(get, "/api/v3/historicalTrades?symbol=BTCUSDT&fromId=abc")
        bad_symbol, _ = await asyncio.to_thread(get, "/api/v3/historicalTrades?symbol=NOPE&fromId=1")
        await server.close()
        assert status == 200
        return json.loads(body), bad_id, bad_symbol

    rows, bad_id, bad_symbol = asyncio.run(scenario())
    assert [r["id"] for r in rows] == [1000010, 1000011, 1000012, 1000013, 1000014]
    assert set(rows[0]) == {"id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"}
    assert (bad_id, bad_symbol) == (400, 400)
