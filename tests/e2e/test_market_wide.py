"""The market-wide layout end to end: a collector subprocess on a local market of 300 symbols
(real loopback WebSocket and HTTP), landing in moto's S3 server over HTTP, killed with SIGKILL,
started again, and cut off by the feed in the middle of a minute. Two
symbols are watched (per-symbol objects and markers, as sensors expect); the other 298 land in
parts of at most 1,000 rows and one marker a minute. Every trade lands exactly once, each
marker says exactly what its parts hold, each minute's parts read in order are the minute
sorted (the cut's backfill merged in, not appended), quiet symbols are proven by the exchange's
ticker instead of waiting for their next trade (those never seen trading too, so every symbol
is covered), the trades of symbols never seen trading before the SIGKILL are fetched for the
downtime, and the requests are what the docs' cost model says."""

from __future__ import annotations

import io
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from collector.feed.server import FeedServer
from collector.feed.simulated import Market
from collector.feed.tapes import MarketTape
from collector.lake.completion import parse_manifest
from collector.lake.layout import (
    parse_marker_key,
    parse_market_key,
    parse_market_marker_key,
    parse_object_key,
)
from collector.lake.market_manifest import parse_market_manifest
from tests.conftest import Proc, collector_env, stop_cleanly, wait_for
from tests.support.threaded_feed import ThreadedFeed

pytestmark = pytest.mark.slow

SYMBOLS, PER_DAY = 300, 8_640_000  # 100 trades a second in all
WATCHED = ("BTCUSDT", "ETHUSDT")
PART_ROWS = 1_000  # about 6,000 trades a minute: several parts each
BATCH_BYTES = 65_536  # the watched symbols' minutes split by size (BTCUSDT: about 150 kB a minute)
CUT_S = 3.0


