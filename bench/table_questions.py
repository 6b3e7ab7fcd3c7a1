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
        env = environment(COLLECTOR_ARCHIVE_URL=url, COLLECTOR_REST_URL=url, COLLECTOR_SPOOL_DIR=str(root / "spool"),
                          COLLECTOR_TABLE_WAREHOUSE=str(tables))  # fmt: skip
        collector(["import", "--symbols", "BTCUSDT", "--from", str(SYMBOL_DAYS_FIRST), "--to", str(last),
                   "--destination", str(landing)], env)  # fmt: skip
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
    table = catalog.create_table("trade_lake.trades", TRADES_SCHEMA, partition_spec=spec, sort_order=TRADES_ORDER,
                                 properties=TABLE_PROPERTIES)  # fmt: skip
    table.append(open_table(tables).scan().to_arrow())
    (other / ".complete").touch()
    return other


def report_questions(days: int, trades: int, runs: int) -> None:
    import duckdb

    landing, tables = btcusdt_days(days, trades)
    table = open_table(tables)
    con = duckdb.connect()
    con.execute("SET threads = 2")
    objects = f"{landing}/Binance/BTCUSDT/*/*/*/*/*/*.parquet"
    first_id = 3_000_000_000 + trades // 2
    ten_minutes = (first_id, first_id + trades * 10 // 1440)
    print(
        f"questions, DuckDB {duckdb.__version__} (2 threads), {days} days of BTCUSDT ({days * 1440:,} minute objects):"
    )

    def one_symbol_landing() -> Any:
        return con.execute(f"SELECT count(*), sum(quantity) FROM read_parquet('{objects}')").fetchall()

    def one_symbol_table() -> Any:
        files = planned(table, "symbol = 'BTCUSDT'")
        return con.execute(
            "SELECT count(*), sum(quantity) FROM read_parquet(?) WHERE symbol = 'BTCUSDT'", [files]
        ).fetchall()

    def by_id_landing() -> Any:
        return con.execute(f"SELECT count(*), max(price) FROM read_parquet('{objects}') WHERE trade_id BETWEEN ? AND ?",
                           list(ten_minutes)).fetchall()  # fmt: skip

    def by_id_table() -> Any:
        files = planned(
            table, f"symbol = 'BTCUSDT' AND trade_id >= {ten_minutes[0]} AND trade_id <= {ten_minutes[1]}"
        )
        return con.execute("SELECT count(*), max(price) FROM read_parquet(?) WHERE symbol = 'BTCUSDT' AND trade_id "
                           "BETWEEN ? AND ?", [files, *ten_minutes]).fetchall()  # fmt: skip

    for name, on_landing, on_table in (
        (f"one symbol over {days} days: count, volume", one_symbol_landing, one_symbol_table),
        ("ten minutes by trade id", by_id_landing, by_id_table),
    ):
        landing_times, a = timed(runs, on_landing)
        table_times, b = timed(runs, on_table)
        assert a == b, (name, a, b)
        ratio = statistics.median(landing_times) / statistics.median(table_times)
        print(f"  {name}: landing {stats(landing_times, '.3f')} s, table {stats(table_times, '.3f')} s, "
              f"{ratio:.0f}x (target {50}x)")  # fmt: skip
    report_market(runs, con)


def report_market(runs: int, con: Any) -> None:
    landing, _ = market_landing(1500, 2000)
    with tempfile.TemporaryDirectory() as tmp:
        tables = Path(tmp) / "tables"
        env = environment(COLLECTOR_TABLE_WAREHOUSE=str(tables), COLLECTOR_SPOOL_DIR=str(Path(tmp) / "spool"))
        collector(["compact", "--destination", str(landing), "--from", str(DAY)], env)
        by_day, by_symbol = open_table(tables), open_table(by_symbol_too(tables))
        parts = f"{landing}/Binance/_market/*/*/*/*/*/*.parquet"
        hour = "trade_time >= '2024-12-01T12:00:00+00:00' AND trade_time < '2024-12-01T13:00:00+00:00'"
        sql_hour = "trade_time >= TIMESTAMPTZ '2024-12-01 12:00:00+00' AND trade_time < TIMESTAMPTZ '2024-12-01 13:00:00+00'"
        print("the whole market's hour (1,500 symbols, market-wide parts), and the two partition specs:")

        def all_symbols(files: Any) -> Any:
            return con.execute(f"SELECT symbol, count(*), sum(quantity) FROM read_parquet(?) WHERE {sql_hour} "
                               "GROUP BY symbol ORDER BY symbol", [files]).fetchall()  # fmt: skip

        quiet = con.execute(
            f"SELECT symbol FROM read_parquet('{parts}') GROUP BY symbol ORDER BY count(*) LIMIT 1"
        ).fetchone()[0]

        def one_symbol(table: Any) -> Any:
            files = planned(table, f"symbol = '{quiet}'")
            return con.execute(
                "SELECT count(*) FROM read_parquet(?) WHERE symbol = ?", [files, quiet]
            ).fetchall()

        cases = {
            "all symbols over the hour": (
                lambda: all_symbols(parts),
                lambda t: all_symbols(planned(t, hour)),
            ),
            f"one quiet symbol ({quiet}) over the day": (
                lambda: con.execute(
                    f"SELECT count(*) FROM read_parquet('{parts}') WHERE symbol = ?", [quiet]
                ).fetchall(),
                one_symbol,
            ),
        }
        for name, (on_landing, on_table) in cases.items():
            times = {
                label: timed(runs, lambda t=t: on_table(t))
                for label, t in (("day", by_day), ("day+symbol", by_symbol))
            }
            landing_times, answer = timed(runs, on_landing)
            assert all(a == answer for _, a in times.values()), name
            shown = ", ".join(
                f"partitioned by {label} {stats(t, '.3f')} s" for label, (t, _) in times.items()
            )
            print(f"  {name}: landing {stats(landing_times, '.3f')} s; {shown}")
        for label, t in (("day", by_day), ("day+symbol", by_symbol)):
            files = [task.file for task in t.scan().plan_files()]
            sizes = sorted(f.file_size_in_bytes for f in files)
            print(f"  partitioned by {label}: {len(files):,} data files for the day, median "
                  f"{statistics.median(sizes) / 1024:,.0f} kB, smallest {sizes[0] / 1024:,.1f} kB")  # fmt: skip
