"""Filling trade-id gaps from Binance's REST API, inside its rate limits, with an honest record.

    GET {rest_url}/api/v3/historicalTrades?symbol=S&fromId=N&limit=1000   (weight 25, no key)

The policy, in one place (`Backfiller._fetch`):
- keep the minute's used weight (`X-MBX-USED-WEIGHT-1M`) under `weight_limit` (half of the
  6,000 Binance allows, so live traffic from the same IP keeps its share): past it, wait for the
  next minute;
- 429: wait `Retry-After` seconds before any other request (continuing would earn a 418 ban);
- 418: banned; stop, record the rest of every gap as unfilled until `Retry-After` has passed;
- 403/451, 400 (unknown symbol): cannot be fixed by retrying: record and say why;
- 5xx and network errors: a few jittered retries, then record the range as unfilled.

A range the exchange no longer serves (older than it keeps) is recorded as `not_served`.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from collector.binance import Trade, trade_from_rest
from collector.spool import read_jsonl, write_atomically

__all__ = ["Backfiller", "BinanceRest", "GapLedger", "OpenGap", "RestPage", "Unfilled"]

PAGE_LIMIT = 1000  # Binance's maximum rows per historicalTrades call


@dataclass
class OpenGap:
    """Ids first_missing..last_missing of symbol are missing; next_id is where filling resumes."""

    symbol: str
    first_missing: int
    last_missing: int
    next_id: int
    detected_at_ns: int
    # The missing trades happened between these trade times (epoch seconds): after the last trade
    # accepted before the gap (or the first minute not yet marked) and at or before the one after.
    window_start_s: float | None = None
    window_end_s: float | None = None
    attempt: int = 1  # 2 and up: a retry of a range recorded unfilled for a passing reason

    @property
    def size(self) -> int:
        return self.last_missing - self.first_missing + 1


@dataclass(frozen=True)
class Unfilled:
    symbol: str
    first_missing: int
    last_missing: int
    reason: str
    detail: str = ""
    window_start_s: float | None = None
    window_end_s: float | None = None
    detected_at_ns: int = 0
    attempt: int = 1


@dataclass(frozen=True)
class RestPage:
    status: int
    rows: list[dict[str, Any]] | None
    used_weight: int | None
    retry_after_s: float | None
    body: str = ""


class BinanceRest:
    """Blocking calls to the REST API (run them in a thread)."""

    def __init__(self, base_url: str, *, time_unit: str = "ms", timeout_s: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.time_unit = time_unit
        self.timeout_s = timeout_s

    def historical_trades(self, symbol: str, from_id: int, limit: int) -> RestPage:
        query = urllib.parse.urlencode({"symbol": symbol, "fromId": from_id, "limit": limit})
        request = urllib.request.Request(f"{self.base_url}/api/v3/historicalTrades?{query}")  # noqa: S310
        request.add_header("User-Agent", "trade-lake-collector")
        if self.time_unit == "us":
            request.add_header("X-MBX-TIME-UNIT", "MICROSECOND")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                body = response.read().decode()
                return RestPage(
                    response.status,
                    json.loads(body),
                    _int(response.headers.get("X-MBX-USED-WEIGHT-1M")),
                    None,
                )
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")[:500]
            headers = exc.headers
            return RestPage(
                exc.code,
                None,
                _int(headers.get("X-MBX-USED-WEIGHT-1M")) if headers else None,
                _float(headers.get("Retry-After")) if headers else None,
                body,
            )


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


class _GiveUp(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class Backfiller:
    """Fetches the trades of a gap page by page; reports what it could not fill."""

    def __init__(
        self,
        rest: BinanceRest,
        *,
        log: Any,
        weight_limit: int = 3000,
        max_server_retries: int = 4,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.rest = rest
        self.log = log
        self.weight_limit = weight_limit
        self.max_server_retries = max_server_retries
        self.sleep = sleep
        self.requests = 0
        self.rate_limited = 0
        self.banned_until = 0.0  # wall clock
        self._paused_until = 0.0  # wall clock

    async def fill(
        self, gap: OpenGap, on_trades: Callable[[list[Trade], int], Awaitable[None]]
    ) -> list[Unfilled]:
        """Fetch gap.next_id..gap.last_missing; hand each page's trades (and the next id) to on_trades."""
        unfilled: list[Unfilled] = []
        next_id = gap.next_id
        while next_id <= gap.last_missing:
            limit = min(PAGE_LIMIT, gap.last_missing - next_id + 1)
            try:
                page = await self._fetch(gap.symbol, next_id, limit)
            except _GiveUp as stop:
                unfilled.append(Unfilled(gap.symbol, next_id, gap.last_missing, stop.reason, stop.detail))
                return unfilled
            rows = [r for r in page.rows or [] if isinstance(r, dict) and isinstance(r.get("id"), int)]
            wanted = [r for r in rows if next_id <= r["id"] <= gap.last_missing]
            if not wanted:
                unfilled.append(
                    Unfilled(
                        gap.symbol,
                        next_id,
                        gap.last_missing,
                        "not_served",
                        "the exchange returned none of these ids",
                    )
                )
                return unfilled
            first = min(r["id"] for r in wanted)
            if first > next_id:  # older than the exchange keeps
                unfilled.append(
                    Unfilled(
                        gap.symbol,
                        next_id,
                        first - 1,
                        "not_served",
                        f"the exchange's oldest id here is {first}",
                    )
                )
            trades: list[Trade] = []
            for row in wanted:
                trade = trade_from_rest(row, gap.symbol, gap.detected_at_ns)
                if isinstance(trade, Trade):
                    trades.append(trade)
                else:
                    unfilled.append(Unfilled(gap.symbol, row["id"], row["id"], "malformed_row", trade.detail))
            next_id = max(r["id"] for r in wanted) + 1
            await on_trades(trades, next_id)
        return unfilled

    async def _fetch(self, symbol: str, from_id: int, limit: int) -> Any:
        server_errors = 0
        while True:
            now = time.time()
            if self.banned_until > now:
                raise _GiveUp(
                    "banned", f"HTTP 418 from the exchange; no request before {self.banned_until:.0f}"
                )
            if self._paused_until > now:
                await self.sleep(self._paused_until - now)
            try:
                page = await asyncio.to_thread(self.rest.historical_trades, symbol, from_id, limit)
            except (OSError, ValueError) as exc:
                page = RestPage(0, None, None, None, repr(exc))
            self.requests += 1
            if page.used_weight is not None and page.used_weight >= self.weight_limit:
                self._pause(
                    60 - time.time() % 60 + 1, f"used weight {page.used_weight} of {self.weight_limit}"
                )
            if page.status == 200:
                return page
            if page.status == 429:
                self.rate_limited += 1
                self._pause(page.retry_after_s or 60.0, "HTTP 429: slowing down as asked")
                continue
            if page.status == 418:
                self.banned_until = time.time() + (page.retry_after_s or 120.0)
                self.log.error("collector.backfill_banned", until=self.banned_until, body=page.body)
                raise _GiveUp("banned", f"HTTP 418 from the exchange: {page.body}")
            if page.status in (403, 451):
                raise _GiveUp(
                    "refused_location",
                    f"HTTP {page.status}: the exchange refuses this location; run in another region or set "
                    "COLLECTOR_REST_URL",
                )
            if page.status == 400:
                raise _GiveUp("bad_request", f"HTTP 400 {page.body} (unknown symbol?)")
            server_errors += 1
            if server_errors > self.max_server_retries:
                raise _GiveUp("rest_unavailable", f"HTTP {page.status or 'no answer'}: {page.body}")
            await self.sleep(random.uniform(0, min(30.0, 0.5 * 2**server_errors)))  # noqa: S311 (jitter)

    def _pause(self, seconds: float, why: str) -> None:
        until = time.time() + seconds
        if until > self._paused_until:
            self._paused_until = until
            self.log.warning("collector.backfill_paused", seconds=round(seconds, 1), why=why)


