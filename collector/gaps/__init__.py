"""Continuity repaired: every trade-id gap recorded, filled from REST, or recorded as unfilled.

ledger.py        the durable ledger of open gaps and unfilled ranges (`OpenGap`, `UnfilledRange`)
backfill.py      `Backfiller`: a gap's trades page by page from historicalTrades, inside the weight budget
filler.py        `GapFiller`: gaps taken in turn, their pages landed, what could not be filled recorded
quiet_proof.py   symbols quiet since a restart proven (or found behind) by one ticker request
unseen.py        symbols streamed but never seen trading: subscriptions kept, and looked up after a restart
"""
