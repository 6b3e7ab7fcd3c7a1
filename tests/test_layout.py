"""The landing layout contract."""

from __future__ import annotations

from datetime import UTC, datetime

from collector.layout import marker_key, minute_of, object_key, parse_object_key, partition_prefix


def minute(text: str) -> int:
    return minute_of(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def test_partition_prefix_is_minute_partitioned_in_utc() -> None:
    assert partition_prefix("BTCUSDT", minute("2024-08-08T23:54:00")) == "Binance/BTCUSDT/2024/08/08/23/54/"


def test_object_key_names_the_trade_id_range() -> None:
    key = object_key("BTCUSDT", minute("2023-04-05T00:00:00"), 3071245455, 3071246070, prefix="raw/")
    assert key == "raw/Binance/BTCUSDT/2023/04/05/00/00/batch-3071245455-3071246070.parquet"


def test_csv_and_backfill_names() -> None:
    key = object_key("ETHUSDT", minute("2024-01-01T00:01:00"), 1, 2, output_format="csv.gz", kind="backfill")
    assert key == "Binance/ETHUSDT/2024/01/01/00/01/backfill-1-2.csv.gz"


def test_marker_key_sits_in_the_minute_partition() -> None:
    assert marker_key("BTCUSDT", minute("2024-02-29T12:34:00")) == "Binance/BTCUSDT/2024/02/29/12/34/_SUCCESS"


def test_keys_parse_back_to_what_named_them() -> None:
    m = minute("2023-04-04T23:59:00")
    name = parse_object_key("prefix/" + object_key("BTCUSDT", m, 10, 20))
    assert name is not None
    assert (name.symbol, name.minute, name.first_trade_id, name.last_trade_id, name.kind) == (
        "BTCUSDT",
        m,
        10,
        20,
        "batch",
    )
    assert parse_object_key("Binance/BTCUSDT/2023/04/04/23/59/_SUCCESS") is None
