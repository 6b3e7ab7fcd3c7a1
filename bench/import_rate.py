"""How fast `collector import` lands Binance's archive, and in how much memory.

    python bench/import_rate.py [--trades 3300000] [--days 2] [--runs 3] [--big 20000000]

Writes archive files the way Binance publishes them (one CSV in a zip, no header, a
`.zip.CHECKSUM` beside it) with trades shaped like BTCUSDT's (prices in cents near 97,000,
quantities of five decimals, times in ms for 2024-12-30/31 and in µs from 2025-01-01), serves
them from a local HTTP server that also answers the REST `aggTrades` question the import asks
at each file's edges, and runs `collector import` as a subprocess into a fresh local landing
directory. Prints wall time, trades/s, CPU-seconds per million trades and peak RSS (of the
import process: its VmHWM), medians with min-max over the runs, beside the floor measured in
the same run: pyarrow reading the same zips' CSV, nothing else.

`--big N` adds one run over a single day of N trades (more than BTCUSDT's busiest day) to show
that resident memory does not grow with a day's size. The files are cached under
`~/.cache/trade-lake-bench/` (or `$TRADE_LAKE_BENCH_CACHE`); the first run writes them.

Target on this project's 2-core machine: at least 1,000,000 trades/s; at most 300 MB RSS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parent.parent
EPOCH = date(1970, 1, 1)
US_FROM = date(2025, 1, 1)
TARGET_TRADES_PER_S = 1_000_000
TARGET_RSS_MB = 300


def cache_dir() -> Path:
    return Path(os.environ.get("TRADE_LAKE_BENCH_CACHE", Path.home() / ".cache" / "trade-lake-bench"))


class Day:
    """One generated daily file: its symbol, day, first id and trade count."""

    def __init__(self, symbol: str, day: date, first_id: int, trades: int) -> None:
        self.symbol, self.day, self.first_id, self.trades = symbol, day, first_id, trades

    @property
    def name(self) -> str:
        return f"{self.symbol}-trades-{self.day}.zip"

    @property
    def path(self) -> str:
        return f"/data/spot/daily/trades/{self.symbol}/{self.name}"

    @property
    def per_ms(self) -> int:
        return 1000 if self.day >= US_FROM else 1

    def start_ms(self) -> int:
        return (self.day - EPOCH).days * 86_400_000

    def write(self, root: Path) -> Path:
        """The zip and its CHECKSUM under `root` (once; cached by name and size)."""
        target = root / f"{self.trades}" / self.path.lstrip("/")
        if target.is_file() and target.with_name(target.name + ".CHECKSUM").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{self.symbol}{self.day}")
        span = 86_400_000 * self.per_ms
        start = self.start_ms() * self.per_ms
        price = 9_700_000  # cents
        partial = target.with_name(target.name + ".part")
        csv_name = self.name.removesuffix(".zip") + ".csv"
        with (
            zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
            archive.open(csv_name, "w", force_zip64=True) as out,
        ):
            rows: list[str] = []
            for i in range(self.trades):
                price += rng.choice((-1, 0, 0, 0, 1))
                qty = rng.choice((8, 15, 50, 120, 1000, 2500, 31000, 100000, 1234567))
                quote = price * qty * 10  # cents x 1e-5 units x 10 = 1e-8 units
                t = start + i * span // self.trades
                rows.append(
                    f"{self.first_id + i},{price // 100}.{price % 100:02d}000000,"
                    f"{qty // 100000}.{qty % 100000:05d}000,{quote // 10**8}.{quote % 10**8:08d},"
                    f"{t},{'True' if rng.getrandbits(1) else 'False'},True\n"
                )
                if len(rows) == 100_000:
                    out.write("".join(rows).encode())
                    rows.clear()
            out.write("".join(rows).encode())
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        partial.replace(target)
        target.with_name(target.name + ".CHECKSUM").write_text(f"{digest}  {self.name}\n")
        return target


def serve(root: Path, days: list[Day]) -> tuple[ThreadingHTTPServer, str]:
    """The archive files under `root`, and aggTrades: the first trade at or after a time."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/api/v3/aggTrades":
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                body = json.dumps(agg_trades(days, query["symbol"], int(query["startTime"]))).encode()
                return self._answer(200, body, "application/json")
            file = root / parts.path.lstrip("/")
            if not file.is_file():
                return self._answer(404, b"Not Found", "text/plain")
            self.send_response(200)
            self.send_header("Content-Length", str(file.stat().st_size))
            self.end_headers()
            with open(file, "rb") as handle:
                shutil.copyfileobj(handle, self.wfile, 1 << 20)

        def _answer(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def agg_trades(days: list[Day], symbol: str, start_ms: int) -> list[dict[str, Any]]:
    for day in sorted((d for d in days if d.symbol == symbol), key=lambda d: d.day):
        end_ms = day.start_ms() + 86_400_000
        if start_ms < end_ms:
            offset = max(0, start_ms - day.start_ms())
            i = -(-offset * day.trades // 86_400_000)  # the first trade at or after start_ms
            if i < day.trades:
                trade_id = day.first_id + i
                t = day.start_ms() + i * 86_400_000 // day.trades
                return [{"a": trade_id, "f": trade_id, "l": trade_id, "T": t}]
    return []


def run_import(url: str, days: list[Day], landing: Path) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(
        {
            "COLLECTOR_ARCHIVE_URL": url,
            "COLLECTOR_REST_URL": url,
            "COLLECTOR_SPOOL_DIR": str(landing.parent / "spool"),
            "COLLECTOR_LOG_LEVEL": "warning",
        }
    )
    first, last = min(d.day for d in days), max(d.day for d in days)
    symbols = ",".join(sorted({d.symbol for d in days}))
    args = [sys.executable, "-m", "collector.cli", "import", "--symbols", symbols]
    args += ["--from", str(first), "--to", str(last), "--destination", str(landing), "--json"]
    out_path, err_path = landing.parent / "import.out", landing.parent / "import.err"
    started = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=err)
        peak = HighWater(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own CPU time
        peak.stop()
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"collector import failed ({proc.returncode}):\n{err_path.read_text()[-3000:]}")
    result = json.loads(out_path.read_text())
    trades = sum(d.trades for d in days)
    assert result["landed_trades"] == trades, result
    return {
        "wall_s": wall,
        "trades_per_s": trades / wall,
        "cpu_s_per_m": (usage.ru_utime + usage.ru_stime) / trades * 1e6,
        "rss_mb": peak.mb,
        "objects": result["objects"],
    }


class HighWater:
    """The peak resident memory of a process, from its own VmHWM, read every 0.1 s until it
    ends. (wait4's ru_maxrss is no good here: a child inherits its parent's high-water mark
    at fork, and this process has just written the archive files.)"""

    def __init__(self, pid: int) -> None:
        self.pid, self.kb, self._done = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.1):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        self.kb = max(self.kb, int(line.split()[1]))
            except (OSError, ValueError):
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    @property
    def mb(self) -> float:
        return self.kb / 1024


