"""A Binance-compatible trade feed that sends faster than any client reads: every frame is
generated and WebSocket-framed before the first client connects, then written in bulk.

    python bench/bulk_feed.py --trades 200000 --port 0      # prints {"url": ..., "frames": ...}

`--symbols BTCUSDT,ETHUSDT,...` interleaves several symbols (each its own consecutive ids,
`--trades` in all), as a combined stream of the whole market carries them.

One connection at a time; each receives the whole tape once, then the feed keeps the connection
open (answering nothing) until the client leaves. Only what a benchmark needs of the protocol:
the opening handshake, unmasked server text frames, and a close when the client closes.

The same trades in the form the client asks for, as Binance serves them: `/ws/btcusdt@trade`
gets raw trade frames, `/stream?streams=...` gets them wrapped as {"stream", "data"}, and a
path naming `@aggTrade` (what cryptofeed subscribes to for trades) gets each trade as an
aggregate trade of one (a = f = l = the trade id). A form's tape is framed before its first
write; `--forms` names the forms to frame before listening (building a large tape takes
longer than a client waits for its handshake).

`--tls` serves wss:// as Binance does, with a certificate for 127.0.0.1 made for this run by
the openssl command; its path is printed as "ca_file", for clients to trust through
SSL_CERT_FILE (Python's default TLS context reads it). Frames are then encrypted as they are
written, in C by OpenSSL.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import shutil
import ssl
import struct
import subprocess
import tempfile
import time
from pathlib import Path

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


def _in_form(payload: str, *, aggregate: bool, combined: bool) -> bytes:
    if aggregate:
        trade = json.loads(payload)
        trade_id = trade.pop("t")
        trade = {"e": "aggTrade", "E": trade["E"], "s": trade["s"], "a": trade_id, "p": trade["p"],
                 "q": trade["q"], "f": trade_id, "l": trade_id, "T": trade["T"], "m": trade["m"],
                 "M": True}  # fmt: skip
        payload = json.dumps(trade, separators=(",", ":"))
    if combined:
        symbol = payload.split('"s":"', 1)[1].split('"', 1)[0].lower()
        stream = f"{symbol}@aggTrade" if aggregate else f"{symbol}@trade"
        payload = f'{{"stream":"{stream}","data":{payload}}}'
    return payload.encode()


def build_tape(
    trades: int,
    first_id: int,
    *,
    aggregate: bool = False,
    combined: bool = False,
    symbols: tuple[str, ...] = ("BTCUSDT",),
) -> bytes:
    """`trades` in all, `trades // len(symbols)` of each symbol, interleaved."""
    if trades % len(symbols):
        raise SystemExit(f"--trades {trades} does not divide among {len(symbols)} symbols")
    tape = GeneratedTape(symbols, count=trades // len(symbols), first_id=first_id)
    out = bytearray()
    while not tape.exhausted:
        for trade in tape.take(10_000):
            out += frame(_in_form(trade.payload_ms, aggregate=aggregate, combined=combined))
    return bytes(out)


FORMS = {"raw": (False, False), "combined": (False, True), "aggregate": (True, True)}


def self_signed(folder: Path) -> ssl.SSLContext:
    """A certificate and key for 127.0.0.1, and a server context that uses them."""
    cert, key = folder / "feed.pem", folder / "feed.key"
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SystemExit("--tls needs the openssl command (Debian: apt-get install openssl)")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


async def serve(
    port: int,
    trades: int,
    first_id: int,
    *,
    forms: list[str],
    symbols: tuple[str, ...],
    tls: ssl.SSLContext | None,
    ca_file: str,
) -> None:
    def build(form: tuple[bool, bool]) -> bytes:
        return build_tape(trades, first_id, aggregate=form[0], combined=form[1], symbols=symbols)

    tapes = {FORMS[name]: build(FORMS[name]) for name in forms}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        path = request.split(b" ", 2)[1]
        form = (b"aggtrade" in path.lower(), path.startswith(b"/stream"))
        if form not in tapes:
            tapes[form] = build(form)
        tape = tapes[form]
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

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=tls)
    bound = server.sockets[0].getsockname()[1]
    scheme = "wss" if tls else "ws"
    listening = {"event": "feed.listening", "url": f"{scheme}://127.0.0.1:{bound}", "frames": trades}
    if tls:
        listening["ca_file"] = ca_file
    print(json.dumps(listening), flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200_000)
    parser.add_argument("--first-id", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--forms", default="raw", help=f"comma-separated, of {', '.join(FORMS)}")
    parser.add_argument("--symbols", default="BTCUSDT", help="comma-separated; several are interleaved")
    parser.add_argument(
        "--tls", action="store_true", help="serve wss:// with a certificate made for this run"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bulk-feed-") as folder:
        tls = self_signed(Path(folder)) if args.tls else None
        ca_file = str(Path(folder) / "feed.pem")
        forms = args.forms.split(",")
        symbols = tuple(args.symbols.split(","))
        asyncio.run(
            serve(
                args.port, args.trades, args.first_id, forms=forms, symbols=symbols, tls=tls, ca_file=ca_file
            )
        )


if __name__ == "__main__":
    main()
