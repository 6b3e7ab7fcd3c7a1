"""Binance wire format: a frame in, a `Trade`, a `ServerShutdown` or a `Skipped` (with its reason) out.

Pure: no I/O, no asyncio. Prices and quantities become exact integers scaled by 10**8
(Binance quotes at most 8 decimals), so "61837.63000000" is 6183763000000 and nothing is
ever a float. Unknown extra fields are ignored (2023 frames carry `b` and `a`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "DECIMAL_PRECISION",
    "DECIMAL_SCALE",
    "Frame",
    "ServerShutdown",
    "Skipped",
    "Trade",
    "decode_frame",
    "format_scaled",
    "parse_scaled",
    "trade_from_rest",
]

DECIMAL_SCALE: Final = 8
# DECIMAL(18, 8) is the widest decimal Parquet stores as a plain INT64: 10 integer digits.
DECIMAL_PRECISION: Final = 18
_SCALE_FACTOR: Final = 10**DECIMAL_SCALE
_MAX_UNSCALED: Final = 10**DECIMAL_PRECISION - 1
_ZEROS: Final = "0" * DECIMAL_SCALE


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade. `price` and `quantity` are scaled by 10**8; times are in the stream's unit."""

    symbol: str
    trade_id: int
    price: int
    quantity: int
    trade_time: int
    event_time: int
    is_buyer_maker: bool
    received_at_ns: int
    raw_bytes: int


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    """Binance announced it will close this connection soon."""

    event_time: int | None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A frame that carries no trade. `reason` is a short stable code; `detail` says what was wrong."""

    reason: str
    detail: str


Frame = Trade | ServerShutdown | Skipped


def parse_scaled(text: str) -> int:
    """Exact decimal string to an integer scaled by 10**8. Raises ValueError with the reason."""
    whole, dot, frac = text.partition(".")
    if len(frac) > DECIMAL_SCALE:
        if frac[DECIMAL_SCALE:].strip("0"):
            raise ValueError(f"{text!r} has more than {DECIMAL_SCALE} decimal places")
        frac = frac[:DECIMAL_SCALE]
    digits = whole + frac + _ZEROS[len(frac) :]
    if not whole or not digits.isascii() or not digits.isdigit() or (dot and not frac):
        raise ValueError(f"{text!r} is not a non-negative decimal number")
    value = int(digits)
    if value > _MAX_UNSCALED:
        raise ValueError(f"{text!r} exceeds DECIMAL({DECIMAL_PRECISION},{DECIMAL_SCALE})")
    return value


def format_scaled(value: int) -> str:
    """The inverse of `parse_scaled`, always with 8 decimals, as Binance writes them."""
    whole, frac = divmod(value, _SCALE_FACTOR)
    return f"{whole}.{frac:08d}"


def _int_field(data: dict[str, Any], name: str) -> int:
    value = data[name]
    if type(value) is not int:
        raise TypeError(f"field {name!r} must be an integer, got {type(value).__name__}")
    return value


def _str_field(data: dict[str, Any], name: str) -> str:
    value = data[name]
    if type(value) is not str:
        raise TypeError(f"field {name!r} must be a string, got {type(value).__name__}")
    return value


def _decode_trade(data: dict[str, Any], received_at_ns: int, raw_bytes: int) -> Trade | Skipped:
    try:
        maker = data["m"]
        if type(maker) is not bool:
            raise TypeError(f"field 'm' must be a boolean, got {type(maker).__name__}")
        symbol = _str_field(data, "s")
        if not (symbol.isascii() and symbol.isalnum() and symbol.isupper()):
            raise TypeError(f"field 's' {symbol!r} is not a Binance symbol")
        trade_id = _int_field(data, "t")
        if trade_id < 0:
            raise TypeError(f"field 't' must not be negative, got {trade_id}")
        return Trade(
            symbol=symbol,
            trade_id=trade_id,
            price=parse_scaled(_str_field(data, "p")),
            quantity=parse_scaled(_str_field(data, "q")),
            trade_time=_int_field(data, "T"),
            event_time=_int_field(data, "E"),
            is_buyer_maker=maker,
            received_at_ns=received_at_ns,
            raw_bytes=raw_bytes,
        )
    except KeyError as exc:
        return Skipped("missing_field", f"trade frame has no field {exc.args[0]!r}")
    except (TypeError, ValueError) as exc:
        return Skipped("bad_field", str(exc))


def decode_frame(raw: str | bytes, received_at_ns: int) -> Frame:
    """Classify and decode one WebSocket text frame, raw (`/ws/`) or combined (`/stream`)."""
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return Skipped("not_json", f"{exc}; frame starts {raw[:80]!r}")
    if type(message) is not dict:
        return Skipped("not_object", f"frame is a JSON {type(message).__name__}, not an object")
    if "stream" in message and "data" in message:
        data = message["data"]
        if type(data) is not dict:
            return Skipped("not_object", f"combined frame's 'data' is a {type(data).__name__}")
    else:
        data = message
    event = data.get("e")
    if event == "trade":
        return _decode_trade(data, received_at_ns, len(raw))
    if event == "serverShutdown":
        event_time = data.get("E")
        return ServerShutdown(event_time if type(event_time) is int else None)
    if event is not None:
        return Skipped("unknown_event", f"event type {event!r} is not a trade")
    if "result" in data and "id" in data:
        return Skipped("control_answer", f"answer to request id {data['id']!r}")
    if "code" in data and "msg" in data:
        return Skipped("error_answer", f"exchange error {data['code']!r}: {str(data['msg'])[:200]}")
    return Skipped("unknown_event", f"object without an event type; keys {sorted(data)[:8]}")


# A REST row stands for about as many bytes of WebSocket frame, for batch sizing.
_REST_ROW_BYTES: Final = 150


def trade_from_rest(row: dict[str, Any], symbol: str, received_at_ns: int) -> Trade | Skipped:
    """A `historicalTrades` row as a Trade. REST has no event time: `event_time` is the trade time."""
    try:
        maker = row["isBuyerMaker"]
        if type(maker) is not bool:
            raise TypeError(f"field 'isBuyerMaker' must be a boolean, got {type(maker).__name__}")
        trade_time = _int_field(row, "time")
        return Trade(
            symbol=symbol,
            trade_id=_int_field(row, "id"),
            price=parse_scaled(_str_field(row, "price")),
            quantity=parse_scaled(_str_field(row, "qty")),
            trade_time=trade_time,
            event_time=trade_time,
            is_buyer_maker=maker,
            received_at_ns=received_at_ns,
            raw_bytes=_REST_ROW_BYTES,
        )
    except KeyError as exc:
        return Skipped("missing_field", f"REST row has no field {exc.args[0]!r}")
    except (TypeError, ValueError) as exc:
        return Skipped("bad_field", str(exc))
