"""`collector run`: the long-running process that joins the stages, and what operates it.

app.py          `Collector`: builds every stage, recovers, runs, shuts down on a signal
intake.py       a read's way after the core: journal, gaps, marker hints, sealed batches to the landing
recovery.py     the start: state, the journal's open batches, the spool, the lake's last ids
preflight.py    what can be checked before anything runs (`check-config`, the start)
health.py       /health and /metrics on loopback, and the verdict behind them
systemd.py      READY, STOPPING, STATUS and the watchdog
cloudwatch.py   the alarms' metrics, once a minute
lean.py         process-wide memory settings, applied before the daemon starts
"""
