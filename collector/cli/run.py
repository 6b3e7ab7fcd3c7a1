"""`collector run`, `check-config`, `status` and `fetch-env`: the daemon and what operates it."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from collector.cli.options import refuse_unusable, settings_for
from collector.config import Settings, load_settings
from collector.logs import configure_logging

__all__ = ["cmd_check_config", "cmd_fetch_env", "cmd_run", "cmd_status"]


def cmd_run(args: argparse.Namespace) -> int:
    from collector.daemon import lean

    lean.apply()
    settings = settings_for(args)
    refuse_unusable(settings)
    configure_logging(settings.log_level, settings.log_format)
    from collector.daemon.app import Collector

    async def main() -> int:
        return await Collector(settings).run()

    return asyncio.run(main())


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
    from collector.daemon.preflight import offline_problems, online_problems

    settings = settings_for(args)
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
    import urllib.error
    import urllib.request

    port = args.port
    if port is None:  # the collector's own setting, from the environment or the .env file
        port = settings_for(args).health_port
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
                print(_indented(response.read().decode()))
                return 0
        except urllib.error.HTTPError as exc:
            last = _indented(exc.read().decode())
        except (urllib.error.URLError, OSError) as exc:
            last = (
                f"collector status: nothing answers at {url} ({getattr(exc, 'reason', exc)}); is it running?"
            )
        if time.monotonic() >= deadline:
            print(last, file=sys.stderr if last.startswith("collector status") else sys.stdout)
            return 1
        time.sleep(1)


def _indented(body: str) -> str:
    """/health's JSON an object per line, as check-config prints its settings (one line of a
    whole market's health is thousands of characters); anything else as it came."""
    try:
        return json.dumps(json.loads(body), indent=2)
    except ValueError:
        return body.strip()


def cmd_fetch_env(args: argparse.Namespace) -> int:
    """Write an SSM parameter's decrypted value to a file readable by its owner only."""
    from collector.files import write_atomically
    from collector.ssm import fetch_parameter

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
