"""The collector, measured end to end against a local feed in its own process.

    python bench/throughput.py                       # 3 runs of 200,000 trades, then steady rates
    python bench/throughput.py --trades 20000 --runs 1 --steady-s 5     # the short CI version

Prints, per run and as medians with min and max:
- end-to-end trades/s: from the feed's first write to the last trade landed (the collector is
  asked to stop as soon as it has received every trade; its shutdown seals and lands the rest);
- CPU seconds per million trades and peak RSS of the collector process (from wait4's rusage);
- bytes per trade landed (default settings: Parquet, 2 MB batches);
and, with the regular feed pacing trades at 50/s and 5,000/s (one trade per write), and the
recorded BTCUSDT trades replayed at their own bursty timing sped up to average 50/s (when
../shared is beside the clone): the collector's CPU use (% of one core), resident memory, and
the latency from a batch's first trade to its object landing.
Nothing here is asserted: it is a measurement. Machine and date belong with any figure quoted.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gzip
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class Child:
    """A subprocess whose stdout JSON lines are collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, *, cpu: int | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self._arrived = threading.Condition()
        self._ended = False  # the reader has seen the end of the child's output
        pin = None if cpu is None else (lambda: os.sched_setaffinity(0, {cpu}))
        self.popen = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
            text=True,
            preexec_fn=pin,  # noqa: PLW1509 (a benchmark's child, started from one thread)
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._arrived:
                self.events.append(event)
                self._arrived.notify_all()
        with self._arrived:
            self._ended = True
            self._arrived.notify_all()

    def wait_event(
        self, name: str, predicate: Any = lambda e: True, timeout_s: float = 600
    ) -> dict[str, Any]:
        """The first event `name` that satisfies `predicate`, as soon as the reader has it."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._arrived:
            while True:
                for event in self.events[seen:]:
                    if event.get("event") == name and predicate(event):
                        return event
                seen = len(self.events)
                if self._ended:
                    self.popen.wait()
                    raise RuntimeError(f"{self.popen.args} exited with {self.popen.returncode} before {name}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(name)
                self._arrived.wait(left)  # woken by each event and by the end of the output

    def drained(self, timeout_s: float = 60) -> None:
        """Wait until the reader has every line the (exited) child wrote."""
        with self._arrived:
            self._arrived.wait_for(lambda: self._ended, timeout_s)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("event") == name]

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


def collector_env(url: str, tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "COLLECTOR_WS_URL": url,
            "COLLECTOR_REST_URL": "http://127.0.0.1:9",  # no gaps expected; never reach Binance
            "COLLECTOR_DESTINATION": str(tmp / "landing"),
            "COLLECTOR_SPOOL_DIR": str(tmp / "spool"),
            "COLLECTOR_HEALTH_PORT": "0",
            "COLLECTOR_STATS_INTERVAL_S": "0.05",
        }
    )
    env.update({f"COLLECTOR_{k.upper()}": v for k, v in extra.items()})
    return env


def _stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


class Feed:
    """One bulk feed per shape: every connection gets the whole tape, in its form."""

    def __init__(self, trades: int, *, tls: bool, forms: str, shape: Shape) -> None:
        args = [sys.executable, "bench/bulk_feed.py", "--trades", str(trades), "--forms", forms,
                "--symbols", shape.symbols, "--spacing-ms", str(shape.spacing_ms)]  # fmt: skip
        if shape.replay:
            args += ["--replay", str(shape.replay)]
        self.child = Child([*args, "--tls"] if tls else args)
        listening = self.child.wait_event("feed.listening")
        self.url = str(listening["url"])
        self.trust = {"SSL_CERT_FILE": str(listening["ca_file"])} if tls else {}

    def sent_count(self) -> int:
        return len(self.child.named("feed.sent"))

    def sent(self, after: int) -> dict[str, Any]:
        """The `after`-th connection's feed.sent (0-based): when its first byte was written."""
        self.child.wait_event("feed.sent", lambda e: self.sent_count() > after)
        return self.child.named("feed.sent")[after]


@dataclass(frozen=True)
class Shape:
    """A burst as users meet it: which symbols, and how their trade times advance."""

    name: str
    label: str
    symbols: str = "BTCUSDT"
    spacing_ms: float = 0.0
    replay: Path | None = None
    tls: bool | None = None  # None: as --tls says; False: plain ws:// whatever it says
    pin_cpu: int | None = None  # the collector runs on this one core (the feed may use the other)


