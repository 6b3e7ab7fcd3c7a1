"""A Binance-compatible trade feed that sends faster than any client reads: every frame is
generated and WebSocket-framed before the first client connects, then written in bulk.

    python bench/bulk_feed.py --trades 200000 --port 0      # prints {"url": ..., "frames": ...}

One connection at a time; each receives the whole tape once, then the feed keeps the connection
open (answering nothing) until the client leaves. Only what a benchmark needs of the protocol:
the opening handshake, unmasked server text frames, and a close when the client closes.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import struct
import sys
import time

from collector.emulator import GeneratedTape

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(payload: bytes) -> bytes:
    """One unmasked FIN text frame."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def build_tape(trades: int, first_id: int) -> bytes:
    tape = GeneratedTape(("BTCUSDT",), count=trades, first_id=first_id)
    out = bytearray()
    while not tape.exhausted:
        for trade in tape.take(10_000):
            out += frame(trade.payload_ms.encode())
    return bytes(out)


async def serve(tape: bytes, port: int, trades: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())  # noqa: S324 (the protocol's)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        started = time.time()
        view = memoryview(tape)
        for offset in range(0, len(tape), 1 << 20):
            writer.write(view[offset : offset + (1 << 20)])
            await writer.drain()
        print(json.dumps({"event": "feed.sent", "first_write": started, "done": time.time(),
                          "frames": trades}), flush=True)  # fmt: skip
        try:
            while await reader.read(65536):
                pass  # pongs, the client's close: nothing to answer for a benchmark
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(
        json.dumps({"event": "feed.listening", "url": f"ws://127.0.0.1:{bound}", "frames": trades}),
        flush=True,
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--first-id", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    tape = build_tape(args.trades, args.first_id)
    print(json.dumps({"event": "feed.built", "bytes": len(tape)}), file=sys.stderr, flush=True)
    asyncio.run(serve(tape, args.port, args.trades))


if __name__ == "__main__":
    main()
