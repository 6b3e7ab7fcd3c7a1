"""`collector audit`: a landing zone's markers, files and continuity, both layouts, in one report."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING

from collector.cli.options import landing_to_read, settings_for, utc_minute
from collector.config import parse_destination

if TYPE_CHECKING:
    from collector.audit.report import AuditReport
    from collector.lake.sinks import Sink

__all__ = ["cmd_audit"]


def cmd_audit(args: argparse.Namespace) -> int:
    """Check a landing zone's markers, files and trade-id continuity, per symbol and market-wide;
    exit 1 on any defect."""
    from collector.audit.report import render
    from collector.config import S3Destination, parse_symbols
    from collector.exceptions import SinkPermanentError, SinkUnavailable
    from collector.lake.sinks import LocalSink, S3Sink

    settings = settings_for(args)
    destination = parse_destination(args.destination) if args.destination else settings.destination
    sink: Sink
    if isinstance(destination, S3Destination):
        sink = S3Sink(destination, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)
    else:
        landing_to_read(destination)
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
    from collector.audit.market import audit_market, market_range
    from collector.audit.report import AuditReport, label
    from collector.audit.symbols import audit, data_range, symbols_in

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
    if args.day and (args.start or args.end):
        raise ValueError("--day is a whole UTC day, --from/--to a span of minutes: give one or the other")
    if args.day:
        start = utc_minute(args.day)
        return start, start + 1440
    if not args.start:
        if args.end:
            raise ValueError("--to needs --from")
        return None
    start = utc_minute(args.start)
    end = utc_minute(args.end) if args.end else int(time.time() // 60) - 1
    if end <= start:
        raise ValueError("--to must be after --from")
    return start, end
