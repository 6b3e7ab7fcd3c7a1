"""`collector audit` passes what the collector wrote and finds each planted defect, locally and on S3."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.lake.completion import parse_manifest
from tests.conftest import REPO, Proc, stop_cleanly
from tests.support.audit import SYMBOL, _audit, _capture


def _markers(root: Path) -> list[Path]:
    return sorted(root.glob(f"Binance/{SYMBOL}/*/*/*/*/*/_SUCCESS"))


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One landing zone written by the real collector; each test plants its defect in a copy."""
    tmp = tmp_path_factory.mktemp("audit")
    started: list[Proc] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Proc:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
        full_env.update(env or {}, PYTHONUNBUFFERED="1")
        proc = Proc([sys.executable, "-m", "collector.cli", *args], full_env, REPO)
        started.append(proc)
        return proc

    try:
        stop_cleanly(_capture(start, tmp))
    finally:
        for proc in started:
            proc.kill()
    yield tmp / "landing"


@pytest.fixture
def zone(landed: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "landing"
    shutil.copytree(landed, copy)
    return copy


def _data_files(root: Path) -> list[Path]:
    return sorted(root.glob(f"Binance/{SYMBOL}/*/*/*/*/*/*.parquet"))


def _marked_file(root: Path) -> Path:
    """A data file in a marked minute, not the first one (so a gap it leaves is inside the range)."""
    marked = [p for p in _data_files(root) if (p.parent / "_SUCCESS").exists()]
    return marked[len(marked) // 2]


def test_a_clean_landing_zone_passes_with_its_figures(zone: Path) -> None:
    code, report = _audit(str(zone))
    assert code == 0 and report["ok"], report["problems"]
    markers = _markers(zone)
    assert report["markers"] == report["minutes"] == len(markers)
    rows = sum(parse_manifest(m.read_bytes())["rows"] for m in markers)
    assert report["rows"] == rows > 0
    assert report["bytes_per_trade"] == round(report["bytes"] / rows, 3)
    assert report["files_per_minute"] > 0


def test_a_deleted_file_is_found(zone: Path) -> None:
    victim = _marked_file(zone)
    victim.unlink()
    code, report = _audit(str(zone))
    assert code == 1
    assert report["problem_counts"]["missing_file"] == 1
    assert report["problem_counts"]["gap"] == 1
    assert victim.name in json.dumps(report["problems"])


def test_a_gap_is_found_even_when_the_marker_agrees(zone: Path) -> None:
    victim = _marked_file(zone)
    marker = victim.parent / "_SUCCESS"
    doc = parse_manifest(marker.read_bytes())
    doc["files"] = [f for f in doc["files"] if f["name"] != victim.name]
    doc["rows"] = sum(f["rows"] for f in doc["files"])
    marker.write_text(json.dumps(doc))
    victim.unlink()
    code, report = _audit(str(zone))
    assert code == 1 and set(report["problem_counts"]) == {"gap"}
    first, last = (int(x) for x in victim.stem.split("-")[1:])
    assert f"ids {first}..{last} missing" in report["problems"][0]["detail"]


def test_a_duplicated_file_is_found(zone: Path) -> None:
    original = _marked_file(zone)
    shutil.copy(original, original.with_name(original.name.replace("batch-", "backfill-")))
    code, report = _audit(str(zone))
    assert code == 1
    assert report["problem_counts"]["duplicate_trades"] == 1
    assert report["problem_counts"]["unlisted_file"] == 1


def test_a_corrupted_object_is_found(zone: Path) -> None:
    victim = _marked_file(zone)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    code, report = _audit(str(zone))
    assert code == 1 and report["problem_counts"]["checksum_mismatch"] == 1


def test_a_missing_marker_is_found(zone: Path) -> None:
    marker = _marked_file(zone).parent / "_SUCCESS"
    marker.unlink()
    code, report = _audit(str(zone))
    assert code == 1 and report["problem_counts"] == {"missing_marker": 1}


def test_a_broken_marker_and_a_range_without_anything_are_found(zone: Path) -> None:
    (_marked_file(zone).parent / "_SUCCESS").write_text("{not json")
    code, report = _audit(str(zone))
    assert code == 1 and report["problem_counts"] == {"bad_marker": 1}
    code, report = _audit(str(zone), "--from", "2001-01-01T00:00", "--to", "2001-01-01T00:03")
    assert code == 1 and report["problem_counts"] == {"missing_minute": 3}


def test_a_stray_object_in_a_partition_is_found(zone: Path) -> None:
    (_marked_file(zone).parent / "notes.txt").write_text("not data")
    code, report = _audit(str(zone))
    assert code == 1 and report["problem_counts"] == {"unexpected_object": 1}
    assert "notes.txt" in report["problems"][0]["detail"]


def test_bad_arguments_say_what_to_do(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "audit", str(tmp_path / "nowhere")],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "nowhere does not exist" in done.stderr
    (tmp_path / "a-file").write_text("x")
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "audit", str(tmp_path / "a-file")],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "a-file is not a directory" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "audit", str(tmp_path), "--from", "yesterday"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "not a UTC time" in done.stderr


def test_by_default_every_symbol_is_checked_and_unmarked_minutes_are_pending(zone: Path) -> None:
    shutil.copytree(zone / "Binance" / SYMBOL, zone / "Binance" / "ETHUSDT")
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "audit", str(zone), "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["symbols"] == ["BTCUSDT", "ETHUSDT"], done.stderr
    assert report["pending_minutes"] >= 2 and report["pending_rows"] > 0  # the last minute of each
    assert report["found_rows"] == report["rows"] + report["pending_rows"]
    assert {p["symbol"] for p in report["pending"]} == {"BTCUSDT", "ETHUSDT"}
    text = subprocess.run(
        [sys.executable, "-m", "collector.cli", "audit", str(zone)],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    ).stdout  # fmt: skip
    assert (
        f"checked {report['rows']:,} trades in {report['minutes']:,} minutes of the {report['found_rows']:,}"
        in text
    )
    assert "pending:" in text and "after the last marker" in text


def test_more_defects_of_a_kind_than_are_listed_say_how_many_more(zone: Path) -> None:
    folder = _marked_file(zone).parent
    for i in range(25):
        (folder / f"stray-{i}.txt").write_text("not data")
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "audit", str(zone), "--symbols", SYMBOL],
        capture_output=True, text=True, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "unexpected_object 25" in done.stdout and "... and 5 more unexpected_object" in done.stdout


def test_a_symbols_value_that_is_not_a_symbol_is_a_bad_argument(zone: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "audit", str(zone), "--symbols", "BTC-USDT"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert (
        done.returncode == 2
        and "--symbols 'BTC-USDT'" in done.stderr
        and "not a Binance symbol" in done.stderr
    )
