"""`collector compact` on real landing days (the collector's own encoders and markers) into a real
Iceberg table (pyiceberg, a sqlite catalog, a local warehouse); the table read back with pyarrow
from the data files its snapshot lists, not through the code that wrote them."""

from __future__ import annotations

import json
import os
import shutil
from datetime import date
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import structlog

from collector.config import Settings
from collector.lake.completion import LandedFile, build_manifest, parse_manifest
from collector.lake.layout import marker_key, object_key
from collector.lake.parquet import encode_parquet
from collector.lake.sinks import LocalSink, sha256_b64, write_marker
from collector.table.catalog import CatalogError, open_tables
from collector.table.compactor import Compactor
from collector.table.days import Streams, day_minutes
from tests.support.batches import batch
from tests.support.lake_days import land_market_day, land_symbol_day, landed_trades

DAY = date(2025, 11, 24)
NEXT = date(2025, 11, 25)
LOG = structlog.get_logger()


def settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(destination=tmp_path / "landing", spool_dir=tmp_path / "spool", **kw)


def compactor(tmp_path: Path) -> tuple[Compactor, Any]:
    s = settings(tmp_path)
    tables = open_tables(s)
    return Compactor(LocalSink(tmp_path / "landing"), tables, tmp_path / "spool" / "compact", log=LOG,
                     snapshot_days=7), tables  # fmt: skip


def table_rows(table: Any) -> pa.Table:
    """The table's rows read by pyarrow from the files its current snapshot lists."""
    table.refresh()
    paths = [task.file.file_path.removeprefix("file://") for task in table.scan().plan_files()]
    return pa.concat_tables([pq.read_table(p) for p in paths]) if paths else pa.table({})


