"""The lake's tables, measured: compaction, the import into them, and the questions they answer.

    python bench/table.py [--runs 3] [--big 10000000] [--days 7] [--market-rate 2000]

    compaction   `collector compact` of a BTCUSDT day (3.3 million trades, the landing zone the
                 collector's own import makes from a generated archive day) and of a day whose one
                 busy hour is the whole market (1,500 symbols of the local feed's heavy-tailed
                 market at --market-rate trades/s, market-wide layout): wall time, trades/s,
                 CPU-s per million, peak RSS; with --big, one day of that many trades (how memory
                 grows with a day's size)
    import       `collector import --into table` against pyarrow reading the same zips' CSV,
                 measured in the same run (bench/import_rate.py's archive and server)
    questions    one symbol over --days days, all symbols over an hour, ten minutes by trade id:
                 DuckDB over the landing zone's minute objects against the table (pyiceberg plans
                 the files, DuckDB reads them), in the same run; and the two partition specs
                 (day, and day plus symbol) on the same three questions and on files a day

Every figure is a median with its min-max over --runs. DuckDB is not a dependency of the
collector: `pip install duckdb` first. Data is cached under ~/.cache/trade-lake-bench/
($TRADE_LAKE_BENCH_CACHE); the first run makes it (several minutes for the market hour).

Targets on this project's 2-core machine: compaction at least 3,000,000 trades/s; the import
into the table at least 0.8 of pyarrow's floor; the two selective questions at least 50x faster
than over the minute objects; peak RSS at most 500 MB for BTCUSDT's busiest day; bytes per
trade in the table no more than in the landing zone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from import_rate import REPO, Day, HighWater, cache_dir, read_floor, serve

TARGET_COMPACT = 3_000_000
TARGET_IMPORT_RATIO = 0.8
TARGET_SPEEDUP = 50
TARGET_RSS_MB = 500
DAY = date(2024, 12, 1)


def stats(values: list[float], fmt: str = ",.0f") -> str:
    return f"median {statistics.median(values):{fmt}} (min {min(values):{fmt}}, max {max(values):{fmt}})"


def collector(args: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float, float, float]:
    """`collector ARGS --json` as a process: its JSON, wall s, CPU s, peak RSS MB."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "collector.cli", *args, "--json"],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=err,
        )
        peak = HighWater(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        peak.stop()
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"collector {args[0]} failed:\n{err.read().decode()[-3000:]}")
        return json.loads(out.read()), wall, usage.ru_utime + usage.ru_stime, peak.mb


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    return {**env, "COLLECTOR_LOG_LEVEL": "warning", **extra}


def btcusdt_landing(trades: int) -> Path:
    """A landing zone holding BTCUSDT's DAY as the collector's import lands it (cached)."""
    landing = cache_dir() / f"landing-btcusdt-{trades}"
    if (landing / ".complete").exists():
        return landing
    shutil.rmtree(landing, ignore_errors=True)
    day = Day("BTCUSDT", DAY, 3_000_000_000, trades)
    day.write(cache_dir())
    server, url = serve(cache_dir() / f"{trades}", [day])
    try:
        env = environment(
            COLLECTOR_ARCHIVE_URL=url,
            COLLECTOR_REST_URL=url,
            COLLECTOR_SPOOL_DIR=str(landing.parent / f"spool-{trades}"),
        )
        collector(
            [
                "import",
                "--symbols",
                "BTCUSDT",
                "--from",
                str(DAY),
                "--to",
                str(DAY),
                "--destination",
                str(landing),
            ],
            env,
        )
    finally:
        server.shutdown()
    (landing / ".complete").touch()
    return landing


def market_landing(symbols: int, rate: int) -> tuple[Path, int]:
    """A landing zone whose DAY holds the whole market's 12:00-13:00 in the market-wide layout, the
    local feed's own trades, landed with the collector's own encoders and markers; every other
    minute of the day marked quiet (cached). Returns it and its trades."""
    landing = cache_dir() / f"landing-market-{symbols}-{rate}"
    if (landing / ".complete").exists():
        return landing, int((landing / ".complete").read_text())
    shutil.rmtree(landing, ignore_errors=True)
    import hashlib

    from collector.capture.batching import MinuteBatcher
    from collector.capture.decode import Trade
    from collector.feed.simulated import Market
    from collector.lake.layout import market_marker_key, market_object_key
    from collector.lake.market_manifest import MarketFile, SymbolShare, build_market_manifest
    from collector.lake.parquet import encode_market, encode_parquet
    from collector.lake.sinks import LocalSink, sha256_b64
    from collector.table.days import day_minutes

    market = Market.whole_market(symbols, rate * 86_400)
    start_us = (DAY - date(1970, 1, 1)).days * 86_400_000_000 + 12 * 3_600_000_000
    sources: dict[int, list[tuple[str, bytes, SymbolShare]]] = {}
    trades = 0
    for symbol in sorted(market.symbols):
        batcher = MinuteBatcher.until_flushed("us", source="stream")
        first, end = market.first_at(symbol, start_us), market.first_at(symbol, start_us + 3_600_000_000)
        for trade_id in range(first, end):
            t = market.trade(symbol, trade_id)
            batcher.add(
                Trade(
                    symbol,
                    trade_id,
                    t.price,
                    t.quantity,
                    t.time_us,
                    t.time_us,
                    t.is_buyer_maker,
                    t.time_us * 1000,
                    100,
                ),
                0.0,
            )
        for batch in batcher.flush():
            share = SymbolShare(symbol, batch.rows, batch.first_trade_id, batch.last_trade_id)
            sources.setdefault(batch.minute, []).append((symbol, encode_parquet(batch), share))
        trades += end - first
    sink = LocalSink(landing)
    for minute in day_minutes(DAY):
        parts = []
        if minute in sources:
            data, _ = encode_market([data for _, data, _ in sources[minute]], "parquet")
            key = market_object_key(minute, 0, hashlib.sha256(data).hexdigest())
            sink.put(key, data)
            shares = [share for _, _, share in sources[minute]]
            parts.append(
                (
                    MarketFile(
                        key.rsplit("/", 1)[1], len(data), sha256_b64(data), sum(s.rows for s in shares)
                    ),
                    shares,
                )
            )
        doc = build_market_manifest(minute, parts, market.symbols, {}, written_at_s=time.time())
        sink.put_marker(market_marker_key(minute), (json.dumps(doc) + "\n").encode())
    (landing / ".complete").write_text(str(trades))
    return landing, trades


