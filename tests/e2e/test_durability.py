"""Nothing lost, nothing duplicated: kill -9, S3 outages, conflicts, a full spool, permanent errors.

Real processes throughout: the collector and the feed as subprocesses, moto's S3 server over
HTTP (behind a fault-injecting proxy where an outage is needed), SIGKILL and SIGTERM.
"""

from __future__ import annotations

import json
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Proc, collector_env, free_port, landed, reached, start_emulator, stop_cleanly
from tests.support.landing import download_bucket, ids_by_symbol, read_landing, trade_frame
from tests.support.scripted_server import Script, ScriptedServer
from tests.support.tcp_proxy import FaultProxy


def s3_env(
    url: str, tmp: Path, endpoint: str, bucket: str, aws_env: dict[str, str], **extra: str
) -> dict[str, str]:
    env = collector_env(url, tmp, destination=f"s3://{bucket}", s3_endpoint_url=endpoint, **extra)
    env.update(aws_env)
    return env


def spooled(tmp: Path) -> list[Path]:
    return sorted((tmp / "spool" / "objects").rglob("*~*"))


def test_kill_9_of_unsealed_trades_loses_nothing(procs: Callable[..., Proc], tmp_path: Path) -> None:
    """Trades buffered in memory (no batch sealed yet) survive SIGKILL through the journal."""
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--count", "300", "--rate", "0")
    env = collector_env(url, tmp_path, max_batch_age_s="3600", minute_grace_s="3600")
    first = procs("run", env=env)
    first.wait_event("collector.stats", lambda e: e.get("frames", 0) >= 300)
    assert first.named("collector.batch_landed") == []
    first.send(signal.SIGKILL)
    first.popen.wait(timeout=60)
    assert list((tmp_path / "spool" / "journal").glob("*.frames"))

    second = procs("run", env=env)
    second.wait_event("collector.started", lambda e: e["resealed_from_journal"] >= 1)
    second.wait_event("collector.stats", lambda e: landed(e) >= 300)
    stop_cleanly(second)
    ids = [r.trade_id for r in read_landing(tmp_path / "landing")]
    assert sorted(ids) == list(range(min(ids), min(ids) + 300))
    assert list((tmp_path / "spool" / "journal").glob("*.frames")) == []


def test_chaos_repeated_sigkill_ends_with_every_trade_exactly_once_in_s3(
    procs: Callable[..., Proc],
    tmp_path: Path,
    moto_endpoint: str,
    s3_bucket: tuple[Any, str],
    aws_env: dict[str, str],
) -> None:
    """Twelve SIGKILLs at random moments of capture, sealing and upload, each followed by a restart.

    The feed re-delivers its last 20,000 trades to each new connection, as REST backfill does for
    what was in flight when the process died; the journal, the spool, deterministic keys and
    conditional writes must turn that into exactly one copy of every trade.
    """
    client, bucket = s3_bucket
    count = 15_000
    _, url = start_emulator(
        procs, "--symbols", "BTCUSDT,ETHUSDT", "--count", str(count), "--rate", "1500", "--redeliver", "20000"
    )
    env = s3_env(
        url,
        tmp_path,
        moto_endpoint,
        bucket,
        aws_env,
        symbols="BTCUSDT,ETHUSDT",
        max_batch_bytes="65536",
        max_batch_age_s="0.5",
        minute_grace_s="0.2",
    )
    rng = random.Random(20261122)
    kills = 0
    while kills < 12:
        proc = procs("run", env=env)
        proc.wait_event("collector.connected")
        proc.wait_event("collector.stats", lambda e: e.get("frames", 0) >= rng.randint(50, 1500))
        proc.send(signal.SIGKILL)
        proc.popen.wait(timeout=60)
        (tmp_path / f"run-{kills}.log").write_text("".join(proc.lines))  # for a post-mortem
        kills += 1
    final = procs("run", env=env)
    first_btc, first_eth = 1_000_000, 10_001_000_000  # the generated tape's first ids
    final.wait_event(
        "collector.stats", reached({"BTCUSDT": first_btc + count - 1, "ETHUSDT": first_eth + count - 1})
    )
    stop_cleanly(final)

    download_bucket(client, bucket, tmp_path / "bucket")
    found = ids_by_symbol(tmp_path / "bucket")
    assert found["BTCUSDT"] == list(range(first_btc, first_btc + count))
    assert found["ETHUSDT"] == list(range(first_eth, first_eth + count))
    assert spooled(tmp_path) == []


