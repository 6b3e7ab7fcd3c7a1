"""`collector import` and `verify` as processes, against the local feed's archive, REST API and stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from collector.feed.simulated import Market
from collector.lake.completion import parse_manifest
from tests.conftest import REPO, Proc, collector_env, start_emulator, stop_cleanly, wait_for
from tests.support.history import day_number, import_command, run_import

PER_DAY = 2_880  # two trades a minute: a day is 1,440 minutes in seconds of work

DAY_MS, DAY_US = date(2024, 12, 31), date(2025, 1, 1)  # either side of the switch to µs times


MARKET = Market(("BTCUSDT",), PER_DAY)


def market_urls(procs: Callable[..., Proc], *extra: str) -> tuple[str, str]:
    """The local feed of MARKET with its archive: (stream URL, REST and archive URL)."""
    _, url = start_emulator(
        procs, "--symbols", "BTCUSDT", "--market", "--archive", "--trades-per-day", str(PER_DAY), *extra
    )
    return url, url.replace("ws://", "http://")


def market_feed(procs: Callable[..., Proc], *extra: str) -> str:
    return market_urls(procs, "--first-id", "1", *extra)[1]


def audit(landing: Path, *extra: str, env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    target = [] if extra and extra[0].startswith("s3://") else [str(landing)]
    done = subprocess.run(
        [sys.executable, "-m", "collector.cli", "audit", *target, "--json", *extra],
        capture_output=True,
        text=True,
        env={**os.environ, **(env_extra or {})},
        cwd=REPO,
        timeout=300,
        check=False,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    report["exit"] = done.returncode
    return report


def landed(landing: Path) -> dict[int, tuple[Any, ...]]:
    """trade id -> (price, quantity, trade time as stored, its unit, maker, kind, event time, received_at)."""
    rows: dict[int, tuple[Any, ...]] = {}
    for path in landing.rglob("*.parquet"):
        table = pq.read_table(path)
        unit = table.schema.field("trade_time").type.unit
        columns = [table.column(c).to_pylist() for c in ("trade_id", "price", "quantity", "is_buyer_maker")]
        times = table.column("trade_time").cast("int64").to_pylist()
        events, received = table.column("event_time").to_pylist(), table.column("received_at").to_pylist()
        for i, trade_id in enumerate(columns[0]):
            assert trade_id not in rows, f"trade {trade_id} landed twice ({path.name})"
            rows[trade_id] = (
                columns[1][i],
                columns[2][i],
                times[i],
                unit,
                columns[3][i],
                path.name.split("-")[0],
                events[i],
                received[i],
            )
    return rows


def expected_ids(*days: date) -> list[int]:
    return [
        i
        for d in days
        for i in range(
            MARKET.first_id("BTCUSDT", day_number(d)), MARKET.first_id("BTCUSDT", day_number(d)) + PER_DAY
        )
    ]


@pytest.mark.slow
def test_two_days_either_side_of_2025_land_every_trade_once_exact_and_marked(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    rest = market_feed(procs)
    landing = tmp_path / "landing"
    done = run_import(rest, landing, DAY_MS, DAY_US)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["archive_trades"] == summary["landed_trades"] == 2 * PER_DAY
    assert summary["minutes_marked"] == 2 * 1440 and summary["skipped"] == []
    rows = landed(landing)
    assert sorted(rows) == expected_ids(DAY_MS, DAY_US)
    for trade_id, (price, qty, stored, unit, maker, kind, event, received) in rows.items():
        want = MARKET.trade("BTCUSDT", trade_id)
        assert format(price, "f") == f"{want.price // 10**8}.{want.price % 10**8:08d}"  # exact decimals
        assert int(qty.scaleb(8)) == want.quantity and maker == want.is_buyer_maker
        assert (kind, event, received) == ("archive", None, None)  # nothing the archive lacks is invented
        in_2025 = want.time_us >= datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1e6
        assert unit == ("us" if in_2025 else "ms")
        assert stored == (want.time_us if in_2025 else want.time_us // 1000)
    markers = list(landing.rglob("_SUCCESS"))
    assert len(markers) == 2 * 1440
    assert sum(parse_manifest(m.read_bytes())["rows"] for m in markers) == 2 * PER_DAY
    report = audit(landing)
    assert report["exit"] == 0 and report["rows"] == 2 * PER_DAY and report["pending_minutes"] == 0, report
    again = run_import(rest, landing, DAY_MS, DAY_US)  # a second run lands nothing and says so
    assert again.returncode == 0 and json.loads(again.stdout)["landed_trades"] == 0
    human = run_import(rest, landing, DAY_MS, DAY_MS, "--downloads", "1")
    assert json.loads(human.stdout)["already_in_lake"] == PER_DAY


@pytest.mark.slow
def test_holes_the_archive_has_are_filled_from_rest_and_a_bad_file_lands_nothing(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    first = MARKET.first_id("BTCUSDT", day_number(DAY_MS))
    missing = f"{DAY_MS}:missing:{first + 100}-{first + 159}"
    days = [DAY_MS, DAY_MS + timedelta(1), DAY_MS + timedelta(2), DAY_MS + timedelta(3)]
    rest = market_feed(
        procs,
        "--archive-defect",
        missing,
        "--archive-defect",
        f"{days[1]}:truncate:16:00",
        "--archive-defect",
        f"{days[2]}:bad-checksum",
        "--archive-defect",
        f"{days[3]}:header",
    )
    landing = tmp_path / "landing"
    done = run_import(rest, landing, days[0], days[3])
    assert done.returncode == 1  # a file was skipped
    summary = json.loads(done.stdout)
    (skipped,) = summary["skipped"]
    assert skipped["name"] == f"BTCUSDT-trades-{days[2]}.zip" and skipped["reason"] == "checksum_mismatch"
    assert (
        "does not match its CHECKSUM" in skipped["message"]
        and "download it again later" in skipped["message"]
    )
    assert summary["filled_from_rest"] == 60 + PER_DAY // 3  # the 60 missing ids, and 16:00-24:00
    rows = landed(landing)
    assert sorted(rows) == expected_ids(days[0], days[1], days[3])  # the bad day: nothing of it
    assert {rows[first + 120][5]} == {"backfill"}
    assert not list((landing / "Binance" / "BTCUSDT" / "2025" / "01" / "02").rglob("*"))
    report = audit(landing, "--from", f"{days[0]}T00:00", "--to", f"{days[1] + timedelta(1)}T00:00")
    assert report["exit"] == 0, report["problems"]


@pytest.mark.slow
def test_a_day_not_published_yet_is_reported_and_the_others_imported(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    rest = market_feed(procs, "--archive-defect", f"{DAY_US}:unpublished")
    done = run_import(rest, tmp_path / "landing", DAY_MS, DAY_US)
    summary = json.loads(done.stdout)
    assert done.returncode == 1 and [s["reason"] for s in summary["skipped"]] == ["not_published"]
    assert "import it later" in summary["skipped"][0]["message"]
    assert summary["landed_trades"] == PER_DAY


@pytest.mark.slow
def test_an_import_over_live_capture_lands_only_what_the_lake_lacks_and_rewrites_those_markers(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    """The seam: live capture from yesterday 12:00:30 (mid-minute) that lost one trade in 301 for
    good (unfilled: too large for its backfill budget), then the import of yesterday."""
    yesterday = datetime.now(tz=UTC).date() - timedelta(days=1)
    noon = datetime(yesterday.year, yesterday.month, yesterday.day, 12, 0, 10, tzinfo=UTC)  # 12:00:30 first
    seconds_ago = str(datetime.now(tz=UTC).timestamp() - noon.timestamp())
    url, rest = market_urls(procs, "--clock-from-s", seconds_ago, "--rate", "0", "--skip-every", "301")
    last_of_day = MARKET.first_id("BTCUSDT", day_number(yesterday)) + PER_DAY - 1
    collector = procs("run", env=collector_env(url, tmp_path, max_batch_age_s="1", backfill_max_trades="0"))
    collector.wait_event(
        "collector.stats", lambda e: (e.get("last_trade_id") or {}).get("BTCUSDT", 0) > last_of_day
    )
    wait_for(lambda: len(collector.named("collector.minute_marked")) >= 700, what="the afternoon marked")
    stop_cleanly(collector)
    landing = tmp_path / "landing"
    seam = landing / "Binance" / "BTCUSDT" / f"{yesterday:%Y/%m/%d}" / "12" / "00" / "_SUCCESS"
    before = parse_manifest(seam.read_bytes())
    live = len(landed(landing))
    day_markers = sorted((landing / "Binance" / "BTCUSDT" / f"{yesterday:%Y/%m/%d}").rglob("_SUCCESS"))
    gapped = {m for m in day_markers if parse_manifest(m.read_bytes())["unfilled_gaps"]}
    assert len(gapped) >= 5  # the live capture's unfilled gaps, recorded in its markers
    done = run_import(rest, landing, yesterday, yesterday)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    rows = landed(landing)  # asserts no id twice
    day = set(expected_ids(yesterday))
    assert day <= set(rows)
    assert summary["landed_trades"] == len(day) - sum(1 for i in rows if i in day and rows[i][5] == "batch")
    assert summary["markers_rewritten"] >= 1 and len(rows) == live + summary["landed_trades"]
    after = parse_manifest(seam.read_bytes())
    assert after["revision"] == before["revision"] + 1 and after["rows"] == 2
    assert any(f["name"].startswith("archive-") for f in after["files"])
    for marker in gapped:  # the archive had what the live capture lost: gaps filled, markers updated
        doc = parse_manifest(marker.read_bytes())
        assert doc["unfilled_gaps"] == [] and doc["revision"] >= 1, (marker, doc)
    assert summary["markers_rewritten"] >= len(gapped) + 1
    report = audit(landing, "--from", f"{yesterday}T00:00", "--to", f"{yesterday + timedelta(1)}T00:00")
    assert report["exit"] == 0, report["problems"]
    # Live objects in ms beside the archive's µs: compared at the coarser unit, all equal.
    verified = json.loads(run_verify(rest, landing, yesterday, "--json").stdout)
    assert verified["ok"] and verified["equal"] == PER_DAY, verified


@pytest.mark.slow
def test_a_killed_import_resumed_ends_with_every_trade_once(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    rest = market_feed(procs)
    landing = tmp_path / "landing"
    days = [DAY_MS - timedelta(n) for n in range(5, -1, -1)]
    first = Proc(*import_command(rest, landing, days[0], days[-1]), REPO)
    wait_for(lambda: "collector.import_file_done" in "".join(first._stderr), what="a first file done")
    first.popen.send_signal(signal.SIGKILL)
    first.popen.wait(timeout=60)
    done = run_import(rest, landing, days[0], days[-1])
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(landed(landing)) == expected_ids(*days)  # none twice (landed() asserts it), none missing
    assert audit(landing)["exit"] == 0


def run_verify(archive_url: str, landing: Path, day: date, *extra: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", "verify", "--symbols", "BTCUSDT", "--day", str(day),
         "--destination", str(landing), *extra],
        capture_output=True, text=True, env={**os.environ, "COLLECTOR_ARCHIVE_URL": archive_url},
        cwd=REPO, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_verify_finds_the_day_equal_and_says_when_the_archive_lacks_trades(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    rest = market_feed(procs)
    assert run_import(rest, landing, DAY_MS, DAY_MS).returncode == 0
    ok = run_verify(rest, landing, DAY_MS, "--json")
    report = json.loads(ok.stdout)
    assert ok.returncode == 0 and report["equal"] == PER_DAY and report["ok"], report
    objects = sorted(landing.rglob("*.parquet"))
    changed, lost = objects[10], objects[20]
    table = pq.read_table(changed)
    prices = table.column("price").to_pylist()
    prices[0] += Decimal("0.00000001")  # one step of the last place in the lake's copy of one trade
    price = table.schema.field("price")
    pq.write_table(
        table.set_column(table.schema.get_field_index("price"), price, pa.array(prices, price.type)), changed
    )
    lost_ids = pq.read_table(lost).column("trade_id").to_pylist()
    lost.unlink()
    differ = run_verify(rest, landing, DAY_MS, "--json")
    assert differ.stdout, differ.stderr[-3000:]
    report = json.loads(differ.stdout)
    assert differ.returncode == 1 and report["differing"] == 1 and not report["archive_lacks_trades"]
    (sample,) = report["differences"]
    assert sample["trade_id"] == table.column("trade_id")[0].as_py() and set(sample) == {"trade_id", "price"}
    assert report["only_in_archive"] == len(lost_ids)
    assert report["only_in_archive_ranges"] == [[lost_ids[0], lost_ids[-1]]]
    truncated = market_feed(procs, "--archive-defect", f"{DAY_MS}:truncate:12:00")
    lacking = run_verify(truncated, landing, DAY_MS)
    assert lacking.returncode == 1
    assert f"only in the lake: {PER_DAY // 2:,} trades" in lacking.stdout  # 12:00 to 24:00
    assert "Binance's archive lacks them" in lacking.stdout


@pytest.mark.slow
def test_an_import_into_s3_lands_checked_encrypted_objects_and_markers(
    procs: Callable[..., Proc], tmp_path: Path, s3_bucket: tuple[Any, str], moto_endpoint: str
) -> None:
    client, bucket = s3_bucket
    rest = market_feed(procs)
    done = run_import(
        rest,
        tmp_path / "unused",
        DAY_US,
        DAY_US,
        destination=f"s3://{bucket}/lake/",
        env_extra={"COLLECTOR_S3_ENDPOINT_URL": moto_endpoint},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["landed_trades"] == PER_DAY
    keys = [
        o["Key"]
        for p in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in p.get("Contents", [])
    ]
    archive = [k for k in keys if "/archive-" in k]
    assert len([k for k in keys if k.endswith("/_SUCCESS")]) == 1440 and archive
    head = client.head_object(Bucket=bucket, Key=archive[0], ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256" and head["ChecksumSHA256"]
    report = audit(tmp_path, f"s3://{bucket}/lake/", env_extra={"COLLECTOR_S3_ENDPOINT_URL": moto_endpoint})
    assert report["exit"] == 0 and report["rows"] == PER_DAY, report


def seconds_since(when: datetime) -> str:
    return str(datetime.now(tz=UTC).timestamp() - when.timestamp())


@pytest.mark.slow
def test_a_collector_restarted_after_an_import_of_the_days_it_missed_lands_no_trade_twice(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    """Live capture of yesterday 23:00-23:10, stopped; the import of yesterday; then a restart
    whose stream resumes today at 00:30. Of the restart's gap, yesterday's part is in the lake
    already (the import landed it): only today's part comes from REST, and the import's
    markers of yesterday are kept, not overwritten with the collector's own file list."""
    # "Today" is a day whose 00:30 is at least half an hour past, whenever the suite runs.
    today = (datetime.now(tz=UTC) - timedelta(hours=1)).date()
    yesterday = today - timedelta(days=1)
    late = datetime(yesterday.year, yesterday.month, yesterday.day, 23, 0, 10, tzinfo=UTC)
    url, rest = market_urls(procs, "--clock-from-s", seconds_since(late), "--rate", "0", "--count", "20")
    first_live = MARKET.id_at("BTCUSDT", int(late.timestamp() * 1e6))
    env = collector_env(url, tmp_path, max_batch_age_s="1")
    collector = procs("run", env=env)
    collector.wait_event(
        "collector.stats", lambda e: (e.get("last_trade_id") or {}).get("BTCUSDT", 0) >= first_live + 19
    )
    wait_for(lambda: len(collector.named("collector.minute_marked")) >= 9, what="the live minutes marked")
    stop_cleanly(collector)
    landing = tmp_path / "landing"
    done = run_import(rest, landing, yesterday, yesterday)
    assert done.returncode == 0, done.stderr[-3000:]
    evening = landing / "Binance" / "BTCUSDT" / f"{yesterday:%Y/%m/%d}" / "23" / "40" / "_SUCCESS"
    imported = parse_manifest(evening.read_bytes())
    morning = datetime(today.year, today.month, today.day, 0, 30, 10, tzinfo=UTC)
    url, rest = market_urls(procs, "--clock-from-s", seconds_since(morning), "--rate", "0")
    env.update(collector_env(url, tmp_path, max_batch_age_s="1"))
    collector = procs("run", env=env)
    wait_for(lambda: len(collector.named("collector.minute_marked")) >= 50 + 40, what="00:00-00:40 marked")
    stop_cleanly(collector)
    rows = landed(landing)  # asserts that no trade id landed twice
    start_of_today = MARKET.first_id("BTCUSDT", day_number(today))
    assert set(expected_ids(yesterday)) <= set(rows)
    resumed = MARKET.id_at("BTCUSDT", int(morning.timestamp() * 1e6))
    assert all(rows[i][5] == "backfill" for i in range(start_of_today, resumed))  # today's part: REST
    (in_lake,) = collector.named("collector.gap_partly_in_lake")
    assert in_lake["held"] == start_of_today - (first_live + 20)  # yesterday 23:10 to 24:00
    assert parse_manifest(evening.read_bytes()) == imported  # the import's marker, kept as it was
    report = audit(landing, "--from", f"{yesterday}T00:00", "--to", f"{today}T00:30")
    assert report["exit"] == 0 and report["pending_minutes"] == 0, report["problems"]


