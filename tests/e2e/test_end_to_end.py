"""The whole collector as a real subprocess, against the local feed or a scripted server, over loopback."""

from __future__ import annotations

import csv
import gzip
import io
import re
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from collector.feed.tapes import GeneratedTape
from tests.conftest import (
    RECORDING_2023,
    RECORDING_2024,
    Proc,
    collector_env,
    landed,
    recording,
    rows_landed,
    start_emulator,
    stop_cleanly,
)
from tests.support.landing import download_bucket, read_landing, recorded_trades, trade_frame
from tests.support.scripted_server import Script, ScriptedServer


@pytest.mark.parametrize(
    ("path", "expected"),
    [(RECORDING_2024, 9757), (RECORDING_2023, 3144)],
    ids=["2024", "2023-legacy-midnight"],
)
def test_replaying_a_recording_lands_every_trade_exactly_once_and_exact(
    procs: Callable[..., Proc], tmp_path: Path, path: Path, expected: int
) -> None:
    source = recording(path)
    _, url = start_emulator(procs, "--replay", str(source))
    collector = procs("run", env=collector_env(url, tmp_path, symbols="BTCUSDT"))
    collector.wait_event("collector.stats", rows_landed(expected))
    stopped = stop_cleanly(collector)
    assert landed(stopped) == expected
    assert stopped["skipped_frames"] == {} and stopped["duplicate_trades"] == 0

    rows = read_landing(tmp_path / "landing")
    recorded = recorded_trades(source)
    assert sorted(r.trade_id for r in rows) == sorted(recorded)  # same ids, each exactly once
    assert len(rows) == expected
    for row in rows:
        data = recorded[row.trade_id]
        assert (row.price, row.quantity, row.trade_time_ms) == (data["p"], data["q"], data["T"])
    if path == RECORDING_2023:  # the first trade is at 23:59:59.999 on April 4th
        first = min(rows, key=lambda r: r.trade_id)
        assert first.key.startswith("Binance/BTCUSDT/2023/04/04/23/59/")
        assert {r.key.split("/")[4] for r in rows} == {"04", "05"}
    assert list((tmp_path / "spool" / "objects").rglob("*~*")) == []


def _generated_run(procs: Callable[..., Proc], tmp_path: Path, **extra: str) -> dict[str, Any]:
    _, url = start_emulator(procs, "--symbols", "BTCUSDT,ETHUSDT", "--count", "25000", "--rate", "0")
    collector = procs("run", env=collector_env(url, tmp_path, symbols="BTCUSDT,ETHUSDT", **extra))
    collector.wait_event("collector.stats", rows_landed(50_000))
    return stop_cleanly(collector)


def _assert_exactly_once(rows: list[Any]) -> None:
    by_symbol: dict[str, list[int]] = {}
    for row in rows:
        by_symbol.setdefault(row.symbol, []).append(row.trade_id)
    assert sorted(by_symbol) == ["BTCUSDT", "ETHUSDT"]
    for ids in by_symbol.values():
        ids.sort()
        assert len(ids) == 25_000
        assert ids == list(range(ids[0], ids[0] + 25_000))  # contiguous, no duplicate


