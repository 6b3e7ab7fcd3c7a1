"""One-minute bars from trades, exact: `bars_1m`'s rows from a slice of `trades`' rows.

The trades come sorted by symbol and trade id (a `DayReader` slice), whole minutes of each
symbol together, so a minute's first trade is its lowest id (open) and its last the highest
(close). Sums are exact decimals (Arrow's decimal arithmetic); VWAP is their quotient, rounded
half-even to 8 decimals (collector/table/schema.py says why each type is what it is).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["bars"]

_EIGHT = Decimal("0.00000001")
_EXACT = Context(prec=80)  # quote volumes reach 38 digits: nothing rounded before the quantize


def bars(trades: pa.Table, target: pa.Schema) -> pa.Table:
    """Per symbol and minute of `trades` (sorted by symbol and trade id): the bars, in `target`'s
    schema, sorted by symbol and minute."""
    if not trades.num_rows:
        return target.empty_table()
    price, quantity = trades["price"], trades["quantity"]
    quote = pc.multiply(price, quantity)  # 16 decimals: exact
    taker_buy = pc.invert(trades["is_buyer_maker"])
    work = pa.table(
        {
            "symbol": trades["symbol"],
            "minute": _minute(trades["trade_time"]),
            "price": price,
            "quantity": quantity,
            "quote": quote,
            "buy": pc.if_else(taker_buy, quantity, pa.scalar(Decimal(0), quantity.type)),
            "buy_quote": pc.if_else(taker_buy, quote, pa.scalar(Decimal(0), quote.type)),
            "trade_id": trades["trade_id"],
        }
    )
    grouped = work.group_by(["symbol", "minute"], use_threads=False).aggregate(
        [
            ("price", "min"),
            ("price", "max"),
            ("quantity", "sum"),
            ("quote", "sum"),
            ("buy", "sum"),
            ("buy_quote", "sum"),
            ("trade_id", "count"),
            ("trade_id", "min"),
            ("trade_id", "max"),
        ]
    )
    # Groups come in the order they first appear (no threads): the rows of group k are the
    # count of rows before it onwards, so its first and last rows are known without a sort.
    counts = grouped["trade_id_count"]
    ends = pc.cumulative_sum(counts)
    volume, quote_volume = grouped["quantity_sum"], grouped["quote_sum"]
    return pa.Table.from_arrays(
        [
            grouped["symbol"],
            grouped["minute"],
            pc.take(price, pc.subtract(ends, counts)),
            grouped["price_max"],
            grouped["price_min"],
            pc.take(price, pc.subtract(ends, 1)),
            volume,
            quote_volume,
            _vwap(quote_volume, volume),
            counts,
            grouped["buy_sum"],
            grouped["buy_quote_sum"],
            grouped["trade_id_min"],
            grouped["trade_id_max"],
        ],
        names=target.names,
    ).cast(target)


def _minute(times: pa.ChunkedArray) -> pa.ChunkedArray:
    """Each time's minute, by integer arithmetic on the microseconds (floor_temporal is several
    times slower on a day's rows)."""
    micros = times.cast(pa.int64())
    return pc.multiply(pc.divide(micros, 60_000_000), 60_000_000).cast(times.type)


def _vwap(quote_volume: pa.Array, volume: pa.Array) -> pa.Array:
    """quote volume / volume, half-even to 8 decimals; a minute of zero volume takes 0."""
    out = []
    for quote, base in zip(quote_volume.to_pylist(), volume.to_pylist(), strict=True):
        out.append(
            _EXACT.divide(quote, base).quantize(_EIGHT, rounding=ROUND_HALF_EVEN) if base else Decimal(0)
        )
    return pa.array(out, pa.decimal128(18, 8))
