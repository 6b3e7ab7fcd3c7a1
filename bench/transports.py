"""Receive-and-discard speed of the WebSocket clients the collector could be built on.

    python bench/transports.py                      # 200,000 frames, 3 runs per client
    python bench/transports.py --frames 50000 --runs 1

Each run starts bench/bulk_feed.py in its own process (pre-framed trades written in 1 MB
writes, faster than any client reads) and counts frames until the last one arrives: the
websockets library's asyncio client, the same library's sans-I/O protocol driven by a plain
asyncio.Protocol, and picows. Prints frames/s per run and the median, and each median's ratio
to picows measured in the same run. This is why the collector's transport is picows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


async def websockets_asyncio(url: str, frames: int) -> float:
    from websockets.asyncio.client import connect

    seen = 0
    async with connect(url, compression=None, max_size=2**20, max_queue=None) as ws:
        started = time.perf_counter()
        async for _message in ws:
            seen += 1
            if seen == frames:
                break
    return time.perf_counter() - started


async def websockets_sans_io(url: str, frames: int) -> float:
    from websockets.client import ClientProtocol
    from websockets.frames import Frame
    from websockets.uri import parse_uri

    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    uri = parse_uri(url)

    class Reader(asyncio.Protocol):
        def __init__(self) -> None:
            self.protocol = ClientProtocol(uri, max_size=2**20)
            self.seen = 0

        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.protocol.send_request(self.protocol.connect())
            self._flush()

        def data_received(self, data: bytes) -> None:
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Frame):
                    self.seen += 1
                    if self.seen == frames and not done.done():
                        done.set_result(time.perf_counter())
            self._flush()

        def _flush(self) -> None:
            for data in self.protocol.data_to_send():
                if data:
                    self.transport.write(data)

    started = time.perf_counter()
    transport, _ = await loop.create_connection(Reader, uri.host, uri.port)
    finished = await done
    transport.close()
    return finished - started


async def picows_client(url: str, frames: int) -> float:
    import picows

    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()

    class Listener(picows.WSListener):
        seen = 0

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            frame.get_payload_as_bytes()
            self.seen += 1
            if self.seen == frames and not done.done():
                done.set_result(time.perf_counter())

    started = time.perf_counter()
    transport, _ = await picows.ws_connect(Listener, url)
    finished = await done
    transport.disconnect()
    return finished - started


CLIENTS: dict[str, Callable[[str, int], Awaitable[float]]] = {
    "websockets asyncio client": websockets_asyncio,
    "websockets sans-I/O + Protocol": websockets_sans_io,
    "picows": picows_client,
}


def one_run(client: str, frames: int) -> float:
    feed = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "bulk_feed.py"), "--trades", str(frames)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    try:
        assert feed.stdout is not None
        url = json.loads(feed.stdout.readline())["url"] + "/ws/btcusdt@trade"
        return frames / asyncio.run(CLIENTS[client](url, frames))
    finally:
        feed.kill()
        feed.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    machine = platform.processor() or platform.machine()
    print(f"# {platform.node()} {machine}, Python {platform.python_version()}")
    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {args.frames:,} frames per run, {args.runs} runs, interleaved")
    rates: dict[str, list[float]] = {name: [] for name in CLIENTS}
    for _ in range(args.runs):
        for name in CLIENTS:  # interleaved, so a noisy neighbour hurts every client alike
            rates[name].append(one_run(name, args.frames))
    best = statistics.median(rates["picows"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(
            f"{name:32s} median {median:>11,.0f} frames/s  (min {min(values):,.0f}, max {max(values):,.0f})"
            f"  picows is {best / median:5.1f}x"
        )


if __name__ == "__main__":
    main()
