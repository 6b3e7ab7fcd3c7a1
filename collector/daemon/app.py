"""The collector's life cycle and wiring: capture signals, recover, run, shut down. Top to bottom.

    binance.connections ─reads─▶ daemon.intake ─▶ capture.core (decode ▶ continuity ▶ minute batches)
        ─sealed─▶ landing.pipeline (encode ▶ spool ▶ upload) ─landed─▶ landing.markers (_SUCCESS)
        unwatched symbols: spooled sources ─▶ landing.market_minutes (a minute's parts ▶ _SUCCESS)
    gaps ─▶ gaps.filler (REST backfill) ─▶ landing      daemon.recovery: state, journal, spool at start
    quiet symbols after a restart or reconnect ─▶ gaps.quiet_proof (one ticker request) ─▶ markers
    counters: one registry, read by the stats line, /health, /metrics and CloudWatch

On SIGTERM or SIGINT: stop reading, seal what is buffered, spool it, land what the deadline
allows (the rest stays in the spool for the next start), exit 0. A second signal exits at
once; everything spooled is still safe on disk.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Coroutine
from typing import Any

from collector.binance.connections import StreamPool
from collector.binance.listings import ListingChange, Listings
from collector.binance.rest import BinanceRest
from collector.binance.weight import WeightBudget
from collector.capture.core import CaptureCore
from collector.config import Settings
from collector.counters import Registry, log_stats
from collector.daemon.cloudwatch import CloudWatchPublisher, publish_alarm_metrics
from collector.daemon.health import HealthServer, Status
from collector.daemon.intake import Capture
from collector.daemon.preflight import symbols_exist
from collector.daemon.recovery import Recovery
from collector.daemon.systemd import Notifier, watchdog_interval_s
from collector.exceptions import ExchangeRefused
from collector.formats import open_spool
from collector.gaps.backfill import Backfiller
from collector.gaps.filler import GapFiller
from collector.gaps.ledger import GapLedger
from collector.gaps.quiet_proof import QuietProof
from collector.gaps.unseen import Unseen
from collector.lake.completion import UnfilledGap
from collector.lake.sinks import Sink, make_sink
from collector.landing.inflight import InFlight
from collector.landing.journal import Journal
from collector.landing.markers import MarkerBook, MarkerScheduler, MarkerWriter
from collector.landing.market_minutes import MarketMinutes
from collector.landing.pipeline import Landing, SpoolBudget
from collector.landing.spool import Spool
from collector.lock import DirectoryLock
from collector.logs import get_logger

__all__ = ["Collector"]

TICK_S = 0.5  # how often age and minute-close deadlines are checked
ONE_PER_SPOOL = (
    "one collector per spool: stop that one first, or give this one its own spool directory "
    "(COLLECTOR_SPOOL_DIR; `collector demo --spool-dir`)"
)


class Collector:
    """Builds every stage and joins them; `run()` is the whole life of the process."""

    def __init__(self, settings: Settings, *, sink: Sink | None = None, log: Any = None) -> None:
        self.settings = s = settings
        # Before anything in the spool is read: a second process on it would land trades twice,
        # and a newer release's files must not be misread.
        self.lock = DirectoryLock(s.spool_dir, what="spool directory", fix=ONE_PER_SPOOL).acquire()
        self.log = log = log or get_logger()
        try:
            open_spool(s.spool_dir, log)
        except BaseException:
            self.lock.release()
            raise
        self.metrics = metrics = Registry()
        self.started_mono = time.monotonic()
        metrics.gauge("up", "1 while the collector process runs.", lambda: 1)
        metrics.gauge("uptime_seconds", "Seconds since the process started.", self._uptime_s)
        metrics.gauge("spool_unwritable", "1 while the spool's disk refuses writes: capture is held back.",
                      lambda: int(self._spool_error() is not None))  # fmt: skip
        self.sink = sink or make_sink(s)
        self.journal, ledger = Journal(s.spool_dir / "journal"), GapLedger(s.spool_dir / "gaps")
        self.core = CaptureCore(time_unit=s.time_unit, max_batch_bytes=s.max_batch_bytes,
                                max_batch_age_s=s.max_batch_age_s, minute_grace_s=s.minute_grace_s,
                                combined=s.combined)  # fmt: skip
        spool = Spool(s.spool_dir)
        self.recovery = Recovery(state_path=s.spool_dir / "state.json", sequence=self.core.sequence,
                                 ledger=ledger, journal=self.journal, spool=spool, time_unit=s.time_unit,
                                 output_format=s.output_format, log=log, watched=s.watched)  # fmt: skip
        self.stream = StreamPool(s, log=log, metrics=metrics)  # reads go to the capture: bound below
        self.stream.add(s.symbols)  # with ALL: once exchangeInfo has answered, in run()
        rest_info = self._rest_stages(ledger)
        writer = MarkerWriter(
            MarkerBook(s.spool_dir / "markers"), self.sink, grace_s=s.marker_grace_s, log=log
        )
        self.markers = MarkerScheduler(writer, stream_state=self.stream.state_of,
                                       pending=self._pending_minutes, open_gap_from=self.gaps.open_gap_from,
                                       gaps_in=self._gaps_in, log=log, watched=s.watched,
                                       metrics=metrics)  # fmt: skip
        self.market = None if s.watched_symbols is None else MarketMinutes(
            root=s.spool_dir / "market", spool=spool, sink=self.sink, output_format=s.output_format,
            members=self._market_members, final=self.markers.minute_final, gaps_in=self._gaps_in,
            still_expected=lambda symbol: symbol in self.stream.where, log=log, metrics=metrics,
            part_rows=s.market_part_rows)  # fmt: skip
        inflight = InFlight(s.buffer_max_bytes, hold_back=self.stream.hold_back, metrics=metrics)
        inflight.queued_bytes = self.stream.queued_bytes
        self.landing = Landing(spool=spool, journal=self.journal, sink=self.sink, markers=writer,
                               budget=SpoolBudget(s.spool_max_bytes), output_format=s.output_format,
                               save_state=self.recovery.save_state, gaps_in=self._gaps_in,
                               inflight=inflight, log=log, metrics=metrics,
                               market=self.market, watched=s.watched)  # fmt: skip
        self.gaps.landing, self.gaps.markers, self.gaps.lake = self.landing, self.markers, self.sink
        self.capture = Capture(self.core, self.journal, gaps=self.gaps, markers=self.markers,
                               submit=self.landing.submit, inflight=inflight,
                               units_per_s=1_000 if s.time_unit == "ms" else 1_000_000, log=log,
                               metrics=metrics, cheap=lambda symbol: not s.watched(symbol),
                               hold_back=lambda hold: self.stream.hold_back(hold, "disk"))  # fmt: skip
        self.stream.bind(self.capture.reader_for, self.capture.handover_ready)  # each slot's own reads
        self.quiet = QuietProof(rest_info, symbols=self._quiet_candidates, stream_state=self.stream.state_of,
                                proven_until=self.markers.proven_until, last_id=self.core.sequence.last_id,
                                proved=self.markers.vouched, gaps=self.gaps, sequence=self.core.sequence,
                                window_from=self._gap_window_from, log=log, metrics=metrics,
                                budget=self.weight, adopt=self._adopt)  # fmt: skip
        self.stop_requested = asyncio.Event()
        self.notifier = Notifier(log=log)
        self.health = HealthServer(metrics, self._status, s.health_port) if s.health_port else None
        self._signals = 0

    def _rest_stages(self, ledger: GapLedger) -> BinanceRest:
        """What asks Binance's REST API, sharing one weight budget: listings, the backfill, the
        look-up of symbols never seen trading (and the quiet proof, on the client returned)."""
        s, log, metrics = self.settings, self.log, self.metrics
        self.weight = weight = WeightBudget(log=log, metrics=metrics)
        rest_info = BinanceRest(s.rest_url, timeout_s=30.0, budget=weight)
        self.listings = (Listings(rest_info, quotes=s.quote_assets, refresh_s=s.symbols_refresh_s, log=log,
                                  budget=weight) if s.all_symbols else None)  # fmt: skip
        backfill = BinanceRest(s.rest_url, time_unit=s.time_unit, budget=weight)
        self.gaps = GapFiller(ledger, Backfiller(backfill, log=log, budget=weight), time_unit=s.time_unit,
                              max_batch_bytes=s.max_batch_bytes, max_trades=s.backfill_max_trades,
                              retry_s=s.backfill_retry_s, log=log, metrics=metrics)  # fmt: skip
        self.unseen = Unseen(s.spool_dir / "subscribed.json", sequence=self.core.sequence, rest=rest_info,
                             budget=weight, log=log)  # fmt: skip
        self.stream.confirmed = self.unseen.confirmed
        return rest_info

    # ---- life cycle -------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until a signal or a fatal error. Returns the process exit code."""
        try:
            return await self._run()
        finally:
            self.lock.release()

    async def _run(self) -> int:
        self._install_signal_handlers()
        symbols = await self.listings.first(self.stop_requested) if self.listings else self.settings.symbols
        if symbols is None:  # stopped before exchangeInfo ever answered: nothing was captured
            return 0
        if not self.listings and not await symbols_exist(self.settings, self.log, self.weight):
            return 2
        recovered = await self.recovery.run(self.sink, symbols)
        await self.unseen.after_restart()  # symbols never seen trading before: where they are now
        self.stream.add(symbols)
        self.landing.recover(recovered.spooled)
        health_port = await self._start_health()
        if self.markers.book.problem:
            self.log.error("collector.marker_cursor_unreadable", problem=self.markers.book.problem)
        self.log.info(
            "collector.started",
            destination=self.sink.describe(),
            stream=self.stream.describe(),
            symbols=len(symbols),
            spool=str(self.settings.spool_dir),
            recovered_objects=len(recovered.spooled),
            resealed_from_journal=recovered.resealed,
            health=f"http://127.0.0.1:{health_port}/health" if health_port else None,
        )
        landing = {
            asyncio.create_task(self.landing.run_sealer(), name="sealer"),
            asyncio.create_task(self.landing.uploads.run(), name="uploaders"),
            asyncio.create_task(self.landing.run_housekeeping(), name="housekeeping"),
        }
        stream = asyncio.create_task(self.stream.run(), name="stream")
        stop = asyncio.create_task(self.stop_requested.wait(), name="stop")
        helpers = {stop, *self._helpers()}
        # A stage that fails ends the run (systemd restarts it; what is spooled is safe on disk).
        await asyncio.wait({stream, stop, *landing}, return_when=asyncio.FIRST_COMPLETED)
        self.notifier.stopping()
        exit_code = 0
        for task in (stream, *landing):
            if task.done() and not task.cancelled() and (failure := task.exception()) is not None:
                self.log.error(
                    "collector.fatal", error=str(failure), kind=type(failure).__name__, stage=task.get_name()
                )
                exit_code = 2 if isinstance(failure, ExchangeRefused) else 1
        return await self._shutdown(exit_code, landing, {stream, *helpers})

    def _helpers(self) -> list[asyncio.Task[Any]]:
        """The tasks beside the stream and the landing: stats, readiness, gaps, markers, the quiet
        proof, the market-wide minutes, listings, the watchdog, CloudWatch."""
        stats = log_stats(
            self.metrics, self.log, self.settings.stats_interval_s, self.capture.tick, tick_s=TICK_S
        )
        jobs: dict[str, Coroutine[Any, Any, None]] = {
            "ticker": stats,
            "ready": self._announce_ready(),
            "gapfill": self.gaps.run(),
            "markers": self.markers.run(),
            "quiet_proof": self.quiet.run(),
        }
        if self.market:
            jobs["market"] = self.market.run()
        if self.listings:
            jobs["listings"] = self.listings.watch(lambda: self.stream.symbols, self._listing_changed)
        interval = watchdog_interval_s()
        if interval and self.notifier.enabled:
            jobs["watchdog"] = self.notifier.watchdog(interval)
        if self.settings.cloudwatch_namespace:
            publisher = CloudWatchPublisher(self.settings.cloudwatch_namespace, self.settings.s3_region)
            jobs["cloudwatch"] = publish_alarm_metrics(publisher, self.metrics, self.log)
        return [asyncio.create_task(job, name=name) for name, job in jobs.items()]

    async def _shutdown(
        self, exit_code: int, landing: set[asyncio.Task[Any]], others: set[asyncio.Task[Any]]
    ) -> int:
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        self.log.info("collector.stopping", buffered_trades=self.core.batcher.buffered_trades)
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        self.capture.flush()
        self.landing.close()
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await self.landing.drained()
        except TimeoutError:
            self.log.warning(
                "collector.shutdown_incomplete",
                spooled_objects=self.landing.waiting,
                spool=str(self.settings.spool_dir),
                note="spooled objects are safe on disk and are uploaded first on the next start",
            )
        for task in landing:
            task.cancel()
        await asyncio.gather(*landing, return_exceptions=True)
        await asyncio.to_thread(self.landing.spool.prune)
        if self.health:
            await self.health.close()
        if not self.journal.close_all():
            self.log.warning("collector.journal_unwritten", bytes=self.journal.unwritten_bytes,
                             error=str(self.journal.failure), note="the state never claimed these "
                             "trades: a gap REST fills at the next start")  # fmt: skip
        self.log.info("collector.stopped", exit_code=exit_code, **self.metrics.values())
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

    async def _listing_changed(self, change: ListingChange) -> None:
        """New listings are streamed from now on; a symbol that stopped trading is unsubscribed,
        its open minutes seal, land and are marked as any other's, and nothing more is expected."""
        for symbol in change.removed:
            if symbol in self.stream.where:  # while its connection's continuity still counts
                self.markers.retire(symbol)
        added, removed = self.stream.add(change.added), self.stream.remove(change.removed)
        for symbol in added:
            self.markers.reinstate(symbol)
        self.log.info("collector.symbols_changed", listed=",".join(added[:50]), listed_count=len(added),
                      delisted={s: change.removed[s] for s in removed}, symbols=len(self.stream.symbols),
                      connections=len(self.stream.slots))  # fmt: skip

    # ---- what the stages ask of each other ---------------------------------------------------

    def _market_members(self) -> list[tuple[str, int]]:
        """Unwatched symbols captured so far, and the minute each was first captured in."""
        return [
            (sym, first)
            for sym, first in list(self.markers.book.cursor.items())
            if not self.settings.watched(sym)
        ]

    def _quiet_candidates(self) -> list[str]:
        """Symbols streamed that the quiet proof may ask about: every one marked so far, and those
        confirmed but never seen trading (collector.gaps.unseen)."""
        book, where = self.markers.book.cursor, self.stream.where
        marked = [symbol for symbol in list(book) if symbol in where]
        return marked + [s for s in list(self.unseen.confirmed_at) if s not in book and s in where]

    def _adopt(self, symbol: str) -> None:
        """A symbol the exchange proved before its first trade: marked from its subscription on."""
        self.markers.begin(symbol, self.unseen.first_minute(symbol))

    def _gap_window_from(self, symbol: str, trade_s: float) -> float:
        """The earliest trade time a gap found without a trade before it may hold: its first
        minute not marked (per symbol, or the market's)."""
        start = self.markers.first_unmarked_s(symbol, trade_s)
        market = self.market.cursor if self.market and not self.settings.watched(symbol) else None
        return start if market is None else max(start, market * 60.0)

    def _pending_minutes(self, symbol: str) -> set[int]:
        return self.landing.pending_minutes(symbol) | self.core.batcher.open_minutes(symbol)

    def _gaps_in(self, symbol: str, minute: int) -> list[UnfilledGap]:
        """Trades of the minute that will not land: unfilled gaps and what a full spool dropped."""
        return self.gaps.unfilled_in(symbol, minute) + self.landing.dropped_in(symbol, minute)

    # ---- readiness, health, metrics ----------------------------------------------------------

    def _uptime_s(self) -> float:
        return time.monotonic() - self.started_mono

    def _status(self) -> Status:
        stream, uploads = self.stream, self.landing.uploads
        since = stream.disconnected_since
        return Status(
            stream_url=stream.describe(),
            connected=stream.all_connected,
            disconnected_for_s=0.0 if since is None else time.monotonic() - since,
            destination=self.sink.describe(),
            destination_ok=uploads.sink_ok,
            destination_error=uploads.sink_error,
            spool_error=self._spool_error(),
        )

    def _spool_error(self) -> str | None:
        """Why a write to the spool's disk fails (the journal's, the sealer's), None while none does."""
        refused = self.journal.failure
        return str(refused) if refused is not None else self.landing.spool_error

    async def _start_health(self) -> int | None:
        port = await self.health.start_or_warn(self.log) if self.health else None
        if port is None:
            self.health = None
        return port

    async def _announce_ready(self) -> None:
        """READY=1 once the destination answered and the stream is connected."""
        await self.landing.uploads.until_destination_answers()
        await self.stream.wait_connected()
        self.notifier.ready(
            status=f"capturing {self.settings.describe_symbols()} into {self.sink.describe()}"
        )
        self.log.info("collector.ready", destination=self.sink.describe(), stream=self.stream.describe())
