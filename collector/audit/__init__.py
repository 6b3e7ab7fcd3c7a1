"""`collector audit`: a landing zone checked against its own contract, as a reader would.

symbols.py   the per-symbol layout: markers, files, checksums, schema, minutes and id continuity
market.py    the market-wide layout: each minute's parts against its marker, continuity per symbol
report.py    what both found, in one report; its human and JSON forms
"""
