"""`collector run | check-config | status | fetch-env | audit | import | verify | emulate | demo`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector import __version__
from collector.config import Settings, load_settings, parse_destination
from collector.exceptions import ConfigError, SpoolError
from collector.logs import configure_logging, get_logger

if TYPE_CHECKING:
    from collector.audit import AuditReport
    from collector.emulator import Faults
    from collector.sinks import Sink

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, then COLLECTOR_SSM_PARAMETER's body, then the .env file."""
    env_file = args.env_file
    if env_file is None and Path(".env").is_file():
        env_file = Path(".env")
    settings = load_settings(env_file=env_file)
    if not settings.ssm_parameter:
        return settings
    from collector.aws import fetch_parameter

    text = fetch_parameter(settings.ssm_parameter, settings.s3_region)
    return load_settings(env_file=env_file, ssm_text=text)


def cmd_run(args: argparse.Namespace) -> int:
    from collector import lean

    lean.apply()
    settings = _settings(args)
    _refuse_unusable(settings)
    configure_logging(settings.log_level, settings.log_format)
    from collector.app import Collector

    async def main() -> int:
        return await Collector(settings).run()

    return asyncio.run(main())


def _refuse_unusable(settings: Settings) -> None:
    """Directories that cannot be made or written stop the start, as a bad setting does."""
    from collector.preflight import offline_problems

    problems = offline_problems(settings)
    if problems:
        raise ConfigError(problems)


