"""Which UTC days of the landing zone are final, and what each is made of.

A day is compacted only once every minute of it is final: for each *stream* that holds data in
the day (a symbol's folder, or the market-wide `_market`), every minute has its `_SUCCESS`,

    from the day's start, or from the stream's first marker if the stream began that day,
    to the day's end, or to its last marker if the stream ended that day (a delisting, a
    symbol moved to the market-wide layout) and the lake as a whole has moved past the day,

and no data object lies in a minute without a marker (a collector stopped mid-minute leaves
its last minute spooled and unmarked until it starts again). The day's *digest* is a SHA-256
of every marker's key, size and stamp (S3's ETag, a file's modification time): a marker
rewritten for late data changes it, and the table rebuilds that day.

Listing only: no object is read here. `DayFiles` names what the markers say, once read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from collector.lake.layout import MARKET, exchange_root, parse_market_marker_key
from collector.lake.sinks import Sink

__all__ = ["DayState", "Streams", "day_minutes", "day_of_minute"]

_EPOCH = date(1970, 1, 1)


def day_minutes(day: date) -> range:
    """The minutes since the epoch of a UTC day."""
    first = (day - _EPOCH).days * 1440
    return range(first, first + 1440)


def day_of_minute(minute: int) -> date:
    return _EPOCH + timedelta(days=minute // 1440)


@dataclass
class StreamDay:
    """One stream's keys in one day, from a listing."""

    stream: str  # a symbol, or "_market"
    markers: dict[int, tuple[str, int, str]] = field(default_factory=dict)  # minute -> key, size, stamp
    data_minutes: set[int] = field(default_factory=set)  # minutes holding a data object


@dataclass
class DayState:
    """A day as the listing shows it: ready, or why not (the streams' unmarked minutes)."""

    day: date
    streams: dict[str, StreamDay]
    unmarked: dict[str, list[int]]  # stream -> minutes that should have a marker and have none
    lake_past: bool  # some stream holds data after the day
    cut_short: list[str] = field(default_factory=list)  # streams whose markers end before 23:59

    @property
    def empty(self) -> bool:
        return not self.streams

    @property
    def ready(self) -> bool:
        """Every minute of every stream marked; a stream that ends early counts as ended only once
        the lake has moved past the day (else the collector may still be in it)."""
        return bool(self.streams) and not self.unmarked and (self.lake_past or not self.cut_short)

    def digest(self) -> str:
        """SHA-256 over every marker's key, size and stamp: a rewritten marker changes it."""
        lines = sorted(
            f"{key} {size} {stamp}" for s in self.streams.values() for key, size, stamp in s.markers.values()
        )
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def why_not(self) -> str:
        if not self.streams:
            return "the landing zone holds nothing of it"
        if not self.unmarked:
            return (f"{', '.join(self.cut_short[:5])} stop before the day ends and the landing zone has "
                    "nothing after it yet: the day is not over for the collector")  # fmt: skip
        parts = []
        for stream, minutes in sorted(self.unmarked.items())[:5]:
            parts.append(f"{stream}: {len(minutes)} minute(s) without _SUCCESS from {_hhmm(minutes[0])}")
        more = f" and {len(self.unmarked) - 5} more streams" if len(self.unmarked) > 5 else ""
        return "; ".join(parts) + more


class Streams:
    """What the landing zone holds, stream by stream and day by day, listed once per run."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        root = exchange_root()
        self.names = sink.list_dirs(root)  # the symbols' folders and _market
        self._days: dict[str, list[date]] = {}

    def days_of(self, stream: str) -> list[date]:
        """The UTC days a stream has a folder for, in order (three small listings)."""
        if stream not in self._days:
            root = f"{exchange_root()}{stream}/"
            found = []
            for year in self.sink.list_dirs(root):
                for month in self.sink.list_dirs(f"{root}{year}/"):
                    for day in self.sink.list_dirs(f"{root}{year}/{month}/"):
                        try:
                            found.append(date(int(year), int(month), int(day)))
                        except ValueError:
                            continue  # not a layout folder: the audit's business
            self._days[stream] = sorted(found)
        return self._days[stream]

    def all_days(self) -> list[date]:
        return sorted({d for stream in self.names for d in self.days_of(stream)})

    def state(self, day: date) -> DayState:
        """The day's streams, their markers, and what keeps it from being final."""
        minutes = day_minutes(day)
        streams: dict[str, StreamDay] = {}
        unmarked: dict[str, list[int]] = {}
        cut_short: list[str] = []
        lake_past = False
        for name in self.names:
            days = self.days_of(name)
            lake_past = lake_past or any(d > day for d in days)
            if day not in days:
                continue
            listed = self._stream_day(name, day)
            streams[name] = listed
            missing = _unmarked(listed, minutes, before=days[0] < day, after=days[-1] > day)
            if missing:
                unmarked[name] = missing
            elif days[-1] == day and max(listed.markers) < minutes.stop - 1:
                cut_short.append(name)
        return DayState(day, streams, unmarked, lake_past, cut_short)

    def _stream_day(self, stream: str, day: date) -> StreamDay:
        prefix = f"{exchange_root()}{stream}/{day:%Y/%m/%d}/"
        found = StreamDay(stream)
        for key, size, stamp in self.sink.list_stamped(prefix):
            minute = _minute_of_key(key, prefix, day)
            if minute is None:
                continue
            if key.endswith("/_SUCCESS"):
                if stream != MARKET or parse_market_marker_key(key) is not None:
                    found.markers[minute] = (key, size, stamp)
            elif not key.rsplit("/", 1)[-1].startswith((".", "_")):
                found.data_minutes.add(minute)
        return found


def _unmarked(listed: StreamDay, minutes: range, *, before: bool, after: bool) -> list[int]:
    """Minutes of the day that must have a marker and have none (see the module's docstring)."""
    if not listed.markers:
        return sorted(listed.data_minutes) or [minutes.start]
    ends = (*listed.markers, *listed.data_minutes)
    first = minutes.start if before else min(ends)
    last = minutes.stop - 1 if after else max(ends)
    return [m for m in range(first, last + 1) if m not in listed.markers]


def _minute_of_key(key: str, prefix: str, day: date) -> int | None:
    rest = key[len(prefix) :].split("/")
    if len(rest) != 3 or not (rest[0].isdigit() and rest[1].isdigit()):
        return None
    hour, minute = int(rest[0]), int(rest[1])
    if hour > 23 or minute > 59:
        return None
    return day_minutes(day).start + hour * 60 + minute


def _hhmm(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%H:%M")


def days_between(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)
