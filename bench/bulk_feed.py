"""A Binance-compatible trade feed that sends faster than any client reads: every frame is
generated and WebSocket-framed before the first client connects, then written in bulk.

    python bench/bulk_feed.py --trades 200000 --port 0      # prints {"url": ..., "frames": ...}

`--symbols BTCUSDT,ETHUSDT,...` interleaves several symbols (each its own consecutive ids,
`--trades` in all), as a combined stream of the whole market carries them.

Trade times, three shapes: by default every trade is stamped with the moment the tape is built
(a burst that falls in one or two minutes, the best case for a minute-partitioned collector);
`--spacing-ms 30` advances each symbol's trade time by that much per trade (about 2,000 trades
a minute), ending now, so a burst spans hours of trade time as a backlog does; `--replay PATH`
loops a recording's own trades (its prices, sizes and bursty trade-time spacing), ids and times
shifted on every loop so they stay consecutive and rising, ending now.

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
import gzip
import hashlib
import json
import shutil
import ssl
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collector.feed.tapes import GeneratedTape

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


def _generated(trades: int, first_id: int, symbols: tuple[str, ...], spacing_ms: float) -> Iterator[str]:
    if trades % len(symbols):
        raise SystemExit(f"--trades {trades} does not divide among {len(symbols)} symbols")
    clock: dict[str, Any] = {}
    if spacing_ms > 0:  # each symbol's trades spacing_ms apart, the last one now
        step_ms = spacing_ms / len(symbols)
        clock = {"clock_start_ms": int(time.time() * 1000 - trades * step_ms), "clock_step_ms": step_ms}
    tape = GeneratedTape(symbols, count=trades // len(symbols), first_id=first_id, **clock)
    while not tape.exhausted:
        for trade in tape.take(10_000):
            yield trade.payload_ms


def _replayed(trades: int, first_id: int, recording: Path) -> Iterator[str]:
    """The recording's trades looped to `trades`, ids from `first_id`, times ending now."""
    rows = []
    with gzip.open(recording, "rt") as handle:
        for line in handle:
            if '"e":"trade"' in line:
                data = json.loads(line.partition(" ")[2])["data"]
                rows.append(data)
    span_ms = rows[-1]["T"] - rows[0]["T"] + 1
    loops = -(-trades // len(rows))
    shift0 = int(time.time() * 1000) - loops * span_ms - rows[0]["T"]
    for n in range(trades):
        loop, row = divmod(n, len(rows))
        data = rows[row]
        shift = shift0 + loop * span_ms
        out = {**data, "t": first_id + n, "T": data["T"] + shift, "E": data["E"] + shift}
        out.pop("b", None)
        out.pop("a", None)
        yield json.dumps(out, separators=(",", ":"))


def build_tape(
    trades: int,
    first_id: int,
    *,
    aggregate: bool = False,
    combined: bool = False,
    symbols: tuple[str, ...] = ("BTCUSDT",),
    spacing_ms: float = 0.0,
    replay: Path | None = None,
) -> bytes:
    """`trades` in all, `trades // len(symbols)` of each symbol, interleaved."""
    payloads = (
        _replayed(trades, first_id, replay) if replay else _generated(trades, first_id, symbols, spacing_ms)
    )
    out = bytearray()
    for payload in payloads:
        out += frame(_in_form(payload, aggregate=aggregate, combined=combined))
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
    spacing_ms: float = 0.0,
    replay: Path | None = None,
) -> None:
    def build(form: tuple[bool, bool]) -> bytes:
        return build_tape(trades, first_id, aggregate=form[0], combined=form[1], symbols=symbols,
                          spacing_ms=spacing_ms, replay=replay)  # fmt: skip

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
    parser.add_argument(
        "--spacing-ms", type=float, default=0.0, help="each symbol's trade time step per trade (0: all now)"
    )
    parser.add_argument("--replay", type=Path, help="loop this recording's trades and their timing")
    args = parser.parse_args()
    if args.replay and args.symbols != "BTCUSDT":
        raise SystemExit("--replay serves the recording's one symbol; drop --symbols")
    with tempfile.TemporaryDirectory(prefix="bulk-feed-") as folder:
        tls = self_signed(Path(folder)) if args.tls else None
        ca_file = str(Path(folder) / "feed.pem")
        forms = args.forms.split(",")
        symbols = tuple(args.symbols.split(","))
        asyncio.run(
            serve(
                args.port,
                args.trades,
                args.first_id,
                forms=forms,
                symbols=symbols,
                tls=tls,
                ca_file=ca_file,
                spacing_ms=args.spacing_ms,
                replay=args.replay,
            )
        )


if __name__ == "__main__":
    main()