def compact(landing: Path, runs: int) -> list[dict[str, float]]:
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            env = environment(
                COLLECTOR_TABLE_WAREHOUSE=str(Path(tmp) / "tables"),
                COLLECTOR_SPOOL_DIR=str(Path(tmp) / "spool"),
            )
            out, wall, cpu, rss = collector(
                ["compact", "--destination", str(landing), "--from", str(DAY)], env
            )
            (day,) = out["days"]
            assert day["status"] == "committed", day
            size = sum(
                p.stat().st_size
                for p in (Path(tmp) / "tables").rglob("data/*/*.parquet")
                if "/trades/" in str(p)
            )
            results.append(
                {
                    "rate": day["rows"] / wall,
                    "cpu": cpu / day["rows"] * 1e6,
                    "rss": rss,
                    "rows": day["rows"],
                    "bytes": size,
                }
            )
    return results


def landing_bytes(landing: Path) -> int:
    return sum(p.stat().st_size for p in landing.rglob("*.parquet"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--trades", type=int, default=3_300_000, help="BTCUSDT's day (3.3 M on 2024-12-01)")
    parser.add_argument("--big", type=int, default=0, help="also compact one day of this many trades")
    parser.add_argument("--market-symbols", type=int, default=1500)
    parser.add_argument("--market-rate", type=int, default=2000, help="the whole market's trades a second")
    parser.add_argument("--days", type=int, default=7, help="days of BTCUSDT for the questions")
    parser.add_argument("--skip", default="", help="comma-separated: compact, market, import, questions")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    print(f"bench/table.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.runs} runs each")
    if "compact" not in skip:
        landing = btcusdt_landing(args.trades)
        report_compact(f"BTCUSDT day, {args.trades:,} trades", landing, compact(landing, args.runs))
        if args.big:
            big = btcusdt_landing(args.big)
            report_compact(f"one day of {args.big:,} trades", big, compact(big, 1))
    if "market" not in skip:
        landing, trades = market_landing(args.market_symbols, args.market_rate)
        report_compact(
            f"whole market, {args.market_symbols:,} symbols, one hour of {trades:,} trades",
            landing,
            compact(landing, args.runs),
        )
    if "import" not in skip:
        report_import(args.trades, args.runs)
    if "questions" not in skip:
        from table_questions import report_questions

        report_questions(args.days, args.trades, args.runs)


def report_compact(what: str, landing: Path, results: list[dict[str, float]]) -> None:
    rows = results[0]["rows"]
    print(f"collector compact, {what}:")
    print(f"  trades/s {stats([r['rate'] for r in results])}  (target {TARGET_COMPACT:,})")
    print(f"  CPU-s per million {stats([r['cpu'] for r in results], '.2f')}")
    print(f"  peak RSS MB {stats([r['rss'] for r in results])}  (target {TARGET_RSS_MB})")
    print(
        f"  bytes per trade: table {results[0]['bytes'] / rows:.2f}, "
        f"landing {landing_bytes(landing) / rows:.2f}"
    )


def report_import(trades: int, runs: int) -> None:
    days = [Day("BTCUSDT", DAY + timedelta(days=i), 3_000_000_000 + i * trades, trades) for i in range(2)]
    for day in days:
        day.write(cache_dir())
    server, url = serve(cache_dir() / f"{trades}", days)
    rates, floors, rss = [], [], []
    try:
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as tmp:
                floors.append(sum(d.trades for d in days) / read_floor(cache_dir(), days))
                env = environment(
                    COLLECTOR_ARCHIVE_URL=url,
                    COLLECTOR_REST_URL=url,
                    COLLECTOR_SPOOL_DIR=str(Path(tmp) / "spool"),
                    COLLECTOR_TABLE_WAREHOUSE=str(Path(tmp) / "tables"),
                )
                out, wall, _, peak = collector(
                    [
                        "import",
                        "--into",
                        "table",
                        "--symbols",
                        "BTCUSDT",
                        "--from",
                        str(days[0].day),
                        "--to",
                        str(days[-1].day),
                        "--destination",
                        str(Path(tmp) / "landing"),
                    ],
                    env,
                )
                assert out["archive_trades"] == 2 * trades, out
                rates.append(2 * trades / wall)
                rss.append(peak)
    finally:
        server.shutdown()
    print(f"collector import --into table, 2 days of {trades:,} trades:")
    print(f"  trades/s {stats(rates)}; pyarrow reading the same CSV {stats(floors)}")
    print(
        f"  ratio {statistics.median(rates) / statistics.median(floors):.2f} of the floor "
        f"(target {TARGET_IMPORT_RATIO})"
    )
    print(f"  peak RSS MB {stats(rss)}")


if __name__ == "__main__":
    main()
