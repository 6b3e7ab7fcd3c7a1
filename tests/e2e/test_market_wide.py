"""The market-wide layout end to end: a collector subprocess on a local market of 300 symbols
(real loopback WebSocket and HTTP), landing in moto's S3 server over HTTP, killed with SIGKILL
and started again. Two symbols are watched (per-symbol objects and markers, as sensors expect);
the other 298 land as one part and one marker a minute. Every trade lands exactly once, each
marker says exactly what its part holds, quiet symbols are proven after the restart by the
exchange's ticker instead of waiting for their next trade, and the requests are what the
README's cost model says."""

from __future__ import annotations

import io
import json
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
    env = collector_env(feed.url, tmp_path, symbols="ALL", watched_symbols=",".join(WATCHED),
                        destination=f"s3://{bucket}/lake", s3_endpoint_url=moto_endpoint,
                        s3_region="ap-northeast-1", marker_grace_s="1", max_batch_age_s="60")  # fmt: skip
    env.update(aws_env)
    first = procs("run", env=env)
    first.wait_event("collector.ready", timeout_s=120)
    ready_at = time.time()
    wait_for(
        lambda: _keys(client, bucket, "lake/Binance/_market/"), timeout_s=150, what="a first market part"
    )
    first.kill()  # SIGKILL: the journal and the spool carry what was in flight
    killed_at = time.time()
    second = procs("run", env=env)
    second.wait_event("collector.ready", timeout_s=120)
    back_at = time.time()
    due = int(time.time() // 60) + 1  # the first whole minute of the second run

    def marked_through(minute: int) -> bool:
        return any(
            parse_market_marker_key(k) == minute for k in _keys(client, bucket, "lake/Binance/_market/")
        )

    wait_for(lambda: time.time() > (due + 1) * 60 + 1, timeout_s=200, what=f"minute {due} to end")
    feed.pause()
    history = feed.server.history
    sent = feed.call(lambda: {s: [t.trade_id for t in ts] for s, ts in history.items()})
    last_minute = int(max(_trade_s(ts[-1]) for ts in history.values()) // 60)
    # A stopped collector keeps the minute it was in spooled for its next start (README): let the
    # last trade's minute end and be marked first.
    wait_for(lambda: marked_through(last_minute), timeout_s=150, what="the last trade's minute marked")
    # Symbols quiet since the restart were asked of the ticker, and proven (how many depends on
    # which traded in the first seconds; the marker's promptness below is what matters).
    checked = second.named("collector.quiet_symbols_checked")
    assert checked and sum(e["proven"] for e in checked) >= 1, checked
    stopped = stop_cleanly(second)

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
        for data in parts.values():
            table = pq.read_table(io.BytesIO(data))
            keys = list(
                zip(table.column("symbol").to_pylist(), table.column("trade_id").to_pylist(), strict=True)
            )
            assert keys == sorted(keys), "a part is sorted by symbol, then trade id"
            rows.update(s for s, _ in keys)
            for symbol, trade_id in keys:
                ids[symbol].append(trade_id)
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
    # Every trade from the start is landed: while a collector ran, and while none did for every
    # symbol the first run had seen trade (its last id is known, so the gap is). A symbol whose
    # first trade came while no collector ran, and none after, is unknown to both (README).
    for symbol, sent_ids in sent.items():
        times = [_trade_s(t) for t in history[symbol]][: len(sent_ids)]
        seen = any(ready_at + 5 < t < killed_at - 2 for t in times)
        kept = [
            (ready_at + 5 < t < killed_at - 2) or t > back_at + 5 or (seen and t > ready_at + 5)
            for t in times
        ]
        due_ids = [i for i, keep in zip(sent_ids, kept, strict=True) if keep]
        missing = sorted(set(due_ids) - set(ids[symbol]))
        assert not missing, (
            f"{symbol}: {len(missing)} trades not landed, from {missing[0] if missing else ''}"
        )
    _requests_match_the_cost_model(market_minutes, objects, due, stopped)


def _requests_match_the_cost_model(
    market_minutes: dict[int, dict[str, Any]], objects: dict[str, bytes], minute: int, stopped: dict[str, Any]
) -> None:
    """README: a minute costs one market part and one market marker, plus, per watched symbol,
    its object (when it traded) and its marker."""
    parts = [k for k in objects if (n := parse_market_key(k)) is not None and n.minute == minute]
    watched = [k for k in objects if (n := parse_object_key(k)) is not None and n.minute == minute]
    watched_markers = [k for k in objects if (m := parse_marker_key(k)) is not None and m[1] == minute]
    assert len(parts) == 1 and market_minutes[minute]["revision"] == 1
    assert sorted(parse_object_key(k).symbol for k in watched) == sorted(WATCHED)  # type: ignore[union-attr]
    assert len(watched_markers) == len(WATCHED)
    assert len(market_minutes[minute]["covered"]) > 200  # the quiet ones are covered too
    assert stopped["market_markers"] >= 1 and stopped["market_parts"] >= 1


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return out


def _trade_s(trade: Any) -> float:
    return json.loads(trade.payload_ms)["T"] / 1000
