"""The lake's tables with real processes: a SIGKILL mid-compaction, two compactions at once, the
Glue catalog and an S3 warehouse on moto's server, a full disk, and the archive imported
straight into the table from the local feed, then verified against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from collector.config import Settings
from collector.lake.sinks import LocalSink
from tests.conftest import REPO, Proc, wait_for
from tests.support.lake_days import land_symbol_day, landed_trades

DAY = date(2025, 11, 24)


def busy_day(root: Path, per_minute: int = 400) -> LocalSink:
    """BTCUSDT's whole day, every minute holding trades (576,000 at 400 a minute)."""
    sink = LocalSink(root)
    land_symbol_day(sink, "BTCUSDT", DAY, 1, dict.fromkeys(range(1440), per_minute))
    return sink


def compact_env(tmp_path: Path, landing: Path, spool: str = "spool", **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(
        {
            "COLLECTOR_DESTINATION": str(landing),
            "COLLECTOR_SPOOL_DIR": str(tmp_path / spool),
            "COLLECTOR_TABLE_WAREHOUSE": str(tmp_path / "tables"),
            "PYTHONUNBUFFERED": "1",
            **extra,
        }
    )
    return env


def compact(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", "compact", "--json", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def trades_table(tmp_path: Path) -> Any:
    settings = Settings(destination=tmp_path / "landing", table_warehouse=str(tmp_path / "tables"))
    from collector.table.catalog import open_tables

    return open_tables(settings).trades


def read_back(table: Any) -> pa.Table:
    """The table's rows from the files its snapshot lists, read by pyarrow."""
    import pyarrow.parquet as pq

    table.refresh()
    paths = [t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()]
    return pa.concat_tables([pq.read_table(p) for p in paths])


def test_a_compaction_killed_mid_day_leaves_nothing_visible_and_the_next_run_finishes(tmp_path: Path) -> None:
    sink = busy_day(tmp_path / "landing")
    env = compact_env(tmp_path, sink.root)
    intents = tmp_path / "spool" / "compact" / "intents"
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "compact", "--from", str(DAY)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # the moment it has begun writing the day's first data file
        wait_for(
            lambda: any(p.read_text() for p in intents.glob("*.jsonl")) if intents.is_dir() else False,
            what="the first data file begun",
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(60)
    table = trades_table(tmp_path)
    snapshot = table.current_snapshot()
    assert snapshot is None or int(snapshot.summary["total-records"]) == len(landed_trades(sink, DAY))
    done = compact(env, "--from", str(DAY))
    assert done.returncode == 0, done.stderr
    (day,) = json.loads(done.stdout)["days"]
    assert day["status"] in ("committed", "unchanged")
    rows = read_back(table)
    assert rows.num_rows == len(landed_trades(sink, DAY)) == 576_000
    assert rows["trade_id"].to_pylist() == list(range(1, 576_001))
    written = {str(p) for p in (tmp_path / "tables").rglob("*.parquet")}
    referenced = {t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()}
    bars = {p for p in written if "/bars_1m/" in p}
    assert written - bars == referenced, "a file of the killed run was left behind"
    assert not list(intents.glob("*.jsonl"))


def test_two_compactions_at_once_commit_the_day_once(tmp_path: Path) -> None:
    sink = busy_day(tmp_path / "landing", per_minute=100)
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "collector.cli", "compact", "--json", "--from", str(DAY)],
            env=compact_env(tmp_path, sink.root, spool=f"spool-{n}"),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    outputs = [r.communicate(timeout=600) for r in runs]
    assert all(r.returncode == 0 for r in runs), [err[-2500:] for _, err in outputs]
    statuses = sorted(json.loads(out)["days"][0]["status"] for out, _ in outputs)
    assert statuses in (["committed", "committed"], ["committed", "unchanged"]), statuses
    table = trades_table(tmp_path)
    appends = [
        s
        for s in table.snapshots()
        if s.summary.get("trade-lake.day") == DAY.isoformat() and s.summary.operation.value == "append"
    ]
    assert len(appends) == 1, [s.summary for s in table.snapshots()]
    rows = read_back(table)
    assert rows.num_rows == 144_000 and len(set(rows["trade_id"].to_pylist())) == 144_000
    written = {str(p) for p in (tmp_path / "tables").rglob("data/*/*.parquet") if "/trades/" in str(p)}
    assert written == {t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()}


def test_a_day_lands_in_a_glue_catalog_with_its_warehouse_on_s3(
    tmp_path: Path, moto_endpoint: str, s3_bucket: tuple[Any, str], aws_env: dict[str, str]
) -> None:
    """Glue and S3 over HTTP (moto's server): what Athena reads."""
    client, bucket = s3_bucket
    land_symbol_day(LocalSink(tmp_path / "landing"), "BTCUSDT", DAY, 1, {10: 25, 700: 5})
    for key, _ in LocalSink(tmp_path / "landing").list_keys("Binance/"):
        client.put_object(Bucket=bucket, Key=f"lake/{key}", Body=(tmp_path / "landing" / key).read_bytes())
    env = compact_env(
        tmp_path,
        tmp_path / "unused",
        **aws_env,
        COLLECTOR_DESTINATION=f"s3://{bucket}/lake/",
        COLLECTOR_S3_ENDPOINT_URL=moto_endpoint,
        COLLECTOR_S3_REGION="ap-northeast-1",
        COLLECTOR_TABLE_WAREHOUSE="",
        AWS_ENDPOINT_URL_GLUE=moto_endpoint,
        COLLECTOR_TABLE_NAMESPACE=f"lake_{os.getpid()}",
    )
    done = compact(env, "--from", str(DAY))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["tables"].startswith("glue catalog, warehouse s3://") and out["days"][0]["rows"] == 30
    from pyiceberg.catalog.glue import GlueCatalog

    catalog = GlueCatalog(
        "lake",
        **{
            "glue.endpoint": moto_endpoint,
            "glue.region": "ap-northeast-1",
            "s3.endpoint": moto_endpoint,
            "s3.region": "ap-northeast-1",
        },
    )
    table = catalog.load_table(f"lake_{os.getpid()}.trades")
    assert table.location().startswith(f"s3://{bucket}/lake/Tables/")
    rows = table.scan(row_filter="symbol = 'BTCUSDT'").to_arrow()
    assert sorted(rows["trade_id"].to_pylist()) == list(range(1, 31))
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="lake/Tables/")["Contents"]]
    assert any(k.endswith(".parquet") and "/trades/data/day=2025-11-24/" in k for k in keys)


