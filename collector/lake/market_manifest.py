"""The market-wide minute: when it is final, and what its `_SUCCESS` manifest says. Pure.

A market minute holds every captured symbol that is not watched (COLLECTOR_WATCHED_SYMBOLS).
It is final when each of those symbols' own minute is, by the same rule as a per-symbol
marker (`completion.final_minutes`: the grace passed, continuity proven past the minute's
end, no batch of it still being spooled, no open gap that may hold its trades). Symbols that
stopped trading count up to where their stream proved them, and no further.

The manifest (README, "The market-wide layout"):

    {"manifest_version": 1, "layout": "market", "exchange": "Binance",
     "minute": "2026-12-01T20:15Z", "rows": 118234,
     "files": [{"name": "part-000-3f9a0c1b2d4e.parquet", "bytes": .., "sha256": .., "rows": ..}, ..],
     "symbols": {"BTCUSDT": {"rows": 2011, "first_trade_id": .., "last_trade_id": ..,
                             "files": ["part-000-3f9a0c1b2d4e.parquet"]}, ...},
     "covered": ["AAVEUSDT", "BTCUSDT", ...],
     "unfilled_gaps": {"XYZUSDT": [{"first_missing": .., "last_missing": .., "reason": .., "detail": ..}]},
     "revision": 1, "written_at": "2026-12-01T20:16:11.402+00:00"}

`covered` lists every symbol whose minute is complete in these files: one in `covered` and
not in `symbols` had no trade in the minute. A symbol not in `covered` was not captured in
this layout then (watched, not listed yet, or no longer streamed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from collector.lake.completion import (
    MANIFEST_VERSION,
    UnfilledGap,
    json_document,
    manifest_minute,
    minute_label,
)

__all__ = [
    "MarketFile",
    "SymbolShare",
    "build_market_manifest",
    "market_gaps",
    "merge_market_parts",
    "parse_market_manifest",
    "symbol_final",
    "with_gaps",
]


@dataclass(frozen=True, slots=True)
class SymbolShare:
    """One symbol's trades in one market part."""

    symbol: str
    rows: int
    first_trade_id: int
    last_trade_id: int


@dataclass(frozen=True, slots=True)
class MarketFile:
    """One market part, as the marker lists it."""

    name: str
    bytes: int
    sha256: str  # base64, as S3 reports ChecksumSHA256
    rows: int


def symbol_final(
    minute: int,
    *,
    now_s: float,
    grace_s: float,
    proven_until_s: float | None,
    open_gap_from_s: float,
    pending: set[int],
) -> bool:
    """Is this symbol's share of `minute` final? (`completion.final_minutes` for one minute.)"""
    end_s = (minute + 1) * 60
    return (
        proven_until_s is not None
        and now_s >= end_s + grace_s
        and proven_until_s >= end_s
        and open_gap_from_s >= end_s
        and minute not in pending
    )


def build_market_manifest(
    minute: int,
    parts: Iterable[tuple[MarketFile, Iterable[SymbolShare]]],
    covered: Iterable[str],
    unfilled_gaps: Mapping[str, Iterable[UnfilledGap]],
    *,
    revision: int = 1,
    written_at_s: float,
) -> dict[str, Any]:
    """The `_SUCCESS` document of one market minute, from its parts and each one's shares."""
    files: list[dict[str, Any]] = []
    symbols: dict[str, dict[str, Any]] = {}
    for file, shares in parts:
        files.append(asdict(file))
        _add_shares(symbols, file.name, shares)
    return _document(
        minute, files, symbols, covered, unfilled_gaps, revision=revision, written_at_s=written_at_s
    )


def _add_shares(symbols: dict[str, dict[str, Any]], file_name: str, shares: Iterable[SymbolShare]) -> None:
    for share in shares:
        entry = symbols.setdefault(
            share.symbol,
            {"rows": 0, "first_trade_id": share.first_trade_id, "last_trade_id": share.last_trade_id,
             "files": []},
        )  # fmt: skip
        entry["rows"] += share.rows
        entry["first_trade_id"] = min(entry["first_trade_id"], share.first_trade_id)
        entry["last_trade_id"] = max(entry["last_trade_id"], share.last_trade_id)
        if file_name not in entry["files"]:
            entry["files"].append(file_name)


