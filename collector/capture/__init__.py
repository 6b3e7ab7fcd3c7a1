"""Capture, without I/O: a read's frames in, sealed minute batches out.

    decode.py     Binance's wire format: a read's frames to exact `Trade`s, or why one was skipped
    sequence.py   trade-id continuity per symbol: new, duplicate, or a jump (a gap)
    batching.py   minute batches by trade time, sealed by size, age or the minute's end (`SealedBatch`)
    core.py       `CaptureCore.feed_chunk`: a read split by symbol, id jump and minute

Nothing here reads a clock, a socket or a file: the daemon drives it (daemon/intake.py), and
the benchmarks and tests drive it directly with recorded frames.
"""
