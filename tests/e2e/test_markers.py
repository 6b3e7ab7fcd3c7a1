"""Markers from a real run: written after every file of their minute, quiet minutes too, rewritten late."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from collector.feed.server import FeedServer
from collector.feed.simulated import Market
from collector.feed.tapes import MarketTape
from collector.lake.completion import (
    parse_manifest,
)
from collector.lake.layout import parse_marker_key
from tests.conftest import Proc, collector_env, start_emulator, stop_cleanly, wait_for
from tests.support.threaded_feed import ThreadedFeed


def _minute_dirs(root: Path, symbol: str) -> dict[int, Path]:
    found = {}
    for path in (root / "Binance" / symbol).glob("*/*/*/*/*"):
        marker = parse_marker_key(f"{path.relative_to(root).as_posix()}/_SUCCESS")
        assert marker is not None
        found[marker[1]] = path
    return found


def _read_minute(path: Path) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
    marker = path / "_SUCCESS"
    doc = parse_manifest(marker.read_bytes()) if marker.exists() else None
    files = {p.name: p.read_bytes() for p in path.iterdir() if p.name != "_SUCCESS"}
    return doc, files


def _sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _ids(path: Path) -> list[int]:
    return [int(i) for i in pq.read_table(path, columns=["trade_id"]).column("trade_id").to_pylist()]


def test_markers_come_after_every_file_of_their_minute_and_quiet_minutes_get_one(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    # Trade times start 20 minutes ago and run 100 ms apart; after 1,200 trades the clock
    # jumps 200 s: at least two minutes without a trade, then 1,200 trades more.
    _, url = start_emulator(
        procs, "--count", "2400", "--rate", "400", "--clock-from-s", "1200",
        "--clock-step-ms", "100", "--clock-jump-every", "1200", "--clock-jump-s", "200",
    )  # fmt: skip
    collector = procs("run", env=collector_env(url, tmp_path))
    landing = tmp_path / "landing"
    last = collector.wait_event("collector.stats", lambda e: e["last_trade_id"].get("BTCUSDT") == 1_002_399)
    assert last["trades_received"] == {"BTCUSDT": 2400}
    dirs = wait_for(lambda: _minute_dirs(landing, "BTCUSDT") or None, what="partitions")
    first_minute = min(dirs)
    last_minute = max(m for m, p in _minute_dirs(landing, "BTCUSDT").items() if any(p.glob("*.parquet")))

    # Every minute before the last one with trades is final: continuity is proven past it.
    def all_marked() -> bool:
        found = _minute_dirs(landing, "BTCUSDT")
        return all(m in found and (found[m] / "_SUCCESS").exists() for m in range(first_minute, last_minute))

    wait_for(all_marked, what="a marker in every minute before the last")
    stop_cleanly(collector)

    dirs = _minute_dirs(landing, "BTCUSDT")
    assert set(range(first_minute, last_minute)) <= set(dirs)  # quiet minutes have a partition too
    quiet = 0
    ids: list[int] = []
    for minute in range(first_minute, last_minute):
        doc, files = _read_minute(dirs[minute])
        assert doc is not None, f"no marker for minute {minute}"
        # Written once, after all of the minute's data: it lists exactly the files there are.
        assert doc["revision"] == 1
        assert sorted(f["name"] for f in doc["files"]) == sorted(files)
        marker_written = (dirs[minute] / "_SUCCESS").stat().st_mtime_ns
        minute_ids: list[int] = []
        for entry in doc["files"]:
            data = files[entry["name"]]
            assert (entry["bytes"], entry["sha256"]) == (len(data), _sha(data))
            assert (dirs[minute] / entry["name"]).stat().st_mtime_ns <= marker_written
            file_ids = _ids(dirs[minute] / entry["name"])
            assert entry["rows"] == len(file_ids)
            assert (entry["first_trade_id"], entry["last_trade_id"]) == (min(file_ids), max(file_ids))
            minute_ids += file_ids
        assert doc["rows"] == len(minute_ids)
        assert doc["unfilled_gaps"] == []
        if doc["rows"] == 0:
            quiet += 1
            assert doc["first_trade_id"] is None and doc["files"] == []
        else:
            assert (doc["first_trade_id"], doc["last_trade_id"]) == (min(minute_ids), max(minute_ids))
        ids += minute_ids
    assert quiet >= 2
    assert sorted(ids) == list(range(1_000_000, 1_000_000 + len(ids)))


def test_a_gap_filled_on_retry_rewrites_the_markers_that_listed_it(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    # Trade 1,000,999 never comes on the stream; the first backfill meets five 503s and records
    # the id as unfilled (the minute's marker says so); the retry 8 s later fills it. (At 1 s the
    # retry could reopen the range before the marker pass on a loaded machine: no marker would
    # ever list the gap.)
    _, url = start_emulator(
        procs, "--count", "1500", "--rate", "300", "--clock-from-s", "1200", "--clock-step-ms", "100",
        "--skip-every", "1000", "--rest-unavailable-first", "5",
    )  # fmt: skip
    collector = procs("run", env=collector_env(url, tmp_path, backfill_retry_s="8"))
    unfilled = collector.wait_event("collector.gap_unfilled")
    assert (unfilled["first_missing"], unfilled["reason"]) == (1_000_999, "rest_unavailable")
    listed = collector.wait_event("collector.minute_marked", lambda e: e["unfilled_gaps"] == 1)
    collector.wait_event("collector.backfill_retry", lambda e: e["attempt"] == 2)
    collector.wait_event("collector.gap_filled")
    rewritten = collector.wait_event(
        "collector.marker_rewritten", lambda e: e["key"] == listed["key"] and e.get("unfilled_gaps") == 0
    )
    stop_cleanly(collector)

    doc = parse_manifest(Path(listed["key"]).read_bytes())
    assert doc["unfilled_gaps"] == [] and doc["revision"] == rewritten["revision"] >= 2
    # Never a marker without the gap and without the trades that filled it.
    for event in collector.named("collector.marker_rewritten"):
        assert event.get("unfilled_gaps") == 1 or event["rows"] == doc["rows"], event
    landed_ids = sorted(i for f in doc["files"] for i in _ids(Path(listed["key"]).parent / f["name"]))
    assert 1_000_999 in landed_ids and doc["rows"] == len(landed_ids)
    assert any(f["name"].startswith("backfill-") for f in doc["files"])


def test_a_watched_symbol_that_has_not_traded_since_the_start_gets_its_markers(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    """A quiet symbol, subscribed and silent: the exchange's ticker proves it (nothing since its
    subscription was confirmed) and its minutes get `_SUCCESS` with no rows, from the minute its
    stream was confirmed, without waiting hours for its first trade."""
    market = Market.whole_market(300, 864_000)  # 10 trades a second: the quietest trade twice an hour
    now_us = time.time_ns() // 1000
    quiet = next(s for s in reversed(market.symbols)  # no trade in the next 10 minutes
                 if market.first_at(s, now_us) == market.first_at(s, now_us + 600_000_000))  # fmt: skip
    busy = market.symbols[0]
    with ThreadedFeed(FeedServer(MarketTape(market, now_us), live=True)) as feed:
        collector = procs("run", env=collector_env(feed.url, tmp_path, symbols=f"{busy},{quiet}",
                                                   marker_grace_s="1", max_batch_age_s="60"))  # fmt: skip
        collector.wait_event("collector.ready", timeout_s=120)
        started = int(time.time() // 60)
        marked = wait_for(
            lambda: [e for e in collector.named("collector.minute_marked") if f"/{quiet}/" in e["key"]],
            timeout_s=200, what=f"a marker of {quiet}, which has not traded",
        )  # fmt: skip
        stop_cleanly(collector)
    assert marked[0]["rows"] == 0
    dirs = _minute_dirs(tmp_path / "landing", quiet)
    assert min(dirs) <= started + 1  # from its subscription's minute on, not from a first trade
    for path in dirs.values():
        doc, files = _read_minute(path)
        if doc is not None:
            assert doc["rows"] == 0 and doc["files"] == [] and files == {}
