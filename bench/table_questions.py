"""The three questions of bench/table.py: the landing zone's minute objects against the table, and
the table partitioned by day against day and symbol. Run through bench/table.py."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from import_rate import Day, cache_dir, serve
from table import DAY, collector, environment, market_landing, stats

SYMBOL_DAYS_FIRST = DAY


def timed(runs: int, question: Callable[[], Any]) -> tuple[list[float], Any]:
    question()  # warm: the first read of a file pays the page cache, not the layout
    times, answer = [], None
    for _ in range(runs):
        started = time.perf_counter()
        answer = question()
        times.append(time.perf_counter() - started)
    return times, answer


def open_table(warehouse: Path, name: str = "trades") -> Any:
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("lake", uri=f"sqlite:///{warehouse / 'catalog.db'}", warehouse=warehouse.as_uri())
    return catalog.load_table(f"trade_lake.{name}")


def planned(table: Any, row_filter: str) -> list[str]:
    """The data files an Iceberg engine reads for `row_filter`: pyiceberg's plan (partitions,
    then each file's column statistics)."""
    return [t.file.file_path.removeprefix("file://") for t in table.scan(row_filter=row_filter).plan_files()]


def btcusdt_days(days: int, trades: int) -> tuple[Path, Path]:
    """BTCUSDT over `days` days: the landing zone (the collector's import) and its table (compact)."""
    root = cache_dir() / f"questions-{days}-{trades}"
    landing, tables = root / "landing", root / "tables"
    if (root / ".complete").exists():
        return landing, tables
    files = [
        Day("BTCUSDT", SYMBOL_DAYS_FIRST + timedelta(days=i), 3_000_000_000 + i * trades, trades)
        for i in range(days)
    ]
    for day in files:
        day.write(cache_dir())
    server, url = serve(cache_dir() / f"{trades}", files)
    last = SYMBOL_DAYS_FIRST + timedelta(days=days - 1)
    try:
        env = environment(
            COLLECTOR_ARCHIVE_URL=url,
            COLLECTOR_REST_URL=url,
            COLLECTOR_SPOOL_DIR=str(root / "spool"),
            COLLECTOR_TABLE_WAREHOUSE=str(tables),
        )
        collector(
            [
                "import",
                "--symbols",
                "BTCUSDT",
                "--from",
                str(SYMBOL_DAYS_FIRST),
                "--to",
                str(last),
                "--destination",
                str(landing),
            ],
            env,
        )
        collector(
            ["compact", "--destination", str(landing), "--from", str(SYMBOL_DAYS_FIRST), "--to", str(last)],
            env,
        )
    finally:
        server.shutdown()
    (root / ".complete").touch()
    return landing, tables


def by_symbol_too(tables: Path) -> Path:
    """The market day's trades again, in a table partitioned by day and symbol (pyiceberg's own
    writer splits the rows by partition)."""
    other = tables.parent / "tables-by-symbol"
    if (other / ".complete").exists():
        return other
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import DayTransform, IdentityTransform

    from collector.table.schema import TABLE_PROPERTIES, TRADES_ORDER, TRADES_SCHEMA

    other.mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog("lake", uri=f"sqlite:///{other / 'catalog.db'}", warehouse=other.as_uri())
    catalog.create_namespace_if_not_exists("trade_lake")
    spec = PartitionSpec(
        PartitionField(5, 1000, DayTransform(), "day"), PartitionField(1, 1001, IdentityTransform(), "symbol")
    )
    table = catalog.create_table(
        "trade_lake.trades",
        TRADES_SCHEMA,
        partition_spec=spec,
        sort_order=TRADES_ORDER,
        properties=TABLE_PROPERTIES,
    )
    table.append(open_table(tables).scan().to_arrow())
    (other / ".complete").touch()
    return other


