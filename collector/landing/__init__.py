"""From a sealed batch to a landed object and its minute's `_SUCCESS`, without losing one on the way.

journal.py          every trade of an open batch on disk, a write per read, until the batch is spooled
spool.py            sealed, encoded batches on disk (fsync, rename; the SHA-256 in the name) until they land
inflight.py         the bytes of trades in memory between the socket and the spool, bounded (`InFlight`)
pipeline.py         `Landing`: encode, spool, upload (`Uploads`), with the spool's budget and backpressure
markers.py          the marker book, writer and scheduler: a final minute's manifest written last
market_minutes.py   the market-wide layout: every unwatched symbol's final minute as its parts and one marker
"""
