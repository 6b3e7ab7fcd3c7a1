"""`collector demo`: the local feed and a collector in one process, into local directories.

A whole minute is over and marked within the default run: the generated tape's trade times
start at the previous minute's first second and run SPEEDUP times the wall clock's pace until
they meet it, then trade live. Into a directory a previous demo filled, the tape goes on where
that one stopped, in ids and in time: the two runs are one series, not a gap of made-up ids
(a demo's ids are its own; the collector would look for the ones between in vain). The end
says which minutes were marked and the `collector audit` command that checks them.
`--archive` imports days of the feed's archive instead, then verifies the last.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import shlex
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.binance.archive import StagingError
from collector.cli.feed import feed_rate, make_tape
from collector.cli.history import RESUME, check_days, importer_for, plain, render_summary, sink_for
from collector.cli.options import refuse_unusable, settings_for
from collector.config import Settings, parse_destination
from collector.exceptions import ConfigError, SinkError
from collector.logs import configure_logging

if TYPE_CHECKING:
    from collector.lake.inventory import SymbolInventory

__all__ = ["DEMO_RATE", "SPEEDUP", "cmd_demo", "demo_import", "demo_tape"]

DEMO_RATE = 200.0  # trades a second, in all
SPEEDUP = 10  # the emulated clock's pace until it meets the wall clock: a past minute in 6 s


def cmd_demo(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    destination = parse_destination(args.destination)
    settings = dataclasses.replace(
        settings,
        destination=destination,
        spool_dir=Path(args.spool_dir),
        max_batch_age_s=min(settings.max_batch_age_s, 10),
    )
    if settings.is_s3:
        raise ConfigError(["collector demo writes to a local directory; give --destination a path"])
    refuse_unusable(settings)
    if args.archive:
        configure_logging("warning" if args.quiet else settings.log_level, settings.log_format, sys.stderr)
        return demo_import(args, settings)
    if args.start or args.end:
        raise ValueError("--from and --to are the days an --archive demo imports; add --archive")
    from collector.lake.inventory import scan_local

    root = Path(str(destination))
    before = scan_local(root) if root.is_dir() else {}
    started_s = time.time()
    tape = demo_tape(args, before, started_s)
    clock_ms = getattr(tape, "clock_start_ms", None)
    configure_logging("warning" if args.quiet else settings.log_level, settings.log_format)
    code = asyncio.run(_capture(args, settings, tape))
    after = _print_inventory(root, settings.marker_grace_s)
    if code == 0 and not any(inv.rows for inv in after.values()):
        print(
            f"collector demo: nothing landed in {args.seconds:g} s; the log lines above say why "
            "(collector.upload_blocked, collector.fatal), or the feed had no trades to send",
            file=sys.stderr,
        )
        return 1
    first_minute = None if clock_ms is None else clock_ms // 60_000
    _print_marked(
        args, before, after, first_minute=first_minute, started_s=started_s, grace_s=settings.marker_grace_s
    )
    return code


async def _capture(args: argparse.Namespace, settings: Settings, tape: object) -> int:
    """The feed serving `tape` and a collector capturing it for --seconds."""
    from collector.daemon.app import Collector
    from collector.feed.server import FeedServer

    server = FeedServer(tape, rate=feed_rate(args), speed=args.speed)  # type: ignore[arg-type]
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


def demo_tape(args: argparse.Namespace, before: dict[str, SymbolInventory], now_s: float) -> object:
    """The generated tape, its clock arranged (module doc; --clock-from-s moves its start), or
    the replay asked for."""
    from collector.feed.tapes import GeneratedTape
    from collector.lake.inventory import last_trade_time_s

    if args.replay:
        return make_tape(args)
    symbols = tuple(s.strip().upper() for s in args.symbols.split(",") if s.strip())
    start_s = (now_s // 60 - 1) * 60.0 if args.clock_from_s is None else now_s - args.clock_from_s
    first_ids: dict[str, int] = {}
    for symbol in symbols:
        newest = before[symbol].newest if symbol in before else None
        if newest is not None:  # a previous demo's: go on from its last trade, in id and time
            first_ids[symbol] = newest[0] + 1
            start_s = max(start_s, last_trade_time_s(newest[1]) + 0.001)
    step_ms = args.clock_step_ms
    if step_ms is None:
        step_ms = SPEEDUP * 1000 / (args.rate or DEMO_RATE)
    return GeneratedTape(
        symbols,
        count=args.count,
        seed=args.seed,
        first_id=args.first_id if args.first_id is not None else int(now_s) * 1000,
        first_ids={} if args.first_id is not None else first_ids,
        clock_start_ms=int(start_s * 1000),
        clock_step_ms=step_ms,
        clock_jump_every=args.clock_jump_every,
        clock_jump_s=args.clock_jump_s,
        catch_up=True,
    )


def _print_inventory(root: Path, marker_grace_s: float) -> dict[str, SymbolInventory]:
    """What landed under `root`, per symbol, and the minutes still without a marker."""
    from collector.lake.completion import minute_label
    from collector.lake.inventory import scan_local

    found = scan_local(root)
    print(f"\nlanded under {root}/:")
    for symbol, inv in sorted(found.items()):
        ids = inv.trade_ids
        print(
            f"  {symbol}: {inv.rows:,} trades in {inv.files:,} files, {inv.bytes:,} bytes "
            f"({inv.bytes / max(1, inv.rows):.1f} B/trade), ids {min(ids)}..{max(ids)}, "
            f"{inv.duplicates:,} duplicates, {inv.missing:,} missing"
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
    return found


def _print_marked(
    args: argparse.Namespace,
    before: dict[str, SymbolInventory],
    after: dict[str, SymbolInventory],
    *,
    first_minute: int | None,
    started_s: float,
    grace_s: float,
) -> None:
    """Which minutes this run marked and the command that audits them; or, when none, why and
    how long a run would see one marked (`first_minute`: the first the tape's clock completes)."""
    from collector.lake.completion import minute_label

    new = {s: inv.marked - (before[s].marked if s in before else set()) for s, inv in after.items()}
    minutes = sorted(set().union(*new.values()))
    if minutes:
        first, last = minutes[0], minutes[-1]
        span = minute_label(first) if first == last else f"{minute_label(first)} to {minute_label(last)}"
        marked_by = ", ".join(s for s in sorted(new) if new[s])
        print(
            f"\nmarked in this run: {len(minutes):,} minute(s), {span}, for {marked_by}: each _SUCCESS "
            "lists the minute's files, written once every trade of the minute had landed. Check them:"
        )
        since, until = minute_label(first)[:-1], minute_label(last + 1)[:-1]
        print(f"  collector audit {shlex.quote(args.destination)} --from {since} --to {until}")
        return
    if first_minute is None:  # a replay: its trades' own times
        print(
            "\nno minute was marked in this run: a minute is marked once it is over and all of it has landed"
        )
        return
    due_s = (first_minute + 1) * 60 + grace_s
    print(
        f"\nno minute was marked in this run: its first minute, {minute_label(first_minute)}, is marked at "
        f"{time.strftime('%H:%M:%S', time.gmtime(due_s))} UTC ({grace_s:g} s after it ends, once all of it "
        f"has landed), after the run's {args.seconds:g} s"
        + (" (it went on from the last trade a demo left in this directory)" if before else "")
        + f". Run it again, or for --seconds {math.ceil(due_s + 5 - started_s)}."
    )


def demo_import(args: argparse.Namespace, settings: Settings) -> int:
    """`collector demo --archive`: the local feed's market and archive, imported, then the last
    day verified against the archive; offline, into a local directory."""
    from collector.feed.archive import ArchiveFeed
    from collector.feed.server import FeedServer
    from collector.feed.simulated import Market
    from collector.feed.tapes import MarketTape
    from collector.history.verify import render, verify_day

    if args.start is None or args.end is None:
        raise ValueError(
            "demo --archive imports days: give --from and --to, e.g. --from 2024-12-31 --to 2025-01-01"
        )
    check_days(args.start, args.end)
    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    sink = sink_for(settings, None)[1]
    market = Market(tuple(symbols), args.trades_per_day)

    async def main() -> int:
        tape = MarketTape(market, time.time_ns() // 1000)
        server = FeedServer(tape, rate=0.0, archive=ArchiveFeed(market, {}))
        url = (await server.start("127.0.0.1", 0)).replace("ws://", "http://")
        try:
            summary = await importer_for(settings, sink, url, url, 3).run(symbols, args.start, args.end)
            totals = summary.totals()
            print(render_summary(totals, sink.describe()))
            code = 1 if totals["skipped"] or totals["unchecked"] else 0
            for symbol in symbols:
                report = await asyncio.to_thread(
                    verify_day, sink, symbol, args.end, url, settings.spool_dir / "verify"
                )
                print(render(report))
                code = code or (0 if report.ok else 1)
            return code or await asyncio.to_thread(_demo_tables, settings, sink, args)
        finally:
            await server.close()

    try:
        return asyncio.run(main())
    except (SinkError, StagingError) as exc:
        print(f"collector demo: stopped: {plain(exc)}. {RESUME}", file=sys.stderr)
        return 1


def _demo_tables(settings: Settings, sink: Any, args: argparse.Namespace) -> int:
    """The imported days compacted into the lake's tables, and where to read them."""
    from collector.cli.table import open_lake_tables
    from collector.logs import get_logger
    from collector.table.compactor import Compactor

    tables = open_lake_tables(settings)
    days = [args.start + timedelta(days=n) for n in range((args.end - args.start).days + 1)]
    compactor = Compactor(sink, tables, settings.spool_dir / "compact", log=get_logger(),
                          snapshot_days=settings.table_snapshot_days)  # fmt: skip
    outcomes = compactor.run(days)
    for outcome in outcomes:
        print(f"compacted {outcome.day}: {outcome.status}, {outcome.rows:,} trades, {outcome.bars:,} bars")
    _, warehouse = settings.table_location()
    print(f"tables trade_lake.trades and trade_lake.bars_1m: catalog {warehouse}/catalog.db "
          "(docs/table.md shows how to read them)")  # fmt: skip
    return 0 if all(o.status in ("committed", "unchanged") for o in outcomes) else 1