def report_questions(days: int, trades: int, runs: int) -> None:
    import duckdb

    landing, tables = btcusdt_days(days, trades)
    table, bars = open_table(tables), open_table(tables, "bars_1m")
    con = duckdb.connect()
    con.execute("SET threads = 2")
    objects = f"{landing}/Binance/BTCUSDT/*/*/*/*/*/*.parquet"
    first_id = 3_000_000_000 + trades // 2
    ids = (first_id, first_id + trades * 10 // 1440)  # about ten minutes of trades
    one = "SELECT count(*), sum(quantity) FROM read_parquet(?) WHERE symbol = 'BTCUSDT'"
    by_id = (
        "SELECT count(*), max(price) FROM read_parquet(?) "
        "WHERE symbol = 'BTCUSDT' AND trade_id BETWEEN ? AND ?"
    )
    print(
        f"questions, DuckDB {duckdb.__version__} (2 threads), {days} days of BTCUSDT "
        f"({days * 1440:,} minute objects):"
    )
    questions = {
        f"one symbol over {days} days: count, volume (from trades)": (
            lambda: con.execute(one, [objects]).fetchall(),
            lambda: con.execute(one, [planned(table, "symbol = 'BTCUSDT'")]).fetchall(),
        ),
        f"one symbol over {days} days: count, volume (from bars_1m)": (
            lambda: con.execute(one, [objects]).fetchall(),
            lambda: con.execute(
                "SELECT sum(trade_count), sum(volume) FROM read_parquet(?) WHERE symbol = 'BTCUSDT'",
                [planned(bars, "symbol = 'BTCUSDT'")],
            ).fetchall(),
        ),
        "ten minutes by trade id": (
            lambda: con.execute(by_id, [objects, *ids]).fetchall(),
            lambda: con.execute(
                by_id, [planned(table, f"trade_id >= {ids[0]} AND trade_id <= {ids[1]}"), *ids]
            ).fetchall(),
        ),
    }
    for name, (on_landing, on_table) in questions.items():
        landing_times, a = timed(runs, on_landing)
        table_times, b = timed(runs, on_table)
        assert a == b, (name, a, b)
        ratio = statistics.median(landing_times) / statistics.median(table_times)
        print(
            f"  {name}: landing {stats(landing_times, '.3f')} s, table {stats(table_times, '.3f')} s, "
            f"{ratio:.0f}x (target 50x)"
        )
    report_market(runs, con)


def report_market(runs: int, con: Any) -> None:
    landing, _ = market_landing(1500, 2000)
    with tempfile.TemporaryDirectory() as tmp:
        tables = Path(tmp) / "tables"
        env = environment(COLLECTOR_TABLE_WAREHOUSE=str(tables), COLLECTOR_SPOOL_DIR=str(Path(tmp) / "spool"))
        collector(["compact", "--destination", str(landing), "--from", str(DAY)], env)
        layouts = {"day": open_table(tables), "day and symbol": open_table(by_symbol_too(tables))}
        parts = f"{landing}/Binance/_market/*/*/*/*/*/*.parquet"
        hour = "trade_time >= '2024-12-01T12:00:00+00:00' AND trade_time < '2024-12-01T13:00:00+00:00'"
        all_symbols = (
            "SELECT symbol, count(*), sum(quantity) FROM read_parquet(?) WHERE trade_time >= "
            "TIMESTAMPTZ '2024-12-01 12:00:00+00' AND trade_time < TIMESTAMPTZ '2024-12-01 13:00:00+00' "
            "GROUP BY symbol ORDER BY symbol"
        )
        count = "SELECT count(*) FROM read_parquet(?) WHERE symbol = ?"
        quietest = "SELECT symbol FROM read_parquet(?) GROUP BY symbol ORDER BY count(*), symbol LIMIT 1"
        quiet = con.execute(quietest, [parts]).fetchone()[0]
        print("the whole market's hour (1,500 symbols, market-wide parts), and the two partition specs:")
        questions = {
            "all symbols over the hour": (
                lambda: con.execute(all_symbols, [parts]).fetchall(),
                lambda t: con.execute(all_symbols, [planned(t, hour)]).fetchall(),
            ),
            f"the quietest symbol ({quiet}) over the day": (
                lambda: con.execute(count, [parts, quiet]).fetchall(),
                lambda t: con.execute(count, [planned(t, f"symbol = '{quiet}'"), quiet]).fetchall(),
            ),
        }
        for name, (on_landing, on_table) in questions.items():
            landing_times, answer = timed(runs, on_landing)
            shown = []
            for label, table in layouts.items():
                times, got = timed(runs, lambda table=table, ask=on_table: ask(table))  # type: ignore[misc]
                assert got == answer, (name, label)
                shown.append(f"partitioned by {label} {stats(times, '.3f')} s")
            print(f"  {name}: landing {stats(landing_times, '.3f')} s; {'; '.join(shown)}")
        for label, table in layouts.items():
            sizes = sorted(task.file.file_size_in_bytes for task in table.scan().plan_files())
            print(
                f"  partitioned by {label}: {len(sizes):,} data files for the day, median "
                f"{statistics.median(sizes) / 1024:,.0f} kB, smallest {sizes[0] / 1024:,.1f} kB"
            )
