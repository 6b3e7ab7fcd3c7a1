"""Per-symbol trade-id continuity: what is new, what is a duplicate, where ids jumped.

Pure. Binance trade ids within a symbol have been strictly consecutive in every recording
we hold, so an id at or below the last one seen is a duplicate (a reconnect's overlap) and
a jump of more than one opens a gap of the ids in between.

A last id can also come from the exchange's ticker for a symbol never seen trading
(`remember_reported`): the ticker may already count a trade the stream has not delivered yet,
so the symbol's first trade from the stream at or below that id is taken, not dropped as a
duplicate, and the count goes on from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["RESET_DISTANCE", "Gap", "SequenceTracker", "Stretch"]

# A reconnect repeats at most a few thousand recent trades. An id this far below the last one
# is not a duplicate: the remembered id belongs to another series (a demo's state, a restored
# backup), and dropping every live trade as a "duplicate" would be the worst possible failure.
RESET_DISTANCE = 1_000_000


@dataclass(frozen=True, slots=True)
class Gap:
    """Trade ids `first_missing..last_missing` (inclusive) of `symbol` were never seen."""

    symbol: str
    first_missing: int
    last_missing: int

    @property
    def size(self) -> int:
        return self.last_missing - self.first_missing + 1


class Stretch(NamedTuple):
    """Positions `start..stop` (exclusive) of a run of ids: accepted, consecutive, and after a
    gap of `gap`'s ids when it is not None. (A named tuple: one is made per read.)"""

    start: int
    stop: int
    gap: Gap | None = None


class SequenceTracker:
    """Remembers the last trade id accepted per symbol."""

    def __init__(self, last_ids: Mapping[str, int] | None = None) -> None:
        self._last: dict[str, int] = dict(last_ids or {})
        self.resets: list[tuple[str, int, int]] = []  # (symbol, remembered id, new id), for the log
        self._reported: set[str] = set()  # last ids the ticker gave, no trade of the stream since

    def last_id(self, symbol: str) -> int | None:
        return self._last.get(symbol)

    def snapshot(self) -> dict[str, int]:
        return dict(self._last)

    def remember(self, symbol: str, trade_id: int) -> None:
        """Ids up to `trade_id` are already held elsewhere (spool, journal): treat them as seen."""
        if trade_id > self._last.get(symbol, -1):
            self._last[symbol] = trade_id

    def remember_reported(self, symbol: str, trade_id: int) -> None:
        """A symbol never seen trading: the exchange reports `trade_id` as its last trade. Trades
        after it are new, and a gap past it is one; the stream's first trade of it at or below
        it (one the ticker counted before the stream brought it) is taken all the same."""
        if symbol not in self._last:
            self._last[symbol] = trade_id
            self._reported.add(symbol)

    def _settle(self, symbol: str, first_id: int) -> None:
        """The stream's first trade of a symbol whose last id the ticker reported."""
        self._reported.discard(symbol)
        if first_id <= self._last[symbol]:
            self._last[symbol] = first_id - 1

    def observe_run(self, symbol: str, trade_ids: Sequence[int]) -> bool:
        """Accept a run of ids in one step when it continues exactly where the symbol left off
        (`observe` would accept each, with no gap). Otherwise change nothing and return False."""
        if self._reported and symbol in self._reported:
            self._settle(symbol, trade_ids[0])
        last = self._last.get(symbol)
        if last is None or trade_ids[0] != last + 1 or not _consecutive(trade_ids, 0):
            return False
        self._last[symbol] = trade_ids[-1]
        return True

    def accept_run(self, symbol: str, trade_ids: Sequence[int]) -> tuple[list[Stretch], int]:
        """Observe a run of ids at once: the stretches accepted, and how many were duplicates.

        The same outcome as `observe` on each id in turn. The usual run continues exactly where
        the symbol left off and is one stretch, checked in C; a duplicate or a jump splits it,
        and only the ids around such a discontinuity are looked at one by one.
        """
        count = len(trade_ids)
        if count and self._reported and symbol in self._reported:
            self._settle(symbol, trade_ids[0])
        last = self._last.get(symbol)
        if count and last is not None and trade_ids[0] == last + 1 and _consecutive(trade_ids, 0):
            self._last[symbol] = trade_ids[-1]
            return [Stretch(0, count)], 0
        stretches: list[Stretch] = []
        duplicates = 0
        i = 0
        while i < count:
            accepted, gap = self.observe(symbol, trade_ids[i])
            if not accepted:
                duplicates += 1
                i += 1
                continue
            start = i
            if _consecutive(trade_ids, start):  # the rest continues: no need to look further
                i = count
            else:
                expected = trade_ids[i] + 1
                i += 1
                while i < count and trade_ids[i] == expected:
                    expected += 1
                    i += 1
            self._last[symbol] = trade_ids[i - 1]
            stretches.append(Stretch(start, i, gap))
        return stretches, duplicates

    def observe(self, symbol: str, trade_id: int) -> tuple[bool, Gap | None]:
        """Record `trade_id`. Returns (accepted, gap): accepted is False for a duplicate."""
        last = self._last.get(symbol)
        if last is None or trade_id < last - RESET_DISTANCE:
            if last is not None:
                self.resets.append((symbol, last, trade_id))
            self._last[symbol] = trade_id
            return True, None
        if trade_id <= last:
            return False, None
        self._last[symbol] = trade_id
        if trade_id == last + 1:
            return True, None
        return True, Gap(symbol, last + 1, trade_id - 1)


def _consecutive(ids: Sequence[int], start: int) -> bool:
    """Whether ids[start:] counts up by one, compared in C."""
    first, rest = ids[start], len(ids) - start
    if ids[-1] != first + rest - 1:
        return False
    if rest < 3:
        return rest < 2 or ids[start + 1] == first + 1
    tail = ids if start == 0 and isinstance(ids, list) else list(ids[start:])
    return tail == list(range(first, first + rest))
