"""sd_notify from a real collector: READY, WATCHDOG and STOPPING on a real datagram socket, in order."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Proc, collector_env, free_port, start_emulator, wait_for
from tests.support.systemd import NotifySocket


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
