"""Landing: a sealed batch to encoded, spooled, uploaded and landed, through bounded queues.

    sealed ─▶ [queue] ─▶ sealer (a worker thread, a group at a time): encode ▶ spool (fsync)
           ▶ state saved once per group ▶ journals discarded ─▶ [uploads] ─▶ uploaders (several,
           each in a worker thread): read back ▶ put (conditional, checksum) ▶ marker book ▶ spool removed

Backpressure: every sealed batch waiting or being spooled is counted in `InFlight`
(collector.landing.inflight) with the open batches; past COLLECTOR_BUFFER_MAX_BYTES the stream is
told to hold back (it stops reading; TCP pushes back on the exchange) until the count is down to
half, so memory stays bounded in bytes whatever the burst. Uploads wait on disk, not in memory.

A batch of a symbol that is not watched (COLLECTOR_WATCHED_SYMBOLS) is spooled the same way as a
market *source* and handed to `MarketMinutes` (collector.landing.market_minutes), which lands its minute
as one market-wide part once the minute is final; the part comes back here as any upload.

The spool's budget is `SpoolBudget`, a small pure policy: past COLLECTOR_SPOOL_MAX_BYTES new
batches are dropped (the oldest kept) until the spool has drained to half, and every dropped
range is recorded (`dropped.jsonl`), logged and named in its minute's marker.
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from collector.capture.batching import SealedBatch
from collector.counters import Registry
from collector.exceptions import (
    LandingConflict,
    SinkPermanentError,
    SinkUnavailable,
    SpoolError,
    SpoolWriteRefused,
)
from collector.files import append_line, read_jsonl
from collector.formats import stamp, version_in
from collector.lake.completion import UnfilledGap
from collector.lake.layout import is_market_source, market_source_key, object_key, parse_object_key
from collector.lake.parquet import count_rows, encode_batch
from collector.lake.sinks import Sink, sha256_b64
from collector.landing.inflight import InFlight
from collector.landing.journal import Journal
from collector.landing.markers import MarkerWriter
from collector.landing.market_minutes import MarketMinutes
from collector.landing.spool import Spool, Spooled, SpoolEntry

__all__ = ["DroppedRange", "Landing", "SpoolBudget", "Spooled"]

GROUP_MAX = 32  # batches spooled per thread hop, with one state save for all of them
# Uploads in flight: S3 answers a PUT in tens of milliseconds, so one at a time would cap a
# whole market's minute at a few hundred objects; eight keep a burst's tail short.
UPLOADERS = 8
PRUNE_EVERY_S = 60.0  # empty minute directories of the spool are removed this often
# An operator needs minutes to fix a bucket policy; asking S3 every minute is enough.
PERMANENT_ERROR_RETRY_S = 60.0
SPOOL_RETRY_S = 5.0


class SpoolBudget:
    """How much the spool may hold. Once full, it stays full until drained to half, so what is
    kept is one contiguous, oldest stretch and what is dropped one recorded stretch after it."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self.full = False

    def admit(self, size: int) -> bool:
        """May an object of `size` bytes be spooled? Counts it in if so."""
        if self.full and self.used_bytes <= self.limit_bytes // 2:
            self.full = False
        if self.full or self.used_bytes + size > self.limit_bytes:
            self.full = True
            return False
        self.used_bytes += size
        return True

    def holds(self, size: int) -> None:
        """An object already in the spool (found at start)."""
        self.used_bytes += size

    def release(self, size: int) -> None:
        self.used_bytes -= size


@dataclass(frozen=True, slots=True)
class DroppedRange:
    """Trades a full spool could not keep: what `dropped.jsonl` records, one line a batch."""

    symbol: str
    minute: int
    trade_id_ranges: list[list[int]]
    trades: int
    spool_bytes: int
    spool_max_bytes: int
    recorded_at: float
    reason: str = "spool_full"


