"""When a minute is final, and what its `_SUCCESS` manifest says. Pure: no I/O, no clock of its own.

A minute of a symbol is final when all of these hold (`final_minutes` applies them):

- its end plus the grace has passed on the wall clock;
- the stream has proven continuity past its end: a trade of a later time was accepted (so every
  earlier id was received or is a known gap), or the connection has stayed up since the last
  trade and the exchange's clock, extrapolated from that trade, is past the end (a quiet
  market; `proven_until`);
- no batch of the minute is open, being encoded, spooled or uploading;
- no open gap can still hold trades of the minute.

The manifest (the contract is in the README) lists the minute's rows, first and last trade id,
every data file with its size, SHA-256 (base64, as S3's x-amz-checksum-sha256) and ids, and
the unfilled gaps whose trades may fall inside it. A minute without trades gets one with zero
rows. When data lands later in a marked minute, the manifest is merged (`merge_file`) and its
`revision` goes up.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any, Final

from collector.lake.layout import EXCHANGE, parse_object_key

__all__ = [
    "MANIFEST_VERSION",
    "LandedFile",
    "UnfilledGap",
    "build_manifest",
    "final_minutes",
    "json_document",
    "landed_file",
    "manifest_files",
    "manifest_gaps",
    "manifest_minute",
    "merge_file",
    "merge_manifests",
    "minute_label",
    "parse_manifest",
    "proven_until",
]

MANIFEST_VERSION: Final = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class LandedFile:
    """One data object of a minute, as its marker lists it."""

    name: str  # the file name inside the minute's partition
    bytes: int
    sha256: str  # base64 of the SHA-256 digest, as S3 reports ChecksumSHA256
    rows: int
    first_trade_id: int
    last_trade_id: int


@dataclass(frozen=True, slots=True, order=True)
class UnfilledGap:
    """Trade ids that will not land, and whose trades may fall in the minute a manifest is for."""

    first_missing: int
    last_missing: int
    reason: str  # not_served, banned, rest_unavailable, too_large, spool_full, ...
    detail: str = ""


_FILE_FIELDS = frozenset(f.name for f in fields(LandedFile))
_GAP_FIELDS = frozenset(f.name for f in fields(UnfilledGap))


def minute_label(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%Y-%m-%dT%H:%MZ")


def manifest_minute(label: str) -> int:
    """The inverse of `minute_label`."""
    return int(datetime.strptime(label, "%Y-%m-%dT%H:%MZ").replace(tzinfo=UTC).timestamp() // 60)


def landed_file(key: str, size: int, sha256_b64: str, rows: int) -> tuple[str, int, LandedFile] | None:
    """(symbol, minute, LandedFile) for a data object's key; None if the key is not a data object."""
    name = parse_object_key(key)
    if name is None:
        return None
    entry = LandedFile(
        name=name.file_name,
        bytes=size,
        sha256=sha256_b64,
        rows=rows,
        first_trade_id=name.first_trade_id,
        last_trade_id=name.last_trade_id,
    )
    return name.symbol, name.minute, entry


def build_manifest(
    symbol: str,
    minute: int,
    files: Iterable[LandedFile],
    unfilled_gaps: Iterable[UnfilledGap] = (),
    *,
    revision: int = 1,
    written_at_s: float,
) -> dict[str, Any]:
    """The `_SUCCESS` document of one minute. Files are listed in trade-id order."""
    listed = sorted({f.name: f for f in files}.values(), key=lambda f: (f.first_trade_id, f.name))
    return {
        "manifest_version": MANIFEST_VERSION,
        "exchange": EXCHANGE,
        "symbol": symbol,
        "minute": minute_label(minute),
        "rows": sum(f.rows for f in listed),
        "first_trade_id": min((f.first_trade_id for f in listed), default=None),
        "last_trade_id": max((f.last_trade_id for f in listed), default=None),
        "files": [asdict(f) for f in listed],
        "unfilled_gaps": [asdict(g) for g in sorted(set(unfilled_gaps))],
        "revision": revision,
        "written_at": datetime.fromtimestamp(written_at_s, tz=UTC).isoformat(timespec="milliseconds"),
    }


_REQUIRED = {
    "manifest_version": int,
    "symbol": str,
    "minute": str,
    "rows": int,
    "files": list,
    "unfilled_gaps": list,
    "revision": int,
}


