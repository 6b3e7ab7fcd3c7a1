"""The landing layout contract: every object kind built and parsed in one place."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from collector.lake.layout import (
    KINDS,
    hour_prefix,
    latest_trade_id,
    marker_key,
    minute_of,
    object_key,
    parse_marker_key,
    parse_object_key,
    partition_prefix,
)


def minute(text: str) -> int:
    return minute_of(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def test_partition_prefix_is_minute_partitioned_in_utc() -> None:
    assert partition_prefix("BTCUSDT", minute("2024-08-08T23:54:00")) == "Binance/BTCUSDT/2024/08/08/23/54/"


def test_object_key_names_the_trade_id_range() -> None:
    key = object_key(
        symbol="BTCUSDT",
        minute=minute("2023-04-05T00:00:00"),
        first_trade_id=3071245455,
        last_trade_id=3071246070,
        prefix="raw/",
    )
    assert key == "raw/Binance/BTCUSDT/2023/04/05/00/00/batch-3071245455-3071246070.parquet"


def test_csv_and_backfill_names() -> None:
    key = object_key(
        symbol="ETHUSDT",
        minute=minute("2024-01-01T00:01:00"),
        first_trade_id=1,
        last_trade_id=2,
        output_format="csv.gz",
        kind="backfill",
    )
    assert key == "Binance/ETHUSDT/2024/01/01/00/01/backfill-1-2.csv.gz"


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown object kind 'live'"):
        object_key(symbol="BTCUSDT", minute=1, first_trade_id=1, last_trade_id=2, kind="live")  # type: ignore[arg-type]


def test_marker_key_sits_in_the_minute_partition_and_parses_back() -> None:
    m = minute("2024-02-29T12:34:00")
    assert marker_key("BTCUSDT", m) == "Binance/BTCUSDT/2024/02/29/12/34/_SUCCESS"
    assert parse_marker_key("lake/" + marker_key("BTCUSDT", m)) == ("BTCUSDT", m)
    assert parse_marker_key("Binance/BTCUSDT/2024/02/29/12/34/batch-1-2.parquet") is None


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("output_format", ["parquet", "csv.gz"])
def test_every_kind_parses_back_to_what_named_it(kind: str, output_format: str) -> None:
    m = minute("2023-04-04T23:59:00")
    key = object_key(symbol="BTCUSDT", minute=m, first_trade_id=10, last_trade_id=20, kind=kind,  # type: ignore[arg-type]
                     output_format=output_format, prefix="prefix/")  # fmt: skip
    name = parse_object_key(key)
    assert name is not None
    assert (name.symbol, name.minute, name.first_trade_id, name.last_trade_id, name.kind) == (
        "BTCUSDT",
        m,
        10,
        20,
        kind,
    )
    assert key.endswith("/" + name.file_name)
    assert parse_object_key("Binance/BTCUSDT/2023/04/04/23/59/_SUCCESS") is None
    assert parse_object_key(key.replace("Binance/", "Other/")) is None


def test_the_last_id_scan_walks_hours_back_and_sees_every_kind() -> None:
    now = datetime(2026, 11, 30, 10, 30, tzinfo=UTC).timestamp()
    m = minute("2026-11-30T08:05:00")
    keys = [
        object_key(symbol="BTCUSDT", minute=m, first_trade_id=1, last_trade_id=50),
        object_key(symbol="BTCUSDT", minute=m + 1, first_trade_id=51, last_trade_id=90, kind="backfill"),
        object_key(symbol="BTCUSDT", minute=m + 2, first_trade_id=91, last_trade_id=99, kind="archive"),
        marker_key("BTCUSDT", m + 3),
        object_key(symbol="ETHUSDT", minute=m + 3, first_trade_id=5000, last_trade_id=6000),
    ]
    asked: list[str] = []

    def keys_under(prefix: str) -> list[str]:
        asked.append(prefix)
        return [k for k in keys if k.startswith(prefix)]

    assert latest_trade_id(keys_under, "BTCUSDT", now) == 99
    assert asked == [hour_prefix("BTCUSDT", now - back * 3600) for back in range(3)]
    assert latest_trade_id(keys_under, "SOLUSDT", now, lookback_hours=2) is None
