"""What a person meets in the first hour, with real processes: each command tells the truth."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, Proc, collector_env, free_port, start_emulator, wait_for
from tests.support.cli import run_cli


@pytest.mark.slow
def test_check_config_online_asks_s3_for_the_bucket_and_binance_for_the_symbols(
    procs: Callable[..., Proc], tmp_path: Path, moto_endpoint: str, aws_env: dict[str, str],
    s3_bucket: tuple[Any, str],
) -> None:  # fmt: skip
    _, url = start_emulator(procs, "--symbols", "BTCUSDT,ETHUSDT", "--status", "ETHUSDT=BREAK")
    rest = url.replace("ws://", "http://")
    env = {**aws_env, "COLLECTOR_S3_ENDPOINT_URL": moto_endpoint, "COLLECTOR_REST_URL": rest}
    good = run_cli("check-config", "--online", env={**env, "COLLECTOR_DESTINATION": f"s3://{s3_bucket[1]}/x",
                   "COLLECTOR_SYMBOLS": "BTCUSDT,ETHUSDT"}, cwd=tmp_path)  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert "configuration OK (checked with S3 and Binance)" in good.stderr
    assert "ETHUSDT exists but is not trading (status BREAK)" in good.stderr
    bad = run_cli("check-config", "--online", env={**env, "COLLECTOR_DESTINATION": "s3://no-such-bucket-here",
                  "COLLECTOR_SYMBOLS": "BTCUSDT,BTCUSTD"}, cwd=tmp_path)  # fmt: skip
    assert bad.returncode == 2
    assert 'landing bucket "no-such-bucket-here" does not exist' in bad.stderr
    assert "BTCUSTD is not a Binance spot symbol; closest: BTCUSDT" in bad.stderr
    offline = run_cli(
        "check-config", env={**env, "COLLECTOR_DESTINATION": "s3://no-such-bucket-here"}, cwd=tmp_path
    )
    assert offline.returncode == 0 and "add --online" in offline.stderr


@pytest.mark.slow
def test_run_stops_at_once_on_an_unknown_symbol_naming_the_closest(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    _, url = start_emulator(procs, "--symbols", "BTCUSDT,ETHUSDT")
    collector = procs("run", env=collector_env(url, tmp_path, symbols="BTCUSDT,ETHUSTD"))
    assert collector.popen.wait(timeout=60) == 2
    (fatal,) = collector.named("collector.fatal")
    assert "ETHUSTD is not a Binance spot symbol; closest: ETHUSDT" in fatal["error"]
    assert collector.named("collector.connected") == []


@pytest.mark.slow
def test_run_warns_of_a_symbol_not_trading_and_of_an_unanswered_check(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--status", "BTCUSDT=HALT")
    collector = procs("run", env=collector_env(url, tmp_path))
    (halted,) = [collector.wait_event("collector.symbol_not_trading")]
    assert halted["symbol"] == "BTCUSDT" and halted["status"] == "HALT"
    collector.wait_event("collector.connected")
    collector.stop()
    unchecked = procs(
        "run", env={**collector_env(url, tmp_path / "b"), "COLLECTOR_REST_URL": "http://127.0.0.1:9"}
    )
    event = unchecked.wait_event("collector.symbols_unchecked")
    assert "could not be reached" in event["error"]
    unchecked.wait_event("collector.connected")  # and it goes on
    unchecked.stop()


@pytest.mark.slow
def test_without_a_route_every_attempt_is_counted_and_one_line_says_what_to_check(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    port = free_port()
    nowhere = f"ws://127.0.0.1:{free_port()}"
    collector = procs("run", env=collector_env(nowhere, tmp_path, health_port=str(port)))
    explained = collector.wait_event("collector.cannot_connect")
    assert explained["cause"].startswith("refused") and "collector demo" in explained["note"]

    def reconnects() -> int:
        try:
            with urlopen(f"http://127.0.0.1:{port}/health") as response:
                return int(json.loads(response.read())["streams"][0]["reconnects"])
        except OSError as exc:  # 503 while failing: the body says it all the same
            body = getattr(exc, "read", lambda: b"")()
            return int(json.loads(body)["streams"][0]["reconnects"]) if body else -1

    from urllib.request import urlopen

    wait_for(lambda: reconnects() >= 3, what="three reconnects counted")
    assert reconnects() >= len(collector.named("collector.reconnecting")) - 1
    collector.stop()


@pytest.mark.slow
def test_the_first_stats_line_comes_when_the_first_batch_lands(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--rate", "100")
    collector = procs("run", env=collector_env(url, tmp_path, stats_interval_s="600"))
    landed = collector.wait_event("collector.batch_landed")
    stats = collector.wait_event("collector.stats", timeout_s=30)
    assert sum(stats["trades_landed"].values()) >= landed["rows"]
    collector.stop()


def _pty_output(args: list[str], env: dict[str, str], seconds: float) -> str:
    """What a person at a terminal would see in `seconds`, then Ctrl-C."""
    leader, follower = pty.openpty()
    full = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    full.update(env, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "collector.cli", *args], stdin=follower, stdout=follower,
                            stderr=follower, env=full, cwd=REPO)  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunks.append(os.read(leader, 65536))
                except OSError:
                    break
        proc.send_signal(signal.SIGINT)
        end = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < end:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunks.append(os.read(leader, 65536))
                except OSError:
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(leader)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_a_person_at_a_terminal_reads_lines_not_json_unless_json_is_asked_for(tmp_path: Path) -> None:
    env = {"COLLECTOR_MAX_BATCH_AGE_S": "2", "COLLECTOR_STATS_INTERVAL_S": "600"}
    demo = [
        "demo",
        "--destination",
        str(tmp_path / "l"),
        "--spool-dir",
        str(tmp_path / "s"),
        "--seconds",
        "60",
    ]
    seen = _pty_output(demo, env, 8)
    lines = [line for line in seen.splitlines() if "collector." in line]
    assert lines and not any(line.lstrip().startswith("{") for line in lines), seen[-2000:]
    assert "collector.stats" in seen  # the first stats line: within seconds, not after the interval
    as_json = _pty_output(demo, {**env, "COLLECTOR_LOG_FORMAT": "json"}, 6)
    assert any(line.startswith('{"event": "collector.') for line in as_json.splitlines()), as_json[-2000:]


@pytest.mark.slow
def test_status_asks_the_port_the_settings_name(procs: Callable[..., Proc], tmp_path: Path) -> None:
    port = free_port()
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--rate", "50")
    collector = procs("run", env=collector_env(url, tmp_path, health_port=str(port)))
    collector.wait_event("collector.ready")
    from_env = run_cli("status", "--wait", "60", env={"COLLECTOR_HEALTH_PORT": str(port)}, cwd=tmp_path)
    assert from_env.returncode == 0 and json.loads(from_env.stdout)["healthy"] is True
    (tmp_path / ".env").write_text(f"COLLECTOR_HEALTH_PORT={port}\n")
    from_file = run_cli("status", "--wait", "60", cwd=tmp_path)
    assert from_file.returncode == 0, from_file.stderr
    off = run_cli("status", env={"COLLECTOR_HEALTH_PORT": "0"}, cwd=tmp_path)
    assert off.returncode == 1 and "COLLECTOR_HEALTH_PORT=0" in off.stderr
    collector.stop()


@pytest.mark.slow
def test_demo_says_when_nothing_landed_and_lists_the_minutes_left_unmarked(tmp_path: Path) -> None:
    nothing = run_cli("demo", "--count", "0", "--seconds", "3", "--quiet", cwd=tmp_path, timeout=180)
    assert nothing.returncode == 1 and "nothing landed in 3 s" in nothing.stderr
    ran = run_cli("demo", "--seconds", "6", "--quiet", "--destination", "d", "--spool-dir", "s", cwd=tmp_path,
                  env={"COLLECTOR_MAX_BATCH_AGE_S": "2"}, timeout=180)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "without _SUCCESS" in ran.stdout and "the demo stopped before they were final" in ran.stdout


@pytest.mark.slow
def test_the_default_demo_marks_a_minute_and_says_how_to_audit_it_and_a_second_goes_on(
    tmp_path: Path,
) -> None:
    first = run_cli("demo", "--quiet", cwd=tmp_path, timeout=180)
    assert first.returncode == 0, first.stderr
    marked = re.search(r"marked in this run: \d+ minute\(s\), .* for BTCUSDT, ETHUSDT", first.stdout)
    assert marked, first.stdout
    command = re.search(r"^  collector (audit demo-landing --from \S+ --to \S+)$", first.stdout, re.M)
    assert command, first.stdout
    for audit in (run_cli(*command[1].split(), cwd=tmp_path), run_cli("audit", "demo-landing", cwd=tmp_path)):
        assert audit.returncode == 0 and "OK: no defects found" in audit.stdout, audit.stdout + audit.stderr
        checked = re.search(r"checked ([\d,]+) trades in (\d+) minutes", audit.stdout)
        assert checked and int(checked[1].replace(",", "")) > 0 and int(checked[2]) >= 2, audit.stdout
    # Into the same directory at once: the same series goes on, no ids missing between the runs.
    second = run_cli("demo", "--seconds", "5", cwd=tmp_path, timeout=180)
    assert second.returncode == 0, second.stderr
    assert "gap_unfilled" not in second.stdout and "sequence_reset" not in second.stdout
    assert re.findall(r"(?:BTC|ETH)USDT: [\d,]+ trades .* 0 duplicates, 0 missing", second.stdout), (
        second.stdout
    )
    again = run_cli("audit", "demo-landing", cwd=tmp_path)
    assert again.returncode == 0 and "OK: no defects found" in again.stdout, again.stdout
