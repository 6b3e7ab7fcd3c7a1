"""The local Binance-compatible feed (`collector emulate`, `collector demo`): for demos, tests and
rehearsals. The daemon never imports it.

    server.py          `FeedServer`: streams over WebSocket, with scripted faults
    tapes.py           what it sends: generated, market and replayed tapes
    simulated.py       a deterministic market (a trade is a function of symbol and id), its listings
    rest.py            its REST API and archive, with Binance's weights, 429 and 418
    subscriptions.py   its control protocol and Binance's connection limits
    archive.py         its trade archive: daily and monthly zips of the market, with scriptable defects
"""