def json_document(data: bytes, required: dict[str, type]) -> dict[str, Any]:
    """A JSON object with these top-level fields of these types (any marker's first check).
    Raises ValueError naming what is wrong."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    for field, kind in required.items():
        if not isinstance(doc.get(field), kind):
            raise ValueError(f"field {field!r} is missing or not a {kind.__name__}")
    return doc


def parse_manifest(data: bytes) -> dict[str, Any]:
    """A marker's manifest, checked for the fields the contract promises. Raises ValueError."""
    doc = json_document(data, _REQUIRED)
    for entry in doc["files"]:
        if not isinstance(entry, dict) or set(entry) != _FILE_FIELDS:
            raise ValueError(f"file entry {entry!r} does not have the fields {sorted(_FILE_FIELDS)}")
    for entry in doc["unfilled_gaps"]:
        if not isinstance(entry, dict) or set(entry) != _GAP_FIELDS:
            raise ValueError(f"gap entry {entry!r} does not have the fields {sorted(_GAP_FIELDS)}")
    try:
        manifest_minute(doc["minute"])
    except ValueError as exc:
        raise ValueError(
            f"field 'minute' {doc['minute']!r} is not a minute such as 2026-11-23T10:15Z"
        ) from exc
    return doc


def manifest_files(doc: dict[str, Any]) -> list[LandedFile]:
    return [LandedFile(**entry) for entry in doc["files"]]


def manifest_gaps(doc: dict[str, Any]) -> list[UnfilledGap]:
    return sorted(UnfilledGap(**entry) for entry in doc["unfilled_gaps"])


def merge_file(
    doc: dict[str, Any],
    landed: LandedFile,
    *,
    written_at_s: float,
    unfilled_gaps: Iterable[UnfilledGap] | None = None,
) -> dict[str, Any] | None:
    """The manifest with `landed` added, and its unfilled gaps replaced if given; None if it
    lists that file already with the same checksum."""
    files = manifest_files(doc)
    if any(f.name == landed.name and f.sha256 == landed.sha256 for f in files):
        return None
    files = [f for f in files if f.name != landed.name] + [landed]
    return build_manifest(
        doc["symbol"],
        manifest_minute(doc["minute"]),
        files,
        manifest_gaps(doc) if unfilled_gaps is None else unfilled_gaps,
        revision=doc["revision"] + 1,
        written_at_s=written_at_s,
    )


def proven_until(
    last_trade_s: float | None, *, connected_since_then: bool, seconds_since_then: float
) -> float | None:
    """Trade time (epoch seconds) up to which every trade of a symbol is received or a known gap.

    After its last trade: that trade's time, or, when the connection has stayed up ever since,
    the exchange's clock extrapolated from it (a quiet market, not a hole). This uses elapsed
    time, not the host's clock, so a skewed instance clock does not move it.
    """
    if last_trade_s is None:
        return None
    return last_trade_s + seconds_since_then if connected_since_then else last_trade_s


def final_minutes(
    cursor: int,
    *,
    now_s: float,
    grace_s: float,
    proven_until_s: float | None,
    open_gap_from_s: float,
    pending: set[int],
    limit: int = 240,
) -> range:
    """The minutes from `cursor` on that are final now (possibly none), at most `limit`.

    `open_gap_from_s` is the earliest trade time an open gap's missing trades may have (inf
    when none is open); `pending` the minutes with a batch open or not yet landed.
    """
    if proven_until_s is None:
        return range(cursor, cursor)
    minute = cursor
    while minute - cursor < limit:
        end_s = (minute + 1) * 60
        if now_s < end_s + grace_s or proven_until_s < end_s or open_gap_from_s < end_s or minute in pending:
            break
        minute += 1
    return range(cursor, minute)


def merge_manifests(
    found: dict[str, Any], mine: dict[str, Any], symbol: str, minute: int, *, written_at_s: float
) -> dict[str, Any] | None:
    """A minute the landing zone has a marker for already (an import of Binance's archive
    wrote it while the collector was away): the files and unfilled gaps of both, with the
    found marker's revision + 1; None when the found one lists everything already."""
    files = {f.name: f for f in manifest_files(found)}
    mine_files = {f.name: f for f in manifest_files(mine)}
    gaps = sorted(set(manifest_gaps(found)) | set(manifest_gaps(mine)))
    if mine_files.keys() <= files.keys() and gaps == manifest_gaps(found):
        return None
    files.update(mine_files)
    return build_manifest(
        symbol, minute, files.values(), gaps, revision=found["revision"] + 1, written_at_s=written_at_s
    )
