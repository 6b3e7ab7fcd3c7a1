"""A spool an earlier release left, recovered by this one: every trade once, every marker right.

Each `tests/fixtures/spool-v*/` is what a release's collector left when it was SIGKILLed in the
middle of a run (open batches in the journal, sealed objects in the spool, an open gap, a
market intent with its part, a marker book, `state.json`; `fixture.json` says what), written by
that release's own classes, deterministically, by `tests/fixtures/make_spool.py`. This release
starts on a copy of it against the local feed sending the same tape, and must land every trade
of the tape exactly once and mark every minute as the audit expects.

`spool-v1` is the spool of the releases before format versions were recorded (no FORMAT file,
no version in any file). When a release changes a format on disk (and bumps its number in
`collector/formats.py`), add the spool the release before it writes as the next `spool-vN`, in
the same commit, so that upgrade path stays tested:

    git worktree add /tmp/release <the last release's tag or commit>
    PYTHONPATH=/tmp/release python tests/fixtures/make_spool.py tests/fixtures/spool-vN <tag>

Run the maker from this checkout: it imports only `collector`, which PYTHONPATH takes from the
release (check `made_by` in the fixture.json it writes); when the release's classes differ from
what the maker calls, adapt the maker. Keep fixtures small (this one is 32 KB).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from collector.feed.tapes import load_replay
from collector.formats import FORMAT_FILE, VERSIONS
from tests.conftest import REPO, Proc, collector_env, reached, start_emulator, stop_cleanly, wait_for
from tests.support.landing import ids_by_symbol

FIXTURES = REPO / "tests" / "fixtures"
SPOOLS = sorted(p.name for p in FIXTURES.glob("spool-v*"))


@pytest.mark.parametrize("fixture", SPOOLS)
def test_a_spool_an_earlier_release_left_is_recovered_exactly_once(
    procs: Callable[..., Proc], tmp_path: Path, fixture: str
) -> None:
    about = json.loads((FIXTURES / fixture / "fixture.json").read_text())
    for part in ("spool", "landing"):
        shutil.copytree(FIXTURES / fixture / part, tmp_path / part)
    tape = load_replay(FIXTURES / fixture / about["tape"]).trades
    # The whole tape is the exchange's past before the collector starts (REST has every id, as
    # Binance's does), and each connection is sent all of it again (the overlap is dropped).
    feed, url = start_emulator(procs, "--replay", str(FIXTURES / fixture / about["tape"]), "--speed", "0",
                               "--live", "--redeliver", str(len(tape)))  # fmt: skip
    feed.wait_event("emulator.tape_finished")
    env = collector_env(url, tmp_path, symbols=",".join(about["symbols"]), watched_symbols=about["watched"],
                        marker_grace_s="1")  # fmt: skip
    collector = procs("run", env=env)
    started = collector.wait_event("collector.started")
    assert started["resealed_from_journal"] >= 2  # a batch of each symbol was open
    assert started["recovered_objects"] == started["resealed_from_journal"] + 3  # and a batch of each, a part
    minute_of = {t.trade_id: int(json.loads(t.payload_ms)["T"]) // 60_000 for t in tape}
    done = range(min(minute_of.values()), max(minute_of.values()))  # all but the tape's last, cut short
    wait_for(lambda: _marked(collector) >= len(done) and _market_marked(collector) >= len(done),
             what=f"minutes {done} marked, per symbol and market-wide")  # fmt: skip
    sent = {s: sorted(t.trade_id for t in tape if t.symbol == s) for s in about["symbols"]}
    collector.wait_event("collector.stats", reached({s: ids[-1] for s, ids in sent.items()}))  # all of it
    stop_cleanly(collector)

    watched = about["watched"]
    report = _audit(tmp_path / "landing", done)
    assert report["problems"] == [] and report["pending_minutes"] == 0, report
    # The market's last minute is not final at the stop: its trades wait in the spool as sources.
    (other,) = set(about["symbols"]) - {watched}
    assert _ids(tmp_path / "landing" / "Binance" / "_market") == {
        other: [i for i in sent[other] if minute_of[i] < done.stop]
    }
    assert _ids(tmp_path / "spool" / "objects" / "_parts") == {
        other: [i for i in sent[other] if minute_of[i] >= done.stop]
    }
    shutil.rmtree(tmp_path / "landing" / "Binance" / "_market")  # the per-symbol reader's turn
    assert ids_by_symbol(tmp_path / "landing") == {watched: sent[watched]}  # each exactly once
    assert collector.named("collector.gap_filled")  # the open gap, from REST
    assert collector.named("collector.landing_conflict") == []
    assert [e for e in collector.events if e.get("level") == "error"] == []
    assert len(collector.named("collector.spool_format_recorded")) == 1  # the one step of this upgrade
    assert json.loads((tmp_path / "spool" / FORMAT_FILE).read_text())["files"] == VERSIONS


def test_a_spool_a_newer_release_wrote_stops_the_start_with_what_to_do(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    """A rollback past a format change (or a copied spool): exit 2 at once, every file as it was."""
    spool = shutil.copytree(FIXTURES / SPOOLS[-1] / "spool", tmp_path / "spool")
    newer = {"format": 1, "files": {**VERSIONS, "journal": VERSIONS["journal"] + 1}, "written_by": "9.1.0"}
    (spool / FORMAT_FILE).write_text(json.dumps(newer))
    before = _contents(spool)
    collector = procs("run", env=collector_env("ws://127.0.0.1:9", tmp_path))
    assert collector.popen.wait(timeout=120) == 2, collector.stderr
    assert "was written by a newer release of the collector (collector 9.1.0)" in collector.stderr
    assert "Upgrade the collector to that release or a later one" in collector.stderr
    assert "Traceback" not in collector.stderr and collector.named("collector.started") == []
    assert _contents(spool) == before  # nothing read, resealed, moved or rewritten


def _contents(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".lock"
    }


def _marked(proc: Proc) -> int:
    return len(proc.named("collector.minute_marked"))


def _market_marked(proc: Proc) -> int:
    return len(proc.named("collector.market_minute_marked"))


def _ids(root: Path) -> dict[str, list[int]]:
    """Sorted trade ids per symbol in every Parquet file under `root` (landed, or spooled)."""
    found: dict[str, list[int]] = {}
    for path in sorted(p for p in root.rglob("*") if ".parquet" in p.name):
        table = pq.read_table(path, columns=["symbol", "trade_id"])
        for symbol, trade_id in zip(table.column("symbol").to_pylist(), table.column("trade_id").to_pylist(),
                                    strict=True):  # fmt: skip
            found.setdefault(symbol, []).append(trade_id)
    return {symbol: sorted(ids) for symbol, ids in found.items()}


def _audit(root: Path, minutes: range) -> dict[str, Any]:
    from collector.lake.completion import minute_label

    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "audit", str(root), "--json",
         "--from", minute_label(minutes.start)[:16], "--to", minute_label(minutes.stop)[:16]],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    report["exit"] = done.returncode
    return report
