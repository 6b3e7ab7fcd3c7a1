"""The REST weight budget every endpoint shares: kept under its limit, counting every request and
what the exchange says the IP has used; a 429 or a 418 stops everyone."""

from __future__ import annotations

import asyncio

from collector.binance.rest import EXCHANGE_INFO_WEIGHT, HISTORICAL_TRADES_WEIGHT, ticker_weight
from collector.binance.weight import WeightBudget

T0 = 1_764_000_000.0  # a minute boundary plus nothing: 29,400,000 minutes


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 5.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_every_endpoint_takes_from_one_budget_and_waits_for_the_next_minute_past_it() -> None:
    clock = Clock()
    budget = WeightBudget(3_000, clock=clock, sleep=clock.sleep)

    async def minute() -> None:
        for _ in range(119):  # 2,975 of historicalTrades
            await budget.take(HISTORICAL_TRADES_WEIGHT)
        await budget.take(EXCHANGE_INFO_WEIGHT)  # 2,995: fits
        assert clock.slept == []
        await budget.take(ticker_weight(None))  # 80 more would pass 3,000: the next minute
        assert len(clock.slept) == 1 and int(clock.now // 60) == int(T0 // 60) + 1

    asyncio.run(minute())
    assert budget.peak == 2_995 and budget.used() == 80 and budget.waits == 1


def test_weight_the_exchange_reports_counts_too() -> None:
    """Another process on the IP used 2,990: the header says so, and the next page waits."""
    clock = Clock()
    budget = WeightBudget(3_000, clock=clock, sleep=clock.sleep)
    budget.saw(2_990)
    asyncio.run(budget.take(ticker_weight(3)))  # 2 fits
    assert clock.slept == [] and budget.used() == 2_992
    asyncio.run(budget.take(HISTORICAL_TRADES_WEIGHT))
    assert len(clock.slept) == 1 and budget.used() == HISTORICAL_TRADES_WEIGHT


def test_a_429_or_a_ban_stops_every_request_until_its_retry_after() -> None:
    clock = Clock()
    budget = WeightBudget(clock=clock, sleep=clock.sleep)
    budget.pause(30.0)
    asyncio.run(budget.take(ticker_weight(150)))
    assert clock.slept == [30.0]


def test_binance_weights() -> None:
    assert [ticker_weight(n) for n in (1, 20, 21, 100, 101, None)] == [2, 2, 40, 40, 80, 80]