def _document(
    minute: int,
    files: list[dict[str, Any]],
    symbols: dict[str, dict[str, Any]],
    covered: Iterable[str],
    unfilled_gaps: Mapping[str, Iterable[UnfilledGap]],
    *,
    revision: int,
    written_at_s: float,
) -> dict[str, Any]:
    gaps = {s: [asdict(g) for g in sorted(set(found))] for s, found in sorted(unfilled_gaps.items())}
    return {
        "manifest_version": MANIFEST_VERSION,
        "layout": "market",
        "exchange": "Binance",
        "minute": minute_label(minute),
        "rows": sum(f["rows"] for f in files),
        "files": sorted(files, key=lambda f: f["name"]),
        "symbols": {s: symbols[s] for s in sorted(symbols)},
        "covered": sorted(set(covered) | set(symbols)),
        "unfilled_gaps": {s: g for s, g in gaps.items() if g},
        "revision": revision,
        "written_at": datetime.fromtimestamp(written_at_s, tz=UTC).isoformat(timespec="milliseconds"),
    }


_REQUIRED = {
    "manifest_version": int,
    "layout": str,
    "minute": str,
    "rows": int,
    "files": list,
    "symbols": dict,
    "covered": list,
    "unfilled_gaps": dict,
    "revision": int,
}
_FILE_FIELDS = frozenset(MarketFile.__dataclass_fields__)
_SYMBOL_FIELDS = frozenset({"rows", "first_trade_id", "last_trade_id", "files"})
_GAP_FIELDS = frozenset(UnfilledGap.__dataclass_fields__)


def parse_market_manifest(data: bytes) -> dict[str, Any]:
    """A market marker's manifest, checked for the fields the contract promises. Raises ValueError."""
    doc = json_document(data, _REQUIRED)
    if doc["layout"] != "market":
        raise ValueError(f"field 'layout' is {doc['layout']!r}, not 'market'")
    for entry in doc["files"]:
        if not isinstance(entry, dict) or set(entry) != _FILE_FIELDS:
            raise ValueError(f"file entry {entry!r} does not have the fields {sorted(_FILE_FIELDS)}")
    for symbol, entry in doc["symbols"].items():
        if not isinstance(entry, dict) or set(entry) != _SYMBOL_FIELDS:
            raise ValueError(
                f"symbol entry {symbol}: {entry!r} does not have the fields {sorted(_SYMBOL_FIELDS)}"
            )
    for symbol, gaps in doc["unfilled_gaps"].items():
        if not isinstance(gaps, list) or any(not isinstance(g, dict) or set(g) != _GAP_FIELDS for g in gaps):
            raise ValueError(f"unfilled gaps of {symbol} are not a list of {sorted(_GAP_FIELDS)}")
    try:
        manifest_minute(doc["minute"])
    except ValueError as exc:
        raise ValueError(
            f"field 'minute' {doc['minute']!r} is not a minute such as 2026-11-23T10:15Z"
        ) from exc
    return doc


def market_gaps(doc: dict[str, Any]) -> dict[str, list[UnfilledGap]]:
    return {s: sorted(UnfilledGap(**g) for g in gaps) for s, gaps in doc["unfilled_gaps"].items()}


def merge_market_parts(
    doc: dict[str, Any],
    parts: Iterable[tuple[MarketFile, Iterable[SymbolShare]]],
    covered: Iterable[str],
    unfilled_gaps: Mapping[str, Iterable[UnfilledGap]],
    *,
    written_at_s: float,
) -> dict[str, Any] | None:
    """The manifest with more parts (trades that came after the minute was marked), the
    unfilled gaps of the symbols in `unfilled_gaps` replaced; None if it lists them all already."""
    listed = {f["name"] for f in doc["files"]}
    new = [(file, shares) for file, shares in parts if file.name not in listed]
    if not new:
        return None
    symbols = {s: {**e, "files": list(e["files"])} for s, e in doc["symbols"].items()}
    for file, shares in new:
        _add_shares(symbols, file.name, shares)
    return _document(
        manifest_minute(doc["minute"]),
        [*doc["files"], *(asdict(file) for file, _ in new)],
        symbols,
        [*doc["covered"], *covered],
        {**market_gaps(doc), **unfilled_gaps},
        revision=doc["revision"] + 1,
        written_at_s=written_at_s,
    )


def with_gaps(
    doc: dict[str, Any], unfilled_gaps: Mapping[str, Iterable[UnfilledGap]], *, written_at_s: float
) -> dict[str, Any]:
    """The manifest with the unfilled gaps of these symbols replaced, and a new revision."""
    return _document(
        manifest_minute(doc["minute"]),
        list(doc["files"]),
        {s: dict(e) for s, e in doc["symbols"].items()},
        doc["covered"],
        {**market_gaps(doc), **unfilled_gaps},
        revision=doc["revision"] + 1,
        written_at_s=written_at_s,
    )
