"""collector.formats: every file the daemon keeps says its format; a newer one is refused, never
misread; a spool from before versions is read as version 1 and recorded once."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from collector import formats
from collector.counters import Registry
from collector.exceptions import NewerFormat, SpoolError
from collector.formats import FORMAT_FILE, VERSIONS, open_spool
from collector.gaps.ledger import GapLedger, OpenGap, UnfilledRange
from collector.lake.completion import LandedFile
from collector.lake.sinks import LocalSink
from collector.landing.inflight import InFlight
from collector.landing.journal import Journal
from collector.landing.markers import MarkerBook, MarkerWriter
from collector.landing.market_minutes import MarketMinutes
from collector.landing.pipeline import Landing, SpoolBudget
from collector.landing.spool import Spool
from tests.conftest import REPO

LOG = structlog.get_logger()
BEFORE_VERSIONS = REPO / "tests" / "fixtures" / "spool-v1" / "spool"


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def test_a_spool_from_before_versions_is_read_as_version_1_and_recorded_once(tmp_path: Path) -> None:
    spool = shutil.copytree(BEFORE_VERSIONS, tmp_path / "spool")
    with capture_logs() as logs:
        open_spool(spool, LOG)
        open_spool(spool, LOG)
    (recorded,) = events(logs, "collector.spool_format_recorded")
    assert recorded["formats"] == VERSIONS
    saved = json.loads((spool / FORMAT_FILE).read_text())
    assert saved["format"] == 1 and saved["files"] == VERSIONS and saved["written_by"]


def test_a_new_spool_is_recorded_without_a_word(tmp_path: Path) -> None:
    with capture_logs() as logs:
        open_spool(tmp_path, LOG)
    assert logs == [] and json.loads((tmp_path / FORMAT_FILE).read_text())["files"] == VERSIONS


@pytest.mark.parametrize("field", ["spool", "journal", "market"])
def test_a_spool_a_newer_release_wrote_is_refused_with_what_to_do_and_left_as_it_is(
    tmp_path: Path, field: str
) -> None:
    newer = {"format": 1, "files": {**VERSIONS}, "written_by": "9.0.0"}
    if field == "spool":
        newer["format"] = VERSIONS["spool"] + 1
    else:
        newer["files"][field] = VERSIONS[field] + 1  # type: ignore[index]
    (tmp_path / FORMAT_FILE).write_text(json.dumps(newer))
    with pytest.raises(NewerFormat) as refused:
        open_spool(tmp_path, LOG)
    message = str(refused.value)
    assert (
        f"{tmp_path / FORMAT_FILE} was written by a newer release of the collector (collector 9.0.0)"
        in message
    )
    assert f"its {field} format is {VERSIONS[field] + 1}, and this release reads up to {VERSIONS[field]}" in (
        message
    )
    assert "Upgrade the collector to that release or a later one" in message
    assert json.loads((tmp_path / FORMAT_FILE).read_text()) == newer


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"format": "two"}', '{"files": {"gaps": 0}}'])
def test_a_format_no_release_writes_is_refused_too(tmp_path: Path, text: str) -> None:
    (tmp_path / FORMAT_FILE).write_text(text)
    with pytest.raises(SpoolError, match="FORMAT"):
        open_spool(tmp_path, LOG)


def test_an_older_format_is_migrated_once_with_a_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machinery a format change uses: dropped.jsonl at version 2 (say, a field renamed)."""
    (tmp_path / "dropped.jsonl").write_text('{"symbol": "BTCUSDT", "minute": 5}\n')
    open_spool(tmp_path, LOG)  # recorded as version 1

    def rename(spool: Path) -> None:
        lines = (spool / "dropped.jsonl").read_text().replace('"minute"', '"minute_utc"')
        (spool / "dropped.jsonl").write_text(lines)

    monkeypatch.setitem(VERSIONS, "dropped", 2)
    monkeypatch.setitem(formats.MIGRATIONS, ("dropped", 1), rename)
    with capture_logs() as logs:
        open_spool(tmp_path, LOG)
        open_spool(tmp_path, LOG)
    (migrated,) = events(logs, "collector.spool_migrated")
    assert (migrated["files"], migrated["from_format"], migrated["to_format"]) == ("dropped", 1, 2)
    assert "minute_utc" in (tmp_path / "dropped.jsonl").read_text()
    assert json.loads((tmp_path / FORMAT_FILE).read_text())["files"]["dropped"] == 2


# ---- each file, on its own ------------------------------------------------------------------------