TEN = "BTCUSDT,ETHUSDT,BNBUSDT,SOLUSDT,XRPUSDT,DOGEUSDT,ADAUSDT,TRXUSDT,LINKUSDT,AVAXUSDT"
RECORDING = REPO.parent / "shared" / "binance" / "btcusdt_trades_20240808_live.gz"
SHAPES = {
    "now": Shape("now", "BTCUSDT, every trade time now (one or two minutes: the best case)"),
    "spaced": Shape("spaced", "BTCUSDT, trade times 30 ms apart (~2,000 a minute, hours of trade time)",
                    spacing_ms=30.0),
    "recording": Shape("recording", "BTCUSDT recording looped: its prices, sizes and bursty timing",
                       replay=RECORDING),
    "symbols": Shape("symbols", "10 symbols on one combined stream, each 30 ms apart (minute-crossing reads)",
                     symbols=TEN, spacing_ms=30.0),
    # Plain ws:// on loopback delivers faster than TLS: the collector reads far ahead of what it
    # lands, so this is the shape that shows how much a burst holds in memory.
    "spaced-ws": Shape("spaced-ws", "BTCUSDT, 30 ms apart, plain ws:// as fast as TCP takes it, the "
                       "collector on one core (memory under a burst)", spacing_ms=30.0, tls=False, pin_cpu=0),
}  # fmt: skip


