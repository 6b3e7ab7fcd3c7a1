"""Bytes per trade landed, on the recorded Binance BTCUSDT trades, with the default settings.

    python bench/landed_size.py                  # ../shared/binance/*.gz beside the clone
    python bench/landed_size.py --recording PATH

The recording's trade frames go through the collector's own capture core one read at a time
with the recording's own receive stamps (so `received_at` varies as it does live), the clock
driven by those stamps, default batching (2 MB or the minute) and the default Parquet
encoding. Prints bytes per trade per column and in all, and the gzip CSV of the same batches
(the collector's csv.gz format) for comparison. Nothing is asserted: it is a measurement.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from collector.config import Settings
from collector.core import CaptureCore
from collector.parquet import encode_csv_gz, encode_parquet

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "binance"
DEFAULT = SHARED / "btcusdt_trades_20240808_live.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recording", type=Path, default=DEFAULT)
    args = parser.parse_args()
    if not args.recording.exists():
        print(f"skipped: recording {args.recording} not present (it lives in ../shared beside the clone)")
        return
    defaults = Settings()
    core = CaptureCore(
        time_unit=defaults.time_unit,
        max_batch_bytes=defaults.max_batch_bytes,
        max_batch_age_s=defaults.max_batch_age_s,
        minute_grace_s=defaults.minute_grace_s,
        combined=True,  # the recording holds combined-stream frames
    )
    first_ns = None
    with gzip.open(args.recording, "rb") as handle:
        for line in handle:
            stamp, _, raw = line.rstrip(b"\n").partition(b" ")
            if b'"e":"trade"' not in raw:
                continue
            received_ns = int(stamp) * (1000 if len(stamp) <= 16 else 1)  # the 2023 file has µs
            first_ns = first_ns or received_ns
            now_s = (received_ns - first_ns) / 1e9
            core.tick(now_s)
            core.feed_chunk([raw], received_ns, now_s)
    core.flush()
    batches = core.take_sealed()
    trades = sum(b.rows for b in batches)
    parquet = [encode_parquet(b) for b in batches]
    csv_bytes = sum(len(encode_csv_gz(b)) for b in batches)
    per_column: Counter[str] = Counter()
    for data in parquet:
        meta = pq.read_metadata(io.BytesIO(data))
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                per_column[group.column(c).path_in_schema] += group.column(c).total_compressed_size
    total = sum(len(d) for d in parquet)
    print(f"{args.recording.name}: {trades:,} trades in {len(batches)} files (default settings)")
    for name, size in per_column.items():
        print(f"  {name:<16} {size / trades:6.2f} B/trade")
    print(f"  {'footer and rest':<16} {(total - sum(per_column.values())) / trades:6.2f} B/trade")
    print(f"Parquet (default)  {total / trades:6.2f} B/trade")
    print(f"gzip CSV           {csv_bytes / trades:6.2f} B/trade  ({csv_bytes / total:.1f}x the Parquet)")


if __name__ == "__main__":
    sys.exit(main())
