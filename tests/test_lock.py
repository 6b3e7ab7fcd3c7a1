"""collector.lock: one process per directory, a lock the kernel frees when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from collector.exceptions import DirectoryBusy, SpoolError
from collector.lock import LOCK_NAME, DirectoryLock, holder_of, staging_directory
from tests.conftest import wait_for

HOLD = (
    "import sys, time; from pathlib import Path; from collector.lock import DirectoryLock; "
    "DirectoryLock(Path(sys.argv[1]), what='w', fix='f').acquire(); print('held', flush=True); "
    "time.sleep(600)"
)


def test_a_directory_held_by_another_process_is_refused_with_its_pid_until_that_one_dies(
    tmp_path: Path,
) -> None:
    spool = tmp_path / "spool"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(spool)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert holder_of(spool) == holder.pid
        with pytest.raises(DirectoryBusy) as refused:
            DirectoryLock(spool, what="spool directory", fix="stop it first").acquire()
        assert str(refused.value) == (
            f"spool directory '{spool}' is in use by process {holder.pid}; stop it first"
        )
        assert (refused.value.pid, refused.value.directory) == (holder.pid, spool)
        holder.send_signal(signal.SIGKILL)  # no clean-up of any kind: the kernel lets go
        holder.wait(timeout=60)
        lock = wait_for(lambda: _try(spool), what="the lock free after SIGKILL")
        assert holder_of(spool) == os.getpid()
        lock.release()
        assert holder_of(spool) is None and (spool / LOCK_NAME).exists()  # the file stays
    finally:
        holder.kill()
        holder.wait()


def _try(spool: Path) -> DirectoryLock | None:
    try:
        return DirectoryLock(spool, what="spool directory", fix="").acquire()
    except DirectoryBusy:
        return None


def test_the_same_process_cannot_take_it_twice_either(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path, what="w", fix="f") as lock:
        assert lock.held
        with pytest.raises(DirectoryBusy):
            DirectoryLock(tmp_path, what="w", fix="f").acquire()
    assert not lock.held
    DirectoryLock(tmp_path, what="w", fix="f").acquire().release()


def test_a_directory_that_cannot_be_made_says_so(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SpoolError, match="cannot open the lock file"):
        DirectoryLock(tmp_path / "file" / "spool", what="spool directory", fix="").acquire()


def test_a_staging_directory_is_emptied_before_and_after_and_keeps_its_lock(tmp_path: Path) -> None:
    staging = tmp_path / "import"
    (staging / "left" / "by").mkdir(parents=True)
    (staging / "a-stopped-run.zip").write_bytes(b"x")
    with staging_directory(staging, command="collector import") as where:
        assert sorted(p.name for p in where.iterdir()) == [LOCK_NAME]
        (where / "day.csv").write_text("1,2,3")
        busy = pytest.raises(DirectoryBusy, match="one `collector import` at a time per spool")
        with busy, staging_directory(staging, command="collector import"):
            pass
        assert (where / "day.csv").exists()  # the refused one touched nothing
    assert sorted(p.name for p in staging.iterdir()) == [LOCK_NAME]
    assert holder_of(staging) is None


def test_a_staging_directory_that_keeps_its_intents_is_locked_but_not_emptied(tmp_path: Path) -> None:
    (tmp_path / "intents").mkdir()
    with staging_directory(tmp_path, command="collector compact", emptied=False):
        assert (tmp_path / "intents").is_dir() and holder_of(tmp_path) == os.getpid()
    assert (tmp_path / "intents").is_dir()
