"""A full disk under the daemon: the spool on a small tmpfs that a filler file fills mid-run.

The collector says so in its log and on /health, holds the stream back instead of taking trades
it cannot keep, keeps everything it took, and once space returns lands every trade of the tape
exactly once (the feed drops each connection every few seconds: what a dropped connection did
not deliver comes from REST). Root only: the tmpfs is
mounted for the test (skipped where it cannot be).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import (
    REPO,
    Proc,
    collector_env,
    free_port,
    reached,
    start_emulator,
    stop_cleanly,
    wait_for,
)
from tests.support.landing import ids_by_symbol

FIRST, COUNT = 1_000_000, 4_000


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; returns it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # down to the last byte
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def health(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            doc: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        doc = json.loads(exc.read())
    return doc


def test_a_full_spool_disk_is_reported_held_back_and_lands_everything_once_space_returns(
    small_disk: Callable[[str], Path], procs: Callable[..., Proc], tmp_path: Path
) -> None:
    disk = small_disk("8m")
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--count", str(COUNT), "--rate", "100",
                            "--drop-every-s", "4")  # fmt: skip
    port = free_port()
    env = collector_env(url, tmp_path, spool_dir=str(disk / "spool"), health_port=str(port),
                        max_batch_age_s="1")  # fmt: skip
    collector = procs("run", env=env)
    collector.wait_event("collector.batch_landed")

    filler = fill(disk)
    full = collector.wait_event("collector.spool_unwritable")
    assert "No space left on device" in full["error"] and str(disk / "spool") in full["path"]
    doc = wait_for(
        lambda: next((d for d in [health(port)] if not d["healthy"]), None), what="/health failing"
    )
    assert doc["verdict"] == "failing" and doc["spool"]["ok"] is False
    assert any("the spool cannot be written" in reason for reason in doc["reasons"]), doc["reasons"]
    held = collector.wait_event("collector.stats", lambda e: e.get("spool_unwritable") == 1)
    # Held back for a while, through connections the feed drops: nothing fatal, nothing dropped.
    collector.wait_event("collector.stats", lambda e: e["uptime_seconds"] > held["uptime_seconds"] + 10)
    assert collector.popen.poll() is None and collector.named("collector.fatal") == []

    filler.unlink()  # space again
    collector.wait_event("collector.spool_writable")
    collector.wait_event("collector.stats", reached({"BTCUSDT": FIRST + COUNT - 1}))
    idle = collector.wait_event(
        "collector.stats", lambda e: e.get("spool_objects", 1) == 0 and e["open_gaps"] == 0 and landed(e)
    )
    wait_for(lambda: health(port)["healthy"], what="/health healthy again")
    stopped = stop_cleanly(collector)

    assert ids_by_symbol(tmp_path / "landing")["BTCUSDT"] == list(range(FIRST, FIRST + COUNT))  # each once
    assert stopped["dropped_trades"] == 0 and idle["gaps_unfilled"] == 0
    assert len(collector.named("collector.gap_filled")) == len(collector.named("collector.gap_detected"))
    audit = [sys.executable, "-m", "collector.cli", "audit", str(tmp_path / "landing"), "--json"]
    done = subprocess.run(audit, capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert done.returncode == 0 and json.loads(done.stdout)["problems"] == [], done.stdout + done.stderr


def landed(e: dict[str, Any]) -> bool:
    return sum((e.get("trades_landed") or {}).values()) >= COUNT
