"""Gap-free capture: faults on the stream, REST backfill inside the rate limits, the gap record.

The feed is `collector emulate` in its own process: WebSocket and historicalTrades on loopback,
with scripted faults and Binance's weight, 429 and 418 rules.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from collector.binance.rest import RestPage
from collector.binance.weight import WeightBudget
from collector.capture.decode import Trade
from collector.gaps.backfill import Backfiller
from collector.gaps.ledger import GapLedger, OpenGap, UnfilledRange

BTC, ETH = 1_000_000, 10_001_000_000  # first ids of the generated tape


# ---- the policy, one function at a time (a stand-in REST object, no sleeping) ----------------


class StubRest:
    def __init__(self, pages: list[RestPage]) -> None:
        self.pages = pages
        self.calls: list[tuple[str, int, int]] = []

    def historical_trades(self, symbol: str, from_id: int, limit: int) -> RestPage:
        self.calls.append((symbol, from_id, limit))
        return self.pages.pop(0)


def rows(first: int, last: int) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "price": "1.00000000",
            "qty": "2.00000000",
            "quoteQty": "2",
            "time": 1_700_000_000_000 + i,
            "isBuyerMaker": True,
            "isBestMatch": True,
        }
        for i in range(first, last + 1)
    ]


def run_fill(pages: list[RestPage], gap: OpenGap) -> tuple[list[Any], list[Trade], list[float], StubRest]:
    rest = StubRest(pages)
    slept: list[float] = []
    clock = [time.time()]

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    got: list[Trade] = []

    async def on_trades(trades: list[Trade], next_id: int) -> None:
        got.extend(trades)

    import structlog

    budget = WeightBudget(clock=lambda: clock[0], sleep=fake_sleep)
    backfiller = Backfiller(rest, log=structlog.get_logger(), budget=budget, sleep=fake_sleep)  # type: ignore[arg-type]
    unfilled = asyncio.run(backfiller.fill(gap, on_trades))
    return unfilled, got, slept, rest


def gap(first: int, last: int) -> OpenGap:
    return OpenGap(
        symbol="BTCUSDT", first_missing=first, last_missing=last, next_id=first, detected_at_ns=123
    )


def test_pages_until_the_gap_is_closed() -> None:
    unfilled, got, _, rest = run_fill(
        [RestPage(200, rows(1, 1000), 25, None), RestPage(200, rows(1001, 1500), 50, None)], gap(1, 1500)
    )
    assert unfilled == [] and [t.trade_id for t in got] == list(range(1, 1501))
    assert rest.calls == [("BTCUSDT", 1, 1000), ("BTCUSDT", 1001, 500)]
    assert all(t.received_at_ns == 123 for t in got)  # deterministic: a retried page lands the same bytes


def test_429_waits_retry_after_before_asking_again() -> None:
    unfilled, got, slept, rest = run_fill(
        [RestPage(429, None, None, 7.0), RestPage(200, rows(5, 9), 25, None)], gap(5, 9)
    )
    assert unfilled == [] and len(got) == 5
    assert slept and 6.0 <= slept[0] <= 7.0
    assert len(rest.calls) == 2


def test_418_stops_and_records_the_rest_as_banned() -> None:
    unfilled, got, _, _rest = run_fill([RestPage(418, None, None, 120.0, "IP banned")], gap(5, 9))
    assert got == [] and [(u.first_missing, u.last_missing, u.reason) for u in unfilled] == [(5, 9, "banned")]


def test_weight_near_the_budget_waits_for_the_next_minute() -> None:
    unfilled, _, slept, _ = run_fill(
        [RestPage(200, rows(1, 1000), 3000, None), RestPage(200, rows(1001, 1001), 25, None)], gap(1, 1001)
    )
    assert unfilled == [] and slept and 1 <= slept[0] <= 61


def test_ids_older_than_the_exchange_keeps_are_recorded_as_not_served() -> None:
    unfilled, got, _, _ = run_fill([RestPage(200, rows(50, 60), 25, None)], gap(40, 60))
    assert [(u.first_missing, u.last_missing, u.reason) for u in unfilled] == [(40, 49, "not_served")]
    assert [t.trade_id for t in got] == list(range(50, 61))


def test_a_location_refusal_and_an_unavailable_api_are_recorded_with_the_reason() -> None:
    refused, _, _, _ = run_fill([RestPage(451, None, None, None)], gap(1, 2))
    assert refused[0].reason == "refused_location" and "another region" in refused[0].detail
    down, _, slept, _ = run_fill([RestPage(503, None, None, None)] * 5, gap(1, 2))
    assert down[0].reason == "rest_unavailable" and len(slept) == 4


# ---- the whole collector against the faulty feed ------------------------------------------


def test_the_unfilled_record_survives_a_torn_line_and_places_gaps_by_their_window(tmp_path: Path) -> None:
    ledger = GapLedger(tmp_path)
    ledger.record_unfilled(
        UnfilledRange(
            symbol="BTCUSDT",
            first_missing=10,
            last_missing=12,
            reason="rest_unavailable",
            window_start_s=600.0,
            window_end_s=610.0,
        )
    )
    with open(ledger.unfilled_path, "a") as handle:
        handle.write('{"symbol": "BTCUSDT", "first_mis')  # a crash mid-append
    again = GapLedger(tmp_path)
    assert again.unfilled_count == 1
    assert [r.first_missing for r in again.unfilled_between("BTCUSDT", 600.0, 660.0)] == [10]
    assert again.unfilled_between("BTCUSDT", 660.0, 720.0) == []  # after its window
    (retry,) = again.due_for_retry(now_s=10**10, after_s=900)
    gap = again.reopen(retry)
    assert (gap.first_missing, gap.attempt, gap.window_start_s) == (10, 2, 600.0)
    assert GapLedger(tmp_path).unfilled_between("BTCUSDT", 600.0, 660.0) == []  # being retried
