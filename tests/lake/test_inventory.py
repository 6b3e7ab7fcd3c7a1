"""What a local landing directory holds: the newest file of a symbol and its last trade's time."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.lake.inventory import last_trade_time_s, scan_local
from collector.lake.layout import object_key
from collector.lake.parquet import encode_batch
from collector.lake.sinks import LocalSink
from tests.support.batches import MINUTE, batch


@pytest.mark.parametrize("output_format", ["parquet", "csv.gz"])
def test_the_newest_file_of_a_symbol_and_the_time_of_its_last_trade(
    tmp_path: Path, output_format: str
) -> None:
    sink = LocalSink(tmp_path)
    for first, minute in ((1, MINUTE), (101, MINUTE + 1)):
        sealed = batch("BTCUSDT", first, 100, minute)
        key = object_key(symbol="BTCUSDT", minute=minute, first_trade_id=first, last_trade_id=first + 99,
                         output_format=output_format)  # fmt: skip
        sink.put(key, encode_batch(sealed, output_format))
    (inv,) = scan_local(tmp_path).values()
    assert inv.newest is not None and inv.newest[0] == 200
    # the batch's trades are 2 ms apart from the minute's start: the 100th at 198 ms
    assert last_trade_time_s(inv.newest[1]) == pytest.approx((MINUTE + 1) * 60 + 0.198)