@pytest.mark.slow
@pytest.mark.parametrize("size", ["16k", "256k"])  # the zip does not fit; the zip fits, its objects do not
def test_a_full_staging_disk_stops_the_import_with_what_to_do_and_lands_nothing(
    procs: Callable[..., Proc], tmp_path: Path, small_disk: Callable[[str], Path], size: str
) -> None:
    rest = market_feed(procs)
    spool = small_disk(size)
    landing = tmp_path / "landing"
    done = run_import(rest, landing, DAY_MS, DAY_MS, env_extra={"COLLECTOR_SPOOL_DIR": str(spool)})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "collector import: stopped: cannot write" in done.stderr
    assert "No space left on device; free space there or set COLLECTOR_SPOOL_DIR" in done.stderr
    assert "run the same command again" in done.stderr
    assert not list(landing.rglob("*.parquet"))
    assert [p.relative_to(spool) for p in spool.rglob("*")] == [Path("import"), Path("import/.lock")]  # freed


@pytest.mark.slow
def test_when_the_rest_api_cannot_check_a_files_edges_the_minutes_past_its_last_trade_stay_unmarked(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    archive = market_feed(procs, "--archive-defect", f"{DAY_MS}:truncate:16:00")
    landing = tmp_path / "landing"
    done = run_import(
        archive, landing, DAY_MS, DAY_MS, env_extra={"COLLECTOR_REST_URL": "http://127.0.0.1:9"}
    )
    summary = json.loads(done.stdout)
    assert done.returncode == 1 and summary["unchecked"] == [f"BTCUSDT-trades-{DAY_MS}.zip"]
    assert summary["landed_trades"] == PER_DAY * 2 // 3  # 00:00 to 16:00
    assert len(list(landing.rglob("_SUCCESS"))) == 16 * 60  # never a marker saying 16:00-24:00 is empty
