"""Symbols streamed but never seen trading: the confirmation of their subscription kept on disk,
and after a restart their first trade since, asked of a real local market's aggTrades."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import structlog.testing

from collector.binance.rest import BinanceRest
from collector.binance.weight import WeightBudget
from collector.capture.sequence import SequenceTracker
from collector.feed.server import FeedServer
from collector.feed.simulated import Market
from collector.feed.tapes import MarketTape
from collector.gaps import unseen as unseen_module
from collector.gaps.unseen import Unseen
from collector.logs import get_logger
from tests.support.threaded_feed import ThreadedFeed


def make(path: Path, url: str, sequence: SequenceTracker) -> Unseen:
    return Unseen(path, sequence=sequence, rest=BinanceRest(url), budget=WeightBudget(), log=get_logger())


def test_confirmations_of_symbols_without_a_last_id_are_kept_and_a_restart_finds_their_trades_since(
    tmp_path: Path,
) -> None:
    market = Market.whole_market(30, 8_640_000)
    quiet, seen = market.symbols[-1], market.symbols[0]
    with ThreadedFeed(FeedServer(MarketTape(market, time.time_ns() // 1000), live=True)) as feed:
        url = feed.url.replace("ws://", "http://")
        path = tmp_path / "subscribed.json"
        sequence = SequenceTracker({seen: 41})
        first = make(path, url, sequence)

        async def confirm() -> None:
            first.confirmed([quiet, seen])
            first.confirmed([quiet])  # a reconnect confirms it again: the first time is kept
            assert first._saving is not None
            await first._saving  # the record is written in a worker thread

        asyncio.run(confirm())
        record = json.loads(path.read_text())["confirmed_at"]
        assert list(record) == [quiet]  # the seen one has its last id: nothing to look up for it
        assert first.first_minute(quiet) == int(record[quiet] // 60)
        # The process dies; the quiet symbol traded meanwhile (the market's clock says which id).
        record[quiet] -= 3600  # confirmed an hour ago: its trades since then are due
        path.write_text(json.dumps({"confirmed_at": record}))
        after = SequenceTracker()
        with structlog.testing.capture_logs() as logs:
            asyncio.run(make(path, url, after).after_restart())
    since_us = int(record[quiet] * 1000) * 1000
    assert after.last_id(quiet) == market.first_at(quiet, since_us) - 1
    (found,) = [e for e in logs if e["event"] == "collector.unseen_since"]
    assert found["first_id"] == after.last_id(quiet) + 1
    assert json.loads(path.read_text()) == {"format": 1, "confirmed_at": {}}  # it has a last id now


def test_when_the_rest_api_cannot_say_it_is_logged_and_kept_for_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unseen_module, "RETRY_S", 0.0)
    path = tmp_path / "subscribed.json"
    path.write_text(json.dumps({"confirmed_at": {"QUIETUSDT": time.time() - 60}}))
    sequence = SequenceTracker()
    with structlog.testing.capture_logs() as logs:
        asyncio.run(make(path, "http://127.0.0.1:9", sequence).after_restart())
    assert sequence.last_id("QUIETUSDT") is None
    (lost,) = [e for e in logs if e["event"] == "collector.unseen_trades_not_fetched"]
    assert lost["symbols"] == "QUIETUSDT" and "aggTrades" in lost["fix"]
    assert "QUIETUSDT" in json.loads(path.read_text())["confirmed_at"]


def test_an_unreadable_record_is_named_and_the_start_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "subscribed.json"
    path.write_text("{torn")
    with structlog.testing.capture_logs() as logs:
        unseen = make(path, "http://127.0.0.1:9", SequenceTracker())
    assert unseen.on_record == {}
    assert [e["event"] for e in logs] == ["collector.subscribed_unreadable"]
