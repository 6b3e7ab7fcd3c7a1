"""Binance's doors: everything the collector asks of the exchange, and nothing it decides.

stream.py          one stream kept open: reads, pings, reconnects, make-before-break rotation
connections.py     many symbols' streams spread over as many connections as Binance's limits need
subscriptions.py   SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS, within 5 messages a second
listings.py        COLLECTOR_SYMBOLS=ALL: exchangeInfo's TRADING symbols, asked again on a timer
rest.py            the REST API (historicalTrades, aggTrades, exchangeInfo, ticker/24hr) as `RestPage` answers
weight.py          one REST weight budget every endpoint takes from: under half of Binance's 6,000 a minute
archive.py         data.binance.vision: which files, downloaded, CHECKSUM-checked, read in blocks
zipped.py          a zip's member as a file, inflated by ISA-L (4x zlib), its size and CRC-32 checked
"""
