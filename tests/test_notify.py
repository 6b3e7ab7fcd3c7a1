"""sd_notify: READY, WATCHDOG and STOPPING arrive on a real datagram socket at the right moments."""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from collector.systemd import Notifier, watchdog_interval_s
from tests.conftest import Proc, collector_env, free_port, start_emulator, wait_for


class NotifySocket:
    """A bound AF_UNIX datagram socket, like systemd's, recording every message with its time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def first(self, prefix: str) -> int | None:
        return next((i for i, (_, m) in enumerate(list(self.messages)) if m.startswith(prefix)), None)

    def count(self, prefix: str) -> int:
        return sum(1 for _, m in list(self.messages) if m.startswith(prefix))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_ready_watchdog_and_stopping_arrive_in_order(
    procs: Callable[..., Proc], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--rate", "50")
    env = collector_env(url, tmp_path)
    env.update({"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "400000"})
    collector = procs("run", env=env)
    wait_for(lambda: notify_socket.first("READY=1") is not None, what="READY=1")
    ready = notify_socket.messages[notify_socket.first("READY=1")][1]  # type: ignore[index]
    assert "STATUS=capturing BTCUSDT" in ready
    assert collector.named("collector.connected"), "READY=1 before the stream was connected"
    wait_for(lambda: notify_socket.count("WATCHDOG=1") >= 5, what="watchdog pings")
    collector.send(signal.SIGTERM)
    wait_for(lambda: notify_socket.first("STOPPING=1") is not None, what="STOPPING=1")
    assert collector.popen.wait(timeout=60) == 0
    order = [m.split("\n")[0] for _, m in notify_socket.messages if not m.startswith("WATCHDOG")]
    assert order == ["READY=1", "STOPPING=1"]


def test_no_ready_while_the_stream_cannot_connect(
    procs: Callable[..., Proc], tmp_path: Path, notify_socket: NotifySocket
) -> None:
    env = collector_env(f"ws://127.0.0.1:{free_port()}", tmp_path)
    env.update({"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "200000"})
    collector = procs("run", env=env)
    # Ten watchdog pings prove the loop ran for a while (about a second); none of it was READY.
    wait_for(lambda: notify_socket.count("WATCHDOG=1") >= 10, what="watchdog pings")
    collector.wait_event("collector.reconnecting")
    assert notify_socket.first("READY=1") is None
    assert collector.stop() == 0


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
