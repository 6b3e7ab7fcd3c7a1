"""A captured landing zone and the audit command, for the audit's tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import REPO, Proc, collector_env, start_emulator, wait_for

SYMBOL = "BTCUSDT"


# 3,000 trades 100 ms apart from 20 minutes ago (about 5 minutes of trade time), a 150 s jump
# after the first 1,500 (a quiet minute or two): the collector marks all but the last minute.
TAPE = ("--count", "3000", "--rate", "600", "--clock-from-s", "1200", "--clock-step-ms", "100",
        "--clock-jump-every", "1500", "--clock-jump-s", "150")  # fmt: skip


def _capture(start: Callable[..., Proc], tmp: Path, **extra: str) -> Proc:
    _, url = start_emulator(start, *TAPE)
    collector = start("run", env=collector_env(url, tmp, **extra))
    collector.wait_event("collector.stats", lambda e: e["last_trade_id"].get(SYMBOL) == 1_002_999)
    # Five-plus minutes of trade time: at least four minutes are final once the last trade is in.
    wait_for(lambda: len(collector.named("collector.minute_marked")) >= 4, what="four minutes marked")
    return collector


def _audit(target: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "audit", target, "--symbols", SYMBOL, "--json", *args],
        capture_output=True, text=True, env=full_env, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    return done.returncode, json.loads(done.stdout)
