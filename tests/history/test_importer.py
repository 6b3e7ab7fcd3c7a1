"""`collector import` and `collector verify` against the local feed's archive, REST API and live stream.

The feed's market is deterministic (collector.feed.simulated): the archive, the REST API and the live
stream serve the same trades, so the lake can be checked trade by trade against the function.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from collector.binance.archive import ArchiveProblem, plan_files, read_trades
from collector.cli.progress import ImportProgress
from collector.feed.archive import ArchiveFeed
from collector.feed.simulated import Market
from tests.support.history import day_number, run_import

DAY_MS, DAY_US = date(2024, 12, 31), date(2025, 1, 1)  # either side of the switch to µs times


def test_bad_arguments_are_refused_with_what_to_do(tmp_path: Path) -> None:
    today = datetime.now(tz=UTC).date()
    done = run_import("http://127.0.0.1:9", tmp_path / "l", today, today)
    assert done.returncode == 2 and "has no archive yet" in done.stderr
    done = run_import("http://127.0.0.1:9", tmp_path / "l", DAY_US, DAY_MS)
    assert done.returncode == 2 and "--to must not be before --from" in done.stderr
    done = run_import("http://127.0.0.1:9", tmp_path / "l", DAY_MS, DAY_MS)  # nothing answers there
    summary = json.loads(done.stdout)
    assert done.returncode == 1 and summary["skipped"][0]["reason"] == "unreachable"
    assert "check COLLECTOR_ARCHIVE_URL" in summary["skipped"][0]["message"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_files_trades_bytes_rate_and_time_left_on_a_terminal_and_logs_otherwise() -> None:
    events: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def info(self, event: str, **fields: Any) -> None:
            events.append((event, fields))

    class Summary:
        bytes_downloaded = 2_500_000

    class File:
        name = "BTCUSDT-trades-2024-12-31.zip"

    screen = _Terminal()
    bar = ImportProgress(Log(), screen)
    bar.begin(2, days=2, symbols=1)
    bar.rows(1_234_567)
    bar.file_done(File(), Summary())
    line = screen.getvalue().rsplit("\r", 1)[-1]
    assert "files 1/2" in line and "trades 1,234,567" in line and "2.5 MB" in line and "/s" in line
    assert "left 00:" in line and not screen.getvalue().endswith("\n")
    bar.file_done(File(), Summary())
    assert screen.getvalue().endswith("\n")  # the bar ends its line when the last file is done
    plain = ImportProgress(Log(), io.StringIO())
    plain.begin(1, days=1, symbols=1)
    plain.rows(10)
    plain.file_done(File(), Summary())
    ((_, fields),) = [e for e in events if e[0] == "collector.import_progress"]
    assert fields["files_done"] == 1 and fields["trades"] == 10 and fields["mb_downloaded"] == 2.5


def test_whole_past_months_come_as_monthly_files_and_the_rest_as_daily() -> None:
    files = plan_files(["BTCUSDT"], date(2024, 10, 30), date(2024, 12, 2), today=date(2024, 12, 3))
    assert [(f.period, f.when) for f in files] == [
        ("daily", "2024-10-30"),
        ("daily", "2024-10-31"),
        ("monthly", "2024-11"),
        ("daily", "2024-12-01"),  # December is not over: daily files
        ("daily", "2024-12-02"),
    ]
    assert files[2].days[0] == date(2024, 11, 1) and files[2].days[-1] == date(2024, 11, 30)


def test_a_monthly_file_of_the_local_feed_reads_as_every_trade_of_its_days_in_its_unit(
    tmp_path: Path,
) -> None:
    market = Market(("BTCUSDT",), 48)
    feed = ArchiveFeed(market)
    for month, unit in (("2024-11", "ms"), ("2025-01", "us")):
        status, body = feed.answer(f"/data/spot/monthly/trades/BTCUSDT/BTCUSDT-trades-{month}.zip")
        assert status == 200
        first = date.fromisoformat(f"{month}-01")
        last = (first + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        (file,) = plan_files(["BTCUSDT"], first, last, today=date(2026, 1, 1))
        assert file.period == "monthly" and file.unit == unit
        (tmp_path / file.name).write_bytes(body)
        ids, times = [], []
        for batch in read_trades(file, tmp_path / file.name):
            ids += batch.ids.to_pylist()
            times += batch.times.to_pylist()
        days = len(file.days)
        start = market.first_id("BTCUSDT", day_number(first))
        assert ids == list(range(start, start + 48 * days))
        per_us = 1 if unit == "us" else 1000
        assert [t * per_us for t in times] == [
            market.trade("BTCUSDT", i).time_us // per_us * per_us for i in ids
        ]


def test_an_import_into_a_bucket_that_does_not_exist_stops_at_once_and_says_so(
    tmp_path: Path, moto_endpoint: str, aws_env: dict[str, str]
) -> None:
    done = run_import(
        "http://127.0.0.1:9",  # never asked: the bucket is checked first
        tmp_path / "unused",
        DAY_MS,
        DAY_MS,
        destination="s3://no-such-bucket-here/lake/",
        env_extra={"COLLECTOR_S3_ENDPOINT_URL": moto_endpoint},
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr and not done.stdout
    assert 'landing bucket "no-such-bucket-here" does not exist' in done.stderr
    assert "create it or set COLLECTOR_DESTINATION; nothing was imported" in done.stderr


def _zip_of(tmp_path: Path, member: str, text: str) -> Path:
    import zipfile

    path = tmp_path / "BTCUSDT-trades-2024-12-31.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # as Binance's are
        archive.writestr(member, text)
    return path


CSV = "BTCUSDT-trades-2024-12-31.csv"


def row(price: str = "1.0", time_ms: int = 1_735_603_200_000) -> str:
    return f"1,{price},1.0,1.0,{time_ms},True,True\n"


@pytest.mark.parametrize(
    ("content", "reason", "words"),
    [
        (None, "not_a_zip", "not a zip"),
        (("other.csv", row()), "wrong_content", "not the one file"),
        ((CSV, row("abc")), "wrong_content", "unreadable"),
        ((CSV, row("1.123456789")), "wrong_content", "unreadable"),  # 9 decimals: refused, not rounded
        ((CSV, row("-1.0")), "wrong_content", "negative"),
        ((CSV, row(time_ms=1_735_689_600_000)), "wrong_content", "outside 2024-12-31"),  # the next day
        ((CSV, row("100000000000")), "wrong_content", "exceeds DECIMAL(18,8)"),  # 12 digits
        ((CSV, row("12345678901.5")), "wrong_content", "exceeds DECIMAL(18,8)"),  # 11 digits
        ((CSV, "1,1.0,1.0,1.0,,True,True\n"), "wrong_content", "column time has empty values"),
        ((CSV, row() + "2,1.0,1.0,1.0,1735603200001,,True\n"), "wrong_content", "column is_buyer_maker has"),
        ((CSV, row() + ",1.0,1.0,1.0,1735603200001,True,True\n"), "wrong_content", "column id has empty"),
        ((CSV, row(time_ms=1_735_603_200_005) + row()), "wrong_content", "out of order"),
    ],
)
def test_a_corrupt_archive_file_is_refused_with_the_reason(
    tmp_path: Path, content: tuple[str, str] | None, reason: str, words: str
) -> None:
    file = plan_files(["BTCUSDT"], DAY_MS, DAY_MS, today=date(2026, 1, 1))[0]
    if content is None:
        path = tmp_path / file.name
        path.write_bytes(b"PK\x03\x04 this is not a zip")
    else:
        path = _zip_of(tmp_path, *content)
    with pytest.raises(ArchiveProblem) as refused:
        list(read_trades(file, path))
    assert refused.value.reason == reason and words in str(refused.value), str(refused.value)
    assert file.name in str(refused.value)


def test_an_archive_file_with_only_a_header_row_reads_as_no_trades(tmp_path: Path) -> None:
    file = plan_files(["BTCUSDT"], DAY_MS, DAY_MS, today=date(2026, 1, 1))[0]
    header = "id,price,qty,quote_qty,time,is_buyer_maker,is_best_match\n"
    assert list(read_trades(file, _zip_of(tmp_path, CSV, header))) == []


def test_a_zip_whose_data_is_corrupt_is_refused_not_a_traceback(tmp_path: Path) -> None:
    file = plan_files(["BTCUSDT"], DAY_MS, DAY_MS, today=date(2026, 1, 1))[0]
    rows = "".join(f"{i},1.{i % 97:08d},0.5,0.5,{1_735_603_200_000 + i},True,True\n" for i in range(1, 5000))
    path = _zip_of(tmp_path, CSV, rows)
    data = bytearray(path.read_bytes())
    data[200:210] = b"\xff" * 10  # inside the deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(ArchiveProblem) as refused:
        list(read_trades(file, path))
    assert refused.value.reason in ("wrong_content", "not_a_zip"), str(refused.value)


def test_a_first_row_after_a_byte_order_mark_is_a_trade_not_a_header(tmp_path: Path) -> None:
    file = plan_files(["BTCUSDT"], DAY_MS, DAY_MS, today=date(2026, 1, 1))[0]
    path = _zip_of(tmp_path, CSV, "\ufeff" + row() + "2,1.0,1.0,1.0,1735603200001,True,True\n")
    assert [i for b in read_trades(file, path) for i in b.ids.to_pylist()] == [1, 2]


def test_verify_counts_an_id_the_lake_holds_twice_and_is_not_ok() -> None:

    from collector.history.verify import VerifyReport, _compare

    def table(prefix: str, ids: list[int]) -> Any:
        n = len(ids)
        return pa.table({"trade_id": ids, f"{prefix}_price": [1] * n, f"{prefix}_qty": [1] * n,
                         f"{prefix}_time": [1000] * n, f"{prefix}_maker": [True] * n}
                        | ({"l_scale": [1000] * n} if prefix == "l" else {}))  # fmt: skip

    report = VerifyReport("BTCUSDT", "2024-12-31")
    _compare(report, table("a", [1, 2]), table("l", [1, 2, 2]))
    summary = report.as_dict()
    assert not summary["ok"] and summary["lake_ids_twice"] == 1 and summary["lake_ids_twice_sample"] == [2]
    assert summary["equal"] == 2 and summary["compared"] == 2


def test_a_month_the_lake_holds_data_in_comes_as_daily_files(tmp_path: Path) -> None:
    """What the lake holds is read a file's days at a time: a month of live data would be
    about 100 million ids in memory, a day 3 million."""
    import structlog

    from collector.history.importer import Importer
    from collector.lake.sinks import LocalSink

    sink = LocalSink(tmp_path / "landing")
    importer = Importer(sink, archive_url="", rest_url="", staging=tmp_path / "s", log=structlog.get_logger())
    months = [(f.period, f.when) for f in importer._plan(["BTCUSDT"], date(2024, 10, 1), date(2024, 11, 30))]
    assert months == [("monthly", "2024-10"), ("monthly", "2024-11")]
    sink.put("Binance/BTCUSDT/2024/11/17/10/17/batch-1-1.parquet", b"x")
    files = importer._plan(["BTCUSDT"], date(2024, 10, 1), date(2024, 11, 30))
    assert files[0].period == "monthly" and len(files) == 1 + 30
    assert {f.period for f in files[1:]} == {"daily"} and files[-1].when == "2024-11-30"


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["import", "--symbols", "BTCUSDT", "--from", "yesterday", "--to", "2024-12-31"], "is not a UTC day"),
        (["import", "--symbols", "BTCUSDT", "--from", "2024-12-31", "--to", "2024-12-31", "--downloads", "0"],
         "--downloads: 0 must be at least 1"),
        (["import", "--symbols", "BTC-USDT!", "--from", "2024-12-31", "--to", "2024-12-31"], "--symbols"),
        (["demo", "--archive", "--from", "2024-12-31", "--to", "2024-12-31", "--trades-per-day", "0"],
         "--trades-per-day: 0 must be at least 1"),
        (["demo", "--archive", "--to", "2024-12-31"], "give --from and --to"),
        (["emulate", "--market", "--archive", "--trades-per-day", "-5"], "must be at least 1"),
        (["emulate", "--market", "--archive", "--archive-defect", "2024-12-31:melted"],
         "a defect is DATE:missing"),
    ],
)  # fmt: skip
def test_bad_history_arguments_exit_2_with_what_is_wrong(tmp_path: Path, argv: list[str], words: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    done = subprocess.run([sys.executable, "-m", "collector.cli", *argv], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