def _stream_plan(settings: Settings) -> str:
    per = settings.streams_per_connection
    if settings.all_symbols:
        return (f"streams: every TRADING spot symbol exchangeInfo lists ({settings.describe_symbols()}), "
                f"at most {per} a connection, asked again every {settings.symbols_refresh_s:g}s")  # fmt: skip
    if len(settings.symbols) <= per:
        return f"stream URL: {settings.stream_url()}"
    connections = -(-len(settings.symbols) // per)
    return f"streams: {len(settings.symbols)} symbols on {connections}+ connections (at most {per} each)"


def cmd_check_config(args: argparse.Namespace) -> int:
    """Print the resolved settings; exit 2 naming each one that cannot work (--online: ask S3 and Binance)."""
    from collector.preflight import offline_problems, online_problems

    settings = _settings(args)
    print(json.dumps(settings.as_env(), indent=2))
    print(_stream_plan(settings), file=sys.stderr)
    print(f"layout: {settings.describe_layout()}", file=sys.stderr)
    problems = offline_problems(settings)
    warnings: list[str] = []
    if args.online:
        online, warnings = online_problems(settings)
        problems += online
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if problems:
        print("collector: invalid configuration:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    checked = (
        "checked with S3 and Binance"
        if args.online
        else "not checked online: add --online to ask S3 and Binance"
    )
    print(f"configuration OK ({checked})", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Ask the running collector's /health; exit 0 when healthy. --wait polls until then."""
    import time
    import urllib.error
    import urllib.request

    port = args.port
    if port is None:  # the collector's own setting, from the environment or the .env file
        port = _settings(args).health_port
        if port == 0:
            print(
                "collector status: COLLECTOR_HEALTH_PORT=0: the collector serves no /health to ask",
                file=sys.stderr,
            )
            return 1
    url = f"http://127.0.0.1:{port}/health"
    deadline = time.monotonic() + args.wait
    last = ""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                print(response.read().decode().strip())
                return 0
        except urllib.error.HTTPError as exc:
            last = exc.read().decode().strip()
        except (urllib.error.URLError, OSError) as exc:
            last = (
                f"collector status: nothing answers at {url} ({getattr(exc, 'reason', exc)}); is it running?"
            )
        if time.monotonic() >= deadline:
            print(last, file=sys.stderr if last.startswith("collector status") else sys.stdout)
            return 1
        time.sleep(1)


def cmd_fetch_env(args: argparse.Namespace) -> int:
    """Write an SSM parameter's decrypted value to a file readable by its owner only."""
    from collector.aws import fetch_parameter
    from collector.spool import write_atomically

    text = fetch_parameter(args.parameter, args.region)
    if not text.endswith("\n"):
        text += "\n"
    load_settings(env={}, ssm_text=text)  # refuse a parameter that would not start the collector
    output = Path(args.output)
    old_umask = os.umask(0o077)
    try:
        write_atomically(output, text.encode())
    finally:
        os.umask(old_umask)
    output.chmod(0o600)
    keys = sorted(
        line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    print(
        f"wrote {output} (mode 0600) from SSM parameter {args.parameter}: {', '.join(keys) or 'no settings'}"
    )
    return 0


def _tape(args: argparse.Namespace) -> object:
    from collector.emulator import GeneratedTape, load_replay

    if args.replay:
        return load_replay(Path(args.replay))
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
    if getattr(args, "market", False) or getattr(args, "market_symbols", None):
        return _market_tape(args, symbols)
    # Ids continue from the clock, as a live exchange's do, so a second run into the same
    # spool is not mistaken for a replay of the first.
    first_id = args.first_id if args.first_id is not None else int(time.time()) * 1000
    clock_start_ms = int((time.time() - args.clock_from_s) * 1000) if args.clock_from_s is not None else None
    return GeneratedTape(
        symbols,
        count=args.count,
        seed=args.seed,
        first_id=first_id,
        clock_start_ms=clock_start_ms,
        clock_step_ms=args.clock_step_ms,
        clock_jump_every=args.clock_jump_every,
        clock_jump_s=args.clock_jump_s,
    )


def _market_tape(args: argparse.Namespace, symbols: tuple[str, ...]) -> object:
    """--market: the named --symbols, or a heavy-tailed whole market of --market-symbols, with
    its listings and delistings during the run."""
    from collector.emulator import MarketTape
    from collector.market import Market, Schedule, scheduled_names

    seconds_ago = args.clock_from_s if args.clock_from_s is not None else 0.0
    start_us = int((time.time() - seconds_ago) * 1_000_000)
    listings, delistings = getattr(args, "listings", 0), getattr(args, "delistings", 0)
    for count, after, names in ((listings, "list_after_s", "--listings/--list-after-s"),
                                (delistings, "delist_after_s", "--delistings/--delist-after-s")):  # fmt: skip
        if bool(count) != (getattr(args, after, None) is not None):
            raise ValueError(f"{names}: give both, how many symbols and how many seconds after the start")
    if not getattr(args, "market_symbols", None):
        if listings or delistings:
            raise ValueError("--listings and --delistings pick from a whole market; add --market-symbols N")
        return MarketTape(Market(symbols, args.trades_per_day), start_us, count=args.count)
    market = Market.whole_market(args.market_symbols + listings, args.market_trades_per_day, seed=args.seed)
    listed, delisted = scheduled_names(market.symbols, listings, delistings)
    schedule = Schedule.after_start(
        dict.fromkeys(listed, args.list_after_s), dict.fromkeys(delisted, args.delist_after_s)
    )
    return MarketTape(market, start_us, count=args.count, schedule=schedule)


def _faults(args: argparse.Namespace) -> Faults:
    from collector.emulator import Faults

    return Faults(
        drop_every_s=args.drop_every_s,
        stall_every_s=args.stall_every_s,
        stall_for_s=args.stall_for_s,
        shutdown_every_s=args.shutdown_every_s,
        max_connection_age_s=args.max_connection_age_s,
        skip_every=args.skip_every,
        duplicate_every=args.duplicate_every,
        rest_weight_limit=args.rest_weight_limit,
        rest_oldest_id=args.rest_oldest_id,
        rest_fail_first=args.rest_fail_first,
        rest_down=args.rest_down,
        rest_unavailable_first=args.rest_unavailable_first,
    )


def _archive_feed(args: argparse.Namespace, tape: object) -> Any:
    """The trade archive the feed serves (with --archive: the --market's days)."""
    if not args.archive:
        return None
    from collector.emulated_archive import ArchiveFeed, parse_defect
    from collector.emulator import MarketTape

    if not isinstance(tape, MarketTape):
        raise ValueError("--archive serves the --market's days; add --market")
    defects: dict[str, Any] = {}
    for text in args.archive_defect:
        when, defect = parse_defect(text)
        defects.setdefault(when, []).append(defect)
    return ArchiveFeed(tape.market, defects, tape.schedule)


def _symbol_status(text: str) -> tuple[str, str]:
    symbol, sep, status = text.partition("=")
    if not sep or not symbol or not status:
        raise ValueError(f"--status {text!r}: give SYMBOL=STATUS, e.g. ETHUSDT=BREAK")
    return symbol.strip().upper(), status.strip().upper()


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1 to 65535)")
    return port


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return seconds


def _utc_minute(text: str) -> int:
    """Minutes since the epoch for 2026-11-22, 2026-11-22T10:15 or 2026-11-22T10:15Z (UTC)."""
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a UTC time such as 2026-11-22 or 2026-11-22T10:15") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() // 60)


def cmd_audit(args: argparse.Namespace) -> int:
    """Check a landing zone's markers, files and trade-id continuity, per symbol and market-wide;
    exit 1 on any defect."""
    from collector.audit import render
    from collector.config import S3Destination, parse_symbols
    from collector.exceptions import SinkPermanentError, SinkUnavailable
    from collector.sinks import LocalSink, S3Sink

    settings = _settings(args)
    destination = parse_destination(args.destination) if args.destination else settings.destination
    sink: Sink
    if isinstance(destination, S3Destination):
        sink = S3Sink(destination, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
    elif not destination.is_dir():
        raise ValueError(f"{destination} is not a directory; pass a landing directory or s3://bucket/prefix")
    else:
        sink = LocalSink(destination)
    named: list[str] = []
    if args.symbols:
        try:
            named = list(parse_symbols(args.symbols))
        except ValueError as exc:
            raise ValueError(f"--symbols {args.symbols!r}: {exc}") from None
    span = _audit_span(args)  # bad times fail here, before anything is read
    try:
        report = _audit_report(sink, named, span)
    except (SinkPermanentError, SinkUnavailable) as exc:
        print(f"collector audit: {exc}", file=sys.stderr)
        return 2
    if report is None:
        return 1
    print(json.dumps(report.as_dict(), indent=1) if args.json else render(report))
    return 0 if report.ok else 1


def _audit_report(sink: Sink, named: list[str], span: tuple[int, int] | None) -> AuditReport | None:
    """Both layouts audited into one report: the per-symbol one for each symbol with a folder
    (the `named` ones, or every one), the market-wide one when `Binance/_market/` has keys in
    the range. Without a range each layout is audited from its first minute with data to its
    last. A named symbol found in neither is audited per symbol (every minute missing). None,
    said why, when there is nothing to audit."""
    from collector.audit import AuditReport, audit, data_range, label, symbols_in
    from collector.market_audit import audit_market, market_range

    folders = symbols_in(sink)
    symbols = [s for s in named if s in folders] if named else folders
    market_span = span or market_range(sink)
    symbol_span = span
    if span is None and (spans := [r for s in symbols if (r := data_range(sink, s))]):
        symbol_span = min(r[0] for r in spans), max(r[1] for r in spans)
    whose = f"for {', '.join(named)} " if named else ""
    nothing = f"collector audit: nothing {whose}under {sink.describe('Binance/')}"
    header = symbol_span or market_span
    if header is None:
        print(nothing, file=sys.stderr)
        return None
    start, end = header
    report = AuditReport(sink.describe(), [], label(start) or "", label(end) or "")
    if symbol_span is not None and symbols:
        audit(sink, symbols, *symbol_span, report=report)
    if market_span is not None:
        audit_market(sink, *market_span, report=report, symbols=named or None)
    seen = report.market.symbols if report.market is not None else set()
    if nowhere := [s for s in named if s not in folders and s not in seen]:
        audit(sink, nowhere, start, end, report=report)
    if not report.symbols and report.market is None:
        print(nothing, file=sys.stderr)
        return None
    return report


def _audit_span(args: argparse.Namespace) -> tuple[int, int] | None:
    """The minutes --day or --from/--to name (end excluded); None: everything found."""
    if args.day:
        start = _utc_minute(args.day)
        return start, start + 1440
    if not args.start:
        if args.end:
            raise ValueError("--to needs --from")
        return None
    start = _utc_minute(args.start)
    end = _utc_minute(args.end) if args.end else int(time.time() // 60) - 1
    if end <= start:
        raise ValueError("--to must be after --from")
    return start, end


def _rate(args: argparse.Namespace) -> float:
    """--rate, or its default: 50 trades a second for a generated tape; a --market trades at
    its own pace (its trades happen at their times), which a cap would only make lag."""
    if args.rate is not None:
        return float(args.rate)
    return 0.0 if getattr(args, "market", False) or getattr(args, "market_symbols", None) else 50.0


def cmd_emulate(args: argparse.Namespace) -> int:
    configure_logging("info")
    from collector.emulator import FeedServer

    log = get_logger()

    tape = _tape(args)

    async def main() -> int:
        server = FeedServer(
            tape,  # type: ignore[arg-type]
            rate=_rate(args),
            speed=args.speed,
            ping_interval_s=args.ping_interval_s,
            redeliver=args.redeliver,
            live=args.live,
            faults=_faults(args),
            statuses=dict(_symbol_status(text) for text in args.status),
            archive=_archive_feed(args, tape),
            log=log,
        )
        url = await server.start(args.host, args.port)
        symbols = server.tape.symbols
        log.info(
            "emulator.listening",
            url=url,
            rest_url=url.replace("ws://", "http://"),
            symbols=",".join(symbols) if len(symbols) <= 20 else f"{','.join(symbols[:10])},...",
            symbol_count=len(symbols),
            **_market_fields(server),
        )
        _log_schedule(server, log)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()
        log.info(
            "emulator.stopped",
            sent=server.sent,
            connections=server.connections,
            rest_calls=server.rest_calls,
            rest_throttled=server.rest_throttled,
            rest_banned=server.rest_banned,
            exchange_info_calls=server.exchange_info_calls,
            subscribe_requests=server.subscribe_requests,
            subscription_errors=server.subscription_errors,
            rate_violations=server.rate_violations,
            banned_handshakes=server.banned_handshakes,
        )
        return 0

    return asyncio.run(main())


def _market_fields(server: Any) -> dict[str, Any]:
    """What a whole market serves, for the listening line: its size, trades a day, its shape."""
    market = server.market
    if market is None or market.per_day is None:
        return {}
    counts, schedule = market.per_day, server.schedule
    total = sum(counts)
    return {
        "market_symbols": len(counts) - len(schedule.listed_us),
        "trades_per_day": total,
        "top10_share": f"{sum(sorted(counts, reverse=True)[:10]) / total:.1%}",
        "quietest_per_day": min(counts),
        "listings": ",".join(schedule.listed_us) or None,
        "delistings": ",".join(schedule.delisted_us) or None,
    }


def _log_schedule(server: Any, log: Any) -> None:
    """Log each listing and delisting as it happens."""
    import functools

    loop = asyncio.get_running_loop()
    now_us = time.time_ns() // 1000
    for event, when in (("emulator.listed", server.schedule.listed_us),
                        ("emulator.delisted", server.schedule.delisted_us)):  # fmt: skip
        for at_us in sorted(set(when.values())):
            names = ",".join(s for s, t in when.items() if t == at_us)
            delay_s = max(0.0, (at_us - now_us) / 1e6)
            loop.call_later(delay_s, functools.partial(log.info, event, symbols=names))


def cmd_demo(args: argparse.Namespace) -> int:
    settings = _settings(args)
    destination = parse_destination(args.destination)
    settings = dataclasses.replace(
        settings,
        destination=destination,
        spool_dir=Path(args.spool_dir),
        max_batch_age_s=min(settings.max_batch_age_s, 10),
    )
    if settings.is_s3:
        raise ConfigError(["collector demo writes to a local directory; give --destination a path"])
    _refuse_unusable(settings)
    if args.archive:
        from collector.history_cli import demo_import

        configure_logging("warning" if args.quiet else settings.log_level, settings.log_format, sys.stderr)
        return demo_import(args, settings)
    configure_logging("warning" if args.quiet else settings.log_level, settings.log_format)
    from collector.app import Collector
    from collector.emulator import FeedServer

    async def main() -> int:
        tape = _tape(args)
        server = FeedServer(tape, rate=_rate(args), speed=args.speed)  # type: ignore[arg-type]
        url = await server.start("127.0.0.1", 0)
        demo_settings = dataclasses.replace(
            settings,
            ws_url=url,
            rest_url=url.replace("ws://", "http://"),
            symbols=server.tape.symbols,
            health_port=0,
        )
        collector = Collector(demo_settings)
        asyncio.get_running_loop().call_later(args.seconds, collector.stop_requested.set)
        code = await collector.run()
        await server.close()
        return code

    code = asyncio.run(main())
    landed = _print_inventory(Path(str(destination)), settings.marker_grace_s)
    if code == 0 and not landed:
        print(
            f"collector demo: nothing landed in {args.seconds:g} s; the log lines above say why "
            "(collector.upload_blocked, collector.fatal), or the feed had no trades to send",
            file=sys.stderr,
        )
        return 1
    return code


def _print_inventory(root: Path, marker_grace_s: float) -> int:
    """What landed under `root`, per symbol, and the minutes still without a marker; the trades."""
    from collector.completion import minute_label
    from collector.inventory import scan_local

    found = scan_local(root)
    print(f"\nlanded under {root}/:")
    for symbol, inv in sorted(found.items()):
        ids = inv.trade_ids
        print(
            f"  {symbol}: {inv.rows:,} trades in {inv.files} files, {inv.bytes:,} bytes "
            f"({inv.bytes / max(1, inv.rows):.1f} B/trade), ids {min(ids)}..{max(ids)}, "
            f"{inv.duplicates} duplicates, {inv.missing} missing"
        )
        unmarked = sorted(inv.minutes - inv.marked)
        if unmarked:
            listed = ", ".join(minute_label(m)[11:16] for m in unmarked[:5])
            more = f" and {len(unmarked) - 5} more" if len(unmarked) > 5 else ""
            print(
                f"    {len(unmarked)} minute(s) without _SUCCESS ({listed}{more} UTC): the demo "
                f"stopped before they were final (a minute is marked {marker_grace_s:g} s after it "
                "ends, once all of it has landed); `collector audit` lists them as pending"
            )
    if not found:
        print("  nothing")
    return sum(inv.rows for inv in found.values())


def _with_tape(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--symbols", default="BTCUSDT", help="generated tape: comma-separated symbols")
    p.add_argument("--count", type=int, default=None, help="generated tape: trades per symbol, then idle")
    p.add_argument("--seed", type=int, default=1, help="generated tape: random seed")
    p.add_argument(
        "--first-id", type=int, default=None, help="generated tape: first id (default: from the clock)"
    )
    rate_help = "trades per second in all; 0 = as fast as read (default 50; --market: 0, its own pace)"
    p.add_argument("--rate", type=float, default=None, help=rate_help)
    clock = p.add_argument_group("emulated clock (generated tape; default: trade times are now)")
    clock.add_argument(
        "--clock-from-s", type=float, default=None, help="first trade time this many seconds ago"
    )
    clock.add_argument("--clock-step-ms", type=float, default=100.0, help="trade time step per trade")
    clock.add_argument(
        "--clock-jump-every", type=int, default=0, help="after every N trades, jump the clock..."
    )
    clock.add_argument("--clock-jump-s", type=float, default=0.0, help="...by this many seconds")
    p.add_argument("--replay", help="replay the trade frames of a recording (.gz or plain)")
    p.add_argument(
        "--speed", type=float, default=0.0, help="replay pace: 1 = as recorded, 0 = as fast as read"
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
    audit.add_argument("--day", help="one UTC day, e.g. 2026-11-22")
    audit.add_argument("--from", dest="start", help="first UTC minute, e.g. 2026-11-22T10:00")
    audit.add_argument("--to", dest="end", help="end UTC minute, excluded (default: the last full minute)")
    audit.add_argument("--json", action="store_true", help="print the report as JSON")
    audit.add_argument("--env-file", type=Path, help="settings file (default: ./.env when present)")
    audit.set_defaults(func=cmd_audit)


def _add_market_options(emulate: argparse.ArgumentParser) -> None:
    market = emulate.add_argument_group("a deterministic market: live stream, REST and archive agree")
    market.add_argument("--market", action="store_true", help="serve it (--clock-from-s: from that long ago)")
    from collector.history_cli import positive_int

    market.add_argument(
        "--trades-per-day", type=positive_int, default=86_400, help="per symbol, evenly spread"
    )
    market.add_argument(
        "--market-symbols",
        type=positive_int,
        help="serve a whole market of N heavy-tailed symbols instead of --symbols (implies --market)",
    )
    market.add_argument(
        "--market-trades-per-day",
        type=positive_int,
        default=17_280_000,
        help="the whole market's trades a day, in all (default: 200 a second)",
    )
    market.add_argument("--listings", type=positive_int, default=0, help="list this many new symbols...")
    market.add_argument("--list-after-s", type=_positive_seconds, help="...this many seconds after the start")
    market.add_argument("--delistings", type=positive_int, default=0, help="delist the N quietest symbols...")
    market.add_argument(
        "--delist-after-s", type=_positive_seconds, help="...this many seconds after the start"
    )
    market.add_argument("--archive", action="store_true", help="serve its days as Binance's trade archive")
    market.add_argument(
        "--archive-defect",
        action="append",
        default=[],
        help="DATE:missing:FIRST-LAST, DATE:truncate:HH:MM, DATE:bad-checksum, DATE:unpublished, DATE:header",
    )


def _add_emulate(emulate: argparse.ArgumentParser) -> None:
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--port", type=int, default=9443)
    emulate.add_argument("--ping-interval-s", type=float, default=20.0)
    emulate.add_argument(
        "--live", action="store_true", help="keep producing while no client is connected, like an exchange"
    )
    emulate.add_argument(
        "--status", action="append", default=[], help="exchangeInfo status of a symbol, e.g. ETHUSDT=BREAK"
    )
    _add_market_options(emulate)
    faults = emulate.add_argument_group(
        "scripted faults (all off by default; connection k gets the k-th, in turn)"
    )
    faults.add_argument(
        "--drop-every-s", type=float, default=0.0, help="abort each connection after this long"
    )
    faults.add_argument(
        "--stall-every-s", type=float, default=0.0, help="go silent on a connection after this long"
    )
    faults.add_argument("--stall-for-s", type=float, default=0.0, help="...for this long")
    faults.add_argument(
        "--shutdown-every-s", type=float, default=0.0, help="send serverShutdown after this long"
    )
    faults.add_argument(
        "--max-connection-age-s", type=float, default=0.0, help="close connections at this age"
    )
    faults.add_argument("--skip-every", type=int, default=0, help="leave every Nth trade out of the stream")
    faults.add_argument("--duplicate-every", type=int, default=0, help="send every Nth trade twice")
    faults.add_argument("--rest-weight-limit", type=int, default=6000, help="REST weight per minute")
    faults.add_argument("--rest-oldest-id", type=int, default=0, help="REST serves no id below this")
    faults.add_argument(
        "--rest-fail-first", type=int, default=0, help="answer the first N REST calls with 429"
    )
    faults.add_argument("--rest-down", action="store_true", help="answer every REST call with 503")
    faults.add_argument(
        "--rest-unavailable-first", type=int, default=0, help="answer the first N REST calls with 503"
    )
    emulate.add_argument(
        "--redeliver",
        type=int,
        default=0,
        help="test aid: send each new connection the last N trades again (as a REST backfill would)",
    )
    emulate.set_defaults(func=cmd_emulate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="collector", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_env(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--env-file", type=Path, help="settings file (default: ./.env when present)")
        return p

    with_env(
        sub.add_parser("run", help="capture trades and land them (live Binance by default)")
    ).set_defaults(func=cmd_run)
    check = with_env(sub.add_parser("check-config", help="print the resolved settings; fail on a bad one"))
    check.add_argument(
        "--online", action="store_true", help="also ask S3 (the bucket) and Binance (the symbols)"
    )
    check.set_defaults(func=cmd_check_config)

    status = with_env(
        sub.add_parser("status", help="print the running collector's health; exit 0 when healthy")
    )
    status.add_argument("--port", type=_port, default=None, help="default: COLLECTOR_HEALTH_PORT (9108)")
    status.add_argument("--wait", type=float, default=0.0, help="keep asking for up to this many seconds")
    status.set_defaults(func=cmd_status)

    fetch = sub.add_parser("fetch-env", help="write the .env held in an SSM parameter to a 0600 file")
    fetch.add_argument("--parameter", default="/mlops/collector/env", help="SSM parameter name")
    fetch.add_argument("--output", required=True, help="file to write, e.g. /opt/collector/.env")
    fetch.add_argument("--region", default=None, help="AWS region (default: the AWS default chain)")
    fetch.set_defaults(func=cmd_fetch_env)

    _add_audit(
        sub.add_parser("audit", help="check a landing zone's markers, files and continuity (both layouts)")
    )
    from collector.history_cli import add_commands, day, positive_int

    def with_settings(command: Any) -> Any:
        def run(args: argparse.Namespace) -> int:
            settings = _settings(args)
            configure_logging(settings.log_level, settings.log_format, sys.stderr)  # stdout: the report
            return int(command(args, settings))

        return run

    add_commands(sub, with_env, with_settings)
    _add_emulate(_with_tape(sub.add_parser("emulate", help="serve a local Binance-compatible trade feed")))

    demo = with_env(_with_tape(sub.add_parser("demo", help="run the local feed and the collector together")))
    demo.add_argument("--seconds", type=_positive_seconds, default=30.0, help="how long to capture")
    # Its own directories: a demo's made-up trade ids must never meet a real run's state.
    demo.add_argument("--destination", default="demo-landing", help="local landing directory")
    demo.add_argument("--spool-dir", default="demo-spool", help="spool directory")
    demo.add_argument("--quiet", action="store_true", help="only warnings and the summary")
    history = demo.add_argument_group("the history import, offline: the local feed serves an archive")
    history.add_argument(
        "--archive", action="store_true", help="import days of the local feed's archive, then verify the last"
    )
    history.add_argument("--from", dest="start", type=day, help="first UTC day, e.g. 2024-12-31")
    history.add_argument("--to", dest="end", type=day, help="last UTC day (included)")
    history.add_argument("--trades-per-day", type=positive_int, default=86_400, help="per symbol")
    demo.set_defaults(func=cmd_demo, symbols="BTCUSDT,ETHUSDT", rate=200.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    except SpoolError as exc:
        print(f"collector: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        if args.command not in ("emulate", "demo", "audit", "import", "verify"):
            raise
        print(f"collector {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