def _usage_figures(usage: Any, trades: int) -> dict[str, float]:
    return {
        "cpu_s_per_million": (usage.ru_utime + usage.ru_stime) / trades * 1e6,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def burst(feed: Feed, trades: int, symbols: str = "BTCUSDT", cpu: int | None = None) -> dict[str, float]:
    """One run: the collector takes the whole tape as fast as it can."""
    index = feed.sent_count()
    with tempfile.TemporaryDirectory() as tmp:
        env = collector_env(feed.url, Path(tmp), symbols=symbols)
        collector = Child([sys.executable, "-m", "collector.cli", "run"], {**env, **feed.trust}, cpu=cpu)
        try:
            collector.wait_event(
                "collector.stats", lambda e: sum((e.get("trades_received") or {}).values()) >= trades
            )
            collector.popen.send_signal(signal.SIGTERM)
            _, status, usage = os.wait4(collector.popen.pid, 0)
            collector.popen.returncode = os.waitstatus_to_exitcode(status)
            collector.drained()
        finally:
            collector.kill()
        sent = feed.sent(index)
        landed = collector.named("collector.batch_landed")
        rows = sum(int(e["rows"]) for e in landed)
        if rows != trades or collector.popen.returncode != 0:
            raise RuntimeError(f"landed {rows} of {trades} trades, exit {collector.popen.returncode}")
        elapsed = max(_stamp(e) for e in landed) - float(sent["first_write"])
        return {
            "trades_per_s": trades / elapsed,
            **_usage_figures(usage, trades),
            "bytes_per_trade": sum(int(e["bytes"]) for e in landed) / trades,
            "files": len(landed),
        }


def cryptofeed_burst(feed: Feed, python: str, trades: int, symbols: str) -> dict[str, float]:
    """The same burst through cryptofeed (aggTrade frames, as it subscribes), counting only."""
    index = feed.sent_count()
    peer = Child([python, "bench/cryptofeed_peer.py", feed.url, str(trades), symbols],
                 {**os.environ, **feed.trust})  # fmt: skip
    try:
        done = peer.wait_event("cryptofeed.done")
        _, _, usage = os.wait4(peer.popen.pid, 0)
        peer.popen.returncode = 0
    finally:
        peer.kill()
    sent = feed.sent(index)
    return {
        "trades_per_s": trades / (float(done["at"]) - float(sent["first_write"])),
        **_usage_figures(usage, trades),
    }


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


STEADY_WINDOWS = 3


def recording_speed(path: Path, rate: float, wall_s: float) -> float:
    """The replay speed at which the recording's first `wall_s` seconds of replay hold `rate`
    trades per second (its pace varies: the whole tape's mean would not be the measured one)."""
    stamps = []
    with gzip.open(path, "rb") as handle:
        for line in handle:
            if b'"e":"trade"' in line:
                stamps.append(int(line.split(b" ", 1)[0]))
    unit = 1e9 if stamps[0] > 10**17 else 1e6
    offsets = [(s - stamps[0]) / unit for s in stamps]
    low, high = 0.01, 100.0
    for _ in range(60):  # bisection: trades replayed within wall_s rise with the speed
        speed = (low + high) / 2
        if bisect.bisect_right(offsets, wall_s * speed) < rate * wall_s:
            low = speed
        else:
            high = speed
    return (low + high) / 2


def steady(
    rate: float, seconds: float, latency_wait_s: float, feed_args: list[str] | None = None
) -> dict[str, float]:
    """The regular feed at a steady rate: CPU share and memory once warmed up, and batch latency.

    The CPU share is measured over `STEADY_WINDOWS` consecutive windows (a shared machine's
    noise shows as their spread). At 50 trades/s a batch is a whole minute, sealed when the
    minute closes: after measuring, wait up to `latency_wait_s` for one to land, so its latency
    is seen.
    """
    feed = Child([sys.executable, "-m", "collector.cli", "emulate", "--port", "0",
                  *(feed_args or ["--rate", str(rate)])])  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        try:
            url = str(feed.wait_event("emulator.listening")["url"])
            collector = Child([sys.executable, "-m", "collector.cli", "run"],
                              collector_env(url, Path(tmp), stats_interval_s="60"))  # fmt: skip
            collector.wait_event("collector.ready")
            ready = time.monotonic()
            time.sleep(min(5.0, seconds))  # warm-up: imports done, first batches open
            pid = collector.popen.pid
            shares = []
            for _ in range(STEADY_WINDOWS):
                cpu0, t0 = _proc_cpu_s(pid), time.monotonic()
                time.sleep(seconds / STEADY_WINDOWS)
                cpu1, t1 = _proc_cpu_s(pid), time.monotonic()
                shares.append(100 * (cpu1 - cpu0) / (t1 - t0))
            rss, hwm = _proc_rss_mb(pid), _proc_rss_mb(pid, "VmHWM")
            with contextlib.suppress(TimeoutError):
                collector.wait_event("collector.batch_landed", _not_at_shutdown, timeout_s=latency_wait_s)
            stopped = time.monotonic()
            collector.popen.send_signal(signal.SIGTERM)
            collector.popen.wait(timeout=60)
            collector.drained()
        finally:
            feed.kill()
    landed_rows = sum(int(e["rows"]) for e in collector.named("collector.batch_landed"))
    latencies = [
        float(e["seconds_since_first_trade"])
        for e in collector.named("collector.batch_landed")
        if e.get("seconds_since_first_trade") is not None and _not_at_shutdown(e)
    ]
    return {
        "core_percent": statistics.median(shares),
        "core_percent_min": min(shares),
        "core_percent_max": max(shares),
        "rss_mb": rss,
        "peak_rss_mb": hwm,
        "batch_latency_s_median": statistics.median(latencies) if latencies else float("nan"),
        "batches": len(latencies),
        "received_per_s": landed_rows / (stopped - ready),  # every trade lands at the shutdown
    }


def _not_at_shutdown(event: dict[str, Any]) -> bool:
    return event.get("sealed_by") != "shutdown"


def _summary(name: str, values: list[float], unit: str) -> str:
    return (
        f"  {name:<22} median {statistics.median(values):>12,.1f} {unit}"
        f"   (min {min(values):,.1f}, max {max(values):,.1f}, n={len(values)})"
    )


def run_shape(shape: Shape, args: argparse.Namespace) -> dict[str, float] | None:
    """Interleaved runs of the collector (and cryptofeed) on one shape; prints, returns medians."""
    several = "," in shape.symbols
    if shape.replay and not shape.replay.exists():
        print(f"shape {shape.name}: skipped, {shape.replay} not present (it lives in ../shared)")
        return None
    forms = "combined" if several else "raw"
    if args.cryptofeed_python:
        forms += ",aggregate"
    tls = args.tls if shape.tls is None else shape.tls
    feed = Feed(args.trades, tls=tls, forms=forms, shape=shape)
    results, peers = [], []
    try:
        for run in range(args.runs):  # interleaved, so a noisy neighbour hurts both alike
            result = burst(feed, args.trades, shape.symbols, shape.pin_cpu)
            results.append(result)
            print(f"  run {run + 1}: collector " + ", ".join(f"{k} {v:,.2f}" for k, v in result.items()),
                  flush=True)  # fmt: skip
            if args.cryptofeed_python:
                peer = cryptofeed_burst(feed, args.cryptofeed_python, args.trades, shape.symbols)
                peers.append(peer)
                print(f"  run {run + 1}: cryptofeed " + ", ".join(f"{k} {v:,.2f}" for k, v in peer.items()),
                      flush=True)  # fmt: skip
    finally:
        feed.child.kill()
    scheme = "wss (TLS)" if tls else "ws (no TLS)"
    print(f"shape {shape.name}: {shape.label}; {args.trades:,} trades over {scheme}:")
    print(_summary("end-to-end", [r["trades_per_s"] for r in results], "trades/s"))
    print(_summary("CPU per million", [r["cpu_s_per_million"] for r in results], "s"))
    print(_summary("peak RSS", [r["peak_rss_mb"] for r in results], "MB"))
    print(_summary("files", [r["files"] for r in results], ""))
    print(_summary("bytes per trade", [r["bytes_per_trade"] for r in results], "B"))
    medians = {k: statistics.median(r[k] for r in results) for k in results[0]}
    if peers:
        print("  cryptofeed, same trades (aggTrade form), callback counting only, nothing stored:")
        print(_summary("first write to last", [r["trades_per_s"] for r in peers], "trades/s"))
        print(_summary("CPU per million", [r["cpu_s_per_million"] for r in peers], "s"))
        print(_summary("peak RSS", [r["peak_rss_mb"] for r in peers], "MB"))
        ratios = [r["trades_per_s"] / p["trades_per_s"] for r, p in zip(results, peers, strict=True)]
        medians["ratio"] = medians["trades_per_s"] / statistics.median(r["trades_per_s"] for r in peers)
        print(f"  collector / cryptofeed   {medians['ratio']:.2f}x (medians; run by run "
              f"{min(ratios):.2f}-{max(ratios):.2f}x)")  # fmt: skip
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200_000, help="trades per burst run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"bursts to run, of {', '.join(SHAPES)}")
    parser.add_argument("--steady-s", type=float, default=30.0, help="measured seconds per steady rate")
    parser.add_argument("--rates", default="50,5000", help="steady rates, trades/s")
    parser.add_argument("--replay-rate", type=float, default=50.0,
                        help="also replay the 2024 recording's timing at this mean rate (0: no)")  # fmt: skip
    parser.add_argument("--latency-wait-s", type=float, default=90.0,
                        help="at a steady rate, wait this long for a batch to land")  # fmt: skip
    parser.add_argument("--tls", action=argparse.BooleanOptionalAction, default=True,
                        help="wss:// as Binance serves it (default); --no-tls for plain ws://")  # fmt: skip
    parser.add_argument("--cryptofeed-python", help="an interpreter with cryptofeed installed: compare")
    args = parser.parse_args()
    unknown = [name for name in args.shapes.split(",") if name and name not in SHAPES]
    if unknown:
        parser.error(f"unknown shape {', '.join(unknown)}; choose from {', '.join(SHAPES)}")
    print(f"collector benchmark, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {platform.node()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")  # fmt: skip
    table = {}
    for name in filter(None, args.shapes.split(",")):
        medians = run_shape(SHAPES[name], args)
        if medians:
            table[name] = medians
    if table:
        print("every shape, medians:")
        for name, m in table.items():
            ratio = f", {m['ratio']:.2f}x cryptofeed" if "ratio" in m else ""
            print(
                f"  {name:<10} {m['trades_per_s']:>10,.0f} trades/s, {m['cpu_s_per_million']:.2f} CPU-s/M,"
                f" peak RSS {m['peak_rss_mb']:.0f} MB, {m['files']:.0f} files{ratio}"
            )
    steadies: list[tuple[str, float, list[str] | None]] = [
        (f"steady {float(r):,.0f} trades/s", float(r), None) for r in args.rates.split(",") if r
    ]
    if args.replay_rate > 0 and RECORDING.exists():
        # Live trades come in bursts (the recording's 9,757 arrived in about 3,500 reads): the
        # same rate as it arrives, the recorded timing sped up to average `--replay-rate`.
        speed = recording_speed(RECORDING, args.replay_rate, wall_s=min(5.0, args.steady_s) + args.steady_s)
        steadies.append(
            (
                f"recording at {args.replay_rate:,.0f} trades/s ({speed:.2f}x its own pace)",
                args.replay_rate,
                ["--replay", str(RECORDING), "--speed", f"{speed:.4f}"],
            )
        )
    elif args.replay_rate > 0:
        print(f"recorded pace: skipped, {RECORDING} not present (it lives in ../shared beside the clone)")
    for label, rate, feed_args in steadies:
        s = steady(rate, args.steady_s, args.latency_wait_s, feed_args)
        print(
            f"{label} for {args.steady_s:.0f} s (received {s['received_per_s']:,.0f}/s): "
            f"{s['core_percent']:.2f}% of a core "
            f"(median of {STEADY_WINDOWS} windows, {s['core_percent_min']:.2f}-{s['core_percent_max']:.2f}), "
            f"RSS {s['rss_mb']:.1f} MB (peak {s['peak_rss_mb']:.1f}), first trade to landed "
            f"{s['batch_latency_s_median']:.2f} s median over {s['batches']} batches",
            flush=True,
        )


if __name__ == "__main__":
    main()
