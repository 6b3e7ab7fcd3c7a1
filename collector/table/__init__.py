"""The lake's tables (Apache Iceberg): `trades`, every trade once in day files, and `bars_1m`.

    schema.py      both tables' schemas, partitioning, sort orders and properties, in one place
    catalog.py     the catalog (a sqlite file, or AWS Glue) opened, the tables made or checked
    days.py        which UTC days of the landing zone are final, and their digest (listing only)
    read.py        a final day read as its markers list it, checked against them, in sorted slices
    bars.py        one-minute bars from trades, exact
    write.py       data files written in the table's location, and a day's one atomic commit
    compactor.py   `collector compact`: day after day, landing zone to tables

Only `collector compact` and `collector import --into table` import this folder (and pyiceberg):
the daemon never does, so its memory stays where it is.
"""