# Reasons that may pass: the range is tried again later, up to MAX_ATTEMPTS times in all.
RETRYABLE = frozenset({"rest_unavailable", "banned"})
MAX_ATTEMPTS = 5


class GapLedger:
    """Open gaps on disk (so a restart resumes them), and the record of what could not be filled."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.open_path = root / "open.json"
        self.unfilled_path = root / "unfilled.jsonl"
        self.open: list[OpenGap] = []
        if self.open_path.exists():
            self.open = [OpenGap(**g) for g in json.loads(self.open_path.read_text())]
        self.unfilled_records: list[dict[str, Any]] = read_jsonl(self.unfilled_path)
        self._recorded_at = [float(r.get("recorded_at", 0)) for r in self.unfilled_records]

    @property
    def unfilled_count(self) -> int:
        return len(self._recorded_at)

    def unfilled_since(self, seconds: float) -> int:
        """Ranges recorded in the last `seconds`: what an alarm should still be about."""
        cutoff = time.time() - seconds
        return sum(1 for t in self._recorded_at if t >= cutoff)

    def add(self, gap: OpenGap) -> None:
        self.open.append(gap)
        self.save()

    def save(self) -> None:
        write_atomically(self.open_path, json.dumps([asdict(g) for g in self.open]).encode())

    def close(self, gap: OpenGap) -> None:
        self.open = [g for g in self.open if g is not gap]
        self.save()

    def record_unfilled(self, unfilled: Unfilled) -> None:
        now = time.time()
        record = {**asdict(unfilled), "recorded_at": now}
        with open(self.unfilled_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self._recorded_at.append(now)
        self.unfilled_records.append(record)

    def unfilled_between(self, symbol: str, start_s: float, end_s: float) -> list[dict[str, Any]]:
        """Unfilled ranges whose trades may have happened in [start_s, end_s)."""
        found = []
        for r in self.unfilled_records:
            lo, hi = r.get("window_start_s"), r.get("window_end_s")
            if r.get("symbol") != symbol or lo is None or hi is None or r.get("retried"):
                continue  # recorded before gaps had time windows: not placed in any minute
            if lo < end_s and hi >= start_s:
                found.append(r)
        return found

    def due_for_retry(self, now_s: float, after_s: float) -> list[dict[str, Any]]:
        """Unfilled ranges whose reason may have passed, recorded at least `after_s` ago."""
        return [
            r
            for r in self.unfilled_records
            if r.get("reason") in RETRYABLE
            and not r.get("retried")
            and int(r.get("attempt", 1)) < MAX_ATTEMPTS
            and float(r.get("recorded_at", 0)) + after_s <= now_s
            and r.get("window_start_s") is not None
        ]

    def reopen(self, record: dict[str, Any]) -> OpenGap:
        """Try a recorded range again: it becomes an open gap, the record is marked as retried."""
        record["retried"] = True
        write_atomically(
            self.unfilled_path, "".join(json.dumps(r) + "\n" for r in self.unfilled_records).encode()
        )
        gap = OpenGap(
            record["symbol"],
            record["first_missing"],
            record["last_missing"],
            record["first_missing"],
            int(record.get("detected_at_ns") or time.time_ns()),
            window_start_s=record.get("window_start_s"),
            window_end_s=record.get("window_end_s"),
            attempt=int(record.get("attempt", 1)) + 1,
        )
        self.add(gap)
        return gap