@pytest.fixture
def feed() -> Iterator[ThreadedFeed]:
    tape = MarketTape(Market.whole_market(SYMBOLS, PER_DAY), time.time_ns() // 1000)
    with ThreadedFeed(FeedServer(tape, live=True)) as threaded:
        yield threaded


def test_the_market_lands_once_a_minute_exactly_once_through_a_sigkill(
    procs: Callable[..., Proc], tmp_path: Path, feed: ThreadedFeed, moto_endpoint: str,
    s3_bucket: tuple[Any, str], aws_env: dict[str, str],
) -> None:  # fmt: skip
    client, bucket = s3_bucket
    env = collector_env(feed.url, tmp_path, symbols="ALL",
                        watched_symbols=",".join(WATCHED), destination=f"s3://{bucket}/lake",
                        s3_endpoint_url=moto_endpoint, s3_region="ap-northeast-1", marker_grace_s="1",
                        max_batch_age_s="60", market_part_rows=str(PART_ROWS),
                        max_batch_bytes=str(BATCH_BYTES))  # fmt: skip
    env.update(aws_env)
    first = procs("run", env=env)
    first.wait_event("collector.ready", timeout_s=120)
    ready_at = time.time()
    wait_for(
        lambda: _keys(client, bucket, "lake/Binance/_market/"), timeout_s=150, what="a first market part"
    )
    first.kill()  # SIGKILL: the journal and the spool carry what was in flight
    moments = {"first ready": ready_at, "killed": time.time()}
    second = procs("run", env=env)
    second.wait_event("collector.ready", timeout_s=120)
    moments["second ready"] = time.time()
    due = int(time.time() // 60) + 1  # the first whole minute of the second run

    def marked_through(minute: int) -> bool:
        return any(
            parse_market_marker_key(k) == minute for k in _keys(client, bucket, "lake/Binance/_market/")
        )

    # Cut off in the middle of the minute after: the gap's backfill falls inside the live rows.
    cut = due + 1
    wait_for(lambda: time.time() > cut * 60 + 20, timeout_s=200, what=f"the middle of minute {cut}")
    feed.call(lambda: feed.server.cut(CUT_S))  # every connection dropped, none taken for 3 s
    moments["cut"] = time.time()
    wait_for(lambda: time.time() > (cut + 1) * 60 + 1, timeout_s=200, what=f"minute {cut} to end")
    feed.pause()
    history = feed.server.history
    sent = feed.call(lambda: {s: [t.trade_id for t in ts] for s, ts in history.items()})
    last_minute = int(max(_trade_s(ts[-1]) for ts in history.values()) // 60)
    # A stopped collector keeps the minute it was in spooled for its next start (README): let the
    # last trade's minute end and be marked first.
    try:
        wait_for(lambda: marked_through(last_minute), timeout_s=150, what="the last trade's minute marked")
    except AssertionError as exc:  # what held it, for whoever reads the failure
        marked = [e["key"][-30:] for e in second.named("collector.market_minute_marked")][-3:]
        checked = _last(second, "collector.quiet_symbols_checked")
        raise AssertionError(f"{exc}; marked last {marked}; {checked}; "
                             f"{_last(second, 'collector.stats')}") from None  # fmt: skip
    # Symbols quiet since the restart were asked of the ticker, and proven (how many depends on
    # which traded in the first seconds; the marker's promptness below is what matters).
    checked = second.named("collector.quiet_symbols_checked")
    assert checked and sum(e["proven"] for e in checked) >= 1, checked
    stopped = stop_cleanly(second)
    assert second.named("collector.gap_filled"), "the cut left no gap to fill"

    objects = {
        k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in _keys(client, bucket, "lake/")
    }
    ids: defaultdict[str, list[int]] = defaultdict(list)
    market_minutes: dict[int, dict[str, Any]] = {}
    for key, data in objects.items():
        if (name := parse_object_key(key)) is not None:
            assert name.symbol in WATCHED, f"{key}: an unwatched symbol has objects of its own"
            ids[name.symbol] += pq.read_table(io.BytesIO(data)).column("trade_id").to_pylist()
        elif (minute := parse_market_marker_key(key)) is not None:
            market_minutes[minute] = parse_market_manifest(data)
        elif (marker := parse_marker_key(key)) is not None:
            assert marker[0] in WATCHED and parse_manifest(data)["symbol"] == marker[0]
        else:
            assert parse_market_key(key) is not None, f"{key}: not a key of the layout"
    for minute, doc in market_minutes.items():
        assert not set(doc["covered"]) & set(WATCHED)
        listed = {f["name"] for f in doc["files"]}
        parts = {k.rsplit("/", 1)[1]: v for k, v in objects.items() if parse_market_key(k) and
                 parse_market_key(k).minute == minute}  # type: ignore[union-attr]  # fmt: skip
        assert set(parts) == listed, f"minute {minute}: the marker lists {listed}, the lake has {set(parts)}"
        rows: Counter[str] = Counter()
        whole: list[tuple[str, int]] = []
        for name in sorted(parts):  # in part order
            table = pq.read_table(io.BytesIO(parts[name]))
            keys = list(
                zip(table.column("symbol").to_pylist(), table.column("trade_id").to_pylist(), strict=True)
            )
            assert len(keys) <= PART_ROWS, f"{name}: {len(keys)} rows"
            assert keys == sorted(keys), f"minute {minute}, {name}: not sorted by symbol, then trade id"
            whole += keys
            rows.update(s for s, _ in keys)
            for symbol, trade_id in keys:
                ids[symbol].append(trade_id)
        if doc["revision"] == 1:  # the minute as one assembly: its parts in order are it, sorted
            assert whole == sorted(whole), f"minute {minute}: its parts are not in order"
        assert dict(rows) == {s: e["rows"] for s, e in doc["symbols"].items()}
    # The first whole minute after the restart was marked within a minute of its end: its quiet
    # symbols were proven by the ticker, not by their next trade (which may be hours away).
    written = datetime.fromisoformat(market_minutes[due]["written_at"]).timestamp()
    assert written - (due + 1) * 60 < 60, market_minutes[due]["written_at"]
    # Every minute from the first to the last has its market marker, the restart's too.
    assert sorted(market_minutes) == list(range(min(market_minutes), max(market_minutes) + 1))
    for symbol, got in ids.items():
        assert len(got) == len(set(got)), f"{symbol}: trades doubled"
        got.sort()
        assert got == list(range(got[0], got[-1] + 1)), f"{symbol}: trades lost"
    # Every trade since the first run's subscriptions is landed: while a collector ran, and while
    # none did, for every symbol: one the first run saw trade by its last id, one it never saw
    # trading by the time its subscription was confirmed (aggTrades, after the restart).
    for symbol, sent_ids in sent.items():
        times = [_trade_s(t) for t in history[symbol]][: len(sent_ids)]
        due_ids = [i for i, t in zip(sent_ids, times, strict=True) if t > ready_at + 5]
        missing = sorted(set(due_ids) - set(ids[symbol]))
        assert not missing, _lost(
            symbol, missing, dict(zip(sent_ids, times, strict=True)), moments, (first, second)
        )
    # Every symbol streamed is covered once proven, the ones never seen trading too.
    unwatched = set(feed.server.tape.symbols) - set(WATCHED)
    assert set(market_minutes[last_minute]["covered"]) == unwatched, sorted(
        unwatched - set(market_minutes[last_minute]["covered"])
    )
    _requests_match_the_cost_model(market_minutes, objects, due, stopped, second)


def _requests_match_the_cost_model(
    markets: dict[int, dict[str, Any]],
    objects: dict[str, bytes],
    minute: int,
    stopped: dict[str, Any],
    run: Proc,
) -> None:
    """The docs: a minute costs its market parts (one per COLLECTOR_MARKET_PART_ROWS rows) and one
    market marker, plus, per watched symbol, its objects (one per COLLECTOR_MAX_BATCH_BYTES of
    frames: every one sealed by size but the last, which the minute's close seals) and its marker."""
    doc = markets[minute]
    parts = [k for k in objects if (n := parse_market_key(k)) is not None and n.minute == minute]
    watched = [k for k in objects if (n := parse_object_key(k)) is not None and n.minute == minute]
    watched_markers = [k for k in objects if (m := parse_marker_key(k)) is not None and m[1] == minute]
    assert len(parts) == math.ceil(doc["rows"] / PART_ROWS) >= 2 and doc["revision"] == 1
    assert {parse_object_key(k).symbol for k in watched} == set(WATCHED)  # type: ignore[union-attr]
    for symbol in WATCHED:
        landed = [(n.symbol, n.minute) for k in watched if (n := parse_object_key(k))].count((symbol, minute))
        reasons = Counter(
            e["sealed_by"] for e in run.named("collector.batch_landed")
            if (n := parse_object_key(e["key"])) and (n.symbol, n.minute) == (symbol, minute)
        )  # fmt: skip
        assert reasons["size"] >= 1 and reasons["minute_closed"] == 1, (symbol, reasons)
        assert sum(reasons.values()) == landed, (symbol, reasons, landed)
    assert len(watched_markers) == len(WATCHED)
    assert stopped["market_markers"] >= 1 and stopped["market_parts"] >= 1


def _lost(symbol: str, missing: list[int], sent: dict[int, float], moments: dict[str, float],
          runs: tuple[Proc, Proc], spool: Path) -> str:  # fmt: skip
    """What a reader of the failure needs: when the lost trades were sent, against the run's
    moments, the ids either side, what each collector logged of the symbol, and what the stopped
    collector left in its spool (kept for its next start, or lost)."""
    when = {i: round(sent[i] - moments["killed"], 1) for i in missing[:5]}
    others = sorted(set(sent) - set(missing))
    either_side = [(max((i for i in others if i < missing[0]), default=None)),
                   min((i for i in others if i > missing[-1]), default=None)]  # fmt: skip
    said = [[line.strip()[:300] for line in run.lines if symbol in line][-15:] for run in runs]
    left = sorted(str(p.relative_to(spool)) for p in spool.rglob("*") if p.is_file())
    gaps = (
        (spool / "gaps" / "open.json").read_text()[:2000] if (spool / "gaps" / "open.json").exists() else ""
    )
    return (
        f"{symbol}: {len(missing)} trades not landed, from {missing[0]}; sent at (s after the kill)"
        f" {when}; moments { ({k: round(v - moments['killed'], 1) for k, v in moments.items()}) };"
        f" landed either side {either_side}; the first run said {said[0]}; the second {said[1]};"
        f" left in the spool {left[:30]}; open gaps {gaps}"
    )


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def _trade_s(trade: Any) -> float:
    return json.loads(trade.payload_ms)["T"] / 1000


def _last(proc: Proc, event: str) -> dict[str, Any]:
    found = proc.named(event)
    return {k: v for k, v in found[-1].items() if not isinstance(v, dict) or len(v) < 10} if found else {}
