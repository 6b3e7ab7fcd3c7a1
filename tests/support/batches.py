"""Sealed batches made to order, for tests of what happens to a batch after the capture."""

from __future__ import annotations

from collector.capture.batching import MinuteBatcher, SealedBatch
from collector.capture.decode import Trade

MINUTE = 29_400_000  # 2025-11-24T16:00Z


def batch(symbol: str, first_id: int, n: int, minute: int = MINUTE) -> SealedBatch:
    """`n` trades of `symbol` from `first_id`, 2 ms apart in `minute`, as one sealed batch."""
    b = MinuteBatcher(time_unit="ms", max_batch_bytes=10**7, max_batch_age_s=60, minute_grace_s=5)
    base = minute * 60_000
    for i in range(n):
        b.add(Trade(symbol, first_id + i, 100_000_000 + i, 2_000_000, base + i * 2, base + i * 2 + 1,
                    i % 2 == 0, base * 1_000_000 + i, 150), 0)  # fmt: skip
    (sealed,) = b.flush()
    return sealed


def market_part(batches: list[SealedBatch], output_format: str = "parquet") -> bytes:
    """The batches as one market part, as the collector assembles a minute's sources."""
    from collector.lake.market_parts import MarketSource, market_parts
    from collector.lake.parquet import encode_batch

    sources = [
        MarketSource(b.symbol, b.first_trade_id, b.last_trade_id, lambda b=b: encode_batch(b, output_format))
        for b in batches
    ]
    (part,) = market_parts(sources, output_format, part_rows=10**9)
    return part.data
