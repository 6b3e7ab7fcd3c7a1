"""Which release wrote what is on disk: a format version for every kind of file the daemon keeps.

    spool/FORMAT        {"format": 1, "files": {"journal": 1, ...}, "written_by": "0.1.0"}: the
                        version of every kind of file in the spool, checked first at start
    in the files too    wherever the release before versions were recorded reads past it (so a
                        rollback to it still works): each journal segment begins `V <n>`; JSON
                        documents carry "format"; each JSON line carries "format"

Kinds, and what each covers (`VERSIONS`):

    spool     the layout (journal/, objects/, gaps/, markers/, market/), spooled objects (Parquet,
              named `{key}~{sha256}`: the key's grammar is the lake's), FORMAT itself
    journal   journal/*.frames
    state     state.json (the last trade id per symbol; a flat map, so its version is in FORMAT only)
    gaps      gaps/open.json, gaps/unfilled.jsonl
    markers   markers/cursor.json (a flat map: FORMAT only), markers/landed.jsonl
    market    market/cursor.json, market/intents/*.json (2: an intent names its assembly's first
              part and how many parts it made; a version 1 intent is one part of its own)
    dropped   dropped.jsonl
    subscribed  subscribed.json (when each symbol never seen trading was first streamed)

A file or a spool without a version was written before versions were recorded: version 1, read
as it always was. A release reads every version it has ever written, turning an older one into
its own once at start with a log line (`MIGRATIONS`), and refuses a newer one (`NewerFormat`, exit
2) with a message that says to upgrade: it never guesses at what it cannot read.

A change to a kind's format: bump its number in VERSIONS, read the old version too (or add a
migration from it), and add the spool the release before it writes to tests/fixtures (see
tests/e2e/test_upgrade.py), so that upgrade path stays tested.

Not versioned: what is never read back (`conflicts/`, `corrupt/`, files moved aside as
unreadable), the lock file, and the import's and verify's scratch directories (emptied at start).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from collector import __version__
from collector.exceptions import NewerFormat, SpoolError
from collector.files import write_atomically

__all__ = ["FORMAT_FILE", "MIGRATIONS", "VERSIONS", "check", "open_spool", "stamp"]

FORMAT_FILE = "FORMAT"
VERSIONS: dict[str, int] = {
    "spool": 1,
    "journal": 1,
    "state": 1,
    "gaps": 1,
    "markers": 1,
    "market": 2,
    "dropped": 1,
    "subscribed": 1,
}


def _market_parts_counted(spool_dir: Path) -> None:
    """market 1 to 2: nothing to rewrite. A version 1 intent (no `first_seq`, no `parts`) is read
    as an assembly of one part, its own, which is what version 1 always made."""


# (kind, version): turns that kind's files in the spool directory from `version` into
# `version + 1`, in place and idempotently (a crash mid-way runs it again).
MIGRATIONS: dict[tuple[str, int], Callable[[Path], None]] = {("market", 1): _market_parts_counted}
_FIELD = "format"


def stamp(kind: str) -> dict[str, int]:
    """The version field a JSON document or line of `kind` is written with: {"format": n}."""
    return {_FIELD: VERSIONS[kind]}


def check(kind: str, found: object, where: Path | str, *, written_by: str | None = None) -> int:
    """The version `found` says (a document's "format" value; None: written before versions, 1).
    Raises NewerFormat for one this release does not read, SpoolError for one no release writes."""
    if found is None:
        return 1
    if type(found) is not int or found < 1:
        raise SpoolError(
            f"{where} says its {kind} format is {found!r}, which no release of the collector writes; "
            "restore the file from a backup, or move it aside, and start again"
        )
    if found > VERSIONS[kind]:
        raise NewerFormat(where, kind, found, VERSIONS[kind], written_by=written_by)
    return found


def version_in(document: Any, kind: str, where: Path | str) -> int:
    """`check` of a JSON document's or line's own field (a non-object: version 1, read as before)."""
    return check(kind, document.get(_FIELD) if isinstance(document, dict) else None, where)


def open_spool(spool_dir: Path, log: Any) -> None:
    """At start, before anything in the spool is read: refuse a spool a newer release wrote, turn
    older files into this release's once, and record in FORMAT what the spool now holds."""
    path = spool_dir / FORMAT_FILE
    try:
        recorded = json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError) as exc:
        raise SpoolError(
            f"{path} is unreadable ({exc}); it says which release wrote the spool. Restore it, or "
            "remove it if this release wrote the spool (it is read as the earliest format)"
        ) from exc
    if recorded is not None and not isinstance(recorded, dict):
        raise SpoolError(
            f"{path} is not a JSON object; restore it, or remove it if this release wrote the spool"
        )
    recorded = recorded if isinstance(recorded, dict) else {}
    written_by = str(recorded.get("written_by", "an unknown release"))
    check("spool", recorded.get(_FIELD), path, written_by=written_by)
    files: dict[str, Any] = recorded["files"] if isinstance(recorded.get("files"), dict) else {}
    found = {kind: check(kind, files.get(kind), path, written_by=written_by) for kind in VERSIONS}
    if not path.exists() and not any(p.name != ".lock" for p in spool_dir.iterdir()):
        found = dict(VERSIONS)  # a new spool: nothing in it to read or turn into anything
    for kind, version in found.items():
        for step in range(version, VERSIONS[kind]):
            MIGRATIONS[(kind, step)](spool_dir)
            log.warning("collector.spool_migrated", spool=str(spool_dir), files=kind, from_format=step,
                        to_format=step + 1, written_by=written_by)  # fmt: skip
    now = {_FIELD: VERSIONS["spool"], "files": dict(VERSIONS), "written_by": __version__}
    if recorded == now:
        return
    if not path.exists() and any(p.name not in (FORMAT_FILE, ".lock") for p in spool_dir.iterdir()):
        note = "a spool of a release before format versions: read as version 1, as it was"
        log.info("collector.spool_format_recorded", spool=str(spool_dir), formats=VERSIONS, note=note)
    try:
        write_atomically(path, (json.dumps(now, indent=1, sort_keys=True) + "\n").encode())
    except OSError as exc:  # read as it is; recorded at the next start
        log.warning("collector.spool_format_unsaved", path=str(path), error=str(exc))
