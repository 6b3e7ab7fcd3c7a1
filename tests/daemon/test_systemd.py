"""sd_notify: READY, WATCHDOG and STOPPING arrive on a real datagram socket at the right moments."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

from collector.daemon.systemd import Notifier, watchdog_interval_s
from tests.conftest import wait_for
from tests.support.systemd import NotifySocket


def test_a_stalled_event_loop_stops_the_watchdog_pings(notify_socket: NotifySocket) -> None:
    async def scenario() -> None:
        notifier = Notifier(str(notify_socket.path))
        task = asyncio.create_task(notifier.watchdog(0.02))
        await asyncio.to_thread(wait_for, lambda: notify_socket.count("WATCHDOG=1") >= 5, what="pings")
        time.sleep(1.0)  # noqa: ASYNC251 (the hang under test: a blocking call on the event loop)
        await asyncio.to_thread(
            wait_for, lambda: notify_socket.count("WATCHDOG=1") >= 15, what="pings resume"
        )
        task.cancel()

    asyncio.run(scenario())
    times = [t for t, m in notify_socket.messages if m == "WATCHDOG=1"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) >= 0.9  # silence for the whole stall: systemd would have seen no ping
    assert sorted(gaps)[len(gaps) // 2] < 0.5  # otherwise steady


def test_watchdog_interval_is_half_of_watchdog_sec_and_only_for_our_pid() -> None:
    import os

    assert watchdog_interval_s({"WATCHDOG_USEC": "60000000"}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None


def test_notifier_without_a_socket_does_nothing_and_a_dead_socket_does_not_raise(tmp_path: Path) -> None:
    Notifier("").ready()
    Notifier(str(tmp_path / "nobody-listens.sock")).ready()  # logged, never raised
