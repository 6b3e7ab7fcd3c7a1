"""Logging: dotted event names with key-value fields, on stdout.

JSON lines (one object per line) for systemd's journal and for machines; structlog's console
renderer (aligned, coloured) when a person runs the collector at a terminal. COLLECTOR_LOG_FORMAT
chooses: json, console, or auto (console when stdout is a terminal).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger", "log_stream", "send_logs_to"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _event_first(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """Put event, level and time first so a human scanning the journal reads the name first."""
    head: dict[str, Any] = {k: event_dict.pop(k) for k in ("event", "level", "timestamp") if k in event_dict}
    head.update(event_dict)
    return head


_stream: Any = None  # where the log lines go


# The counter lines: every counter of the registry, for machines (JSON) and /metrics. A person
# at a terminal reads the ones that are not zero, and a whole market's per-symbol maps as counts.
_COUNTER_LINES = frozenset({"collector.stats", "collector.stopped"})
_ALWAYS_SHOWN = frozenset({"exit_code", "up", "connected"})
_MAP_SHOWN = 5  # entries of a per-symbol map shown as they are; more: how many, and their sum


def _nothing(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_nothing(v) for v in value.values())
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool) and value == 0)


def _brief(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """On the console: a counter line without its zeros, its long maps summed."""
    if event_dict.get("event") not in _COUNTER_LINES:
        return event_dict
    for key, value in list(event_dict.items()):
        if key in _ALWAYS_SHOWN or key in ("event", "level", "timestamp"):
            continue
        if _nothing(value):
            del event_dict[key]
        elif isinstance(value, dict) and len(value) > _MAP_SHOWN:
            numbers = [v for v in value.values() if isinstance(v, int | float)]
            total = f", {sum(numbers):,} in all" if not key.endswith("_id") and numbers else ""
            event_dict[key] = f"{len(value):,} symbols{total}"
    return event_dict


def configure_logging(level: str = "info", log_format: str = "auto", stream: Any = None) -> None:
    """`stream`: stdout (the daemon's), or stderr for a command whose stdout is its report."""
    global _stream  # noqa: PLW0603
    stream = _stream = stream or sys.stdout
    console = log_format == "console" or (log_format == "auto" and stream.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty(), sort_keys=False)
        if console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso" if not console else "%H:%M:%S", utc=not console),
            structlog.processors.format_exc_info if not console else structlog.dev.set_exc_info,
            *([_brief] if console else []),
            _event_first,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def log_stream() -> Any:
    """The stream the log lines go to (None before `configure_logging`)."""
    return _stream


def send_logs_to(stream: Any) -> None:
    """Send the log lines to `stream` from now on, in the same format (loggers already handed
    out follow: none is cached)."""
    global _stream  # noqa: PLW0603
    _stream = stream
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(stream))


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger(**bound)
