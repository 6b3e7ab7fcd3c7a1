"""Recovery at start, and the state that makes it possible: where each symbol's capture stopped.

    state.json ─▶ journal leftovers resealed and spooled ─▶ spool objects queued first
               ─▶ symbols with no known last id: asked of the landing zone (the last 48 hours)

`state.json` holds the last accepted trade id per symbol. It is saved (after the gap ledger, so
it never claims ids past a gap the ledger does not hold yet) before a sealed batch's journal is
discarded, and so before the batch can be uploaded and leave the spool. A restart therefore
knows every id it got to: in the state file, in a journal left open, or in the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from collector.capture.batching import MinuteBatcher, TimeUnit
from collector.capture.decode import Trade, decode_frame
from collector.capture.sequence import SequenceTracker
from collector.exceptions import SpoolError
from collector.files import write_atomically
from collector.gaps.ledger import GapLedger, OpenGap
from collector.lake.holdings import latest_market_ids
from collector.lake.layout import market_source_key, object_key, parse_object_key
from collector.lake.parquet import encode_batch
from collector.lake.sinks import Sink
from collector.landing.journal import Journal
from collector.landing.spool import Spool, SpoolEntry

__all__ = ["Recovered", "Recovery"]

LOOKUPS_AT_ONCE = 16
CONTINUITY_SHOWN = 10  # symbols whose last ids the start's continuity line lists
FULL_RETRY_S = 5.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Recovered:
    resealed: int  # batches sealed again from journal leftovers
    spooled: list[SpoolEntry]  # objects waiting in the spool, oldest minute first
    gaps: int  # gaps found noted in the journal but not in the ledger


class Recovery:
    """Loads and saves the continuity state; puts a crashed run's leftovers back on their way."""

    def __init__(
        self,
        *,
        state_path: Path,
        sequence: SequenceTracker,
        ledger: GapLedger,
        journal: Journal,
        spool: Spool,
        time_unit: TimeUnit,
        output_format: str,
        log: Any,
        watched: Callable[[str], bool] = lambda symbol: True,
    ) -> None:
        self.watched = watched  # the others' batches are market sources (collector.landing.market_minutes)
        self.state_path = state_path
        self.sequence = sequence
        self.ledger = ledger
        self.journal = journal
        self.spool = spool
        self.time_unit: TimeUnit = time_unit
        self.output_format = output_format
        self.log = log
        self._lock = threading.Lock()

    def save_state(self) -> None:
        """The last accepted trade id per symbol, durably (thread-safe). Pending gaps go first,
        and the journal's records a full disk held back: the state never claims a trade that no
        file holds. Raises SpoolError or OSError when the disk refuses (nothing is claimed then)."""
        with self._lock:
            if not self.journal.flush():
                raise SpoolError(f"the journal cannot be written: {self.journal.failure}")
            self.ledger.save_if_dirty()
            known = self.sequence.snapshot()
            if known:
                write_atomically(self.state_path, json.dumps(known, sort_keys=True).encode())

    async def run(self, sink: Sink, symbols: tuple[str, ...]) -> Recovered:
        self._load_state()
        resealed, gaps = await self._while_full(self._reseal_journal)
        await asyncio.to_thread(self.spool.prune)
        spooled = await asyncio.to_thread(self.spool.pending)
        for entry in spooled:  # the stream must not hand us these trades a second time
            name = parse_object_key(entry.key)
            if name is not None:
                self.sequence.remember(name.symbol, name.last_trade_id)
        await self._ask_landing_zone(sink, symbols)
        await self._while_full(self.save_state)
        return Recovered(resealed, spooled, gaps)

    async def _while_full(self, step: Callable[[], T]) -> T:
        """`step` in a worker thread, again every FULL_RETRY_S while the spool's disk is full: a
        start on a full disk waits for space (said once) rather than exiting, which systemd would
        retry every few seconds until it gave up on the unit. Each step is safe to run again."""
        said = False
        while True:
            try:
                return await asyncio.to_thread(step)
            except (SpoolError, OSError) as exc:
                refused = exc if isinstance(exc, OSError) else exc.__cause__
                if not isinstance(refused, OSError) or refused.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                if not said:
                    fix = "free space on the spool's disk; the start goes on once there is some"
                    self.log.error(
                        "collector.spool_unwritable", path=str(self.spool.root), error=str(exc), fix=fix
                    )
                    said = True
                await asyncio.sleep(FULL_RETRY_S)

    def _load_state(self) -> None:
        try:
            saved = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object of symbol to trade id")
        except (OSError, ValueError) as exc:
            self.log.warning("collector.state_unreadable", path=str(self.state_path), error=str(exc))
            saved = {}
        for symbol, last in saved.items():
            if isinstance(last, int):
                self.sequence.remember(symbol, last)

    def _reseal_journal(self) -> tuple[int, int]:
        """Batches a crash left open: sealed again from their journaled frames and spooled, with
        the same trades, so the same key and bytes as the batch would have had (a batch that was
        spooled, or landed, just before the crash is not doubled). Gaps they noted are kept."""
        resealed = gaps = 0
        for leftover in self.journal.leftovers():
            for line in leftover.gaps():
                with contextlib.suppress(ValueError, TypeError):
                    gap = OpenGap.from_record(json.loads(line))
                    if not self.ledger.knows(gap.symbol, gap.first_missing):
                        self.ledger.add(gap)
                        gaps += 1
                        self.log.warning(
                            "collector.gap_recovered",
                            symbol=gap.symbol,
                            first_missing=gap.first_missing,
                            last_missing=gap.last_missing,
                            batch=leftover.batch_id,
                        )
            batcher = MinuteBatcher.until_flushed(self.time_unit)
            for received_at_ns, raw in leftover.frames():
                frame = decode_frame(raw, received_at_ns)
                if type(frame) is Trade:
                    batcher.add(frame, 0.0)
            for batch in batcher.flush("recovered"):
                key = object_key(
                    symbol=batch.symbol,
                    minute=batch.minute,
                    first_trade_id=batch.first_trade_id,
                    last_trade_id=batch.last_trade_id,
                    output_format=self.output_format,
                )
                key = key if self.watched(batch.symbol) else market_source_key(key)
                self.sequence.remember(batch.symbol, batch.last_trade_id)
                self.spool.put(key, encode_batch(batch, self.output_format))
                resealed += 1
                self.log.info("collector.journal_resealed", key=key, rows=batch.rows)
            self.save_state()
        self.save_state()
        self.journal.forget_leftovers()  # everything in them is spooled, or was already
        return resealed, gaps

    async def _ask_landing_zone(self, sink: Sink, symbols: tuple[str, ...]) -> None:
        """Where each symbol left off, when nothing local knows: the newest objects landed
        (LOOKUPS_AT_ONCE symbols at a time: a whole market is a thousand and more LISTs); for the
        unwatched symbols, the newest market-wide minutes, read once for all of them."""
        gate = asyncio.Semaphore(LOOKUPS_AT_ONCE)
        known = {s for s in symbols if self.sequence.last_id(s) is not None}
        market: dict[str, int] = {}
        if any(self.sequence.last_id(s) is None and not self.watched(s) for s in symbols):
            try:
                market = await asyncio.to_thread(latest_market_ids, sink, time.time())
            except Exception as exc:  # an unreachable destination must not stop capture
                self.log.warning("collector.landing_lookup_failed", layout="market", error=str(exc))

        async def ask(symbol: str) -> None:
            if self.sequence.last_id(symbol) is None and not self.watched(symbol):
                if symbol in market:
                    self.sequence.remember(symbol, market[symbol])
            elif self.sequence.last_id(symbol) is None:
                async with gate:
                    try:
                        landed = await asyncio.to_thread(sink.latest_trade_id, symbol, time.time())
                    except Exception as exc:  # an unreachable destination must not stop capture
                        self.log.warning("collector.landing_lookup_failed", symbol=symbol, error=str(exc))
                        landed = None
                if landed is not None:
                    self.sequence.remember(symbol, landed)
            self.log.debug(
                "collector.continuity_symbol", symbol=symbol, last_trade_id=self.sequence.last_id(symbol)
            )

        await asyncio.gather(*(ask(symbol) for symbol in symbols))
        self._log_continuity(symbols, known)

    def _log_continuity(self, symbols: tuple[str, ...], known: set[str]) -> None:
        """One line for all the symbols (a whole market is 1,500 and more; each at debug):
        how many go on from an id this spool remembers, from the landing zone, from none."""
        last = {s: self.sequence.last_id(s) for s in symbols}
        self.log.info(
            "collector.continuity",
            symbols=len(symbols),
            remembered=len(known),
            from_landing_zone=sum(1 for s, i in last.items() if i is not None and s not in known),
            unknown=sum(1 for i in last.values() if i is None),
            **({"last_trade_ids": last} if len(symbols) <= CONTINUITY_SHOWN else {}),
        )