@pytest.fixture(scope="module")
def lake_of_two_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BTCUSDT and ETHUSDT per symbol, three quiet symbols market-wide, a whole day (4,320
    markers, written once)."""
    root = tmp_path_factory.mktemp("two-days") / "landing"
    sink = LocalSink(root)
    land_symbol_day(sink, "BTCUSDT", DAY, 1_000, {0: 5, 1: 300, 600: 40, 1439: 7})
    land_symbol_day(sink, "ETHUSDT", DAY, 50_000, {2: 11, 900: 2})
    quiet = {"AAAUSDT": (1, {3: 4, 5: 1}), "ZZZUSDT": (7, {3: 2, 1000: 9}), "MMMUSDT": (100, {})}
    land_market_day(sink, DAY, quiet)
    return root


@pytest.fixture
def two_days(tmp_path: Path, lake_of_two_days: Path) -> LocalSink:
    """A copy of the day, this test's to change: data objects copied, markers linked (a marker is
    only ever replaced whole, never written in place)."""

    def copy(source: str, target: str) -> None:
        (os.link if source.endswith("_SUCCESS") else shutil.copy2)(source, target)

    shutil.copytree(lake_of_two_days, tmp_path / "landing", copy_function=copy)
    return LocalSink(tmp_path / "landing")


def test_a_final_day_lands_once_exact_sorted_and_with_its_bars(tmp_path: Path, two_days: LocalSink) -> None:
    sink = two_days
    comp, tables = compactor(tmp_path)
    (outcome,) = comp.run([DAY])
    assert outcome.status == "committed", outcome
    expected = landed_trades(sink, DAY)
    rows = table_rows(tables.trades)
    got = {
        (r["symbol"], r["trade_id"]): (r["price"], r["quantity"], t, r["is_buyer_maker"])
        for r, t in zip(rows.to_pylist(), rows["trade_time"].cast(pa.int64()).to_pylist(), strict=True)
    }
    assert rows.num_rows == len(expected) == 5 + 300 + 40 + 7 + 11 + 2 + 4 + 1 + 2 + 9
    assert got == expected  # every trade once, exact decimals, microsecond times
    keys = list(zip(rows["symbol"].to_pylist(), rows["trade_id"].to_pylist(), strict=True))
    assert keys == sorted(keys)  # sorted by symbol, then trade id
    assert rows.schema.field("price").type == pa.decimal128(18, 8)
    assert rows.schema.field("trade_time").type == pa.timestamp("us", tz="UTC")
    bars = {(b["symbol"], b["minute"]): b for b in table_rows(tables.bars).to_pylist()}
    assert bars == naive_bars(expected)


def naive_bars(trades: dict[tuple[str, int], tuple[Decimal, Decimal, int, bool]]) -> dict[Any, Any]:
    """Bars the slow, obvious way, from the landing's own trades."""
    from datetime import UTC, datetime

    out: dict[Any, Any] = {}
    zero = Decimal(0)
    for (symbol, trade_id), (price, qty, micros, maker) in sorted(trades.items()):
        minute = datetime.fromtimestamp(micros // 60_000_000 * 60, tz=UTC)
        if (symbol, minute) not in out:
            out[(symbol, minute)] = {
                "symbol": symbol, "minute": minute, "open": price, "high": price, "low": price,
                "volume": zero, "quote_volume": zero, "trade_count": 0, "taker_buy_volume": zero,
                "taker_buy_quote_volume": zero, "first_trade_id": trade_id,
            }  # fmt: skip
        bar = out[(symbol, minute)]
        bar["high"], bar["low"] = max(bar["high"], price), min(bar["low"], price)
        bar["close"], bar["last_trade_id"] = price, trade_id
        bar["volume"] += qty
        bar["quote_volume"] += price * qty
        bar["trade_count"] += 1
        if not maker:
            bar["taker_buy_volume"] += qty
            bar["taker_buy_quote_volume"] += price * qty
    for bar in out.values():
        bar["vwap"] = (bar["quote_volume"] / bar["volume"]).quantize(Decimal("0.00000001"), ROUND_HALF_EVEN)
    return out


def test_a_rerun_commits_nothing_and_a_rewritten_marker_replaces_the_day(
    tmp_path: Path, two_days: LocalSink
) -> None:
    sink = two_days
    comp, tables = compactor(tmp_path)
    assert comp.run([DAY])[0].status == "committed"
    snapshots = len(tables.trades.snapshots())
    assert comp.run([DAY])[0].status == "unchanged"
    tables.trades.refresh()
    assert len(tables.trades.snapshots()) == snapshots
    # A late file in a marked minute (a gap filled on retry): the marker is rewritten with it.
    minute = day_minutes(DAY)[700]

    data = encode_parquet(batch("BTCUSDT", 5_000_000, 6, minute))
    key = object_key(
        symbol="BTCUSDT", minute=minute, first_trade_id=5_000_000, last_trade_id=5_000_005, kind="backfill"
    )
    sink.put(key, data)
    doc = parse_manifest(sink.get(marker_key("BTCUSDT", minute)) or b"")
    files = [LandedFile(**f) for f in doc["files"]] + [LandedFile(name=key.rsplit("/", 1)[1], bytes=len(data),
             sha256=sha256_b64(data), rows=6, first_trade_id=5_000_000, last_trade_id=5_000_005)]  # fmt: skip
    write_marker(
        sink, build_manifest("BTCUSDT", minute, files, revision=2, written_at_s=0), "BTCUSDT", minute
    )
    (outcome,) = comp.run(None)  # within the recheck window: found without being named
    assert outcome.status == "committed" and outcome.day == DAY.isoformat()
    rows = table_rows(tables.trades)
    assert rows.num_rows == len(landed_trades(sink, DAY))
    assert 5_000_003 in rows["trade_id"].to_pylist()
    assert len(rows["trade_id"].unique()) + 0 == rows.num_rows - _shared_ids(rows)


def _shared_ids(rows: pa.Table) -> int:
    """Rows whose trade id another symbol also uses (ids are per symbol)."""
    pairs = set(zip(rows["symbol"].to_pylist(), rows["trade_id"].to_pylist(), strict=True))
    assert len(pairs) == rows.num_rows  # nothing twice after the day was replaced
    return rows.num_rows - len(rows["trade_id"].unique())


def test_a_day_with_an_unmarked_minute_waits_and_says_which(tmp_path: Path, two_days: LocalSink) -> None:
    sink = two_days
    (sink.root / marker_key("ETHUSDT", day_minutes(DAY)[901])).unlink()
    comp, tables = compactor(tmp_path)
    (outcome,) = comp.run([DAY])
    assert outcome.status == "not_ready"
    assert "ETHUSDT: 1 minute(s) without _SUCCESS from 15:01" in outcome.detail
    assert tables.trades.current_snapshot() is None


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-10]), "size"),
        (lambda p: p.write_bytes(p.read_bytes()[:100] + b"X" + p.read_bytes()[101:]), "checksum"),
        (lambda p: p.unlink(), "missing_file"),
    ],
    ids=["truncated", "corrupt", "gone"],
)
def test_a_damaged_object_keeps_the_day_out_and_is_named(
    tmp_path: Path, two_days: LocalSink, damage: Any, kind: str
) -> None:
    sink = two_days
    victim = next(
        p for p in (sink.root / "Binance" / "BTCUSDT" / "2025" / "11" / "24" / "10" / "00").glob("*.parquet")
    )
    damage(victim)
    comp, tables = compactor(tmp_path)
    (outcome,) = comp.run([DAY])
    assert outcome.status == "defects"
    assert any(d.startswith(kind) and "batch-" in d for d in outcome.defects), outcome.defects
    assert tables.trades.current_snapshot() is None
    assert not list((tmp_path / "landing-tables").rglob("*.parquet"))  # what it wrote is gone


