"""The `collector import` command line and its run, for the import's tests."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

from tests.conftest import REPO


def day_number(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def import_command(
    rest: str,
    landing: Path,
    first: date,
    last: date,
    *extra: str,
    destination: str | None = None,
    env_extra: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """`collector import` of BTCUSDT's days from the feed at `rest`: (argv, environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(
        {
            "COLLECTOR_ARCHIVE_URL": rest,
            "COLLECTOR_REST_URL": rest,
            "COLLECTOR_SPOOL_DIR": str(landing.parent / "spool"),
            "PYTHONUNBUFFERED": "1",
            **(env_extra or {}),
        }
    )
    argv = [
        sys.executable,
        "-m",
        "collector.cli",
        "import",
        "--symbols",
        "BTCUSDT",
        "--from",
        first.isoformat(),
        "--to",
        last.isoformat(),
        "--destination",
        destination or str(landing),
        *extra,
    ]
    return argv, env


def run_import(rest: str, landing: Path, first: date, last: date, *extra: str, **options: Any) -> Any:
    argv, env = import_command(rest, landing, first, last, "--json", *extra, **options)
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False)
