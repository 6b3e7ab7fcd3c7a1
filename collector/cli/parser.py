"""Every command's arguments, in one place: `build_parser` is the whole command line.

Each command's function lives in its family's module (run, audit, history, feed); shared
argument types in options.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from collector import __version__
from collector.cli.audit import cmd_audit
from collector.cli.demo import DEMO_RATE, SPEEDUP, cmd_demo
from collector.cli.feed import cmd_emulate
from collector.cli.history import cmd_import, cmd_verify
from collector.cli.options import (
    day,
    listen_port,
    non_negative,
    non_negative_int,
    port,
    positive_int,
    positive_seconds,
    settings_for,
    symbol_list,
)
from collector.cli.run import cmd_check_config, cmd_fetch_env, cmd_run, cmd_status
from collector.cli.table import cmd_compact
from collector.logs import configure_logging

__all__ = ["build_parser"]

RATE_HELP = "trades per second in all; 0 = as fast as read"
DESCRIPTION = (
    "Trade Lake: captures every Binance spot trade and lands it once, exact, in a minute-partitioned "
    "Parquet landing zone (S3 or a directory); audits it, imports Binance's archive into it, and serves "
    "a local Binance-compatible feed to try it all offline."
)


class _Help(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help states it in words (a default
    of None, nothing or off must be said in words: `test_every_option_states_its_default`)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        unsaid = action.default is None or action.default is False or action.default == []
        if "default" in text or not action.option_strings or unsaid or action.default is argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)


# How the demo's tape differs from the emulator's (collector/cli/demo.py arranges its clock).
_DEMO_HELP = {
    "--first-id": "generated tape: first id (default: one past the last a demo left in --destination, "
    "else from the clock)",
    "--clock-from-s": "first trade time this many seconds ago, or just after the last trade a demo "
    "left in --destination (default: the previous minute's start)",
    "--clock-step-ms": f"trade time step per trade (default: {SPEEDUP}x the wall clock's pace at --rate "
    "until trade times meet it, then the wall clock's)",
}


def _with_tape(
    p: argparse.ArgumentParser, rate_help: str, helps: dict[str, str] | None = None
) -> argparse.ArgumentParser:
    helps = helps or {}
    p.add_argument("--symbols", default="BTCUSDT", help="generated tape: comma-separated symbols")
    p.add_argument(
        "--count",
        type=non_negative_int,
        default=None,
        help="generated tape: trades per symbol, then idle (default: no end)",
    )
    p.add_argument("--seed", type=int, default=1, help="generated tape: random seed")
    p.add_argument(
        "--first-id",
        type=non_negative_int,
        default=None,
        help=helps.get("--first-id", "generated tape: first id (default: from the clock)"),
    )
    p.add_argument("--rate", type=non_negative, default=None, help=rate_help)
    clock = p.add_argument_group("emulated clock (generated tape)")
    clock.add_argument(
        "--clock-from-s",
        type=non_negative,
        default=None,
        help=helps.get(
            "--clock-from-s",
            "first trade time this many seconds ago (default: trade times are the wall clock's)",
        ),
    )
    clock.add_argument(
        "--clock-step-ms",
        type=non_negative,
        default=100.0,
        help=helps.get("--clock-step-ms", "trade time step per trade"),
    )
    clock.add_argument(
        "--clock-jump-every", type=non_negative_int, default=0, help="after every N trades, jump the clock..."
    )
    clock.add_argument("--clock-jump-s", type=non_negative, default=0.0, help="...by this many seconds")
    p.add_argument(
        "--replay", help="replay the trade frames of a recording (.gz or plain) (default: a generated tape)"
    )
    p.add_argument(
        "--speed", type=non_negative, default=0.0, help="replay pace: 1 = as recorded, 0 = as fast as read"
    )
    return p


def _add_audit(audit: argparse.ArgumentParser) -> None:
    audit.add_argument(
        "destination",
        nargs="?",
        help="landing directory or s3://bucket/prefix (default: COLLECTOR_DESTINATION)",
    )
    audit.add_argument(
        "--symbols",
        help="comma-separated, in whichever layout holds them (default: every symbol, and Binance/_market/)",
    )
    audit.add_argument("--day", help="one UTC day, e.g. 2026-11-22 (default: every minute found)")
    audit.add_argument(
        "--from", dest="start", help="first UTC minute, e.g. 2026-11-22T10:00 (default: the first found)"
    )
    audit.add_argument("--to", dest="end", help="end UTC minute, excluded (default: the last full minute)")
    audit.add_argument("--json", action="store_true", help="print the report as JSON")
    audit.add_argument("--env-file", type=Path, help="settings file (default: ./.env when present)")
    audit.set_defaults(func=cmd_audit)


def _add_market_options(emulate: argparse.ArgumentParser) -> None:
    market = emulate.add_argument_group("a deterministic market: live stream, REST and archive agree")
    market.add_argument("--market", action="store_true", help="serve it (--clock-from-s: from that long ago)")
    market.add_argument(
        "--trades-per-day", type=positive_int, default=86_400, help="per symbol, evenly spread"
    )
    market.add_argument(
        "--market-symbols",
        type=positive_int,
        help="serve a whole market of N heavy-tailed symbols instead of --symbols (implies --market; "
        "default: the --symbols)",
    )
    market.add_argument(
        "--market-trades-per-day",
        type=positive_int,
        default=17_280_000,
        help="the whole market's trades a day, in all (default: 17,280,000, 200 a second)",
    )
    market.add_argument("--listings", type=positive_int, default=0, help="list this many new symbols...")
    market.add_argument(
        "--list-after-s",
        type=positive_seconds,
        help="...this many seconds after the start (no default: give it with --listings)",
    )
    market.add_argument("--delistings", type=positive_int, default=0, help="delist the N quietest symbols...")
    market.add_argument(
        "--delist-after-s",
        type=positive_seconds,
        help="...this many seconds after the start (no default: give it with --delistings)",
    )
    market.add_argument("--archive", action="store_true", help="serve its days as Binance's trade archive")
    market.add_argument(
        "--archive-defect",
        action="append",
        default=[],
        help="DATE:missing:FIRST-LAST, DATE:truncate:HH:MM, DATE:bad-checksum, DATE:unpublished, "
        "DATE:header; repeat for more (default: none, the archive is whole)",
    )


def _add_emulate(emulate: argparse.ArgumentParser) -> None:
    emulate.add_argument("--host", default="127.0.0.1", help="address to listen on")
    emulate.add_argument("--port", type=listen_port, default=9443, help="port to listen on; 0: any free one")
    emulate.add_argument(
        "--ping-interval-s", type=positive_seconds, default=20.0, help="seconds between WebSocket pings"
    )
    emulate.add_argument(
        "--live", action="store_true", help="keep producing while no client is connected, like an exchange"
    )
    emulate.add_argument(
        "--status",
        action="append",
        default=[],
        help="exchangeInfo status of a symbol, e.g. ETHUSDT=BREAK; repeat for more "
        "(default: every symbol TRADING)",
    )
    _add_market_options(emulate)
    faults = emulate.add_argument_group(
        "scripted faults (all off by default; connection k gets the k-th, in turn)"
    )
    faults.add_argument(
        "--drop-every-s", type=non_negative, default=0.0, help="abort each connection after this long"
    )
    faults.add_argument(
        "--stall-every-s", type=non_negative, default=0.0, help="go silent on a connection after this long"
    )
    faults.add_argument("--stall-for-s", type=non_negative, default=0.0, help="...for this long")
    faults.add_argument(
        "--shutdown-every-s", type=non_negative, default=0.0, help="send serverShutdown after this long"
    )
    faults.add_argument(
        "--max-connection-age-s", type=non_negative, default=0.0, help="close connections at this age"
    )
    faults.add_argument(
        "--skip-every", type=non_negative_int, default=0, help="leave every Nth trade out of the stream"
    )
    faults.add_argument(
        "--duplicate-every", type=non_negative_int, default=0, help="send every Nth trade twice"
    )
    faults.add_argument("--rest-weight-limit", type=positive_int, default=6000, help="REST weight per minute")
    faults.add_argument(
        "--rest-oldest-id", type=non_negative_int, default=0, help="REST serves no id below this"
    )
    faults.add_argument(
        "--rest-fail-first", type=non_negative_int, default=0, help="answer the first N REST calls with 429"
    )
    faults.add_argument("--rest-down", action="store_true", help="answer every REST call with 503")
    faults.add_argument(
        "--rest-unavailable-first",
        type=non_negative_int,
        default=0,
        help="answer the first N REST calls with 503",
    )
    emulate.add_argument(
        "--redeliver",
        type=non_negative_int,
        default=0,
        help="test aid: send each new connection the last N trades again (as a REST backfill would)",
    )
    emulate.set_defaults(func=cmd_emulate)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="collector", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_daemon(sub)
    _add_audit(
        sub.add_parser("audit", help="check a landing zone's markers, files and continuity (both layouts)")
    )

    def with_settings(command: Any) -> Any:
        def run(args: argparse.Namespace) -> int:
            settings = settings_for(args)
            configure_logging(settings.log_level, settings.log_format, sys.stderr)  # stdout: the report
            return int(command(args, settings))

        return run

    _add_history(sub, _with_env, with_settings)
    _add_compact(sub, with_settings)
    emulate = sub.add_parser("emulate", help="serve a local Binance-compatible trade feed")
    _add_emulate(_with_tape(emulate, f"{RATE_HELP} (default: 50; with --market: 0, its own pace)"))
    demo = sub.add_parser("demo", help="run the local feed and the collector together")
    _add_demo(_with_env(_with_tape(demo, RATE_HELP, _DEMO_HELP)))
    return parser


def _with_env(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--env-file", type=Path, help="settings file (default: ./.env when present)")
    return p


def _add_daemon(sub: Any) -> None:
    """`run`, `check-config`, `status`, `fetch-env`."""
    _with_env(
        sub.add_parser("run", help="capture trades and land them (live Binance by default)")
    ).set_defaults(func=cmd_run)
    check = _with_env(sub.add_parser("check-config", help="print the resolved settings; fail on a bad one"))
    check.add_argument(
        "--online", action="store_true", help="also ask S3 (the bucket) and Binance (the symbols)"
    )
    check.set_defaults(func=cmd_check_config)

    status = _with_env(
        sub.add_parser("status", help="print the running collector's health; exit 0 when healthy")
    )
    status.add_argument(
        "--port",
        type=port,
        default=None,
        help="the collector's /health port (default: COLLECTOR_HEALTH_PORT, 9108)",
    )
    status.add_argument(
        "--wait", type=non_negative, default=0.0, help="keep asking for up to this many seconds"
    )
    status.set_defaults(func=cmd_status)

    fetch = sub.add_parser("fetch-env", help="write the .env held in an SSM parameter to a 0600 file")
    fetch.add_argument("--parameter", default="/mlops/collector/env", help="SSM parameter name")
    fetch.add_argument("--output", required=True, help="file to write, e.g. /opt/collector/.env")
    fetch.add_argument("--region", default=None, help="AWS region (default: the AWS default chain)")
    fetch.set_defaults(func=cmd_fetch_env)


def _add_demo(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--seconds", type=positive_seconds, default=30.0, help="how long to capture")
    # Its own directories: a demo's made-up trade ids must never meet a real run's state.
    demo.add_argument("--destination", default="demo-landing", help="local landing directory")
    demo.add_argument("--spool-dir", default="demo-spool", help="spool directory")
    demo.add_argument("--quiet", action="store_true", help="only warnings and the summary")
    history = demo.add_argument_group("the history import, offline: the local feed serves an archive")
    history.add_argument(
        "--archive", action="store_true", help="import days of the local feed's archive, then verify the last"
    )
    history.add_argument(
        "--from",
        dest="start",
        type=day,
        help="first UTC day, e.g. 2024-12-31 (no default: give it with --archive)",
    )
    history.add_argument(
        "--to", dest="end", type=day, help="last UTC day, included (no default: give it with --archive)"
    )
    history.add_argument("--trades-per-day", type=positive_int, default=86_400, help="per symbol")
    demo.set_defaults(func=cmd_demo, symbols="BTCUSDT,ETHUSDT", rate=DEMO_RATE, clock_step_ms=None)


def _add_compact(sub: Any, run: Any) -> None:
    compact = _with_env(
        sub.add_parser("compact", help="compact final days of the landing zone into the lake's tables")
    )
    compact.add_argument("--from", dest="start", type=day, help="first UTC day (default: every day ready)")
    compact.add_argument("--to", dest="end", type=day, help="last UTC day, included (default: --from)")
    compact.add_argument(
        "--destination",
        help="the landing zone: a directory or s3://bucket/prefix (default: COLLECTOR_DESTINATION)",
    )
    compact.add_argument("--json", action="store_true", help="print the report as JSON")
    compact.set_defaults(func=run(cmd_compact))


def _add_history(sub: Any, with_env: Any, run: Any) -> None:
    """`import` and `verify`; `run(func)` wraps a command that needs the settings."""
    imp = with_env(
        sub.add_parser("import", help="import days of Binance's public trade archive into the lake")
    )
    imp.add_argument(
        "--symbols", type=symbol_list, required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT"
    )
    imp.add_argument("--from", dest="start", type=day, required=True, help="first UTC day, e.g. 2024-08-01")
    imp.add_argument("--to", dest="end", type=day, required=True, help="last UTC day (included)")
    imp.add_argument(
        "--destination", help="a directory or s3://bucket/prefix (default: COLLECTOR_DESTINATION)"
    )
    imp.add_argument("--downloads", type=positive_int, default=3, help="files fetched at once")
    imp.add_argument(
        "--into",
        choices=("landing", "table"),
        default="landing",
        help="landing: minute objects and markers, as live data; table: straight into the lake's "
        "tables, a commit a day, no minute objects (default: landing)",
    )
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")
    imp.set_defaults(func=run(cmd_import))
    ver = with_env(sub.add_parser("verify", help="compare the lake's trades of a day with Binance's archive"))
    ver.add_argument("--symbols", type=symbol_list, required=True, help="comma-separated")
    ver.add_argument("--day", type=day, required=True, help="a UTC day, e.g. 2024-08-08")
    ver.add_argument(
        "--destination", help="a directory or s3://bucket/prefix (default: COLLECTOR_DESTINATION)"
    )
    ver.add_argument(
        "--table", action="store_true", help="read the day from the lake's trades table, not the landing zone"
    )
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    ver.set_defaults(func=run(cmd_verify))
