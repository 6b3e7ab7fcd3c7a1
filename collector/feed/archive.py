"""The local feed's trade archive: Binance's daily and monthly zips made from the emulated market.

    /data/spot/daily/trades/{SYMBOL}/{SYMBOL}-trades-YYYY-MM-DD.zip            (+ .zip.CHECKSUM)
    /data/spot/monthly/trades/{SYMBOL}/{SYMBOL}-trades-YYYY-MM.zip             (+ .zip.CHECKSUM)

One CSV per zip, no header row (spot files have none), columns id, price, qty, quoteQty, time,
isBuyerMaker, isBestMatch; times in milliseconds up to 2024-12-31 and in microseconds from
2025-01-01, as Binance publishes them. Scripted defects per date (`Defect`), the ones users
have met in the real archive: ids missing, a day that stops early, a CHECKSUM that does not
match, a day not published yet, a header row. A symbol's files hold only what it traded between
its listing and its delisting (`Schedule`); a day wholly outside them has no file.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from collector.feed.simulated import DAY_US, Market, MarketTrade, Schedule

__all__ = ["MICROSECONDS_FROM", "ArchiveFeed", "Defect", "parse_defect"]

MICROSECONDS_FROM = date(2025, 1, 1)  # spot archive times are µs from this day on
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class Defect:
    """What is wrong with one date's file: `missing` ids (first, last), `truncate` at a time of
    day (seconds), `bad_checksum`, `unpublished` (HTTP 404), `header` (a header row)."""

    kind: str
    first: int = 0
    last: int = 0
    seconds: int = 0


def parse_defect(text: str) -> tuple[str, Defect]:
    """`2024-12-31:missing:1000-1010`, `2024-12-31:truncate:16:00`, `2024-12-31:bad-checksum`,
    `2024-12-31:unpublished`, `2024-12-31:header` -> (date or month text, Defect)."""
    when, _, rest = text.partition(":")
    kind, _, arg = rest.partition(":")
    if kind == "missing":
        first, _, last = arg.partition("-")
        return when, Defect("missing", int(first), int(last or first))
    if kind == "truncate":
        hours, _, minutes = arg.partition(":")
        return when, Defect("truncate", seconds=int(hours) * 3600 + int(minutes or 0) * 60)
    if kind in ("bad-checksum", "unpublished", "header"):
        return when, Defect(kind.replace("-", "_"))
    raise ValueError(f"{text!r}: a defect is DATE:missing:FIRST-LAST, DATE:truncate:HH:MM, "
                     "DATE:bad-checksum, DATE:unpublished or DATE:header")  # fmt: skip


def _fmt8(scaled: int) -> str:
    whole, frac = divmod(scaled, 100_000_000)
    return f"{whole}.{frac:08d}"


def _row(trade: MarketTrade, micro: bool) -> str:
    quote = (Decimal(trade.price) * Decimal(trade.quantity) / Decimal(10**16)).normalize()
    time = trade.time_us if micro else trade.time_us // 1000
    maker = "True" if trade.is_buyer_maker else "False"
    return f"{trade.trade_id},{_fmt8(trade.price)},{_fmt8(trade.quantity)},{quote:f},{time},{maker},True\n"


class ArchiveFeed:
    """Zips and checksums of the market's days and months, with the scripted defects."""

    def __init__(
        self, market: Market, defects: dict[str, list[Defect]] | None = None, schedule: Schedule | None = None
    ) -> None:
        self.market = market
        self.defects = defects or {}
        self.schedule = schedule or Schedule()
        self._cache: dict[str, bytes] = {}

    def answer(self, path: str) -> tuple[int, bytes]:
        """(HTTP status, body) for an archive path."""
        parts = path.split("/")
        if len(parts) != 7 or parts[:3] != ["", "data", "spot"] or parts[4] != "trades":
            return 404, b"not an archive path"
        period, symbol, name = parts[3], parts[5], parts[6]
        checksum = name.endswith(".CHECKSUM")
        stem = name.removesuffix(".CHECKSUM").removesuffix(".zip")
        when = stem.removeprefix(f"{symbol}-trades-")
        if symbol not in self.market.symbols or period not in ("daily", "monthly") or when == stem:
            return 404, b"no such file"
        days = self._days(period, when)
        if days is None or days[-1] >= datetime.now(tz=UTC).date():
            return 404, b"not published yet"  # a day appears after it ends
        first, end = self.schedule.window_us(symbol)
        if (days[-1] - _EPOCH).days * DAY_US + DAY_US <= first or (days[0] - _EPOCH).days * DAY_US >= end:
            return 404, b"no such file"  # before its listing or after its delisting
        if any(d.kind == "unpublished" for d in self._defects(when, days)):
            return 404, b"not published yet"
        data = self._zip(symbol, stem, days, when)
        if not checksum:
            return 200, data
        digest = hashlib.sha256(data).hexdigest()
        if any(d.kind == "bad_checksum" for d in self._defects(when, days)):
            digest = hashlib.sha256(data + b"x").hexdigest()
        return 200, f"{digest}  {stem}.zip\n".encode()

    def _days(self, period: str, when: str) -> list[date] | None:
        try:
            if period == "daily":
                return [date.fromisoformat(when)]
            first = date.fromisoformat(f"{when}-01")
        except ValueError:
            return None
        days, day = [], first
        while day.month == first.month:
            days.append(day)
            day += timedelta(days=1)
        return days

    def _defects(self, when: str, days: list[date]) -> list[Defect]:
        found = list(self.defects.get(when, []))
        if len(days) > 1:  # a month's file has its days' defects too
            for day in days:
                found += self.defects.get(day.isoformat(), [])
        return found

    def _zip(self, symbol: str, stem: str, days: list[date], when: str) -> bytes:
        key = f"{symbol}/{stem}"
        if key in self._cache:
            return self._cache[key]
        defects = self._defects(when, days)
        lines: list[str] = []
        if any(d.kind == "header" for d in defects):
            lines.append("id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n")
        missing = [(d.first, d.last) for d in defects if d.kind == "missing"]
        for day in days:
            micro = day >= MICROSECONDS_FROM
            number = (day - _EPOCH).days
            cuts = [d.seconds for d in self.defects.get(day.isoformat(), []) if d.kind == "truncate"]
            if len(days) == 1:
                cuts += [d.seconds for d in self.defects.get(when, []) if d.kind == "truncate"]
            cut = number * DAY_US + min(cuts) * 1_000_000 if cuts else None
            listed, delisted = self.schedule.window_us(symbol)
            for trade in self.market.day(symbol, number):
                if (cut is not None and trade.time_us >= cut) or trade.time_us >= delisted:
                    break
                if trade.time_us < listed:
                    continue
                if any(lo <= trade.trade_id <= hi for lo, hi in missing):
                    continue
                lines.append(_row(trade, micro))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.writestr(f"{stem}.csv", "".join(lines))
        data = buffer.getvalue()
        self._cache[key] = data
        return data
