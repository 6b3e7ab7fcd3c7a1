"""The collector's life cycle: capture signals, start, run, shut down. Read it top to bottom.

    stream ──frames──▶ core ──sealed batches──▶ sealer (encode, spool) ──▶ uploader (sink) ──▶ landed

On SIGTERM or SIGINT: stop reading, seal what is buffered, spool it, land what the deadline
allows (the rest stays in the spool for the next start), exit 0. A second signal exits at
once; everything spooled is still safe on disk.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import json
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from collector.aws import CloudWatchPublisher
from collector.backfill import Backfiller, BinanceRest, GapLedger, OpenGap, Unfilled
from collector.batching import MinuteBatcher, SealedBatch
from collector.binance import Trade, decode_frame
from collector.config import S3Destination, Settings
from collector.core import CaptureCore, ChunkResult
from collector.exceptions import (
    ExchangeRefused,
    LandingConflict,
    SinkPermanentError,
    SinkUnavailable,
    SpoolError,
)
from collector.health import HealthServer, Snapshot
from collector.journal import Journal
from collector.layout import object_key, parse_object_key
from collector.logs import get_logger
from collector.markers import MarkerBook, MarkerWriter
from collector.parquet import count_rows, encode_batch
from collector.sinks import LocalSink, S3Sink, Sink, sha256_b64
from collector.spool import Spool, SpoolEntry, read_jsonl, write_atomically
from collector.stream import Chunk, TradeStream
from collector.systemd import Notifier, watchdog_interval_s

__all__ = ["Collector", "make_sink"]

# An operator needs minutes to fix a bucket policy; asking S3 every minute is enough.
PERMANENT_ERROR_RETRY_S = 60.0
# The alarms evaluate 5-minute periods; once a minute is plenty and costs little.
CLOUDWATCH_INTERVAL_S = 60.0
TICK_S = 0.5  # how often age and minute-close deadlines are checked
SEALED_HIGH = 8  # sealed batches waiting for the sealer before the stream holds back
SEALED_LOW = 2
MARK_EVERY_S = 1.0  # how often final minutes are looked for
# A flood of bad frames must not flood the journal: the first 100 of each reason, then every 1000th.
_SKIP_LOG_FIRST = 100
_SKIP_LOG_EVERY = 1000


def make_sink(settings: Settings) -> Sink:
    if isinstance(settings.destination, S3Destination):
        return S3Sink(
            settings.destination,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            sse=settings.s3_sse,
            kms_key_id=settings.s3_kms_key_id,
        )
    return LocalSink(settings.destination)


@dataclass(frozen=True, slots=True)
class _Pending:
    entry: SpoolEntry
    rows: int | None = None
    first_received_us: int | None = None
    reason: str = "recovered"


class Collector:
    """Wires stream, core, spool and sink; `run()` is the whole life of the process."""

    def __init__(self, settings: Settings, *, sink: Sink | None = None, log: Any = None) -> None:
        self.settings = settings
        self.log = log or get_logger()
        self.spool = Spool(settings.spool_dir)
        self.journal = Journal(settings.spool_dir / "journal")
        self.sink = sink or make_sink(settings)
        self.core = CaptureCore(
            time_unit=settings.time_unit,
            max_batch_bytes=settings.max_batch_bytes,
            max_batch_age_s=settings.max_batch_age_s,
            minute_grace_s=settings.minute_grace_s,
            combined=len(settings.symbols) > 1,
        )
        self.stream = TradeStream(
            settings.stream_url(),
            self._on_chunk,
            log=self.log,
            initial_delay_s=settings.reconnect_initial_delay_s,
            max_delay_s=settings.reconnect_max_delay_s,
            max_connection_age_s=settings.connection_max_age_s,
            silence_s=settings.stream_silence_s,
            handover_ready=self._handover_ready,
        )
        self.gaps = GapLedger(settings.spool_dir / "gaps")
        self.backfiller = Backfiller(
            BinanceRest(settings.rest_url, time_unit=settings.time_unit), log=self.log
        )
        self.state_path = settings.spool_dir / "state.json"
        book = MarkerBook(settings.spool_dir / "markers")
        self.markers = MarkerWriter(book, self.sink, grace_s=settings.marker_grace_s, log=self.log)
        self._units_per_s = 1_000 if settings.time_unit == "ms" else 1_000_000
        # Per symbol: (trade time in s, monotonic receive time, stream outages then) of the last trade.
        self._last_seen: dict[str, tuple[float, float, int]] = {}
        # Batches sealed but not landed yet, per (symbol, minute): their minute is not final.
        self._unlanded: collections.Counter[tuple[str, int]] = collections.Counter()
        self._dropped = read_jsonl(settings.spool_dir / "dropped.jsonl")
        self._gap_refreshes: list[tuple[str, range]] = []  # retried gaps closed: markers to update
        self.gaps_filled = 0
        self.backfilled_trades = 0
        self._gap_wakeup = asyncio.Event()
        self._held_seen: tuple[int, int] = (0, 0)  # (id of the held list, frames examined)
        self._held_first: dict[str, int] = {}
        self.stop_requested = asyncio.Event()
        self.notifier = Notifier(log=self.log)
        self.health = (
            HealthServer(self.snapshot, settings.health_port, self.log) if settings.health_port else None
        )
        self.started_mono = time.monotonic()
        self.last_trade_mono: float | None = None
        self.last_landed_mono: float | None = None
        self.sink_ok = False
        self.sink_error: str | None = None
        self.landed_batches = 0
        self.landed_rows = 0
        self.landed_bytes = 0
        self.landed_by_symbol: collections.Counter[str] = collections.Counter()
        self.upload_errors: collections.Counter[str] = collections.Counter()
        self.upload_seconds_sum = 0.0
        self.upload_count = 0
        self.spool_bytes = 0
        self.conflicts = 0
        self.dropped_trades = 0
        self._spool_full = False
        # Sealed batches waiting for the sealer. Past SEALED_HIGH the stream holds back (stops
        # reading; TCP pushes back on the exchange) until the sealer is down to SEALED_LOW.
        self._sealed: asyncio.Queue[SealedBatch | None] = asyncio.Queue()
        self._uploads: collections.deque[_Pending] = collections.deque()
        self._upload_wakeup = asyncio.Event()
        self._uploads_idle = asyncio.Event()  # set while nothing waits for upload
        self._uploads_idle.set()
        self._signals = 0

    # ---- life cycle -------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until a signal or a fatal error. Returns the process exit code."""
        self._install_signal_handlers()
        self._load_state()
        resealed = await asyncio.to_thread(self._reseal_journal)
        recovered = self.spool.pending()
        for entry in recovered:
            self.spool_bytes += entry.size
            self._enqueue_upload(_Pending(entry))
            name = parse_object_key(entry.key)
            if name:  # the stream must not hand us these trades a second time
                self.core.sequence.remember(name.symbol, name.last_trade_id)
                self._unlanded[(name.symbol, name.minute)] += 1
        await self._restore_continuity()
        health_port = None
        if self.health:
            try:
                health_port = await self.health.start()
            except OSError as exc:  # capture matters more than its dashboard
                self.log.error(
                    "collector.health_unavailable",
                    port=self.settings.health_port,
                    error=str(exc),
                    fix="free the port or set COLLECTOR_HEALTH_PORT",
                )
                self.health = None
        if self.markers.book.problem:
            self.log.error("collector.marker_cursor_unreadable", problem=self.markers.book.problem)
        self.log.info(
            "collector.started",
            destination=self.sink.describe(),
            stream=self.stream.url,
            spool=str(self.spool.root),
            recovered_objects=len(recovered),
            resealed_from_journal=resealed,
            health=f"http://127.0.0.1:{health_port}/health" if health_port else None,
        )
        sealer = asyncio.create_task(self._sealer(), name="sealer")
        uploader = asyncio.create_task(self._uploader(), name="uploader")
        stream = asyncio.create_task(self.stream.run(), name="stream")
        ticker = asyncio.create_task(self._ticker(), name="ticker")
        stop = asyncio.create_task(self.stop_requested.wait(), name="stop")
        helpers = {
            asyncio.create_task(self._announce_ready(), name="ready"),
            asyncio.create_task(self._backfill_gaps(), name="backfill"),
            asyncio.create_task(self._mark_minutes(), name="markers"),
        }
        interval = watchdog_interval_s()
        if interval and self.notifier.enabled:
            helpers.add(asyncio.create_task(self.notifier.watchdog(interval), name="watchdog"))
        if self.settings.cloudwatch_namespace:
            helpers.add(asyncio.create_task(self._publish_cloudwatch(), name="cloudwatch"))
        await asyncio.wait({stream, stop}, return_when=asyncio.FIRST_COMPLETED)
        self.notifier.stopping()
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        exit_code = 0
        if stream.done() and not stream.cancelled() and stream.exception() is not None:
            failure = stream.exception()
            self.log.error("collector.fatal", error=str(failure), kind=type(failure).__name__)
            exit_code = 2 if isinstance(failure, ExchangeRefused) else 1
        return await self._shutdown(exit_code, sealer, uploader, {stream, ticker, stop})

    async def _shutdown(
        self, exit_code: int, sealer: asyncio.Task[None], uploader: asyncio.Task[None], others: set[Any]
    ) -> int:
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        self.log.info("collector.stopping", buffered_trades=self.core.batcher.buffered_trades)
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        self.core.flush()
        for batch in self.core.take_sealed():
            self._queue_sealed(batch)
        self._sealed.put_nowait(None)  # the sealer's end-of-input
        try:
            await asyncio.wait_for(sealer, timeout=max(0.1, deadline - time.monotonic()))
            await asyncio.wait_for(self._drained(), timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            self.log.warning(
                "collector.shutdown_incomplete",
                spooled_objects=len(self._uploads),
                spool=str(self.spool.root),
                note="spooled objects are safe on disk and are uploaded first on the next start",
            )
        uploader.cancel()
        sealer.cancel()
        await asyncio.gather(uploader, sealer, return_exceptions=True)
        if self.health:
            await self.health.close()
        self.journal.close_all()
        self._log_stats("collector.stopped", exit_code=exit_code)
        return exit_code

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            self.log.info("collector.signal", signal=sig.name, action="shutting down")
            self.stop_requested.set()
            return
        self.log.warning("collector.signal", signal=sig.name, action="forced exit; spooled data is kept")
        os._exit(1)

    # ---- capture ----------------------------------------------------------------------------

    def _on_chunk(self, frames: list[bytes], received_at_ns: int) -> None:
        """The frames of one read: capture them, journal them, then act on what they were."""
        result = self.core.feed_chunk(frames, received_at_ns, time.monotonic())
        for batch_id, journaled in result.journal:
            self.journal.append(batch_id, received_at_ns, journaled)
        if self.core.sequence.resets:
            for symbol, remembered, seen in self.core.sequence.resets:
                self.log.error(
                    "collector.sequence_reset",
                    symbol=symbol,
                    remembered_last_id=remembered,
                    new_id=seen,
                    note="the remembered id is from another series (a demo's spool?); following the stream",
                )
            self.core.sequence.resets.clear()
        for skipped in result.skipped:
            count = self.core.stats.skipped[skipped.reason]
            if count <= _SKIP_LOG_FIRST or count % _SKIP_LOG_EVERY == 0:
                self.log.warning(
                    "collector.frame_skipped", reason=skipped.reason, detail=skipped.detail, count=count
                )
        for shutdown in result.shutdowns:
            self.log.info("collector.server_shutdown", event_time=shutdown.event_time)
            self.stream.request_rotation("server_shutdown")
        if result.last_trade_time:
            self._trades_accepted(result)
        for batch in self.core.take_sealed():
            self._queue_sealed(batch)

    def _trades_accepted(self, result: ChunkResult) -> None:
        now = time.monotonic()
        self.last_trade_mono = now
        units = self._units_per_s
        for found in result.gaps:
            gap = found.gap
            # The missing trades happened after the last trade we have (or, after a restart,
            # no earlier than the first minute not yet marked) and before this one.
            if found.previous_trade_time is not None:
                window_start = found.previous_trade_time / units
            else:
                self.markers.book.begin(gap.symbol, found.trade_time // units // 60)
                window_start = self.markers.book.cursor[gap.symbol] * 60.0
            self.log.warning(
                "collector.gap_detected",
                symbol=gap.symbol,
                first_missing=gap.first_missing,
                last_missing=gap.last_missing,
                missing=gap.size,
            )
            self.gaps.add(
                OpenGap(
                    gap.symbol,
                    gap.first_missing,
                    gap.last_missing,
                    gap.first_missing,
                    found.received_at_ns,
                    window_start_s=window_start,
                    window_end_s=found.trade_time / units,
                )
            )
            self._gap_wakeup.set()
        outages = self.stream.outages
        for symbol, trade_time in result.last_trade_time.items():
            trade_s = trade_time / units
            if symbol not in self._last_seen:
                self.markers.book.begin(symbol, int(trade_s // 60))
            self._last_seen[symbol] = (trade_s, now, outages)

    def _queue_sealed(self, batch: SealedBatch) -> None:
        self._unlanded[(batch.symbol, batch.minute)] += 1
        self._sealed.put_nowait(batch)
        if self._sealed.qsize() >= SEALED_HIGH:
            self.stream.hold_back(True)

    def _landed_or_lost(self, key: str) -> None:
        name = parse_object_key(key)
        if name is not None:
            slot = (name.symbol, name.minute)
            self._unlanded[slot] -= 1
            if self._unlanded[slot] <= 0:
                del self._unlanded[slot]

    async def _ticker(self) -> None:
        next_stats = time.monotonic() + self.settings.stats_interval_s
        tick_s = min(TICK_S, self.settings.stats_interval_s)  # stats as often as asked for
        while True:
            await asyncio.sleep(tick_s)
            now = time.monotonic()
            self.core.tick(now)
            for batch in self.core.take_sealed():
                self._queue_sealed(batch)
            if now >= next_stats:
                next_stats = now + self.settings.stats_interval_s
                self._log_stats("collector.stats")

    def _log_stats(self, event: str, **extra: Any) -> None:
        stats = self.core.stats
        self.log.info(
            event,
            **extra,
            frames=stats.frames,
            reads=stats.reads,
            trades=dict(stats.trades),
            duplicates=stats.duplicates,
            skipped=dict(stats.skipped),
            gaps=stats.gaps,
            missing_ids=stats.missing_ids,
            buffered_trades=self.core.batcher.buffered_trades,
            last_ids={symbol: self.core.sequence.last_id(symbol) for symbol in self.settings.symbols},
            batches_landed=self.landed_batches,
            rows_landed=self.landed_rows,
            bytes_landed=self.landed_bytes,
            conflicts=self.conflicts,
            dropped_trades=self.dropped_trades,
            gaps_filled=self.gaps_filled,
            backfilled_trades=self.backfilled_trades,
            unfilled_gaps=self.gaps.unfilled_count,
            rotations=self.stream.rotations,
            spooled_objects=len(self._uploads),
            connections=self.stream.connections,
        )

    # ---- landing ----------------------------------------------------------------------------

    async def _sealer(self) -> None:
        """Encode and spool each sealed batch; the uploader takes it from there."""
        while (batch := await self._sealed.get()) is not None:
            if self._sealed.qsize() <= SEALED_LOW:
                self.stream.hold_back(False)
            key = self._key_for(batch)
            while True:
                try:
                    entry = await asyncio.to_thread(self._spool_batch, batch, key)
                    break
                except SpoolError as exc:
                    # The batch stays in memory and in the journal; capture slows to a stop
                    # behind the full queue rather than dropping it.
                    self.log.error("collector.spool_failed", key=key, error=str(exc), retry_in_s=5)
                    await asyncio.sleep(5)
            self.journal.discard(batch.batch_id)
            self._accept_spooled(batch, entry)

    def _accept_spooled(self, batch: SealedBatch, entry: SpoolEntry | None) -> None:
        if entry is None:
            self._record_dropped(batch)
            self._landed_or_lost(self._key_for(batch))
        else:
            self.spool_bytes += entry.size
            self._enqueue_upload(_Pending(entry, batch.rows, batch.first_received_us, batch.reason))

    def _key_for(self, batch: SealedBatch) -> str:
        return object_key(
            batch.symbol,
            batch.minute,
            batch.first_trade_id,
            batch.last_trade_id,
            output_format=self.settings.output_format,
            kind="backfill" if batch.source == "backfill" else "batch",
        )

    # ---- continuity and backfill -------------------------------------------------------------

    def _save_state(self) -> None:
        """The last accepted trade id per symbol, written before a batch's journal is discarded
        (and so before it can be uploaded and leave the spool): a restart knows where it stopped."""
        known = self.core.sequence.snapshot()
        if known:
            write_atomically(self.state_path, json.dumps(known, sort_keys=True).encode())

    def _load_state(self) -> None:
        try:
            saved = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        except (OSError, ValueError) as exc:
            self.log.warning("collector.state_unreadable", path=str(self.state_path), error=str(exc))
            saved = {}
        for symbol, last in saved.items():
            if isinstance(last, int):
                self.core.sequence.remember(symbol, last)

    async def _restore_continuity(self) -> None:
        """Where each symbol left off: the state file, spool and journal, else the landing zone."""
        for symbol in self.settings.symbols:
            if self.core.sequence.last_id(symbol) is None:
                try:
                    landed = await asyncio.to_thread(self.sink.latest_trade_id, symbol, time.time())
                except Exception as exc:  # an unreachable destination must not stop capture
                    self.log.warning("collector.landing_lookup_failed", symbol=symbol, error=str(exc))
                    landed = None
                if landed is not None:
                    self.core.sequence.remember(symbol, landed)
            self.log.info(
                "collector.continuity", symbol=symbol, last_trade_id=self.core.sequence.last_id(symbol)
            )
        await asyncio.to_thread(self._save_state)

    def _handover_ready(self, held: list[Chunk]) -> bool:
        """A new connection may take over once the old one has delivered everything before it."""
        seen_list, examined = self._held_seen
        if seen_list != id(held):
            self._held_first, examined = {}, 0
        for frames, received_at_ns in held[examined:]:
            for raw in frames:
                frame = decode_frame(raw, received_at_ns)
                if type(frame) is Trade and frame.symbol not in self._held_first:
                    self._held_first[frame.symbol] = frame.trade_id
        self._held_seen = (id(held), len(held))
        return all(
            (self.core.sequence.last_id(s) or -1) >= first - 1 for s, first in self._held_first.items()
        )

    async def _backfill_gaps(self) -> None:
        while True:
            if not self.gaps.open:
                for record in self.gaps.due_for_retry(time.time(), self.settings.backfill_retry_s):
                    retry = self.gaps.reopen(record)
                    self.log.info(
                        "collector.backfill_retry",
                        symbol=retry.symbol,
                        first=retry.first_missing,
                        last=retry.last_missing,
                        attempt=retry.attempt,
                        last_reason=record["reason"],
                    )
            if not self.gaps.open:
                self._gap_wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(self.settings.backfill_retry_s, 60.0)):
                        await self._gap_wakeup.wait()
                continue
            gap = self.gaps.open[0]
            if gap.size > self.settings.backfill_max_trades:
                unfilled = [
                    Unfilled(
                        gap.symbol,
                        gap.next_id,
                        gap.last_missing,
                        "too_large",
                        f"{gap.size} trades exceed COLLECTOR_BACKFILL_MAX_TRADES",
                    )
                ]
            else:
                self.log.info(
                    "collector.backfill_started", symbol=gap.symbol, first=gap.next_id, last=gap.last_missing
                )
                unfilled = await self.backfiller.fill(gap, functools.partial(self._land_backfill, gap))
            for found in unfilled:
                hole = dataclasses.replace(
                    found,
                    window_start_s=gap.window_start_s,
                    window_end_s=gap.window_end_s,
                    detected_at_ns=gap.detected_at_ns,
                    attempt=gap.attempt,
                )
                self.gaps.record_unfilled(hole)
                self.log.error(
                    "collector.gap_unfilled",
                    symbol=hole.symbol,
                    first_missing=hole.first_missing,
                    last_missing=hole.last_missing,
                    missing=hole.last_missing - hole.first_missing + 1,
                    reason=hole.reason,
                    detail=hole.detail,
                    record=str(self.gaps.unfilled_path),
                )
            if not unfilled:
                self.gaps_filled += 1
                self.log.info(
                    "collector.gap_filled", symbol=gap.symbol, first=gap.first_missing, last=gap.last_missing
                )
            self.gaps.close(gap)
            if gap.attempt > 1 and gap.window_start_s is not None and gap.window_end_s is not None:
                # A retried range: the markers of its minutes listed it as unfilled. They are updated
                # once its files have landed (the marker task checks), so no marker ever drops the
                # gap before it lists the trades that filled it.
                minutes = range(int(gap.window_start_s // 60), int(gap.window_end_s // 60) + 1)
                self._gap_refreshes.append((gap.symbol, minutes))

    async def _land_backfill(self, gap: OpenGap, trades: list[Trade], next_id: int) -> None:
        """One page of backfilled trades: batched by minute, spooled, then the gap's progress saved."""
        batcher = MinuteBatcher(
            time_unit=self.settings.time_unit,
            max_batch_bytes=self.settings.max_batch_bytes,
            max_batch_age_s=float("inf"),
            minute_grace_s=float("inf"),
            max_open_minutes=2**31,
            source="backfill",
        )
        sealed: list[SealedBatch] = []
        for trade in trades:
            sealed.extend(batcher.add(trade, 0.0))
        sealed.extend(batcher.flush("backfill"))
        for batch in sealed:
            self._unlanded[(batch.symbol, batch.minute)] += 1
            entry = await asyncio.to_thread(self._encode_and_spool, batch, self._key_for(batch))
            self._accept_spooled(batch, entry)
        self.backfilled_trades += len(trades)
        gap.next_id = next_id
        await asyncio.to_thread(self.gaps.save)

    def _enqueue_upload(self, pending: _Pending) -> None:
        self._uploads.append(pending)
        self._uploads_idle.clear()
        self._upload_wakeup.set()

    def _spool_batch(self, batch: SealedBatch, key: str) -> SpoolEntry | None:
        """Encode and spool a sealed batch, then record how far each symbol got (one thread hop)."""
        entry = self._encode_and_spool(batch, key)
        self._save_state()
        return entry

    def _encode_and_spool(self, batch: SealedBatch, key: str) -> SpoolEntry | None:
        """Encode and spool; None when the spool is full (the caller records the loss)."""
        data = encode_batch(batch, self.settings.output_format)
        limit = self.settings.spool_max_bytes
        if self._spool_full and self.spool_bytes <= limit // 2:
            self._spool_full = False  # uploads drained half of it: take new data again
        if self._spool_full or self.spool_bytes + len(data) > limit:
            # Once full, stay full until half drained, so what is kept is one contiguous,
            # oldest stretch and what is dropped one recorded stretch after it.
            self._spool_full = True
            return None
        return self.spool.put(key, data)

    def _record_dropped(self, batch: SealedBatch) -> None:
        """Spool full: keep the oldest data, and say exactly which trades were not kept."""
        ranges = _id_ranges(batch.columns.trade_id)
        record = {
            "symbol": batch.symbol,
            "minute": batch.minute,
            "trade_id_ranges": ranges,
            "trades": batch.rows,
            "reason": "spool_full",
            "spool_bytes": self.spool_bytes,
            "spool_max_bytes": self.settings.spool_max_bytes,
            "recorded_at": time.time(),
        }
        path = self.spool.root / "dropped.jsonl"
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            self.log.error("collector.dropped_record_failed", path=str(path), error=str(exc))
        self.dropped_trades += batch.rows
        self._dropped.append(record)
        self.log.error(
            "collector.spool_full",
            symbol=batch.symbol,
            trade_id_ranges=ranges,
            trades=batch.rows,
            spool_bytes=self.spool_bytes,
            spool_max_bytes=self.settings.spool_max_bytes,
            record=str(path),
            fix="restore the destination (see collector.upload_blocked) or raise COLLECTOR_SPOOL_MAX_BYTES",
        )

    def _reseal_journal(self) -> int:
        """Batches a crash left open: seal them again from their journaled frames and spool them."""
        resealed = 0
        for leftover in self.journal.leftovers():
            batcher = MinuteBatcher(
                time_unit=self.settings.time_unit,
                max_batch_bytes=2**62,
                max_batch_age_s=float("inf"),
                minute_grace_s=float("inf"),
                max_open_minutes=2**31,
            )
            for received_at_ns, raw in leftover.frames():
                frame = decode_frame(raw, received_at_ns)
                if type(frame) is Trade:
                    batcher.add(frame, 0.0)
            for batch in batcher.flush("recovered"):
                key = self._key_for(batch)
                self.core.sequence.remember(batch.symbol, batch.last_trade_id)
                # Same trades, same encoder: the same key and bytes as the batch would have had,
                # so a batch that was spooled (or landed) just before the crash is not doubled.
                self.spool.put(key, encode_batch(batch, self.settings.output_format))
                resealed += 1
                self.log.info("collector.journal_resealed", key=key, rows=batch.rows)
            self._save_state()
            self.journal.discard(leftover.batch_id)
        return resealed

    async def _uploader(self) -> None:
        while True:
            if not self._uploads:
                self._uploads_idle.set()
                self._upload_wakeup.clear()
                await self._upload_wakeup.wait()
                continue
            pending = self._uploads[0]
            try:
                await self._land(pending)
            except SinkPermanentError as exc:
                self.upload_errors["permanent"] += 1
                self.sink_ok, self.sink_error = False, str(exc)
                self.log.error(
                    "collector.upload_blocked",
                    key=exc.key,
                    error=str(exc),
                    retry_in_s=PERMANENT_ERROR_RETRY_S,
                )
                await asyncio.sleep(PERMANENT_ERROR_RETRY_S)
                continue
            except LandingConflict as exc:
                self.conflicts += 1
                self.upload_errors["conflict"] += 1
                self.spool_bytes -= pending.entry.size
                self.log.error(
                    "collector.landing_conflict",
                    key=exc.key,
                    existing_sha256=exc.existing_sha256,
                    local_sha256=exc.local_sha256,
                    kept_at=str(self._set_aside(pending.entry)),
                )
            except SpoolError as exc:
                self.spool_bytes -= pending.entry.size
                self.log.error("collector.spool_corrupt", key=pending.entry.key, error=str(exc))
            self._uploads.popleft()
            self._landed_or_lost(pending.entry.key)

    async def _land(self, pending: _Pending) -> None:
        entry = pending.entry
        data = await asyncio.to_thread(self.spool.read, entry)
        rows = pending.rows if pending.rows is not None else count_rows(data, self.settings.output_format)
        async for attempt in AsyncRetrying(
            wait=wait_random_exponential(multiplier=0.5, max=30),
            retry=retry_if_exception_type(SinkUnavailable),
            before_sleep=self._log_upload_retry,
        ):
            with attempt:
                outcome, upload_s = await asyncio.to_thread(self._put_and_note, entry.key, data, rows)
        await asyncio.to_thread(self.spool.remove, entry)
        name = parse_object_key(entry.key)
        self.sink_ok, self.sink_error = True, None
        self.spool_bytes -= entry.size
        self.landed_batches += 1
        self.landed_rows += rows
        self.landed_bytes += len(data)
        self.upload_seconds_sum += upload_s
        self.upload_count += 1
        self.last_landed_mono = time.monotonic()
        if name:
            self.landed_by_symbol[name.symbol] += rows
        self.log.info(
            "collector.batch_landed",
            symbol=name.symbol if name else None,
            key=self.sink.describe(entry.key),
            rows=rows,
            bytes=len(data),
            first_id=name.first_trade_id if name else None,
            last_id=name.last_trade_id if name else None,
            seconds_since_first_trade=(
                round((time.time_ns() // 1000 - pending.first_received_us) / 1e6, 3)
                if pending.first_received_us
                else None
            ),
            upload_s=round(upload_s, 4),
            sealed_by=pending.reason,
            outcome=outcome,
        )

    def _put_and_note(self, key: str, data: bytes, rows: int) -> tuple[str, float]:
        """Land an object, then note it for its minute's marker (or rewrite the marker) before the
        spool lets go of it. One thread hop; retried whole (the put is idempotent)."""
        started = time.perf_counter()
        outcome = self.sink.put(key, data)
        upload_s = time.perf_counter() - started
        self.markers.after_landing(key, len(data), sha256_b64(data), rows, self._gaps_in)
        return outcome, upload_s

    def _log_upload_retry(self, state: RetryCallState) -> None:
        self.upload_errors["transient"] += 1
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        self.log.warning(
            "collector.upload_retry", attempt=state.attempt_number, delay_s=round(delay, 3), error=str(exc)
        )

    def _set_aside(self, entry: SpoolEntry) -> str:
        target = self.spool.root / "conflicts" / entry.path.relative_to(self.spool.objects)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(entry.path, target)
        return str(target)

    # ---- completion markers -------------------------------------------------------------------

    async def _mark_minutes(self) -> None:
        while True:
            await asyncio.sleep(MARK_EVERY_S)
            for refresh in list(self._gap_refreshes):
                symbol, minutes = refresh
                if any((symbol, m) in self._unlanded for m in minutes):
                    continue  # the retry's files are still on their way
                gaps_in = functools.partial(self._gaps_in, symbol)
                try:
                    await asyncio.to_thread(self.markers.refresh_gaps, symbol, minutes, gaps_in)
                    self._gap_refreshes.remove(refresh)
                except (SinkPermanentError, SinkUnavailable) as exc:
                    self.log.warning("collector.marker_failed", symbol=symbol, error=str(exc), retry_in_s=1)
            for symbol in list(self.markers.book.cursor):
                now, proven = time.time(), self._proven_until(symbol)
                if not self.markers.may_be_due(symbol, now, proven):
                    continue  # most seconds of a minute: no thread, no I/O
                try:
                    await asyncio.to_thread(
                        self.markers.mark_due,
                        symbol,
                        now,
                        proven_until_s=proven,
                        open_gap_from_s=min(
                            (
                                g.window_start_s if g.window_start_s is not None else float("-inf")
                                for g in self.gaps.open
                                if g.symbol == symbol
                            ),
                            default=float("inf"),
                        ),
                        pending={m for (s, m) in self._unlanded if s == symbol}
                        | self.core.batcher.open_minutes(symbol),
                        gaps_in=functools.partial(self._gaps_in, symbol),
                    )
                except (SinkPermanentError, SinkUnavailable) as exc:
                    self.log.warning("collector.marker_failed", symbol=symbol, error=str(exc), retry_in_s=1)

    def _proven_until(self, symbol: str) -> float | None:
        """Trade time up to which every trade of `symbol` is received, pending or a known gap."""
        seen = self._last_seen.get(symbol)
        if seen is None:
            return None
        trade_s, received_mono, outages = seen
        if self.stream.connected.is_set() and outages == self.stream.outages:
            # Connected ever since that trade: a quiet market, not a hole. The exchange's clock,
            # extrapolated from the trade, says how far.
            return trade_s + (time.monotonic() - received_mono)
        return trade_s

    def _gaps_in(self, symbol: str, minute: int) -> list[dict[str, Any]]:
        """Trades of the minute that will not land: unfilled gaps and what a full spool dropped."""
        start = minute * 60.0
        found = [
            {
                "first_missing": r["first_missing"],
                "last_missing": r["last_missing"],
                "reason": r["reason"],
                "detail": r.get("detail", ""),
            }
            for r in self.gaps.unfilled_between(symbol, start, start + 60.0)
        ]
        for record in self._dropped:
            if record.get("symbol") == symbol and record.get("minute") == minute:
                found.extend(
                    {"first_missing": lo, "last_missing": hi, "reason": "spool_full", "detail": ""}
                    for lo, hi in record.get("trade_id_ranges", [])
                )
        return found

    # ---- readiness, health, metrics ----------------------------------------------------------

    async def _announce_ready(self) -> None:
        """READY=1 once the destination answered and the stream is connected."""
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
        await self.stream.connected.wait()
        self.notifier.ready(status=f"capturing {','.join(self.settings.symbols)} into {self.sink.describe()}")
        self.log.info("collector.ready", destination=self.sink.describe(), stream=self.stream.url)

    async def _publish_cloudwatch(self) -> None:
        publisher = CloudWatchPublisher(self.settings.cloudwatch_namespace, self.settings.s3_region)
        while True:
            snap = self.snapshot()
            landed_age = snap.last_landed_age_s if snap.last_landed_age_s is not None else snap.uptime_s
            values = {
                "LastLandedBatchAgeSeconds": (landed_age, "Seconds"),
                "SpoolBytes": (float(snap.spool_bytes), "Bytes"),
                # Recorded in the last day: the alarm clears a day after the last unfillable gap.
                "UnfilledGaps": (float(self.gaps.unfilled_since(86_400)), "Count"),
            }
            try:
                await asyncio.to_thread(publisher.publish, values)
                self.log.debug("collector.metrics_published", namespace=publisher.namespace)
            except Exception as exc:  # metrics must never stop capture
                self.log.warning(
                    "collector.metrics_publish_failed", namespace=publisher.namespace, error=str(exc)
                )
            await asyncio.sleep(CLOUDWATCH_INTERVAL_S)

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        stats = self.core.stats
        stream = self.stream
        return Snapshot(
            uptime_s=now - self.started_mono,
            stream_url=stream.url,
            connected=stream.connected.is_set(),
            disconnected_for_s=(now - stream.disconnected_since)
            if stream.disconnected_since is not None
            else 0.0,
            connections=stream.connections,
            reconnects=max(0, stream.connections - 1),
            sink=self.sink.describe(),
            sink_ok=self.sink_ok,
            sink_error=self.sink_error,
            last_trade_age_s=(now - self.last_trade_mono) if self.last_trade_mono is not None else None,
            last_landed_age_s=(now - self.last_landed_mono) if self.last_landed_mono is not None else None,
            frames=stats.frames,
            trades_received=dict(stats.trades),
            trades_landed=dict(self.landed_by_symbol),
            duplicates=stats.duplicates,
            malformed=dict(stats.skipped),
            gaps_opened=stats.gaps,
            gaps_filled=self.gaps_filled,
            missing_ids=stats.missing_ids,
            batches_landed=self.landed_batches,
            bytes_landed=self.landed_bytes,
            upload_errors=dict(self.upload_errors),
            upload_seconds_sum=self.upload_seconds_sum,
            upload_count=self.upload_count,
            spool_objects=len(self._uploads),
            spool_bytes=self.spool_bytes,
            buffered_trades=self.core.batcher.buffered_trades,
            dropped_trades=self.dropped_trades,
            backfilled_trades=self.backfilled_trades,
            unfilled_gaps=self.gaps.unfilled_count,
        )

    async def _drained(self) -> None:
        await self._uploads_idle.wait()


def _id_ranges(ids: Any) -> list[list[int]]:
    """Sorted, inclusive [first, last] runs of consecutive ids."""
    ranges: list[list[int]] = []
    for trade_id in sorted(ids):
        if ranges and trade_id == ranges[-1][1] + 1:
            ranges[-1][1] = trade_id
        elif not ranges or trade_id > ranges[-1][1]:
            ranges.append([trade_id, trade_id])
    return ranges
