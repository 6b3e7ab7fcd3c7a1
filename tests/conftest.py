"""Shared fixtures: the recordings (when present), moto's S3 server over HTTP, and real subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Fixtures that live beside their helpers: the notify socket (tests/support/systemd.py).
pytest_plugins = ["tests.support.systemd"]

REPO = Path(__file__).resolve().parent.parent
# CI keeps shared/ beside the clone; a user's fresh clone has none, and those tests skip.
SHARED = Path(os.environ.get("TRADE_LAKE_SHARED", REPO.parent / "shared"))
RECORDING_2024 = SHARED / "binance" / "btcusdt_trades_20240808_live.gz"
RECORDING_2023 = SHARED / "binance" / "btcusdt_trades_20230405_live_legacy.gz"

# Generous: these machines are shared, and a deadline is only hit when something is broken.
DEADLINE_S = 120.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts the collector, the feed or a script as a real process is `slow`:
    `pytest -m "not slow"` is the quick inner loop, the full suite is what CI runs."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "procs" in names:
            item.add_marker(pytest.mark.slow)


def recording(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"recording {path.name} not present (it lives in ../shared beside the clone)")
    return path


def wait_for(predicate: Callable[[], Any], *, timeout_s: float = DEADLINE_S, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class Proc:
    """A subprocess whose stdout JSON lines are collected by a reader thread."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.args = args
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._new: queue.Queue[None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))

    def _read_err(self) -> None:
        assert self.popen.stderr is not None
        for line in self.popen.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("event") == event]

    def wait_event(
        self,
        event: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda e: True,
        timeout_s: float = DEADLINE_S,
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            if self.popen.poll() is not None and not any(predicate(e) for e in self.named(event)):
                raise AssertionError(
                    f"{self.args[1:3]} exited with {self.popen.returncode} before {event}:\n"
                    f"{''.join(self.lines[-20:])}\n{self.stderr[-3000:]}"
                )
            return next((e for e in self.named(event) if predicate(e)), None)

        return wait_for(found, timeout_s=timeout_s, what=f"{event} from {self.args[1:3]}")  # type: ignore[no-any-return]

    def send(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = DEADLINE_S) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A command run in the test's own process (`main([...])`) binds the log lines to that test's
    captured stdout or stderr, which pytest closes after it: every later test in the worker that
    logged would fail on a closed file. Each test starts from structlog's defaults."""
    yield
    import structlog

    import collector.logs

    structlog.reset_defaults()
    collector.logs._stream = None


@pytest.fixture
def procs() -> Iterator[Callable[..., Proc]]:
    """Start `collector ...` subprocesses; all are killed at the end of the test."""
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        proc = Proc([sys.executable, "-m", "collector.cli", *args], full_env, cwd or REPO)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def start_emulator(procs: Callable[..., Proc], *args: str) -> tuple[Proc, str]:
    """A `collector emulate` subprocess on a free loopback port; returns it and its ws:// URL."""
    if "--replay" not in args and "--first-id" not in args:
        args = (*args, "--first-id", "1000000")  # tests know the tape's ids
    proc = procs("emulate", "--port", "0", *args)
    url = proc.wait_event("emulator.listening")["url"]
    return proc, str(url)


def collector_env(url: str, tmp: Path, **extra: str) -> dict[str, str]:
    env = {
        "COLLECTOR_WS_URL": url,
        # The local feed serves historicalTrades on the same port; never reach for Binance.
        "COLLECTOR_REST_URL": url.replace("ws://", "http://", 1)
        if url.startswith("ws://")
        else "http://127.0.0.1:9",
        "COLLECTOR_DESTINATION": str(tmp / "landing"),
        "COLLECTOR_SPOOL_DIR": str(tmp / "spool"),
        # Short timers so a test's data lands in seconds; the logic is the same as the defaults'.
        "COLLECTOR_MAX_BATCH_AGE_S": "2",
        "COLLECTOR_MINUTE_GRACE_S": "0.5",
        "COLLECTOR_STATS_INTERVAL_S": "0.5",
        "COLLECTOR_RECONNECT_INITIAL_DELAY_S": "0.05",
        "COLLECTOR_RECONNECT_MAX_DELAY_S": "0.5",
        "COLLECTOR_HEALTH_PORT": "0",  # tests that read /health pick a free port themselves
    }
    env.update({f"COLLECTOR_{k.upper()}": v for k, v in extra.items()})
    return env


def landed(e: dict[str, Any]) -> int:
    """Trades landed, all symbols, from a collector.stats or collector.stopped line."""
    return sum((e.get("trades_landed") or {}).values())


def rows_landed(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda e: landed(e) >= n


def stop_cleanly(proc: Proc) -> dict[str, Any]:
    assert proc.stop(signal.SIGTERM) == 0, proc.stderr + "".join(proc.lines[-20:])
    (stopped,) = proc.named("collector.stopped")
    return stopped


def reached(last_ids: dict[str, int]) -> Callable[[dict[str, Any]], bool]:
    """A collector.stats predicate: every symbol has accepted at least up to its id."""
    return lambda e: all((e.get("last_trade_id") or {}).get(s, -1) >= i for s, i in last_ids.items())


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server over real HTTP on a free loopback port, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "ap-northeast-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def s3_bucket(moto_endpoint: str, aws_env: dict[str, str], request: pytest.FixtureRequest) -> tuple[Any, str]:
    """A fresh bucket on the moto server and a boto3 client that talks to it over HTTP."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="ap-northeast-1")
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"landing-{slug}-{os.getpid()}"
    client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"})
    return client, name