def test_rows_that_differ_from_the_marker_are_a_defect(tmp_path: Path, two_days: LocalSink) -> None:
    sink = two_days
    minute = day_minutes(DAY)[600]
    doc = json.loads(sink.get(marker_key("BTCUSDT", minute)) or b"")
    doc["files"][0]["rows"] = 41
    sink.put_marker(marker_key("BTCUSDT", minute), json.dumps(doc).encode())
    comp, _ = compactor(tmp_path)
    (outcome,) = comp.run([DAY])
    assert outcome.status == "defects" and any("41" in d and d.startswith("rows") for d in outcome.defects)


def test_an_existing_table_of_another_shape_is_refused_with_how_to_migrate(tmp_path: Path) -> None:
    from pyiceberg.schema import Schema
    from pyiceberg.types import LongType, NestedField

    s = settings(tmp_path)
    tables = open_tables(s)
    tables.catalog.drop_table("trade_lake.trades")
    tables.catalog.create_table(
        "trade_lake.trades", schema=Schema(NestedField(1, "trade_id", LongType(), required=True))
    )
    with pytest.raises(
        CatalogError, match=r"exists with other columns.*ALTER TABLE.*COLLECTOR_TABLE_NAMESPACE"
    ):
        open_tables(s)


def test_a_warehouse_that_cannot_be_made_says_which_setting_to_change(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where the warehouse should be")
    s = settings(tmp_path, table_warehouse=str(tmp_path / "blocker" / "tables"))
    with pytest.raises(CatalogError, match=r"cannot be made .*COLLECTOR_TABLE_WAREHOUSE"):
        open_tables(s)


def test_the_listing_finds_streams_that_end_early_and_days_the_lake_moved_past(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path / "landing")
    land_symbol_day(sink, "BTCUSDT", DAY, 1, {0: 1})
    # a symbol delisted at 12:00: its markers stop; ready only once the lake has moved on
    for minute in day_minutes(DAY)[:721]:
        from collector.lake.completion import build_manifest
        from collector.lake.sinks import write_marker

        write_marker(sink, build_manifest("OLDUSDT", minute, [], written_at_s=0), "OLDUSDT", minute)
    state = Streams(sink).state(DAY)
    assert not state.ready and "OLDUSDT" in state.why_not()
    land_symbol_day(sink, "BTCUSDT", NEXT, 2, {})
    assert Streams(sink).state(DAY).ready


def test_expired_snapshots_take_the_files_only_they_held_with_them(
    tmp_path: Path, two_days: LocalSink
) -> None:
    sink = two_days
    s = settings(tmp_path)
    tables = open_tables(s)
    comp = Compactor(sink, tables, tmp_path / "spool" / "compact", log=LOG, snapshot_days=0)
    assert comp.run([DAY])[0].status == "committed"
    first_files = {p for p in (tmp_path / "landing-tables").rglob("data/*/*.parquet")}
    minute = day_minutes(DAY)[900]  # a rewritten marker: the day is replaced
    doc = json.loads(sink.get(marker_key("ETHUSDT", minute)) or b"")
    doc["revision"] = 2
    sink.put_marker(marker_key("ETHUSDT", minute), json.dumps(doc).encode())
    assert comp.run([DAY])[0].status == "committed"
    left = {p for p in (tmp_path / "landing-tables").rglob("data/*/*.parquet")}
    assert not first_files & left, "the replaced day's files outlived their snapshots"
    assert len(left) == 2  # the day's trades file and its bars file
    assert table_rows(tables.trades).num_rows == len(landed_trades(sink, DAY))


def test_a_catalog_that_cannot_be_reached_says_what_to_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # nothing listens here once it is closed
    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_MAX_ATTEMPTS": "1",
                        "AWS_ENDPOINT_URL_GLUE": f"http://127.0.0.1:{port}"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    s = settings(tmp_path, table_catalog="glue", table_warehouse="s3://lake-bucket/Tables/",
                 s3_region="ap-northeast-1")  # fmt: skip
    with pytest.raises(
        CatalogError, match=r"glue catalog, warehouse s3://lake-bucket/Tables/ cannot be used: .*region"
    ):
        open_tables(s)


def test_a_second_compaction_on_the_same_staging_directory_is_refused_with_the_holders_pid(
    tmp_path: Path,
) -> None:
    from collector.exceptions import DirectoryBusy
    from collector.lock import DirectoryLock

    worker, _ = compactor(tmp_path)
    (worker.staging / "intents" / "kept").mkdir(parents=True, exist_ok=True)
    held = DirectoryLock(worker.staging, what="a compaction under way", fix="")
    with held, pytest.raises(DirectoryBusy) as refused:
        worker.run([DAY])
    said = f"collector compact staging directory '{worker.staging}' is in use by process {os.getpid()}"
    assert said in str(refused.value)
    assert (worker.staging / "intents" / "kept").is_dir()  # what it keeps there is not emptied