def _landing(spool: Path) -> Landing:
    sink = LocalSink(spool.parent / "landing")
    writer = MarkerWriter(MarkerBook(spool / "markers"), sink, grace_s=1, log=LOG)
    return Landing(spool=Spool(spool), journal=Journal(spool / "journal"), sink=sink, markers=writer,
                   budget=SpoolBudget(10**9), output_format="parquet", save_state=lambda: None,
                   gaps_in=lambda s, m: [], inflight=InFlight(10**8, hold_back=lambda hold: None), log=LOG,
                   metrics=Registry())  # fmt: skip


def _market(spool: Path) -> MarketMinutes:
    sink = LocalSink(spool.parent / "landing")
    market = MarketMinutes(root=spool / "market", spool=Spool(spool), sink=sink, output_format="parquet",
                           members=lambda: [], final=lambda s, m, now: True, still_expected=lambda s: True,
                           gaps_in=lambda s, m: [], log=LOG, metrics=Registry())  # fmt: skip
    market.recover([])
    return market


def _journal(spool: Path) -> object:
    return Journal(spool / "journal").leftovers()


def _gaps(spool: Path) -> object:
    return GapLedger(spool / "gaps")


def _book(spool: Path) -> object:
    return MarkerBook(spool / "markers")


# (file under the spool, what it holds in a newer format, the reader a start runs)
NEWER: dict[str, tuple[str, str, Callable[[Path], object]]] = {
    "journal": ("journal/000000000001.frames", "V 2\nB BTCUSDT-5-1 7 1\n{}\n", _journal),
    "open gaps": ("gaps/open.json", '[{"format": 2, "symbol": "BTCUSDT"}]', _gaps),
    "unfilled": ("gaps/unfilled.jsonl", '{"symbol": "BTCUSDT"}\n{"format": 2}\n', _gaps),
    "landed": ("markers/landed.jsonl", '{"format": 2, "symbol": "BTCUSDT"}\n', _book),
    "market cursor": ("market/cursor.json", '{"format": 3, "next_minute": 5}', _market),
    "market intent": ("market/intents/5-0.json", '{"format": 3, "minute": 5}', _market),
    "dropped": ("dropped.jsonl", '{"format": 2, "symbol": "BTCUSDT", "minute": 5}\n', _landing),
}


@pytest.mark.parametrize("name", NEWER)
def test_every_file_refuses_a_newer_version_of_itself(tmp_path: Path, name: str) -> None:
    relative, text, read = NEWER[name]
    spool = tmp_path / "spool"
    (spool / relative).parent.mkdir(parents=True, exist_ok=True)
    (spool / relative).write_text(text)
    with pytest.raises(NewerFormat, match=r"format is \d+, and this release reads up to \d+") as refused:
        read(spool)
    found, reads = map(
        int, re.search(r"format is (\d+), and this release reads up to (\d+)", str(refused.value)).groups()
    )  # type: ignore[union-attr]
    assert found == reads + 1
    assert str(spool / relative) in str(refused.value)
    assert (spool / relative).read_text() == text  # left as it is


def test_every_file_written_says_its_version(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    journal = Journal(spool / "journal")
    journal.append("BTCUSDT-5-1", 7, [b"{}"])
    journal.close_all()
    ledger = GapLedger(spool / "gaps")
    ledger.add(OpenGap(symbol="BTCUSDT", first_missing=2, last_missing=3, next_id=2, detected_at_ns=1))
    ledger.record_unfilled(UnfilledRange(symbol="BTCUSDT", first_missing=2, last_missing=3, reason="gone"))
    landed = LandedFile(
        name="batch-1-2.parquet", bytes=9, sha256="x", rows=2, first_trade_id=1, last_trade_id=2
    )
    MarkerBook(spool / "markers").record("BTCUSDT", 5, landed)
    landing = _landing(spool)
    landing._record_dropped(_one_batch())
    stamped = [
        json.loads((spool / "gaps" / "open.json").read_text())[0],
        *(json.loads(line) for line in (spool / "gaps" / "unfilled.jsonl").read_text().splitlines()),
        *(json.loads(line) for line in (spool / "markers" / "landed.jsonl").read_text().splitlines()),
        *(json.loads(line) for line in (spool / "dropped.jsonl").read_text().splitlines()),
    ]
    assert [doc["format"] for doc in stamped] == [1, 1, 1, 1]
    (segment,) = (spool / "journal").glob("*.frames")
    assert segment.read_bytes().startswith(b"V 1\nB BTCUSDT-5-1 7 1\n")
    assert [b.batch_id for b in Journal(spool / "journal").leftovers()] == ["BTCUSDT-5-1"]


def _one_batch() -> Any:
    from tests.landing.test_pipeline import batches

    return batches(1)[0]