class Landing:
    """Takes sealed batches and lands them; knows which minutes still have a batch on its way."""

    def __init__(
        self,
        *,
        spool: Spool,
        journal: Journal,
        sink: Sink,
        markers: MarkerWriter,
        budget: SpoolBudget,
        output_format: str,
        save_state: Callable[[], None],
        gaps_in: Callable[[str, int], list[UnfilledGap]],
        inflight: InFlight,
        log: Any,
        metrics: Registry,
        market: MarketMinutes | None = None,
        watched: Callable[[str], bool] = lambda symbol: True,
    ) -> None:
        self.spool, self.journal, self.sink, self.markers = spool, journal, sink, markers
        self.market, self.watched = market, watched
        self.budget = budget
        self.output_format = output_format
        self.save_state, self.gaps_in, self.inflight = save_state, gaps_in, inflight
        self.log = log
        self.uploads = Uploads(
            spool=spool,
            sink=sink,
            markers=markers,
            output_format=output_format,
            gaps_in=gaps_in,
            done=self._uploaded,
            log=log,
            metrics=metrics,
            market_landed=market.landed if market else None,
        )
        if market is not None:
            market.enqueue, market.budget = self._enqueue, self.budget
        self._sealed: collections.deque[SealedBatch] = collections.deque()
        self._sealed_wakeup, self._idle = asyncio.Event(), asyncio.Event()
        self._idle.set()
        self._sealing = 0  # batches inside a sealer hop
        self._closing = False
        # Spooled batches whose journals wait for a state save the disk refused (worker thread).
        self._unsaved: list[str] = []
        self.spool_error: str | None = None  # why the last spooling failed, until one succeeds
        # Batches sealed but not landed, per symbol and minute: their minute is not final.
        self._unlanded: collections.defaultdict[str, collections.Counter[int]] = collections.defaultdict(
            collections.Counter
        )
        dropped = spool.root / "dropped.jsonl"
        self._dropped = [
            d for r in read_jsonl(dropped) if version_in(r, "dropped", dropped) and (d := _dropped(r))
        ]
        self._lost = metrics.counter("dropped_trades", "Trades not kept because the spool was full.")
        metrics.gauge("spool_bytes", "Bytes waiting in the spool.", lambda: self.budget.used_bytes)
        metrics.gauge(
            "sealed_waiting", "Sealed batches waiting to be encoded and spooled.", lambda: len(self._sealed)
        )

    # ---- what comes in ----------------------------------------------------------------------

    def submit(self, batch: SealedBatch) -> None:
        """A sealed batch, from the event loop: queued for the sealer (no I/O here)."""
        self._unlanded[batch.symbol][batch.minute] += 1
        self._sealed.append(batch)
        self._idle.clear()
        self._sealed_wakeup.set()
        self.inflight.sealed(batch)

    def recover(self, entries: list[SpoolEntry]) -> None:
        """Objects a previous run left in the spool: uploaded first, oldest minute first."""
        for entry in self.market.recover(entries) if self.market else entries:
            self.budget.holds(entry.size)
            name = parse_object_key(entry.key)
            if self.market is not None and name is not None and is_market_source(entry.key):
                self.market.add_source(Spooled(entry, name))
                continue
            if name is not None:
                self._unlanded[name.symbol][name.minute] += 1
            self._enqueue(Spooled(entry, name))

    def _enqueue(self, spooled: Spooled) -> None:
        self._idle.clear()
        self.uploads.add(spooled)

    def _uploaded(self, spooled: Spooled) -> None:
        """An upload ended: landed, or set aside for good (a conflict, a corrupt file)."""
        self.budget.release(spooled.entry.size)
        if spooled.name is not None:
            self._gone(spooled.name.symbol, spooled.name.minute)
        self._check_idle()

    async def land_backfill(self, batches: list[SealedBatch]) -> None:
        """Backfilled batches: spooled before this returns (their gap's progress is saved after);
        a disk that refuses them is asked again until it takes them."""
        for batch in batches:
            self._unlanded[batch.symbol][batch.minute] += 1
        while True:
            try:
                done = await asyncio.to_thread(self._spool_group, batches, save_state=False)
                self.spool_error = None
            except _PartlySpooled as stop:
                done, self.spool_error = stop.done, str(stop.error)
                self.log.error("collector.spool_failed", error=self.spool_error, retry_in_s=SPOOL_RETRY_S,
                               batches="backfill")  # fmt: skip
            for batch, entry in done:
                self._spooled(batch, entry)
            batches = batches[len(done) :]
            if not batches:
                return
            await asyncio.sleep(SPOOL_RETRY_S)

    # ---- what it knows ----------------------------------------------------------------------

    def pending_minutes(self, symbol: str) -> set[int]:
        return set(self._unlanded.get(symbol, ()))

    def landing(self, symbol: str, minutes: range) -> bool:
        """Is a batch of any of these minutes still sealed, spooled or uploading?"""
        mine = self._unlanded.get(symbol)
        return mine is not None and any(m in mine for m in minutes)

    def dropped_in(self, symbol: str, minute: int) -> list[UnfilledGap]:
        return [
            UnfilledGap(lo, hi, "spool_full")
            for r in self._dropped
            if r.symbol == symbol and r.minute == minute
            for lo, hi in r.trade_id_ranges
        ]

    def key_for(self, batch: SealedBatch) -> str:
        """The batch's own key; for an unwatched symbol, the spool key of a market source."""
        key = object_key(
            symbol=batch.symbol,
            minute=batch.minute,
            first_trade_id=batch.first_trade_id,
            last_trade_id=batch.last_trade_id,
            kind="backfill" if batch.source == "backfill" else "batch",
            output_format=self.output_format,
        )
        return key if self.watched(batch.symbol) else market_source_key(key)

    async def run_housekeeping(self) -> None:
        """Now and then: the spool's empty minute directories go (not on every upload's path)."""
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            await asyncio.to_thread(self.spool.prune)

    # ---- the sealer -------------------------------------------------------------------------

    async def run_sealer(self) -> None:
        """Encode and spool what is sealed, a group per thread hop, until `close()` and empty."""
        while True:
            if not self._sealed and not self._unsaved:
                if self._closing:
                    return
                self._sealed_wakeup.clear()
                await self._sealed_wakeup.wait()
                continue
            # (Empty: nothing sealed, only a state save the disk refused to try again.)
            group = [self._sealed.popleft() for _ in range(min(GROUP_MAX, len(self._sealed)))]
            self._sealing = len(group)
            try:
                done = await asyncio.to_thread(self._spool_group, group)
                self.spool_error = None
            except _PartlySpooled as stop:
                done = stop.done
                self._sealed.extendleft(reversed(group[len(done) :]))
                # The batches stay in memory and in the journal; capture slows to a stop behind
                # the full queue rather than dropping them.
                self.spool_error = str(stop.error)
                self.log.error("collector.spool_failed", error=str(stop.error), retry_in_s=SPOOL_RETRY_S)
                self.inflight.stall()
                await asyncio.sleep(SPOOL_RETRY_S)
            finally:
                self._sealing = 0
            for batch, entry in done:
                self._spooled(batch, entry)
            self.inflight.spooled(batch for batch, _ in done)
            self._check_idle()

    def _spool_group(
        self, group: list[SealedBatch], *, save_state: bool = True
    ) -> list[tuple[SealedBatch, SpoolEntry | None]]:
        """In a worker thread: encode and spool each batch (None: the spool is full and the batch
        was recorded as dropped), save how far each symbol got, then let go of the journals."""
        done: list[tuple[SealedBatch, SpoolEntry | None]] = []
        error: SpoolError | None = None
        for batch in group:
            key = self.key_for(batch)
            data = encode_batch(batch, self.output_format)
            if not self.budget.admit(len(data)):
                self._record_dropped(batch)
                done.append((batch, None))
                continue
            try:
                done.append((batch, self.spool.put(key, data)))
            except SpoolError as exc:
                self.budget.release(len(data))
                error = exc
                break
        retire = [batch.batch_id for batch, _ in done]
        if save_state and (done or self._unsaved):
            try:
                self.save_state()  # before the journals go: a restart knows where capture stopped
                retire, self._unsaved = self._unsaved + retire, []
            except (OSError, SpoolError) as exc:  # spooled all the same; their journals wait
                self._unsaved += retire
                retire = []
                error = error or SpoolError(f"the state of capture cannot be saved: {exc}")
        for batch_id in retire:
            self.journal.discard(batch_id)
        if error is not None:
            raise _PartlySpooled(done, error)
        return done

    def _spooled(self, batch: SealedBatch, entry: SpoolEntry | None) -> None:
        if entry is None:
            self._gone(batch.symbol, batch.minute)
            return
        spooled = Spooled(
            entry, parse_object_key(entry.key), batch.rows, batch.first_received_us, batch.reason
        )
        if self.market is not None and is_market_source(entry.key):
            self._gone(batch.symbol, batch.minute)  # safe on disk: its minute waits for the market's part
            self.market.add_source(spooled)
        else:
            self._enqueue(spooled)

    def _record_dropped(self, batch: SealedBatch) -> None:
        """Spool full: keep the oldest data, and say exactly which trades were not kept."""
        record = DroppedRange(
            symbol=batch.symbol,
            minute=batch.minute,
            trade_id_ranges=_id_ranges(batch.columns.trade_id),
            trades=batch.rows,
            spool_bytes=self.budget.used_bytes,
            spool_max_bytes=self.budget.limit_bytes,
            recorded_at=time.time(),
        )
        path = self.spool.root / "dropped.jsonl"
        try:
            append_line(path, (json.dumps({**stamp("dropped"), **asdict(record)}) + "\n").encode())
        except OSError as exc:
            self.log.error("collector.dropped_record_failed", path=str(path), error=str(exc))
        self._lost.inc(batch.rows)
        self._dropped.append(record)
        self.log.error(
            "collector.spool_full",
            symbol=batch.symbol,
            trade_id_ranges=record.trade_id_ranges,
            trades=batch.rows,
            spool_bytes=record.spool_bytes,
            spool_max_bytes=record.spool_max_bytes,
            record=str(path),
            fix="restore the destination (see collector.upload_blocked) or raise COLLECTOR_SPOOL_MAX_BYTES",
        )

    # ---- the end ----------------------------------------------------------------------------

    def _gone(self, symbol: str, minute: int) -> None:
        """A batch of (symbol, minute) landed or was lost for good: one fewer on its way."""
        mine = self._unlanded[symbol]
        mine[minute] -= 1
        if mine[minute] <= 0:
            del mine[minute]
            if not mine:
                del self._unlanded[symbol]

    def _check_idle(self) -> None:
        if not self._sealed and not self._sealing and not self.uploads:
            self._idle.set()

    def close(self) -> None:
        """No more batches will come: the sealer ends once it has spooled what is queued."""
        self._closing = True
        self._sealed_wakeup.set()

    async def drained(self) -> None:
        """Until everything submitted has landed (or is lost for good, and recorded)."""
        self._check_idle()
        await self._idle.wait()

    @property
    def waiting(self) -> int:
        return len(self._sealed) + self._sealing + len(self.uploads)


