"""systemd's notify protocol: READY, STOPPING, STATUS and the watchdog, with no dependency.

The protocol is one datagram per message to the AF_UNIX socket named by $NOTIFY_SOCKET
(an '@' prefix means the abstract namespace). Outside systemd the variable is unset and
every call is a no-op.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

__all__ = ["Notifier", "watchdog_interval_s"]


def watchdog_interval_s(env: dict[str, str] | None = None) -> float | None:
    """Half of WatchdogSec (systemd's advice), if a watchdog is armed for this process."""
    env = dict(os.environ) if env is None else env
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None


class Notifier:
    """Sends sd_notify messages when $NOTIFY_SOCKET is set."""

    def __init__(self, address: str | None = None, log: Any = None) -> None:
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self.log = log
        self._address: str | bytes | None = None
        if address:
            self._address = b"\0" + address[1:].encode() if address.startswith("@") else address

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> None:
        if self._address is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self._address)
        except OSError as exc:  # systemd gone or socket misconfigured: log, never crash
            if self.log is not None:
                self.log.warning(
                    "collector.notify_failed", message=message.split("\n", maxsplit=1)[0], error=str(exc)
                )

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    async def watchdog(self, interval_s: float) -> None:
        """Ping from the event loop itself: if the loop hangs, the pings stop and systemd acts."""
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(interval_s)
