"""What an audit found, both layouts in one report: counts, the first instances of each defect, the
figures, and the human summary (`render`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from collector.lake.layout import MARKET, market_root

__all__ = ["SAMPLES", "AuditReport", "MarketFigures", "Problem", "label", "render"]

# Each defect kind lists its first SAMPLES instances, then "... and N more".
SAMPLES = 20


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    symbol: str  # the symbol; a market-wide problem of no one symbol's: "_market"
    minute: str | None
    detail: str
    layout: str = "symbol"  # "symbol": Binance/{SYMBOL}/; "market": Binance/_market/


@dataclass
class AuditReport:
    destination: str
    symbols: list[str]
    start: str
    end: str
    minutes: int = 0
    markers: int = 0
    files: int = 0
    rows: int = 0
    bytes: int = 0
    max_files_per_minute: int = 0
    pending_minutes: int = 0  # after the last marker: not final yet, not checked
    pending_rows: int = 0
    pending: list[Problem] = field(default_factory=list)  # per symbol: the pending stretch
    problems: list[Problem] = field(default_factory=list)
    known_gaps: list[Problem] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    market: MarketFigures | None = None  # the market-wide layout's figures, when it was audited

    @property
    def ok(self) -> bool:
        return not self.counts

    def add(self, kind: str, symbol: str, minute: int | None, detail: str, *, layout: str = "symbol") -> None:
        self.counts[kind] += 1
        if sum(1 for p in self.problems if p.kind == kind) < SAMPLES:
            self.problems.append(Problem(kind, symbol, label(minute), detail, layout))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "destination": self.destination,
            "symbols": self.symbols,
            "from": self.start,
            "to": self.end,
            "minutes": self.minutes,
            "markers": self.markers,
            "files": self.files,
            "rows": self.rows,
            "bytes": self.bytes,
            "bytes_per_trade": round(self.bytes / self.rows, 3) if self.rows else None,
            "files_per_minute": round(self.files / self.minutes, 3) if self.minutes else None,
            "max_files_per_minute": self.max_files_per_minute,
            "found_minutes": self.minutes + self.pending_minutes,
            "found_rows": self.rows + self.pending_rows,
            "pending_minutes": self.pending_minutes,
            "pending_rows": self.pending_rows,
            "pending": [asdict(p) for p in self.pending],
            "problem_counts": dict(sorted(self.counts.items())),
            "problems": [asdict(p) for p in self.problems],
            "known_gaps": [asdict(p) for p in self.known_gaps],
            "market": self.market.as_dict() if self.market is not None else None,
        }


def label(minute: int | None) -> str | None:
    if minute is None:
        return None
    return datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def render(report: AuditReport) -> str:
    """The human summary."""
    d = report.as_dict()
    audited = [", ".join(d["symbols"])] if d["symbols"] else []
    if report.market is not None:
        audited.append("the market-wide layout")
    what = " and ".join(audited)
    lines = [f"audit of {d['destination']} for {what}, {d['from']} to {d['to']} (end excluded)"]
    if d["symbols"]:
        lines += [
            f"  checked {d['rows']:,} trades in {d['minutes']:,} minutes of the {d['found_rows']:,} trades "
            f"in {d['found_minutes']:,} minutes found",
            f"  markers {d['markers']:,}, files {d['files']:,} "
            f"({d['files_per_minute'] or 0} per minute, at most {d['max_files_per_minute']}), "
            f"bytes {d['bytes']:,} ({d['bytes_per_trade'] or 0} per trade)",
        ]
    if report.market is not None:
        lines += report.market.lines()
    if report.pending:
        lines.append(
            f"  pending: {d['pending_minutes']:,} minutes ({d['pending_rows']:,} trades) after the last "
            "marker, not checked: the collector marks a minute once it is final; audit again later"
        )
        lines.extend(f"    {p.symbol}: {p.detail}" for p in report.pending)
    if report.known_gaps:
        lines.append(f"  known gaps (declared unfilled in markers): {len(report.known_gaps)}")
        lines.extend(f"    {p.minute} {_where(p)}: {p.detail}" for p in report.known_gaps[:SAMPLES])
        if len(report.known_gaps) > SAMPLES:
            lines.append(f"    ... and {len(report.known_gaps) - SAMPLES} more")
    if report.ok:
        lines.append("OK: no defects found")
    else:
        lines.append("DEFECTS: " + ", ".join(f"{kind} {n}" for kind, n in sorted(report.counts.items())))
        for kind, count in sorted(report.counts.items()):
            shown = [p for p in report.problems if p.kind == kind]
            lines.extend(f"  {p.kind} {_where(p)} {p.minute or ''}: {p.detail}" for p in shown)
            if count > len(shown):
                lines.append(f"  ... and {count - len(shown)} more {kind}")
    return "\n".join(lines)


def _where(problem: Problem) -> str:
    """The symbol, or for the market-wide layout `_market` (and the symbol: `_market/ETHUSDT`)."""
    if problem.layout == "symbol" or problem.symbol == MARKET:
        return problem.symbol
    return f"{MARKET}/{problem.symbol}"


@dataclass
class MarketFigures:
    """What the market-wide part of an audit checked, for the report's summary."""

    start: str
    end: str
    minutes: int = 0
    markers: int = 0
    files: int = 0
    rows: int = 0
    bytes: int = 0
    max_files_per_minute: int = 0
    symbols: set[str] = field(default_factory=set)
    pending_minutes: int = 0  # after the last market marker: not final yet, not checked
    pending_rows: int = 0
    pending_from: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": market_root(),
            "from": self.start,
            "to": self.end,
            "minutes": self.minutes,
            "markers": self.markers,
            "files": self.files,
            "rows": self.rows,
            "bytes": self.bytes,
            "bytes_per_trade": round(self.bytes / self.rows, 3) if self.rows else None,
            "files_per_minute": round(self.files / self.minutes, 3) if self.minutes else None,
            "max_files_per_minute": self.max_files_per_minute,
            "symbols": len(self.symbols),
            "found_minutes": self.minutes + self.pending_minutes,
            "found_rows": self.rows + self.pending_rows,
            "pending_minutes": self.pending_minutes,
            "pending_rows": self.pending_rows,
            "pending_from": self.pending_from,
        }

    def lines(self) -> list[str]:
        d = self.as_dict()
        lines = [
            f"  market-wide ({market_root()}), {d['from']} to {d['to']}: checked {d['rows']:,} trades of "
            f"{d['symbols']:,} symbols in {d['minutes']:,} minutes of the {d['found_rows']:,} trades in "
            f"{d['found_minutes']:,} minutes found",
            f"  market markers {d['markers']:,}, parts {d['files']:,} ({d['files_per_minute'] or 0} per "
            f"minute, at most {d['max_files_per_minute']}), bytes {d['bytes']:,} "
            f"({d['bytes_per_trade'] or 0} per trade)",
        ]
        if self.pending_minutes:
            lines.append(
                f"  market pending: {d['pending_minutes']:,} minutes ({d['pending_rows']:,} trades) from "
                f"{d['pending_from']} on, after the last market marker, not checked: audit again later"
            )
        return lines
