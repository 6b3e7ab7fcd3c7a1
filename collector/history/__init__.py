"""The lake's past: Binance's archive imported in the live data's contract, and verified against it.

importer.py   `Importer` (`collector import`): plan, download, check, stage, publish, mark
staging.py    which trades the lake lacks, minute by minute, staged as objects with their manifests
holes.py      an archive file's holes, at its edges and inside, filled from REST or recorded
report.py     what an import did, per file and in total
into_table.py `collector import --into table`: the archive straight into the lake's tables
verify.py     `collector verify`: a symbol's day in the lake against the archive, trade by trade
"""
