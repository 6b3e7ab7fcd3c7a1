"""The landing zone's contract, both sides of it: what is written, and how a reader finds it.

layout.py            every key: per-symbol objects, markers, market-wide parts; built and parsed here only
parquet.py           the schema (exact DECIMAL(18,8)) and a batch to Parquet or gzip CSV bytes
completion.py        when a minute is final, and its `_SUCCESS` manifest (pure); `LandedFile`, `UnfilledGap`
market_manifest.py   the same for a market-wide minute (pure)
market_parts.py      a market minute's sources merged into parts sorted by symbol and id (pure)
sinks.py             `S3Sink` (conditional writes, checksums) or `LocalSink`; `write_marker`
holdings.py          what the lake holds already, so no writer lands an id twice
inventory.py         what a local landing directory holds, per symbol (the demo's summary)
"""
