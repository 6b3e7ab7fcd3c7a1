"""How long `collector audit` takes over a day of BTCUSDT on local disk.

    python bench/audit_day.py [--trades-per-minute 3000] [--runs 3]

Writes a synthetic day (1,440 minutes, one Parquet file and one `_SUCCESS` marker each, written
by the collector's own encoder and manifest code) into a temporary directory, then audits it
several times and prints the median, min and max wall time.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from collector.audit.symbols import audit
from collector.capture.batching import SealedBatch, _Columns
from collector.lake.completion import LandedFile, build_manifest
from collector.lake.layout import marker_key, object_key
from collector.lake.parquet import encode_parquet
from collector.lake.sinks import LocalSink


def write_day(root: Path, per_minute: int, first_minute: int) -> int:
    sink = LocalSink(root)
    rng = random.Random(1)
    trade_id, price = 4_000_000_000, 9_000_000_000_000
    for minute in range(first_minute, first_minute + 1440):
        cols = _Columns()
        base_ms = minute * 60_000
        for i in range(per_minute):
            price += rng.choice((-1_000_000, 0, 0, 1_000_000))
            t = base_ms + i * 60_000 // per_minute
            cols.trade_id.append(trade_id)
            cols.price.append(price)
            cols.quantity.append(rng.choice((1, 2, 5, 10, 50)) * 100_000)
            cols.trade_time.append(t)
            cols.event_time.append(t + 1)
            cols.is_buyer_maker.append(rng.random() < 0.5)
            cols.received_at_us.append(t * 1_000 + 40_000)
            trade_id += 1
        batch = SealedBatch("BTCUSDT", minute, "ms", cols, per_minute * 200, "minute_closed")
        data = encode_parquet(batch)
        key = object_key(
            symbol="BTCUSDT",
            minute=minute,
            first_trade_id=batch.first_trade_id,
            last_trade_id=batch.last_trade_id,
        )
        sink.put(key, data)
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        name = key.rsplit("/", 1)[-1]
        landed = LandedFile(name=name, bytes=len(data), sha256=digest, rows=per_minute,
                            first_trade_id=cols.trade_id[0], last_trade_id=trade_id - 1)  # fmt: skip
        doc = build_manifest("BTCUSDT", minute, [landed], written_at_s=time.time())
        sink.put_marker(marker_key("BTCUSDT", minute), json.dumps(doc).encode())
    return trade_id - 4_000_000_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trades-per-minute", type=int, default=3000, help="50 trades/s is 3,000")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    first_minute = int(time.time() // 86_400) * 1440 - 1440  # yesterday, UTC
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        trades = write_day(root, args.trades_per_minute, first_minute)
        print(f"wrote 1,440 minutes, {trades:,} trades in {time.perf_counter() - started:.1f} s")
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            report = audit(LocalSink(root), ["BTCUSDT"], first_minute, first_minute + 1440)
            times.append(time.perf_counter() - started)
            assert report.ok and report.rows == trades, report.counts
        print(
            f"audit of one day: median {statistics.median(times):.2f} s, min {min(times):.2f} s, "
            f"max {max(times):.2f} s over {args.runs} runs; {report.files:,} files, "
            f"{report.bytes / report.rows:.2f} bytes per trade"
        )


if __name__ == "__main__":
    main()
