"""The collector, measured end to end against a local feed in its own process.

    python bench/throughput.py                       # 3 runs of 200,000 trades, then steady rates
    python bench/throughput.py --trades 20000 --runs 1 --steady-s 5     # the short CI version

Prints, per run and as medians with min and max:
- end-to-end trades/s: from the feed's first write to the last trade landed (the collector is
  asked to stop as soon as it has received every trade; its shutdown seals and lands the rest);
- CPU seconds per million trades and peak RSS of the collector process (from wait4's rusage);
- bytes per trade landed (default settings: Parquet, 2 MB batches);
and, with the regular feed pacing trades at 50/s and 5,000/s: the collector's CPU use (% of one
core), resident memory, and the latency from a batch's first trade to its object landing.
Nothing here is asserted: it is a measurement. Machine and date belong with any figure quoted.
"""

from __future__ import annotations

import argparse
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
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class Child:
    """A subprocess whose stdout JSON lines are collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.popen = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=REPO, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                continue

    def wait_event(
        self, name: str, predicate: Any = lambda e: True, timeout_s: float = 600
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in list(self.events):
                if event.get("event") == name and predicate(event):
                    return event
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.popen.args} exited with {self.popen.returncode} before {name}")
            time.sleep(0.05)
        raise TimeoutError(name)

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
            "COLLECTOR_STATS_INTERVAL_S": "0.2",
        }
    )
    env.update({f"COLLECTOR_{k.upper()}": v for k, v in extra.items()})
    return env


def _stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()


def burst(trades: int) -> dict[str, float]:
    """One run: the bulk feed, the collector, all trades as fast as they can go."""
    feed = Child([sys.executable, "bench/bulk_feed.py", "--trades", str(trades)])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            url = str(feed.wait_event("feed.listening")["url"])
            collector = Child([sys.executable, "-m", "collector.cli", "run"], collector_env(url, Path(tmp)))
            collector.wait_event("collector.stats", lambda e: sum((e.get("trades") or {}).values()) >= trades)
            collector.popen.send_signal(signal.SIGTERM)
            _, status, usage = os.wait4(collector.popen.pid, 0)
            collector.popen.returncode = os.waitstatus_to_exitcode(status)
            time.sleep(0.2)  # the reader thread drains the last lines
            sent = feed.wait_event("feed.sent")
        finally:
            feed.kill()
        landed = collector.named("collector.batch_landed")
        rows = sum(int(e["rows"]) for e in landed)
        if rows != trades or collector.popen.returncode != 0:
            raise RuntimeError(f"landed {rows} of {trades} trades, exit {collector.popen.returncode}")
        elapsed = max(_stamp(e) for e in landed) - float(sent["first_write"])
        return {
            "trades_per_s": trades / elapsed,
            "cpu_s_per_million": (usage.ru_utime + usage.ru_stime) / trades * 1e6,
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "bytes_per_trade": sum(int(e["bytes"]) for e in landed) / trades,
            "files": len(landed),
        }


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def steady(rate: float, seconds: float) -> dict[str, float]:
    """The regular feed at a steady rate: CPU share and memory once warmed up, and batch latency."""
    feed = Child([sys.executable, "-m", "collector.cli", "emulate", "--port", "0", "--rate", str(rate)])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            url = str(feed.wait_event("emulator.listening")["url"])
            collector = Child([sys.executable, "-m", "collector.cli", "run"],
                              collector_env(url, Path(tmp), stats_interval_s="60"))  # fmt: skip
            collector.wait_event("collector.ready")
            time.sleep(min(5.0, seconds))  # warm-up: imports done, first batches open
            pid = collector.popen.pid
            cpu0, t0 = _proc_cpu_s(pid), time.monotonic()
            time.sleep(seconds)
            cpu1, t1 = _proc_cpu_s(pid), time.monotonic()
            rss, hwm = _proc_rss_mb(pid), _proc_rss_mb(pid, "VmHWM")
            collector.popen.send_signal(signal.SIGTERM)
            collector.popen.wait(timeout=60)
            time.sleep(0.2)
        finally:
            feed.kill()
    latencies = [
        float(e["seconds_since_first_trade"])
        for e in collector.named("collector.batch_landed")
        if e.get("seconds_since_first_trade") is not None and e.get("sealed_by") != "shutdown"
    ]
    return {
        "core_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
        "rss_mb": rss,
        "peak_rss_mb": hwm,
        "batch_latency_s_median": statistics.median(latencies) if latencies else float("nan"),
        "batches": len(latencies),
    }


def _summary(name: str, values: list[float], unit: str) -> str:
    return (
        f"  {name:<22} median {statistics.median(values):>12,.1f} {unit}"
        f"   (min {min(values):,.1f}, max {max(values):,.1f}, n={len(values)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades", type=int, default=200_000, help="trades per burst run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steady-s", type=float, default=30.0, help="measured seconds per steady rate")
    parser.add_argument("--rates", default="50,5000", help="steady rates, trades/s")
    args = parser.parse_args()
    print(f"collector benchmark, {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {platform.node()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")  # fmt: skip
    results = []
    for run in range(args.runs):
        result = burst(args.trades)
        results.append(result)
        print(f"run {run + 1}: " + ", ".join(f"{k} {v:,.2f}" for k, v in result.items()), flush=True)
    print(f"burst of {args.trades:,} trades, bulk feed in its own process:")
    print(_summary("end-to-end", [r["trades_per_s"] for r in results], "trades/s"))
    print(_summary("CPU per million", [r["cpu_s_per_million"] for r in results], "s"))
    print(_summary("peak RSS", [r["peak_rss_mb"] for r in results], "MB"))
    print(_summary("bytes per trade", [r["bytes_per_trade"] for r in results], "B"))
    for rate in (float(r) for r in args.rates.split(",") if r):
        s = steady(rate, args.steady_s)
        print(
            f"steady {rate:,.0f} trades/s for {args.steady_s:.0f} s: {s['core_percent']:.2f}% of a core, "
            f"RSS {s['rss_mb']:.1f} MB (peak {s['peak_rss_mb']:.1f}), first trade to landed "
            f"{s['batch_latency_s_median']:.2f} s median over {s['batches']} batches",
            flush=True,
        )


if __name__ == "__main__":
    main()
