"""The `collector` command run as a process, for the command tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import REPO


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 120) -> Any:
    full = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "collector.cli", *args], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=timeout, check=False)  # fmt: skip