def test_two_symbols_on_one_combined_stream_land_exactly_once_locally(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    stopped = _generated_run(procs, tmp_path)
    assert stopped["trades_received"] == {"BTCUSDT": 25_000, "ETHUSDT": 25_000}
    _assert_exactly_once(read_landing(tmp_path / "landing"))


def test_two_symbols_land_exactly_once_in_s3_over_http(
    procs: Callable[..., Proc],
    tmp_path: Path,
    moto_endpoint: str,
    s3_bucket: tuple[Any, str],
    aws_env: dict[str, str],
) -> None:
    client, bucket = s3_bucket
    _, url = start_emulator(procs, "--symbols", "BTCUSDT,ETHUSDT", "--count", "25000", "--rate", "0")
    env = collector_env(
        url,
        tmp_path,
        symbols="BTCUSDT,ETHUSDT",
        destination=f"s3://{bucket}/raw",
        s3_endpoint_url=moto_endpoint,
        s3_region="ap-northeast-1",
    )
    env.update(aws_env)
    collector = procs("run", env=env)
    collector.wait_event("collector.stats", rows_landed(50_000))
    stop_cleanly(collector)
    keys = download_bucket(client, bucket, tmp_path / "downloaded", prefix="raw/")
    assert keys and all(k.startswith("raw/Binance/") for k in keys)
    _assert_exactly_once(read_landing(tmp_path / "downloaded"))
    head = client.head_object(Bucket=bucket, Key=keys[0], ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256" and head["ChecksumSHA256"]


def test_size_flush_seals_batches_at_the_byte_threshold(procs: Callable[..., Proc], tmp_path: Path) -> None:
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--count", "3000", "--rate", "0")
    env = collector_env(url, tmp_path, max_batch_bytes="65536", max_batch_age_s="3600", minute_grace_s="3600")
    collector = procs("run", env=env)
    collector.wait_event("collector.stats", lambda e: e.get("frames", 0) >= 3000)
    stop_cleanly(collector)
    landed = collector.named("collector.batch_landed")
    # The feed's tape is deterministic for its seed: replay it here to know where each
    # batch must close (the first frame that brings the raw bytes to 65,536 or more).
    expected, size = [], 0
    rows = 0
    for trade in GeneratedTape(("BTCUSDT",), count=3000).take(3000):
        size += len(trade.payload_ms)
        rows += 1
        if size >= 65_536:
            expected.append(rows)
            size, rows = 0, 0
    assert len(expected) >= 5
    assert [e["rows"] for e in landed if e["sealed_by"] == "size"] == expected
    assert sum(e["rows"] for e in landed) == 3000


def test_age_flush_lands_a_quiet_symbol_without_waiting_for_the_minute(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    now_ms = int(time.time() * 1000)
    minute_start = now_ms - now_ms % 60_000 + 60_000  # a minute that has not started: no close by time
    frames = [trade_frame(i, minute_start + i) for i in range(1, 4)]
    with ScriptedServer([Script(frames)]) as server:
        env = collector_env(server.url, tmp_path, max_batch_age_s="1", minute_grace_s="3600")
        collector = procs("run", env=env)
        landed = collector.wait_event("collector.batch_landed")
        assert (landed["sealed_by"], landed["rows"]) == ("age", 3)
        stop_cleanly(collector)


def test_sigterm_mid_batch_lands_the_partial_batch(procs: Callable[..., Proc], tmp_path: Path) -> None:
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--count", "300", "--rate", "0")
    env = collector_env(url, tmp_path, max_batch_age_s="3600", minute_grace_s="3600")
    collector = procs("run", env=env)
    collector.wait_event("collector.stats", lambda e: e.get("frames", 0) >= 300)
    assert collector.named("collector.batch_landed") == []
    stopped = stop_cleanly(collector)
    assert landed(stopped) == 300
    assert {e["sealed_by"] for e in collector.named("collector.batch_landed")} == {"shutdown"}
    assert len(read_landing(tmp_path / "landing")) == 300


def test_malformed_frames_are_counted_and_skipped_while_valid_trades_land(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    t0 = 1_723_161_240_000
    bad = {
        "not_json": "{oops",
        "not_object": "[1,2,3]",
        "missing_field": '{"e":"trade","E":1,"s":"BTCUSDT","t":5,"q":"1.0","T":1,"m":true}',
        "bad_field": trade_frame(7, t0).replace('"p":"61837.63000000"', '"p":61837.63'),
        "unknown_event": '{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1}',
        "control_answer": '{"result":null,"id":1}',
        "error_answer": '{"code":2,"msg":"Invalid request","id":2}',
        "server_shutdown": '{"e":"serverShutdown","E":1}',
    }
    frames: list[str | bytes] = []
    for i in range(1, 201):
        frames.append(trade_frame(i, t0 + i))
        if i % 25 == 0:
            frames.extend(bad.values())
    # serverShutdown makes the collector open a second connection (make before break); this
    # server sends nothing on it, so every frame above arrives exactly once, on the first.
    with ScriptedServer([Script(frames), Script([])]) as server:
        collector = procs("run", env=collector_env(server.url, tmp_path))
        collector.wait_event("collector.stats", lambda e: e.get("frames", 0) >= len(frames))
        stopped = stop_cleanly(collector)
    assert stopped["skipped_frames"] == dict.fromkeys(bad, 8)
    assert collector.named("collector.rotating")[0]["reason"] == "server_shutdown"
    assert sorted(r.trade_id for r in read_landing(tmp_path / "landing")) == list(range(1, 201))
    reasons = Counter(e["reason"] for e in collector.named("collector.frame_skipped"))
    assert set(reasons) == set(bad) - {"server_shutdown"}


def test_reconnect_neither_duplicates_nor_loses_buffered_trades(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    t0 = 1_723_161_240_000
    first = [trade_frame(i, t0 + i) for i in range(1, 101)]
    second = [trade_frame(i, t0 + i) for i in range(90, 201)]  # overlaps 90..100
    with ScriptedServer([Script(first, close_after=True), Script(second)]) as server:
        env = collector_env(server.url, tmp_path, max_batch_age_s="3600", minute_grace_s="3600")
        collector = procs("run", env=env)
        collector.wait_event("collector.stats", lambda e: e.get("frames", 0) >= 211)
        stopped = stop_cleanly(collector)
    assert stopped["connections"] == 2
    assert stopped["duplicate_trades"] == 11
    assert sorted(r.trade_id for r in read_landing(tmp_path / "landing")) == list(range(1, 201))


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("COLLECTOR_FORMAT", "xml", "COLLECTOR_FORMAT='xml' is invalid"),
        ("COLLECTOR_MAX_BATCH_BYTES", "-1", "COLLECTOR_MAX_BATCH_BYTES='-1' is invalid"),
        ("COLLECTOR_DESTINATION", "s3://Not_A_Bucket/x", "'Not_A_Bucket' is not a valid S3 bucket name"),
    ],
)
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_bad_configuration_fails_with_a_message_naming_the_setting(
    procs: Callable[..., Proc], tmp_path: Path, command: str, setting: str, value: str, named: str
) -> None:
    proc = procs(command, env={setting: value, "COLLECTOR_SPOOL_DIR": str(tmp_path / "spool")}, cwd=tmp_path)
    assert proc.popen.wait(timeout=60) == 2
    assert named in proc.stderr
    assert "accepted:" in proc.stderr or "bucket name" in proc.stderr
    assert not (tmp_path / "spool").exists()  # nothing started


def test_check_config_prints_the_resolved_settings(procs: Callable[..., Proc], tmp_path: Path) -> None:
    proc = procs("check-config", env={"COLLECTOR_SYMBOLS": "ethusdt,btcusdt"}, cwd=tmp_path)
    assert proc.popen.wait(timeout=60) == 0
    output = "".join(proc.lines)
    assert '"COLLECTOR_SYMBOLS": "ETHUSDT,BTCUSDT"' in output
    assert "stream?streams=ethusdt@trade/btcusdt@trade" in proc.stderr


def test_csv_gz_format_lands_the_same_trades_with_exact_decimals(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--count", "500", "--rate", "0")
    collector = procs("run", env=collector_env(url, tmp_path, format="csv.gz"))
    collector.wait_event("collector.stats", rows_landed(500))
    stop_cleanly(collector)
    files = sorted((tmp_path / "landing").rglob("batch-*.csv.gz"))
    assert files and not list((tmp_path / "landing").rglob("*.parquet"))
    rows = [
        row for f in files for row in csv.DictReader(io.StringIO(gzip.decompress(f.read_bytes()).decode()))
    ]
    ids = sorted(int(r["trade_id"]) for r in rows)
    assert ids == list(range(ids[0], ids[0] + 500))
    assert all(
        re.fullmatch(r"\d+\.\d{8}", r["price"]) and re.fullmatch(r"\d+\.\d{8}", r["quantity"]) for r in rows
    )


def test_a_second_signal_forces_the_exit_and_the_spool_keeps_the_data(
    procs: Callable[..., Proc], tmp_path: Path, aws_env: dict[str, str]
) -> None:
    """S3 is unreachable, so the first SIGTERM's shutdown waits on uploads; the second one ends it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--count", "200", "--rate", "0")
    env = collector_env(
        url,
        tmp_path,
        destination="s3://landing-unreachable",
        s3_endpoint_url=f"http://127.0.0.1:{dead_port}",
        shutdown_timeout_s="600",
    )
    env.update(aws_env)
    collector = procs("run", env=env)
    collector.wait_event("collector.stats", lambda e: e.get("frames", 0) >= 200)
    collector.send(signal.SIGTERM)
    collector.wait_event("collector.upload_retry")
    spooled = sorted((tmp_path / "spool" / "objects").rglob("batch-*~*"))
    assert spooled
    collector.send(signal.SIGTERM)
    assert collector.popen.wait(timeout=60) == 1
    assert collector.named("collector.signal")[-1]["action"].startswith("forced exit")
    assert sorted((tmp_path / "spool" / "objects").rglob("batch-*~*")) == spooled


def test_demo_runs_the_feed_and_the_collector_and_reports_what_landed(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    demo = procs(
        "demo",
        "--seconds",
        "3",
        "--rate",
        "500",
        "--quiet",
        "--destination",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert demo.popen.wait(timeout=120) == 0, demo.stderr
    summary = "".join(demo.lines)
    assert re.search(r"BTCUSDT: [\d,]+ trades in \d+ files.*0 duplicates, 0 missing", summary), summary
    assert re.search(r"ETHUSDT: [\d,]+ trades", summary)
    assert read_landing(tmp_path / "out")