def test_an_s3_outage_spools_and_drains_by_itself(
    procs: Callable[..., Proc],
    tmp_path: Path,
    moto_endpoint: str,
    s3_bucket: tuple[Any, str],
    aws_env: dict[str, str],
) -> None:
    client, bucket = s3_bucket
    host, port = moto_endpoint.removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port))
    try:
        count = 6000
        _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--count", str(count), "--rate", "400")
        env = s3_env(url, tmp_path, proxy.url, bucket, aws_env, max_batch_age_s="0.5", minute_grace_s="0.2")
        collector = procs("run", env=env)
        collector.wait_event("collector.batch_landed")
        proxy.cut()
        collector.wait_event("collector.upload_retry")
        collector.wait_event("collector.stats", lambda e: e.get("spool_objects", 0) >= 3)
        assert len(spooled(tmp_path)) >= 3  # capture went on; batches wait on disk
        proxy.restore()
        collector.wait_event("collector.stats", reached({"BTCUSDT": 1_000_000 + count - 1}))
        collector.wait_event("collector.stats", lambda e: e.get("spool_objects", 1) == 0 and landed(e) > 0)
        stop_cleanly(collector)
    finally:
        proxy.close()
    download_bucket(client, bucket, tmp_path / "bucket")
    assert ids_by_symbol(tmp_path / "bucket")["BTCUSDT"] == list(range(1_000_000, 1_000_000 + count))
    assert spooled(tmp_path) == []


def test_a_conflicting_object_is_reported_and_never_overwritten(
    procs: Callable[..., Proc],
    tmp_path: Path,
    moto_endpoint: str,
    s3_bucket: tuple[Any, str],
    aws_env: dict[str, str],
) -> None:
    client, bucket = s3_bucket
    t0 = 1_723_161_240_000
    key = "Binance/BTCUSDT/2024/08/08/23/54/batch-1-100.parquet"
    client.put_object(Bucket=bucket, Key=key, Body=b"someone else's bytes")
    with ScriptedServer([Script([trade_frame(i, t0 + i) for i in range(1, 101)])]) as server:
        env = s3_env(server.url, tmp_path, moto_endpoint, bucket, aws_env, max_batch_age_s="3600")
        collector = procs("run", env=env)
        collector.wait_event("collector.stats", lambda e: e.get("frames", 0) >= 100)
        stopped = stop_cleanly(collector)
    (conflict,) = collector.named("collector.landing_conflict")
    assert conflict["key"] == key
    assert conflict["existing_sha256"] != conflict["local_sha256"]
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"someone else's bytes"
    assert Path(conflict["kept_at"]).is_file()  # our copy is kept for a person to compare
    assert stopped["landing_conflicts"] == 1


def test_a_full_spool_keeps_the_oldest_and_records_exactly_what_it_dropped(
    procs: Callable[..., Proc], tmp_path: Path, aws_env: dict[str, str]
) -> None:
    count = 6000
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--count", str(count), "--rate", "0")
    env = collector_env(
        url,
        tmp_path,
        destination="s3://landing-unreachable",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        max_batch_bytes="65536",
        max_batch_age_s="3600",
        minute_grace_s="3600",
        spool_max_bytes="10000",
        shutdown_timeout_s="1",
    )
    env.update(aws_env)
    collector = procs("run", env=env)
    collector.wait_event("collector.spool_full")
    collector.wait_event("collector.stats", lambda e: e.get("frames", 0) >= count)
    stopped = stop_cleanly(collector)
    assert stopped["dropped_trades"] > 0

    import pyarrow.parquet as pq

    kept = sorted(i for p in spooled(tmp_path) for i in pq.read_table(p).column("trade_id").to_pylist())
    records = [json.loads(line) for line in (tmp_path / "spool" / "dropped.jsonl").read_text().splitlines()]
    dropped = sorted(
        i for r in records for first, last in r["trade_id_ranges"] for i in range(first, last + 1)
    )
    assert sum(r["trades"] for r in records) == len(dropped) == stopped["dropped_trades"]
    assert sorted(kept + dropped) == list(range(1_000_000, 1_000_000 + count))  # nothing silently lost
    assert max(kept) < min(dropped)  # the oldest data is what was kept
    assert sum(p.stat().st_size for p in spooled(tmp_path)) <= 10000


def test_a_missing_bucket_is_named_with_the_fix_and_the_data_stays_spooled(
    procs: Callable[..., Proc], tmp_path: Path, moto_endpoint: str, aws_env: dict[str, str]
) -> None:
    t0 = 1_723_161_240_000
    with ScriptedServer([Script([trade_frame(i, t0 + i) for i in range(1, 51)])]) as server:
        env = s3_env(
            server.url, tmp_path, moto_endpoint, "no-such-landing-bucket", aws_env, max_batch_age_s="0.5"
        )
        env["COLLECTOR_SHUTDOWN_TIMEOUT_S"] = "2"
        collector = procs("run", env=env)
        blocked = collector.wait_event("collector.upload_blocked")
        stop_cleanly(collector)
    assert 'landing bucket "no-such-landing-bucket" does not exist' in blocked["error"]
    assert "COLLECTOR_DESTINATION" in blocked["error"]
    assert blocked["retry_in_s"] == 60
    assert len(spooled(tmp_path)) == 1  # kept for the next start
