"""Gap-free capture, real processes: stream faults, REST backfill inside the rate limits, the gap record."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Proc, collector_env, landed, reached, start_emulator, stop_cleanly, wait_for
from tests.support.landing import ids_by_symbol

BTC, ETH = 1_000_000, 10_001_000_000  # first ids of the generated tape


def quiet(e: dict[str, Any]) -> bool:
    """Every detected gap dealt with: filled or recorded."""
    return (
        e.get("gaps_opened", 0) == e.get("gaps_filled", 0) + e.get("gaps_unfilled", 0)
        and e.get("spool_objects") == 0
    )


def test_fault_schedule_over_100k_trades_lands_every_id_exactly_once(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    """Connections are dropped, stalled, shut down and aged out in turn while 100,000 trades flow."""
    count = 50_000
    emulator, url = start_emulator(
        procs,
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--count",
        str(count),
        "--rate",
        "6000",
        "--drop-every-s",
        "2.5",
        "--stall-every-s",
        "2",
        "--stall-for-s",
        "3",
        "--shutdown-every-s",
        "2",
        "--max-connection-age-s",
        "3",
    )
    env = collector_env(
        url,
        tmp_path,
        symbols="BTCUSDT,ETHUSDT",
        stream_silence_s="1",
        connection_max_age_s="2.5",
        max_batch_age_s="1",
    )
    collector = procs("run", env=env)
    collector.wait_event(
        "collector.stats", reached({"BTCUSDT": BTC + count - 1, "ETHUSDT": ETH + count - 1}), timeout_s=300
    )
    collector.wait_event("collector.stats", quiet, timeout_s=300)
    stopped = stop_cleanly(collector)
    assert ids_by_symbol(tmp_path / "landing") == {
        "BTCUSDT": list(range(BTC, BTC + count)),
        "ETHUSDT": list(range(ETH, ETH + count)),
    }
    faults = {e["fault"] for e in emulator.named("emulator.fault")}
    assert {"drop", "stall", "shutdown"} <= faults
    # The lifetime limit: either the feed cut a connection at its age, or (the intended case)
    # the collector rotated to a new one first.
    aged_out = {e["reason"] for e in collector.named("collector.rotating")} & {"connection_age"}
    assert "age" in faults or aged_out
    assert stopped["backfilled_trades"] > 0  # drops and stalls lose frames in flight; REST brings them back
    assert stopped["gaps_unfilled"] == 0


def test_planned_rotations_cost_no_trade_and_need_no_backfill(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    count = 10_000
    _, url = start_emulator(
        procs,
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--count",
        str(count),
        "--rate",
        "1000",  # well within what both processes sustain on a busy 2-core machine
        "--shutdown-every-s",
        "1.5",
    )
    env = collector_env(
        url, tmp_path, symbols="BTCUSDT,ETHUSDT", connection_max_age_s="2", max_batch_age_s="1"
    )
    collector = procs("run", env=env)
    collector.wait_event(
        "collector.stats", reached({"BTCUSDT": BTC + count - 1, "ETHUSDT": ETH + count - 1}), timeout_s=300
    )
    stopped = stop_cleanly(collector)
    assert stopped["rotations"] >= 2
    reasons = {e["reason"] for e in collector.named("collector.rotating")}
    assert reasons & {"server_shutdown", "connection_age"}
    assert stopped["gaps_opened"] == 0 and stopped["backfilled_trades"] == 0
    assert ids_by_symbol(tmp_path / "landing") == {
        "BTCUSDT": list(range(BTC, BTC + count)),
        "ETHUSDT": list(range(ETH, ETH + count)),
    }


def latest_id(rest_url: str) -> int:
    url = f"{rest_url}/api/v3/historicalTrades?symbol=BTCUSDT&limit=1"
    with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (loopback http)
        return int(json.loads(r.read())[-1]["id"])


def test_a_restart_after_downtime_backfills_the_whole_hole(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--rate", "800", "--live")
    rest_url = url.replace("ws://", "http://")
    env = collector_env(url, tmp_path, max_batch_age_s="1")
    first = procs("run", env=env)
    first.wait_event("collector.stats", lambda e: landed(e) >= 500)
    stopped_at = stop_cleanly(first)["last_trade_id"]["BTCUSDT"]
    wait_for(
        lambda: latest_id(rest_url) >= stopped_at + 3000, what="3,000 trades while the collector is down"
    )
    second = procs("run", env=env)
    continuity = second.wait_event("collector.continuity")
    assert continuity["last_trade_ids"] == {"BTCUSDT": stopped_at}
    detected = second.wait_event("collector.gap_detected")
    assert detected["first_missing"] == stopped_at + 1 and detected["missing"] >= 3000
    second.wait_event("collector.gap_filled")
    second.wait_event("collector.stats", quiet)
    stopped = stop_cleanly(second)
    assert stopped["backfilled_trades"] == detected["missing"]
    ids = ids_by_symbol(tmp_path / "landing")["BTCUSDT"]
    # From the first trade the collector ever saw (the live feed ran before it) to its last: all.
    assert ids == list(range(ids[0], ids[-1] + 1))
    assert ids[0] <= stopped_at - 500 and ids[-1] >= stopped_at + 3000
    backfill_files = list((tmp_path / "landing").rglob("backfill-*.parquet"))
    assert backfill_files  # backfilled trades are marked by their file name


def test_a_gap_the_exchange_cannot_serve_is_recorded_with_its_exact_range(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    count = 3000
    _, url = start_emulator(
        procs,
        "--symbols",
        "BTCUSDT",
        "--count",
        str(count),
        "--rate",
        "0",
        "--skip-every",
        "500",
        "--rest-oldest-id",
        str(BTC + count),
    )
    collector = procs("run", env=collector_env(url, tmp_path, max_batch_age_s="1"))
    collector.wait_event("collector.stats", reached({"BTCUSDT": BTC + count - 2}))
    collector.wait_event("collector.stats", lambda e: e.get("gaps_unfilled", 0) >= 5 and quiet(e))
    stopped = stop_cleanly(collector)
    landed = set(ids_by_symbol(tmp_path / "landing")["BTCUSDT"])
    missing = sorted(set(range(BTC, BTC + count - 1)) - landed)
    records = [
        json.loads(line) for line in (tmp_path / "spool" / "gaps" / "unfilled.jsonl").read_text().splitlines()
    ]
    assert sorted((r["first_missing"], r["last_missing"]) for r in records) == [(i, i) for i in missing]
    assert {r["reason"] for r in records} == {"not_served"}
    assert stopped["gaps_unfilled"] == len(missing) == 5
    logged = collector.named("collector.gap_unfilled")
    assert {(e["first_missing"], e["reason"]) for e in logged} == {(i, "not_served") for i in missing}


def test_rate_limit_answers_slow_the_backfill_without_a_ban(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    count = 2000
    emulator, url = start_emulator(
        procs,
        "--symbols",
        "BTCUSDT",
        "--count",
        str(count),
        "--rate",
        "0",
        "--skip-every",
        "700",
        "--rest-fail-first",
        "3",
    )
    collector = procs("run", env=collector_env(url, tmp_path, max_batch_age_s="1"))
    collector.wait_event("collector.stats", reached({"BTCUSDT": BTC + count - 1}))
    collector.wait_event("collector.stats", lambda e: e.get("gaps_opened", 0) >= 2 and quiet(e))
    stop_cleanly(collector)
    assert collector.named("collector.backfill_paused")
    assert ids_by_symbol(tmp_path / "landing")["BTCUSDT"] == list(range(BTC, BTC + count))
    emulator.send(signal.SIGTERM)
    assert emulator.popen.wait(timeout=60) == 0
    (done,) = emulator.named("emulator.stopped")
    assert done["rest_throttled"] == 3 and done["rest_banned"] == 0
