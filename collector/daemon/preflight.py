"""What can be checked before anything runs, without writing data: the checks `check-config`,
`check-config --online`, `run` and `demo` share.

Offline: the landing directory (for a local destination) and the spool directory can be made
and written. Online: the S3 bucket exists and takes our credentials (one LIST under the trade
prefix), and every symbol exists on Binance and is trading (exchangeInfo). A problem is a
sentence that says what is wrong and what to change.
"""

from __future__ import annotations

import asyncio
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.binance.rest import EXCHANGE_INFO_WEIGHT, BinanceRest
from collector.binance.weight import WeightBudget
from collector.config import S3Destination, Settings
from collector.exceptions import SinkPermanentError, SinkUnavailable

__all__ = [
    "SymbolReport",
    "check_symbols",
    "directory_problem",
    "offline_problems",
    "online_problems",
    "symbols_exist",
]


def directory_problem(path: Path, setting: str) -> str | None:
    """Why `path` cannot be used as a directory to write into, or None if it can (made if need be).

    Permissions say what they say; then the directory is made and a file written in it, both
    removed again, since the kernel can refuse what the permission bits allow (root under
    /proc or /sys, a read-only mount)."""
    if path.exists():
        if not path.is_dir():
            return f"{setting}={str(path)!r} is a file, not a directory; give a directory path"
        if not os.access(path, os.W_OK | os.X_OK):
            return (
                f"{setting}={str(path)!r} is a directory this user ({_user()}) cannot write; "
                "fix its permissions or give another"
            )
        return _try_writing(path, path, setting)
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{setting}={str(path)!r} cannot be made: {str(ancestor)!r} is a file"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return (
            f"{setting}={str(path)!r} cannot be made: this user ({_user()}) cannot write "
            f"{str(ancestor)!r}; make the directory or give another path"
        )
    return _try_writing(path, ancestor, setting)


def _try_writing(path: Path, existing: Path, setting: str) -> str | None:
    """Make `path` (below `existing`) and write a file in it; remove both; why it failed, if it did."""
    import tempfile

    made = [p for p in [path.absolute(), *path.absolute().parents] if p.is_relative_to(existing)]
    made = [p for p in made if p != existing.absolute()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".collector-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        verb = "cannot be made" if made else "cannot be written"
        return (
            f"{setting}={str(path)!r} {verb}: {exc.strerror} ({exc.filename}); "
            "give a directory on a filesystem this user can write"
        )
    finally:
        for directory in made:  # deepest first: only the ones this check made
            try:
                directory.rmdir()
            except OSError:
                break
    return None


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


def offline_problems(settings: Settings) -> list[str]:
    problems = []
    if isinstance(settings.destination, Path):
        problem = directory_problem(settings.destination, "COLLECTOR_DESTINATION")
        if problem:
            problems.append(problem)
    problem = directory_problem(settings.spool_dir, "COLLECTOR_SPOOL_DIR")
    if problem:
        problems.append(problem)
    return problems


@dataclass
class SymbolReport:
    """What exchangeInfo said of the configured symbols."""

    unknown: dict[str, list[str]] = field(default_factory=dict)  # symbol -> closest existing names
    not_trading: dict[str, str] = field(default_factory=dict)  # symbol -> its status (BREAK, HALT, ...)
    error: str | None = None  # exchangeInfo could not be asked: nothing is known

    def problems(self, setting: str = "COLLECTOR_SYMBOLS") -> list[str]:
        out = []
        for symbol, close in self.unknown.items():
            hint = f"; closest: {', '.join(close)}" if close else ""
            out.append(f"{setting}: {symbol} is not a Binance spot symbol{hint}")
        return out

    def warnings(self) -> list[str]:
        return [
            f"{symbol} exists but is not trading (status {status}): no trades will come until it is"
            for symbol, status in self.not_trading.items()
        ]


def check_symbols(rest: BinanceRest, symbols: tuple[str, ...]) -> SymbolReport:
    """Ask exchangeInfo about `symbols` (blocking: run it in a thread)."""
    report = SymbolReport()
    try:
        # A long list would make a long URL: past 100 symbols, the whole market is asked.
        page = rest.exchange_info(list(symbols)) if len(symbols) <= 100 else rest.exchange_info()
        if page.status == 400 and '"code":-1121' in page.body.replace(" ", ""):  # an unknown one
            page = rest.exchange_info()  # the whole market, to say which and what is close
        if page.status != 200 or not page.rows:
            report.error = f"exchangeInfo answered HTTP {page.status or 'nothing'}: {page.body[:200]}"
            return report
    except (OSError, ValueError) as exc:
        report.error = f"exchangeInfo could not be reached at {rest.base_url}: {exc}"
        return report
    listed = _statuses(page.rows[0])
    for symbol in symbols:
        status = listed.get(symbol)
        if status is None:
            report.unknown[symbol] = difflib.get_close_matches(symbol, list(listed), n=3, cutoff=0.6)
        elif status != "TRADING":
            report.not_trading[symbol] = status
    return report


async def symbols_exist(settings: Settings, log: Any, budget: WeightBudget | None = None) -> bool:
    """Ask exchangeInfo about the configured symbols before capture: Binance sends nothing for a
    stream that does not exist, so an unknown symbol would otherwise mean waiting in silence."""
    rest = BinanceRest(settings.rest_url, timeout_s=10.0, budget=budget)
    if budget is not None:  # the symbols asked, then (for a name it does not know) the whole market
        await budget.take(2 * EXCHANGE_INFO_WEIGHT, "exchangeInfo")
    report = await asyncio.to_thread(check_symbols, rest, settings.symbols)
    if report.error:
        log.warning("collector.symbols_unchecked", error=report.error, note="going on without the check")
    for symbol, status in report.not_trading.items():
        log.warning("collector.symbol_not_trading", symbol=symbol, status=status,
                    note="no trades will come until Binance lists it as TRADING again")  # fmt: skip
    if report.unknown:
        log.error("collector.fatal", kind="UnknownSymbol", error="; ".join(report.problems()),
                  fix="correct COLLECTOR_SYMBOLS")  # fmt: skip
        return False
    return True


def _statuses(info: Any) -> dict[str, str]:
    rows = info.get("symbols", []) if isinstance(info, dict) else []
    return {str(r["symbol"]): str(r.get("status", "")) for r in rows if isinstance(r, dict) and "symbol" in r}


def online_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """(problems, warnings) from asking S3 and Binance. Blocking."""
    from collector.lake.sinks import make_sink

    problems: list[str] = []
    warnings: list[str] = []
    if isinstance(settings.destination, S3Destination):
        try:
            make_sink(settings).probe()
        except (SinkPermanentError, SinkUnavailable) as exc:
            problems.append(f"COLLECTOR_DESTINATION: {exc}")
    report = check_symbols(BinanceRest(settings.rest_url, timeout_s=10.0), settings.symbols)
    if report.error:
        warnings.append(f"could not check the symbols: {report.error}")
    problems.extend(report.problems())
    warnings.extend(report.warnings())
    return problems, warnings
