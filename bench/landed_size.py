"""Bytes per trade landed, on the recorded Binance BTCUSDT trades, with the default settings.

    python bench/landed_size.py                  # ../shared/binance/*.gz beside the clone
    python bench/landed_size.py --recording PATH

The recording's trade frames go through the collector's own capture core with the
recording's own receive stamps, the clock driven by those stamps, default batching (2 MB or
the minute) and the default Parquet encoding. Prints bytes per trade per column and in all,
and the gzip CSV of the same batches (the collector's csv.gz format) for comparison.

`received_at` is the one column whose bytes depend on how frames are stamped. The recorder
stamped every frame as it parsed it: consecutive frames 0.5-3 µs apart, so plainly out of
one socket read. The collector stamps a read once. The figures are printed both ways: each
frame its recorded stamp (an upper bound), and frames less than `--read-gap-us` apart taken
as one read with the first one's stamp (what the collector would have written, give or take
how the kernel split the reads). Nothing is asserted: it is a measurement.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from collector.capture.core import CaptureCore
from collector.config import Settings
from collector.lake.parquet import encode_csv_gz, encode_parquet

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "binance"
DEFAULT = SHARED / "btcusdt_trades_20240808_live.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recording", type=Path, default=DEFAULT)
    parser.add_argument("--read-gap-us", type=float, default=50.0, help="frames closer than this: one read")
    args = parser.parse_args()
    if not args.recording.exists():
        print(f"skipped: recording {args.recording} not present (it lives in ../shared beside the clone)")
        return
    trades = _trade_frames(args.recording)
    reads = _as_reads(trades, int(args.read_gap_us * 1000))
    print(f"{args.recording.name}: {len(trades):,} trades")
    print(f"each frame its recorded stamp ({len(trades):,} stamps):")
    _measure([[t] for t in trades])
    print(f"frames less than {args.read_gap_us:g} µs apart as one read ({len(reads):,} reads):")
    _measure(reads)


def _trade_frames(recording: Path) -> list[tuple[int, bytes]]:
    """(receive stamp in ns, frame) of every trade frame, in order."""
    found = []
    with gzip.open(recording, "rb") as handle:
        for line in handle:
            stamp, _, raw = line.rstrip(b"\n").partition(b" ")
            if b'"e":"trade"' in raw:
                found.append((int(stamp) * (1000 if len(stamp) <= 16 else 1), raw))  # the 2023 file has µs
    return found


def _as_reads(trades: list[tuple[int, bytes]], gap_ns: int) -> list[list[tuple[int, bytes]]]:
    reads: list[list[tuple[int, bytes]]] = []
    previous = None
    for stamp, raw in trades:
        if previous is None or stamp - previous >= gap_ns:
            reads.append([])
        reads[-1].append((stamp, raw))
        previous = stamp
    return reads


def _measure(reads: list[list[tuple[int, bytes]]]) -> None:
    defaults = Settings()
    core = CaptureCore(
        time_unit=defaults.time_unit,
        max_batch_bytes=defaults.max_batch_bytes,
        max_batch_age_s=defaults.max_batch_age_s,
        minute_grace_s=defaults.minute_grace_s,
        combined=True,  # the recording holds combined-stream frames
    )
    first_ns = reads[0][0][0]
    for read in reads:
        received_ns = read[0][0]
        now_s = (received_ns - first_ns) / 1e9
        core.tick(now_s)
        core.feed_chunk([raw for _, raw in read], received_ns, now_s)
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
    print(f"  {trades:,} trades in {len(batches)} files (default settings)")
    for name, size in per_column.items():
        print(f"  {name:<16} {size / trades:6.2f} B/trade")
    print(f"  {'footer and rest':<16} {(total - sum(per_column.values())) / trades:6.2f} B/trade")
    print(f"  Parquet (default)  {total / trades:6.2f} B/trade")
    print(f"  gzip CSV           {csv_bytes / trades:6.2f} B/trade  ({csv_bytes / total:.1f}x the Parquet)")


if __name__ == "__main__":
    sys.exit(main())
