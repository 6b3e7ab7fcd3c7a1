"""Decoding Binance frames: exact decimals, both payload generations, every malformed class."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from collector.capture.decode import ServerShutdown, Skipped, Trade, decode_frame, format_scaled, parse_scaled
from tests.conftest import RECORDING_2023, RECORDING_2024, recording

RAW = '{"e":"trade","E":1723161255343,"s":"BTCUSDT","t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}'  # noqa: E501


def test_raw_trade_frame_decodes_every_field() -> None:
    trade = decode_frame(RAW, 123)
    assert trade == Trade(
        symbol="BTCUSDT",
        trade_id=3735683259,
        price=6183763000000,
        quantity=2000000,
        trade_time=1723161255342,
        event_time=1723161255343,
        is_buyer_maker=True,
        received_at_ns=123,
        raw_bytes=len(RAW),
    )


def test_combined_frame_is_unwrapped() -> None:
    frame = '{"stream":"btcusdt@trade","data":' + RAW + "}"
    trade = decode_frame(frame, 0)
    assert isinstance(trade, Trade)
    assert trade.trade_id == 3735683259
    assert trade.raw_bytes == len(frame)


def test_legacy_payload_with_buyer_and_seller_order_ids_is_accepted() -> None:
    legacy = (
        '{"e":"trade","E":1680652800000,"s":"BTCUSDT","t":3071245454,"p":"28165.47000000",'
        '"q":"0.00056000","b":20720542158,"a":20720542592,"T":1680652799999,"m":true,"M":true}'
    )
    trade = decode_frame(legacy, 0)
    assert isinstance(trade, Trade)
    assert format_scaled(trade.price) == "28165.47000000"


def test_microsecond_times_are_kept_as_sent() -> None:
    frame = RAW.replace("1723161255342", "1723161255342123").replace("1723161255343", "1723161255343456")
    trade = decode_frame(frame, 0)
    assert isinstance(trade, Trade)
    assert (trade.trade_time, trade.event_time) == (1723161255342123, 1723161255343456)


@pytest.mark.parametrize(
    "text",
    ["61837.63000000", "0.00000001", "4.00000100", "0.00000000", "9999999999.99999999", "1.00000000"],
)
def test_decimal_strings_round_trip_exactly(text: str) -> None:
    assert format_scaled(parse_scaled(text)) == text


@pytest.mark.parametrize(
    ("text", "scaled"), [("0.001", 100_000), ("100", 10_000_000_000), ("1.123456780", 112345678)]
)
def test_shorter_or_zero_padded_decimals_keep_their_value(text: str, scaled: int) -> None:
    assert parse_scaled(text) == scaled


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1.000000001", "more than 8 decimal places"),
        ("10000000000.00000000", "exceeds DECIMAL(18,8)"),
        ("-1.0", "not a non-negative decimal"),
        ("1e5", "not a non-negative decimal"),
        ("", "not a non-negative decimal"),
        (".5", "not a non-negative decimal"),
        ("5.", "not a non-negative decimal"),
        ("١٢٣", "not a non-negative decimal"),
    ],
)
def test_decimals_that_cannot_be_held_exactly_are_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_scaled(text)


def _with(**changes: object) -> str:
    data = json.loads(RAW)
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("frame", "reason", "detail"),
    [
        ("not json at all", "not_json", "frame starts"),
        (b"\xff\xfe", "not_json", ""),
        ("[1, 2]", "not_object", "list"),
        ('{"stream":"btcusdt@trade","data":[1]}', "not_object", "data"),
        (_with(p=None), "missing_field", "'p'"),
        (_with(t=None), "missing_field", "'t'"),
        (_with(p=61837.63), "bad_field", "'p' must be a string"),
        (_with(t="3735683259"), "bad_field", "'t' must be an integer"),
        (_with(m="true"), "bad_field", "'m' must be a boolean"),
        (_with(T=True), "bad_field", "'T' must be an integer"),
        (_with(t=-5), "bad_field", "must not be negative"),
        (_with(s="btc/usdt"), "bad_field", "not a Binance symbol"),
        (_with(q="1.000000001"), "bad_field", "more than 8 decimal places"),
        (_with(e="aggTrade"), "unknown_event", "'aggTrade'"),
        ('{"result":null,"id":1}', "control_answer", "request id 1"),
        ('{"code":2,"msg":"Invalid request","id":3}', "error_answer", "Invalid request"),
        ('{"hello":"world"}', "unknown_event", "without an event type"),
    ],
)
def test_malformed_frames_are_classified_with_a_reason(frame: str | bytes, reason: str, detail: str) -> None:
    result = decode_frame(frame, 0)
    assert isinstance(result, Skipped)
    assert result.reason == reason
    assert detail in result.detail


@pytest.mark.parametrize(
    "frame",
    [
        '{"e":"serverShutdown","E":1700000000000}',
        '{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}',
    ],
)
def test_server_shutdown_is_recognised_raw_and_combined(frame: str) -> None:
    assert isinstance(decode_frame(frame, 0), ServerShutdown)


@pytest.mark.parametrize("path", [RECORDING_2024, RECORDING_2023], ids=["2024", "2023-legacy"])
def test_every_recorded_trade_decodes_and_its_decimals_round_trip(path: object) -> None:
    source = recording(path)  # type: ignore[arg-type]
    trades = 0
    with gzip.open(source, "rt") as handle:
        for line in handle:
            _, _, frame = line.rstrip("\n").partition(" ")
            data = json.loads(frame).get("data", {})
            if data.get("e") != "trade":
                continue
            trade = decode_frame(frame, 0)
            assert isinstance(trade, Trade), trade
            assert format_scaled(trade.price) == data["p"]
            assert format_scaled(trade.quantity) == data["q"]
            trades += 1
    assert trades > 3000