def read_floor(root: Path, days: list[Day]) -> float:
    """Seconds for pyarrow alone to read the same zips' CSV (ids, prices, times): the floor."""
    from pyarrow import csv

    started = time.monotonic()
    for day in days:
        with (
            zipfile.ZipFile(root / f"{day.trades}" / day.path.lstrip("/")) as archive,
            archive.open(archive.namelist()[0]) as handle,
        ):
            for _ in csv.open_csv(handle, read_options=csv.ReadOptions(autogenerate_column_names=True)):
                pass
    return time.monotonic() - started


def summary(name: str, values: list[float], unit: str, fmt: str = ",.0f") -> str:
    return (
        f"  {name}: median {statistics.median(values):{fmt}} {unit} "
        f"(min {min(values):{fmt}}, max {max(values):{fmt}}, {len(values)} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--trades", type=int, default=3_300_000, help="per day (BTCUSDT printed 3.3M on 2024-12-01)"
    )
    parser.add_argument(
        "--days", type=int, default=2, help="days either side of 2025-01-01 (ms, then µs times)"
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big", type=int, default=0, help="also one run over one day of this many trades")
    args = parser.parse_args()
    root = cache_dir()
    first_day = date(2025, 1, 1) - timedelta(days=args.days // 2)
    days = [
        Day("BTCUSDT", first_day + timedelta(days=i), 4_000_000_000 + i * args.trades, args.trades)
        for i in range(args.days)
    ]
    started = time.monotonic()
    for day in days:
        day.write(root)
    took = time.monotonic() - started
    print(f"archive: {args.days} day(s) of {args.trades:,} trades ({took:.1f} s to have them)")
    server, url = serve(root / f"{args.trades}", days)
    results, floors = [], []
    try:
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                floors.append(sum(d.trades for d in days) / read_floor(root, days))
                results.append(run_import(url, days, Path(tmp) / "landing"))
    finally:
        server.shutdown()
    rates = [r["trades_per_s"] for r in results]
    print(f"collector import, {sum(d.trades for d in days):,} trades, {results[0]['objects']:,} objects:")
    print(summary("end to end", rates, "trades/s"))
    print(summary("CPU", [r["cpu_s_per_m"] for r in results], "CPU-s per million trades", ".2f"))
    print(summary("peak RSS", [r["rss_mb"] for r in results], "MB"))
    print(summary("floor: pyarrow reading the zips' CSV", floors, "trades/s"))
    print(f"  ratio import / floor: {statistics.median(rates) / statistics.median(floors):.2f}")
    print(f"  target: {TARGET_TRADES_PER_S:,} trades/s, {TARGET_RSS_MB} MB")
    if args.big:
        big = [Day("BTCUSDT", date(2024, 12, 1), 3_000_000_000, args.big)]
        big[0].write(root)
        server, url = serve(root / f"{args.big}", big)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                result = run_import(url, big, Path(tmp) / "landing")
        finally:
            server.shutdown()
        print(
            f"one day of {args.big:,} trades: {result['trades_per_s']:,.0f} trades/s, "
            f"{result['cpu_s_per_m']:.2f} CPU-s per million, peak RSS {result['rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