def test_a_full_disk_under_the_warehouse_commits_nothing_and_says_what_to_do(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        sink = busy_day(tmp_path / "landing", per_minute=3000)  # several MB of table files
        env = compact_env(tmp_path, sink.root, COLLECTOR_TABLE_WAREHOUSE=str(small / "tables"))
        done = compact(env, "--from", str(DAY))
        assert done.returncode == 1, done.stdout + done.stderr
        assert "No space left on device" in done.stderr and "nothing committed" in done.stderr
        assert "Free space on" in done.stderr
        assert not list(small.rglob("*.parquet")), "the day's files were left on the full disk"
        subprocess.run(["umount", str(small)], check=True)
        env["COLLECTOR_TABLE_WAREHOUSE"] = str(tmp_path / "roomy")
        assert compact(env, "--from", str(DAY)).returncode == 0  # the landing zone lost nothing
    finally:
        subprocess.run(["umount", str(small)], capture_output=True, check=False)


def test_the_archive_imported_into_the_table_agrees_with_it_and_a_rerun_commits_nothing(
    tmp_path: Path, procs: Callable[..., Proc]
) -> None:
    feed = procs(
        "emulate",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--market",
        "--archive",
        "--trades-per-day",
        "43200",
        "--port",
        "0",
        "--archive-defect",
        "2024-12-31:truncate:16:00",
    )
    url = feed.wait_event("emulator.listening")["rest_url"]
    env = compact_env(tmp_path, tmp_path / "landing", COLLECTOR_ARCHIVE_URL=url, COLLECTOR_REST_URL=url)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "collector.cli", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    imported = cli(
        "import",
        "--into",
        "table",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--from",
        "2024-12-31",
        "--to",
        "2025-01-01",
        "--json",
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    totals = json.loads(imported.stdout)
    assert totals["filled_from_rest"] > 0  # the archive's missing trades, from the REST API
    table = trades_table(tmp_path)
    snapshots = len(table.snapshots())
    assert len(table.scan().to_arrow()) == 4 * 43_200
    verified = cli("verify", "--table", "--symbols", "BTCUSDT,ETHUSDT", "--day", "2025-01-01")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count("OK: the lake and the archive agree") == 2
    # The truncated day: the table holds the afternoon the archive's file lacks, from REST.
    truncated = cli("verify", "--table", "--symbols", "BTCUSDT", "--day", "2024-12-31")
    assert truncated.returncode == 1 and "only in the lake: 14,400 trades" in truncated.stdout
    assert "Binance's archive lacks them" in truncated.stdout
    again = cli(
        "import",
        "--into",
        "table",
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--from",
        "2024-12-31",
        "--to",
        "2025-01-01",
    )
    assert again.returncode == 0 and "4 file(s) the tables held whole already" in again.stdout, again.stdout
    table.refresh()
    assert len(table.snapshots()) == snapshots
