"""What every command shares: its settings (environment, SSM, `.env`) and the argument types."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path

from collector.config import Settings, load_settings, parse_symbols
from collector.exceptions import ConfigError

__all__ = [
    "day",
    "landing_to_read",
    "listen_port",
    "non_negative",
    "non_negative_int",
    "port",
    "positive_int",
    "positive_seconds",
    "refuse_unusable",
    "settings_for",
    "symbol_list",
    "utc_minute",
]


def settings_for(args: argparse.Namespace) -> Settings:
    """Settings from the environment, then COLLECTOR_SSM_PARAMETER's body, then the .env file."""
    env_file = args.env_file
    if env_file is None and Path(".env").is_file():
        env_file = Path(".env")
    settings = load_settings(env_file=env_file)
    if not settings.ssm_parameter:
        return settings
    from collector.ssm import fetch_parameter

    text = fetch_parameter(settings.ssm_parameter, settings.s3_region)
    return load_settings(env_file=env_file, ssm_text=text)


def refuse_unusable(settings: Settings) -> None:
    """Directories that cannot be made or written stop the start, as a bad setting does."""
    from collector.daemon.preflight import offline_problems

    problems = offline_problems(settings)
    if problems:
        raise ConfigError(problems)


def landing_to_read(destination: Path) -> None:
    """A local landing zone a command reads (audit, verify) exists: an empty report for a
    misspelt directory would read as "nothing landed" or "every trade missing"."""
    if not destination.exists():
        raise ValueError(
            f"{destination} does not exist; pass the landing directory (or s3://bucket/prefix) to read"
        )
    if not destination.is_dir():
        raise ValueError(f"{destination} is not a directory; pass a landing directory or s3://bucket/prefix")


def port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1 to 65535)")
    return port


def listen_port(text: str) -> int:
    """A port to listen on; 0 asks the system for a free one."""
    return 0 if text.strip() == "0" else port(text)


def non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return seconds


def utc_minute(text: str) -> int:
    """Minutes since the epoch for 2026-11-22, 2026-11-22T10:15 or 2026-11-22T10:15Z (UTC)."""

    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a UTC time such as 2026-11-22 or 2026-11-22T10:15") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() // 60)


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


def symbol_list(text: str) -> list[str]:
    try:
        return list(parse_symbols(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
