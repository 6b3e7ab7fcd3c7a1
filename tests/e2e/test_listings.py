"""COLLECTOR_SYMBOLS=ALL while exchangeInfo does not answer: says why, keeps asking, stops on SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.mark.slow
def test_all_without_exchange_info_says_why_keeps_asking_and_stops_on_sigterm(
    procs: Any, tmp_path: Path
) -> None:
    import signal

    from tests.conftest import collector_env, free_port

    env = collector_env(f"ws://127.0.0.1:{free_port()}", tmp_path, symbols="ALL")
    collector = procs("run", env=env)
    first = collector.wait_event("collector.listings_unavailable")
    assert "exchangeInfo could not be reached" in first["error"] and "COLLECTOR_REST_URL" in first["fix"]
    collector.wait_event("collector.listings_unavailable", lambda e: e is not first)  # it asks again
    assert collector.stop(signal.SIGTERM) == 0  # promptly: not stuck waiting for an answer
    assert not collector.named("collector.started")  # nothing was captured, nothing pretended
