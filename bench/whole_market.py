"""The collector on the whole spot market (COLLECTOR_SYMBOLS=ALL), against the local feed.

    python bench/whole_market.py                          # 1,500 symbols at 2,000 trades/s, then 10x
    python bench/whole_market.py --minutes 2 --burst-minutes 1
    python bench/whole_market.py --watched ALL            # every symbol in the per-symbol layout

The feed is `collector emulate --market-symbols N`: heavy-tailed activity (the top 10 of 1,500
symbols carry 55.6% of the trades; hundreds trade a few times an hour). 2,000 trades a second
in all is the issue's stand-in for the market's aggregate rate (no better public figure was at
hand: BTCUSDT alone printed about 3.3 million trades on 2024-12-01, 38 a second).

Each phase runs the collector for whole UTC minutes after a warm-up minute and prints:
- the collector's CPU (% of one core) and resident memory (now and peak);
- PUT requests a day, extrapolated from the objects and markers the measured minutes landed
  (one PUT each, the S3 sink's count), against the README's cost model for this market: with
  `--watched BTCUSDT,ETHUSDT` (the default) those two land per symbol and the rest market-wide
  (one part and one marker a minute); with `--watched ALL` every symbol lands per symbol;
- the latency from a minute's end to its `_SUCCESS` marker, p50 and p99 over every symbol;
- what was lost: every symbol's landed ids must be one unbroken run (no gap left open, nothing
  dropped), and how often landing held the stream back.
Nothing here is asserted; targets live in the README's whole-market section. The destination
is a local directory: S3's request count is the same, its latency is not measured here.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC as _UTC
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow.parquet as pq
from throughput import Child, _proc_cpu_s, _proc_rss_mb, _stamp

from collector.feed.simulated import Market
from collector.lake.layout import parse_market_key, parse_object_key

PUT_PRICE_PER_1000 = 0.005  # S3 Standard, USD


def predicted_puts_per_minute(market: Market, watched: set[str] | None = None) -> tuple[float, float]:
    """(data objects, markers) a minute: an object per watched symbol-minute with a trade (the
    feed spreads a symbol's trades evenly: a fraction per_day / 1,440 of its minutes have one when
    it trades less than once a minute) and a marker per watched symbol captured since the start;
    plus, when some symbols are not watched, one market part and one market marker.
    `watched` None: every symbol (the per-symbol layout alone)."""
    mine = [s for s in market.symbols if watched is None or s in watched]
    objects = sum(min(1.0, market.trades_per_day_of(s) / 1440) for s in mine)
    market_wide = 1.0 if len(mine) < len(market.symbols) else 0.0
    return objects + market_wide, float(len(mine)) + market_wide


def run_phase(symbols: int, rate: float, minutes: int, label: str, watched: str) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="whole-market-"))
    per_day = int(rate * 86_400)
    feed = Child([sys.executable, "-m", "collector.cli", "emulate", "--port", "0",
                  "--market-symbols", str(symbols), "--market-trades-per-day", str(per_day)],
                 env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    url = str(feed.wait_event("emulator.listening")["url"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update({"PYTHONUNBUFFERED": "1", "COLLECTOR_SYMBOLS": "ALL", "COLLECTOR_WS_URL": url,
                "COLLECTOR_REST_URL": url.replace("ws://", "http://"), "COLLECTOR_LOG_FORMAT": "json",
                "COLLECTOR_DESTINATION": str(tmp / "landing"), "COLLECTOR_SPOOL_DIR": str(tmp / "spool"),
                "COLLECTOR_HEALTH_PORT": "0", "COLLECTOR_STATS_INTERVAL_S": "10",
                "COLLECTOR_WATCHED_SYMBOLS": watched})  # fmt: skip
    collector = Child([sys.executable, "-m", "collector.cli", "run"], env=env)
    try:
        collector.wait_event("collector.ready", timeout_s=300)
        pid = collector.popen.pid
        first = int(time.time() // 60) + 2  # a whole warm-up minute first
        _sleep_until(first * 60)
        cpu0, wall0 = _proc_cpu_s(pid), time.monotonic()
        rss: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=_sample_rss, args=(pid, rss, stop), daemon=True)
        sampler.start()
        _sleep_until((first + minutes) * 60)
        cpu_pct = 100 * (_proc_cpu_s(pid) - cpu0) / (time.monotonic() - wall0)
        peak = _proc_rss_mb(pid, "VmHWM")
        # Markers of the measured minutes are due a little after their end.
        _sleep_until((first + minutes) * 60 + 45)
        stop.set()
        collector.popen.send_signal(signal.SIGTERM)
        collector.popen.wait(120)
        collector.drained()
    finally:
        collector.kill()
        feed.kill()
    return _figures(collector, tmp, range(first, first + minutes), symbols=symbols, per_day=per_day,
                    cpu_pct=cpu_pct, rss=rss, peak=peak, label=label, watched=watched)  # fmt: skip


def _sleep_until(epoch_s: float) -> None:
    while (left := epoch_s - time.time()) > 0:
        time.sleep(min(left, 1.0))


def _sample_rss(pid: int, out: list[float], stop: threading.Event) -> None:
    while not stop.wait(1.0):
        try:
            out.append(_proc_rss_mb(pid))
        except OSError:
            return


def _figures(collector: Child, tmp: Path, measured: range, *, symbols: int, per_day: int, cpu_pct: float,
             rss: list[float], peak: float, label: str, watched: str) -> dict[str, Any]:  # fmt: skip
    objects: defaultdict[int, int] = defaultdict(int)
    rows = 0
    for event in collector.named("collector.batch_landed"):
        key = _key_of(str(event["key"]), tmp)
        name = parse_object_key(key) or parse_market_key(key)
        if name is not None and name.minute in measured:
            objects[name.minute] += 1
            rows += int(event.get("rows") or 0)
    markers: defaultdict[int, int] = defaultdict(int)
    latency: list[float] = []
    market_latency: list[float] = []
    for event in collector.named("collector.minute_marked") + collector.named(
        "collector.market_minute_marked"
    ):
        minute = _minute_of_marker(str(event["key"]))
        if minute in measured:
            markers[minute] += 1
            latency.append(_stamp(event) - (minute + 1) * 60)
            if event["event"] == "collector.market_minute_marked":
                market_latency.append(latency[-1])
    stopped = (collector.named("collector.stopped") or [{}])[-1]
    market = Market.whole_market(symbols, per_day)
    chosen = (
        None if watched.upper() == "ALL" else {w.strip().upper() for w in watched.split(",") if w.strip()}
    )
    model_objects, model_markers = predicted_puts_per_minute(market, chosen)
    n = len(measured)
    puts_per_minute = (sum(objects.values()) + sum(markers.values())) / n
    broken = _broken_runs(tmp / "landing")
    latency.sort()
    return {
        "label": label,
        "trades_per_s": rows / (60 * n),
        "cpu_pct": cpu_pct,
        "rss_mb": statistics.median(rss) if rss else math.nan,
        "peak_rss_mb": peak,
        "objects_per_min": sum(objects.values()) / n,
        "markers_per_min": sum(markers.values()) / n,
        "model_objects_per_min": model_objects,
        "model_markers_per_min": model_markers,
        "puts_per_day": puts_per_minute * 1440,
        "usd_per_day": puts_per_minute * 1440 / 1000 * PUT_PRICE_PER_1000,
        "marker_p50_s": _quantile(latency, 0.5),
        "marker_p99_s": _quantile(latency, 0.99),
        "markers_measured": len(latency),
        "market_marker_max_s": max(market_latency, default=math.nan),
        "stream_pauses": stopped.get("stream_pauses"),
        "buffered_peak_mb": (stopped.get("buffered_bytes_peak") or 0) / 1e6,
        "budget_seals": (stopped.get("batches_sealed") or {}).get("budget", 0),
        "gaps_opened": stopped.get("gaps_opened"),
        "dropped_trades": stopped.get("dropped_trades"),
        "symbols_with_broken_runs": broken,
    }


def _key_of(described: str, tmp: Path) -> str:
    root = str(tmp / "landing") + "/"
    return described[len(root) :] if described.startswith(root) else described


def _minute_of_marker(key: str) -> int:
    parts = key.rstrip("/").split("/")
    year, month, day, hour, minute = (int(p) for p in parts[-6:-1])
    return int(datetime(year, month, day, hour, minute).replace(tzinfo=_UTC).timestamp()) // 60


def _broken_runs(root: Path) -> int:
    """Symbols whose landed ids (per-symbol objects' names, market parts' rows) are not one
    unbroken, unrepeated run."""
    ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for path in root.rglob("*.parquet"):
        key = path.relative_to(root).as_posix()
        if (name := parse_object_key(key)) is not None:
            ranges[name.symbol].append((name.first_trade_id, name.last_trade_id))
        elif parse_market_key(key) is not None:
            table = pq.read_table(path, columns=["symbol", "trade_id"])
            symbols, ids = table.column("symbol").to_pylist(), table.column("trade_id").to_pylist()
            for symbol, trade_id in zip(symbols, ids, strict=True):
                ranges[symbol].append((trade_id, trade_id))
    broken = 0
    for spans in ranges.values():
        spans.sort()
        if any(b[0] != a[1] + 1 for a, b in itertools.pairwise(spans)):
            broken += 1
    return broken


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, int(q * len(values)))]


def _print(r: dict[str, Any]) -> None:
    print(f"\n{r['label']}: {r['trades_per_s']:,.0f} trades/s landed")
    print(f"  CPU {r['cpu_pct']:.1f}% of one core; RSS {r['rss_mb']:.0f} MB (peak {r['peak_rss_mb']:.0f} MB)")
    print(f"  objects/min {r['objects_per_min']:,.0f} "
          f"(model {r['model_objects_per_min']:,.0f} before size splits); "
          f"markers/min {r['markers_per_min']:,.0f} "
          f"(model at most {r['model_markers_per_min']:,.0f})")  # fmt: skip
    print(f"  PUT requests/day {r['puts_per_day']:,.0f} = ${r['usd_per_day']:.2f}/day")
    market = r["market_marker_max_s"]
    latest = "" if math.isnan(market) else f"; the market's latest {market:.1f} s"
    print(f"  minute end to marker: p50 {r['marker_p50_s']:.1f} s, p99 {r['marker_p99_s']:.1f} s "
          f"({r['markers_measured']:,} markers{latest})")  # fmt: skip
    print(f"  lost: gaps opened {r['gaps_opened']}, dropped {r['dropped_trades']}, "
          f"symbols with a broken id run {r['symbols_with_broken_runs']}; "
          f"landing held the stream back {r['stream_pauses']} times")  # fmt: skip
    print(f"  in memory between socket and spool: peak {r['buffered_peak_mb']:.1f} MB of frames; "
          f"batches sealed early for it {r['budget_seals']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=2000.0, help="trades a second in all")
    parser.add_argument("--minutes", type=int, default=3, help="measured minutes of the realistic phase")
    parser.add_argument("--burst", type=float, default=10.0, help="the burst phase's rate, times --rate")
    parser.add_argument("--burst-minutes", type=int, default=2)
    parser.add_argument(
        "--watched",
        default="BTCUSDT,ETHUSDT",
        help="COLLECTOR_WATCHED_SYMBOLS: these per symbol, the rest market-wide; ALL: all per symbol",
    )
    args = parser.parse_args()
    print(f"whole market: {args.symbols} symbols, watched {args.watched}; "
          f"{platform.node()} {os.cpu_count()} CPUs; "
          f"{datetime.now(tz=_UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip
    _print(
        run_phase(
            args.symbols, args.rate, args.minutes, f"realistic, {args.rate:,.0f} trades/s", args.watched
        )
    )
    if args.burst_minutes:
        rate = args.rate * args.burst
        _print(
            run_phase(args.symbols, rate, args.burst_minutes, f"burst, {rate:,.0f} trades/s", args.watched)
        )


if __name__ == "__main__":
    main()
