"""A FeedServer on its own event loop in a thread of the test, so the test can read what it sent."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from collector.feed.server import FeedServer

__all__ = ["ThreadedFeed"]


class ThreadedFeed:
    """A FeedServer on its own event loop in a thread, so the test can read what it sent."""

    def __init__(self, server: FeedServer) -> None:
        self.server = server
        self.url = ""
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.url = await self.server.start()
            self._ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def __enter__(self) -> ThreadedFeed:
        self._thread.start()
        assert self._ready.wait(30), "the feed did not start"
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the feed's loop and return what it returns."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def pause(self) -> None:
        """Stop producing trades (what is queued to the clients is still sent)."""
        self.call(lambda: self.server._producer.cancel() if self.server._producer else None)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
