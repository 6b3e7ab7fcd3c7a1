"""The daemon's process-wide memory settings take effect, and an operator's own settings win."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow
import pytest

_PROBE = (
    "import collector.daemon.lean, os; collector.daemon.lean.apply(); import pyarrow; "
    "print(pyarrow.default_memory_pool().backend_name)"
)


def _backend_after_apply(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_arrow_allocates_from_the_system_allocator() -> None:
    assert _backend_after_apply() == "system"


def test_an_operators_memory_pool_choice_wins() -> None:
    others = [b for b in pyarrow.supported_memory_backends() if b != "system"]
    if not others:
        pytest.skip("this pyarrow build has only the system allocator")
    assert _backend_after_apply(ARROW_DEFAULT_MEMORY_POOL=others[0]) == others[0]


def test_an_unknown_memory_pool_is_named_and_arrow_falls_back_to_a_working_one() -> None:
    clean = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    probe = (
        _PROBE + "; import io, pyarrow.parquet as pq; pq.write_table(pyarrow.table({'a': [1]}), io.BytesIO())"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**clean, "ARROW_DEFAULT_MEMORY_POOL": "garbage"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Unsupported backend 'garbage'" in done.stderr and "'system'" in done.stderr
    assert done.stdout.strip() in pyarrow.supported_memory_backends()
