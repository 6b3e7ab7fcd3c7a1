"""`collector emulate`: the local Binance-compatible feed; the tapes it serves (the demo's too)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector.logs import configure_logging, get_logger

if TYPE_CHECKING:
    from collector.feed.server import Faults

__all__ = ["cmd_emulate", "feed_rate", "make_tape"]


def make_tape(args: argparse.Namespace) -> object:
    from collector.feed.tapes import GeneratedTape, load_replay

    if args.replay and (getattr(args, "market", False) or getattr(args, "market_symbols", None)):
        raise ValueError("--replay serves a recording, --market a simulated market: give one or the other")
    if bool(args.clock_jump_every) != bool(args.clock_jump_s):
        raise ValueError(
            "--clock-jump-every and --clock-jump-s: give both, after how many trades and how far"
        )
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
    from collector.feed.simulated import Market, Schedule, scheduled_names
    from collector.feed.tapes import MarketTape

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
    from collector.feed.server import Faults

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
    from collector.feed.archive import ArchiveFeed, parse_defect
    from collector.feed.tapes import MarketTape

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


def feed_rate(args: argparse.Namespace) -> float:
    """--rate, or its default: 50 trades a second for a generated tape; a --market trades at
    its own pace (its trades happen at their times), which a cap would only make lag."""
    if args.rate is not None:
        return float(args.rate)
    return 0.0 if getattr(args, "market", False) or getattr(args, "market_symbols", None) else 50.0


def cmd_emulate(args: argparse.Namespace) -> int:
    configure_logging("info")
    from collector.feed.server import FeedServer

    log = get_logger()

    tape = make_tape(args)

    async def main() -> int:
        server = FeedServer(
            tape,  # type: ignore[arg-type]
            rate=feed_rate(args),
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
            rest_calls=server.rest.calls,
            rest_throttled=server.rest.throttled,
            rest_banned=server.rest.banned,
            exchange_info_calls=server.rest.exchange_info_calls,
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
