"""One process per spool: real `collector run`, `demo` and `import` processes on one directory.

Two collectors on one spool landed trades twice (5,954 ids in two objects in 100 s at 200
trades/s, `landing_conflict`s, objects no marker lists): each read the other's journal and spool.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

from collector.lock import DirectoryLock, holder_of
from tests.conftest import DEADLINE_S, Proc, collector_env, start_emulator, stop_cleanly
from tests.support.landing import ids_by_symbol


def refused(proc: Proc) -> str:
    """The process exited 2 by itself, at once; its stderr."""
    assert proc.popen.wait(timeout=DEADLINE_S) == 2, proc.stderr + "".join(proc.lines[-20:])
    return proc.stderr


def test_a_second_collector_on_a_spool_is_refused_and_a_killed_ones_lock_frees_at_once(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--rate", "200")
    env = collector_env(url, tmp_path)
    spool = tmp_path / "spool"
    first = procs("run", env=env)
    first.wait_event("collector.batch_landed")

    second = procs("run", env=env)
    message = refused(second)
    assert f"spool directory '{spool}' is in use by process {first.popen.pid}" in message
    assert "one collector per spool" in message and "Traceback" not in message
    assert second.named("collector.started") == []  # it read nothing, landed nothing
    assert holder_of(spool) == first.popen.pid

    demo = procs("demo", "--seconds", "5", "--destination", str(tmp_path / "demo"), "--spool-dir", str(spool))
    assert f"is in use by process {first.popen.pid}" in refused(demo)

    first.send(signal.SIGKILL)  # no chance to release anything: the kernel does
    first.popen.wait(timeout=DEADLINE_S)
    third = procs("run", env=env)
    third.wait_event("collector.started")
    third.wait_event("collector.batch_landed")
    assert holder_of(spool) == third.popen.pid
    stop_cleanly(third)
    ids = ids_by_symbol(tmp_path / "landing")["BTCUSDT"]
    assert len(ids) == len(set(ids)) > 0  # not one trade landed twice


def test_a_second_import_on_a_staging_directory_is_refused_with_the_holders_pid(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    env = {"COLLECTOR_SPOOL_DIR": str(spool), "COLLECTOR_ARCHIVE_URL": "http://127.0.0.1:9"}
    args = ("--symbols", "BTCUSDT", "--from", "2024-12-31", "--to", "2024-12-31")
    with DirectoryLock(spool / "import", what="test", fix="test"):  # an import under way here
        busy = procs("import", *args, "--destination", str(tmp_path / "landing"), env=env)
        message = refused(busy)
    assert f"collector import staging directory '{spool / 'import'}' is in use by process {os.getpid()}" in (
        message
    )
    assert "one `collector import` at a time per spool" in message