class Uploads:
    """The spooled objects waiting for the sink, landed by several uploaders at once."""

    def __init__(
        self,
        *,
        spool: Spool,
        sink: Sink,
        markers: MarkerWriter,
        output_format: str,
        gaps_in: Callable[[str, int], list[UnfilledGap]],
        done: Callable[[Spooled], None],
        log: Any,
        metrics: Registry,
        market_landed: Callable[[str], None] | None = None,
    ) -> None:
        self.spool, self.sink, self.markers = spool, sink, markers
        self.market_landed = market_landed
        self.output_format, self.gaps_in, self.done, self.log = output_format, gaps_in, done, log
        self.sink_ok = False
        self.sink_error: str | None = None
        self.last_landed_mono: float | None = None
        self.queue: collections.deque[Spooled] = collections.deque()
        self.in_flight = 0
        self._wakeup = asyncio.Event()
        self._blocked_until = 0.0  # a permanent error: no upload before this (monotonic)
        self._landed = metrics.counter("batches_landed", "Objects landed.")
        self._trades = metrics.counter("trades_landed", "Trades landed, per symbol.", label="symbol")
        self._bytes = metrics.counter("bytes_landed", "Bytes landed.")
        self._errors = metrics.counter("upload_errors", "Failed upload attempts, per kind.", label="kind")
        self._conflicts = metrics.counter("landing_conflicts", "Objects found at their key with other bytes.")
        self._upload_s = [0.0, 0]
        metrics.summary(
            "upload_seconds", "Time to land one object.", lambda: (self._upload_s[0], int(self._upload_s[1]))
        )
        metrics.gauge(
            "spool_objects", "Objects waiting in the spool.", lambda: len(self.queue) + self.in_flight
        )
        metrics.gauge(
            "last_landed_age_seconds",
            "Seconds since the last object landed.",
            lambda: None if self.last_landed_mono is None else time.monotonic() - self.last_landed_mono,
        )

    def __len__(self) -> int:
        return len(self.queue) + self.in_flight

    async def until_destination_answers(self) -> None:
        """Probe the destination until it answers (a missing bucket, a denied permission: logged
        and tried again, backing off to PERMANENT_ERROR_RETRY_S); `sink_ok` says it did."""
        delay_s = 1.0
        while not self.sink_ok:
            try:
                await asyncio.to_thread(self.sink.probe)
                self.sink_ok, self.sink_error = True, None
            except (SinkPermanentError, SinkUnavailable) as exc:
                self.sink_error = str(exc)
                self.log.error(
                    "collector.destination_unusable", destination=self.sink.describe(), error=str(exc)
                )
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, PERMANENT_ERROR_RETRY_S)

    def add(self, spooled: Spooled) -> None:
        self.queue.append(spooled)
        self._wakeup.set()

    async def run(self, count: int = UPLOADERS) -> None:
        await asyncio.gather(*(self._uploader() for _ in range(count)))

    async def _uploader(self) -> None:
        while True:
            wait_s = self._blocked_until - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
                continue
            if not self.queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            spooled = self.queue.popleft()
            self.in_flight += 1
            try:
                await self._land(spooled)
            except SinkPermanentError as exc:
                self.queue.appendleft(spooled)  # first again once the block is lifted
                self._blocked(exc)
                continue
            except LandingConflict as exc:
                self._conflicts.inc()
                self._errors.inc(label="conflict")
                self.log.error(
                    "collector.landing_conflict",
                    key=exc.key,
                    existing_sha256=exc.existing_sha256,
                    local_sha256=exc.local_sha256,
                    kept_at=await asyncio.to_thread(self.spool.set_aside, spooled.entry, "conflicts"),
                )
            except SpoolError as exc:
                self.log.error("collector.spool_corrupt", key=spooled.entry.key, error=str(exc))
            finally:
                self.in_flight -= 1
            self.done(spooled)

    def _blocked(self, exc: SinkPermanentError) -> None:
        self._errors.inc(label="permanent")
        self.sink_ok, self.sink_error = False, str(exc)
        if time.monotonic() >= self._blocked_until:  # one line per block, not one per uploader
            self.log.error(
                "collector.upload_blocked", key=exc.key, error=str(exc), retry_in_s=PERMANENT_ERROR_RETRY_S
            )
            self._blocked_until = time.monotonic() + PERMANENT_ERROR_RETRY_S

    async def _land(self, spooled: Spooled) -> None:
        async for attempt in AsyncRetrying(
            wait=wait_random_exponential(multiplier=0.5, max=30),
            retry=retry_if_exception_type((SinkUnavailable, SpoolWriteRefused)),
            before_sleep=self._log_retry,
        ):
            with attempt:
                outcome, rows, size, upload_s = await asyncio.to_thread(self._put_and_note, spooled)
        name = spooled.name
        self.sink_ok, self.sink_error = True, None
        self.last_landed_mono = time.monotonic()
        self._landed.inc()
        self._bytes.inc(size)
        self._upload_s[0] += upload_s
        self._upload_s[1] += 1
        if name is not None:
            self._trades.inc(rows, label=name.symbol)
        received = spooled.first_received_us
        self.log.info(
            "collector.batch_landed",
            symbol=name.symbol if name else None,
            key=self.sink.describe(spooled.entry.key),
            rows=rows,
            bytes=size,
            first_id=name.first_trade_id if name else None,
            last_id=name.last_trade_id if name else None,
            seconds_since_first_trade=round((time.time_ns() // 1000 - received) / 1e6, 3)
            if received
            else None,
            upload_s=round(upload_s, 4),
            sealed_by=spooled.reason,
            outcome=outcome,
        )

    def _put_and_note(self, spooled: Spooled) -> tuple[str, int, int, float]:
        """One thread hop, retried whole (the put is idempotent): read the spooled bytes back
        (checked against their checksum), land them, note them for their minute's marker (or
        rewrite the marker), and only then let the spool go of them."""
        entry = spooled.entry
        data = self.spool.read(entry)
        rows = spooled.rows if spooled.rows is not None else count_rows(data, self.output_format)
        started = time.perf_counter()
        outcome = self.sink.put(entry.key, data, source=entry.path)
        upload_s = time.perf_counter() - started
        if spooled.name is None and self.market_landed is not None:
            self.market_landed(entry.key)  # a market part: its minute's marker
        else:
            try:
                self.markers.after_landing(entry.key, len(data), sha256_b64(data), rows, self.gaps_in)
            except OSError as exc:  # the marker book's disk is full: landed, noted on the retry
                raise SpoolWriteRefused(
                    f"{entry.key} landed, but the marker book cannot note it: {exc}"
                ) from exc
        self.spool.remove(entry)
        return outcome, rows, len(data), upload_s

    def _log_retry(self, state: RetryCallState) -> None:
        self._errors.inc(label="transient")
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        self.log.warning(
            "collector.upload_retry", attempt=state.attempt_number, delay_s=round(delay, 3), error=str(exc)
        )


class _PartlySpooled(Exception):
    def __init__(self, done: list[tuple[SealedBatch, SpoolEntry | None]], error: SpoolError) -> None:
        self.done = done
        self.error = error
        super().__init__(str(error))


def _dropped(record: dict[str, Any]) -> DroppedRange | None:
    """A line of dropped.jsonl; None for one that is not ours (it then names no minute)."""
    try:
        return DroppedRange(
            symbol=str(record["symbol"]),
            minute=int(record["minute"]),
            trade_id_ranges=[[int(lo), int(hi)] for lo, hi in record.get("trade_id_ranges", [])],
            trades=int(record.get("trades", 0)),
            spool_bytes=int(record.get("spool_bytes", 0)),
            spool_max_bytes=int(record.get("spool_max_bytes", 0)),
            recorded_at=float(record.get("recorded_at", 0.0)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _id_ranges(ids: Any) -> list[list[int]]:
    """Sorted, inclusive [first, last] runs of consecutive ids."""
    ranges: list[list[int]] = []
    for trade_id in sorted(ids):
        if ranges and trade_id == ranges[-1][1] + 1:
            ranges[-1][1] = trade_id
        elif not ranges or trade_id > ranges[-1][1]:
            ranges.append([trade_id, trade_id])
    return ranges
