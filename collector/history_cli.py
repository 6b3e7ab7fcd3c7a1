"""`collector import` and `collector verify`: the archive's commands, their arguments and output."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, date, datetime
from typing import Any

from collector.archive import StagingError
from collector.config import Settings, parse_destination, parse_symbols
from collector.exceptions import SinkError

__all__ = ["add_commands", "day", "demo_import", "positive_int"]


def day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UTC day such as 2024-08-08") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _symbols(text: str) -> list[str]:
    try:
        return list(parse_symbols(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sink(settings: Settings, destination: str | None) -> Any:
    import dataclasses

    from collector.sinks import make_sink

    if destination:
        settings = dataclasses.replace(settings, destination=parse_destination(destination))
    return settings, make_sink(settings)


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    """Import days of Binance's archive; exit 0 when every file landed, 1 when some were skipped."""
    _check_days(args.start, args.end)
    settings, sink = _sink(settings, args.destination)
    importer = _importer(settings, sink, settings.archive_url, settings.rest_url, args.downloads)
    try:
        sink.probe()  # a missing bucket or a denied permission, before anything is downloaded
    except SinkError as exc:
        print(f"collector import: {_plain(exc)}; nothing was imported", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(importer.run(args.symbols, args.start, args.end))
    except (SinkError, StagingError) as exc:
        print(f"collector import: stopped: {_plain(exc)}. {_RESUME}", file=sys.stderr)
        return 1
    totals = summary.totals()
    print(json.dumps(totals, indent=1) if args.json else _render(totals, sink.describe()))
    return 1 if totals["skipped"] or totals["unchecked"] else 0


def demo_import(args: argparse.Namespace, settings: Settings) -> int:
    """`collector demo --archive`: the local feed's market and archive, imported, then the last
    day verified against the archive; offline, into a local directory."""
    from collector.emulated_archive import ArchiveFeed
    from collector.emulator import FeedServer, MarketTape
    from collector.market import Market
    from collector.verify import render, verify_day

    if args.start is None or args.end is None:
        raise ValueError(
            "demo --archive imports days: give --from and --to, e.g. --from 2024-12-31 --to 2025-01-01"
        )
    _check_days(args.start, args.end)
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    sink = _sink(settings, None)[1]
    market = Market(tuple(symbols), args.trades_per_day)

    async def main() -> int:
        tape = MarketTape(market, time.time_ns() // 1000)
        server = FeedServer(tape, rate=0.0, archive=ArchiveFeed(market, {}))
        url = (await server.start("127.0.0.1", 0)).replace("ws://", "http://")
        try:
            summary = await _importer(settings, sink, url, url, 3).run(symbols, args.start, args.end)
            totals = summary.totals()
            print(_render(totals, sink.describe()))
            code = 1 if totals["skipped"] or totals["unchecked"] else 0
            for symbol in symbols:
                report = await asyncio.to_thread(
                    verify_day, sink, symbol, args.end, url, settings.spool_dir / "verify"
                )
                print(render(report))
                code = code or (0 if report.ok else 1)
            return code
        finally:
            await server.close()

    try:
        return asyncio.run(main())
    except (SinkError, StagingError) as exc:
        print(f"collector demo: stopped: {_plain(exc)}. {_RESUME}", file=sys.stderr)
        return 1


_RESUME = (
    "What landed is kept (an object whole or not at all, a minute's marker only after its "
    "objects); run the same command again to finish the import"
)


def _plain(exc: Exception) -> str:
    # The sink speaks for the daemon, which retries and keeps what it holds in its spool.
    return str(exc).removesuffix("; retrying").replace(" (data stays in the spool)", "")


def _check_days(first: date, last: date) -> None:
    if last < first:
        raise ValueError("--to must not be before --from")
    today = datetime.now(tz=UTC).date()
    if last >= today:
        raise ValueError(
            f"--to {last} has no archive yet: a day is published after it ends (today is {today})"
        )


def _importer(settings: Settings, sink: Any, archive_url: str, rest_url: str, downloads: int) -> Any:
    from collector.history import Importer
    from collector.logs import get_logger
    from collector.preflight import offline_problems
    from collector.progress import ImportProgress

    if problems := offline_problems(settings):
        raise ValueError("; ".join(problems))
    log = get_logger()
    return Importer(
        sink,
        archive_url=archive_url,
        rest_url=rest_url,
        staging=settings.spool_dir / "import",
        output_format=settings.output_format,
        backfill_max_trades=settings.backfill_max_trades,
        downloads=downloads,
        log=log,
        progress=ImportProgress(log),
    )


def _render(t: dict[str, Any], where: str) -> str:
    lines = [
        f"imported {t['days']} day(s) into {where}: {t['files']} file(s), {t['archive_trades']:,} "
        f"archive trades in {t['seconds']} s ({t['trades_per_s'] or 0:,} trades/s)",
        f"  landed {t['landed_trades']:,} trades in {t['objects']:,} objects; {t['already_in_lake']:,} "
        f"were in the lake already; {t['filled_from_rest']:,} the archive lacked came from the REST API",
        f"  minutes marked {t['minutes_marked']:,}, markers rewritten {t['markers_rewritten']:,}",
    ]
    if t["landed_trades"] == 0 and t["filled_from_rest"] == 0 and t["files"]:
        lines.append("  nothing new: the lake held every trade of these days already")
    for gap in t["gaps_unfilled"]:
        ids = f"{gap['first_missing']}..{gap['last_missing']}"
        lines.append(f"  unfilled: ids {ids} ({gap['reason']}): {gap['detail']}")
    for warning in t["warnings"]:
        lines.append(f"  warning: {warning}")
    for name in t["unchecked"]:
        lines.append(
            f"  unmarked: {name}'s minutes before its first trade and after its last, since the REST "
            "API could not say whether the archive lacks trades there; run the import again when it answers"
        )
    for skipped in t["skipped"]:
        lines.append(f"  skipped {skipped['name']} ({skipped['reason']}): {skipped['message']}")
    return "\n".join(lines)


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Compare the lake with the archive trade by trade; exit 1 on any difference."""
    from collector.archive import ArchiveProblem
    from collector.verify import render, verify_day

    settings, sink = _sink(settings, args.destination)
    code = 0
    for symbol in args.symbols:
        try:
            report = verify_day(sink, symbol, args.day, settings.archive_url, settings.spool_dir / "verify")
        except ArchiveProblem as problem:
            print(f"collector verify: {problem}", file=sys.stderr)
            return 2
        print(json.dumps(report.as_dict(), indent=1) if args.json else render(report))
        code = code or (0 if report.ok else 1)
    return code


def add_commands(sub: Any, with_env: Any, run: Any) -> None:
    """The two commands' parsers; `run(func)` wraps a command that needs the settings."""
    imp = with_env(
        sub.add_parser("import", help="import days of Binance's public trade archive into the lake")
    )
    imp.add_argument("--symbols", type=_symbols, required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    imp.add_argument("--from", dest="start", type=day, required=True, help="first UTC day, e.g. 2024-08-01")
    imp.add_argument("--to", dest="end", type=day, required=True, help="last UTC day (included)")
    imp.add_argument(
        "--destination", help="a directory or s3://bucket/prefix (default: COLLECTOR_DESTINATION)"
    )
    imp.add_argument("--downloads", type=positive_int, default=3, help="files fetched at once")
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")
    imp.set_defaults(func=run(cmd_import))
    ver = with_env(sub.add_parser("verify", help="compare the lake's trades of a day with Binance's archive"))
    ver.add_argument("--symbols", type=_symbols, required=True, help="comma-separated")
    ver.add_argument("--day", type=day, required=True, help="a UTC day, e.g. 2024-08-08")
    ver.add_argument(
        "--destination", help="a directory or s3://bucket/prefix (default: COLLECTOR_DESTINATION)"
    )
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    ver.set_defaults(func=run(cmd_verify))
