"""Binance's REST API, as the collector asks it: blocking calls, one answer each as a `RestPage`.

    GET /api/v3/historicalTrades   a page of trades by id (weight 25): the backfill
    GET /api/v3/aggTrades          the first trade at or after a time (weight 4): the import's edges
    GET /api/v3/exchangeInfo       symbols and their status (weight 20): listings, the preflight
    GET /api/v3/ticker/24hr        each symbol's last id (MINI; weight 2 to 80): the quiet proof

The answer is never interpreted here beyond its HTTP status and the used-weight header: what a
429, a 418 or a 5xx means for the caller is the caller's policy (`gaps/backfill.py`). Every
answer's used weight is noted in the shared `WeightBudget` (collector.binance.weight), which
callers take each request's weight from before they ask.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from collector.binance.weight import WeightBudget

__all__ = [
    "AGG_TRADES_WEIGHT",
    "EXCHANGE_INFO_WEIGHT",
    "HISTORICAL_TRADES_WEIGHT",
    "BinanceRest",
    "RestPage",
    "ticker_weight",
]

# Binance's request weights (GET /api/v3/...), as its documentation gives them.
HISTORICAL_TRADES_WEIGHT = 25
AGG_TRADES_WEIGHT = 4
EXCHANGE_INFO_WEIGHT = 20


def ticker_weight(symbols: int | None) -> int:
    """ticker/24hr: 2 for up to 20 symbols, 40 for up to 100, 80 for more or the whole market."""
    if symbols is None or symbols > 100:
        return 80
    return 2 if symbols <= 20 else 40


@dataclass(frozen=True)
class RestPage:
    status: int
    rows: list[dict[str, Any]] | None
    used_weight: int | None
    retry_after_s: float | None
    body: str = ""


class BinanceRest:
    """Blocking calls to the REST API (run them in a thread)."""

    def __init__(
        self,
        base_url: str,
        *,
        time_unit: str = "ms",
        timeout_s: float = 15.0,
        budget: WeightBudget | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.time_unit = time_unit
        self.timeout_s = timeout_s
        self.budget = budget  # each answer's used weight is noted in it

    def historical_trades(self, symbol: str, from_id: int, limit: int) -> RestPage:
        query = urllib.parse.urlencode({"symbol": symbol, "fromId": from_id, "limit": limit})
        headers = {"X-MBX-TIME-UNIT": "MICROSECOND"} if self.time_unit == "us" else {}
        return self._get(f"/api/v3/historicalTrades?{query}", headers)

    def first_trade_id_from(self, symbol: str, start_ms: int) -> int | None:
        """The id of the first trade at or after `start_ms` (aggTrades, weight 4); None when there
        is none yet. Raises OSError or ValueError when the API cannot say."""
        query = urllib.parse.urlencode({"symbol": symbol, "startTime": start_ms, "limit": 1})
        page = self._get(f"/api/v3/aggTrades?{query}", {})
        if page.status != 200 or not isinstance(page.rows, list):
            raise ValueError(f"aggTrades answered HTTP {page.status or 'nothing'}: {page.body[:200]}")
        return int(page.rows[0]["f"]) if page.rows else None

    def exchange_info(self, symbols: list[str] | None = None) -> RestPage:
        """GET /api/v3/exchangeInfo (weight 20), for some symbols or the whole market (rows: the
        response object, in a list of one)."""
        query = ""
        if symbols:
            query = "?" + urllib.parse.urlencode({"symbols": json.dumps(symbols, separators=(",", ":"))})
        page = self._get(f"/api/v3/exchangeInfo{query}", {})
        if page.status == 200 and isinstance(page.rows, dict):
            return RestPage(page.status, [page.rows], page.used_weight, None)
        return page

    def ticker_24h(self, symbols: list[str] | None = None) -> RestPage:
        """GET /api/v3/ticker/24hr?type=MINI (each row's firstId, lastId, closeTime): weight 80 for
        the whole market, 2 for up to 20 symbols, 40 for up to 100."""
        query = {"type": "MINI"}
        if symbols is not None:
            query["symbols"] = json.dumps(symbols, separators=(",", ":"))
        return self._get(f"/api/v3/ticker/24hr?{urllib.parse.urlencode(query)}", {})

    def _get(self, path: str, headers: dict[str, str]) -> RestPage:
        request = urllib.request.Request(f"{self.base_url}{path}")  # noqa: S310 (http(s) only, from settings)
        request.add_header("User-Agent", "trade-lake-collector")
        for name, value in headers.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                body = response.read().decode()
                page = RestPage(
                    response.status,
                    json.loads(body),
                    _int(response.headers.get("X-MBX-USED-WEIGHT-1M")),
                    None,
                )
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")[:500]
            answer = exc.headers
            page = RestPage(
                exc.code,
                None,
                _int(answer.get("X-MBX-USED-WEIGHT-1M")) if answer else None,
                _float(answer.get("Retry-After")) if answer else None,
                body,
            )
        if self.budget is not None:
            self.budget.saw(page.used_weight)
        return page


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
