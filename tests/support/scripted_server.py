"""A real WebSocket server on loopback that plays a script per connection, for edge-case tests."""

from __future__ import annotations

import asyncio
import struct
import threading
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response


@dataclass
class Script:
    frames: list[str | bytes | list[str]]  # a list is sent as one fragmented message
    close_after: bool = False  # close the connection once the frames are sent
    close_code: int = 1000
    close_reason: str = ""
    status: int | None = None  # refuse the handshake with this HTTP status instead
    # Text frames written to the socket in one go after `frames`, framed here: as fast as the
    # kernel takes them, faster than any client reads (websockets' send is one frame at a time).
    bulk: list[str] = field(default_factory=list)


@dataclass
class ScriptedServer:
    """Connection k plays scripts[k] (the last script repeats). Runs its own loop in a thread."""

    scripts: list[Script]
    connections: int = 0
    paths: list[str] = field(default_factory=list)
    url: str = ""

    def __enter__(self) -> ScriptedServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def main() -> None:
            self._stop = asyncio.Event()
            async with serve(
                self._handle, "127.0.0.1", 0, process_request=self._check, compression=None
            ) as server:
                port = next(iter(server.sockets)).getsockname()[1]
                self.url = f"ws://127.0.0.1:{port}"
                ready.set()
                await self._stop.wait()

        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(main(),), daemon=True)
        self._thread.start()
        assert ready.wait(30), "scripted server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _script(self) -> Script:
        return self.scripts[min(self.connections, len(self.scripts) - 1)]

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        self.paths.append(request.path)
        script = self._script()
        if script.status is not None:
            self.connections += 1
            return Response(script.status, "Refused", Headers(), b"refused")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        script = self._script()
        self.connections += 1
        for frame in script.frames:
            await ws.send(frame)
        if script.bulk:
            ws.transport.write(b"".join(map(_text_frame, script.bulk)))
        if script.close_after:
            await ws.close(script.close_code, script.close_reason)
            return
        await ws.wait_closed()


def _text_frame(text: str) -> bytes:
    """One unmasked, final text frame, as a server sends it."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload
