"""Trades in memory between the socket and the spool, bounded in bytes (COLLECTOR_BUFFER_MAX_BYTES).

    socket ─read─▶ reads queued by the stream ─▶ open batches (the capture's batcher) ─sealed─▶
           waiting for the sealer ─▶ being encoded and spooled (a worker thread) ─▶ on disk: done

Counted: the frames of reads the stream has queued, and each batch's raw frames (the unit of
COLLECTOR_MAX_BATCH_BYTES), open or sealed, plus `PER_BATCH_BYTES` for the batch's own objects.
A trade held as columns takes less than its frame (seven 8-byte values against a frame of
150-200 bytes), so the count bounds the batches' memory from above, whatever the shape of the
burst: one symbol's size-sealed batches, thousands of quiet symbols' minutes, hours of trade
time in a backlog.

The rule: at `limit_bytes` the stream stops reading (TCP pushes back on the exchange) until the
count is down to half. The sealer brings sealed batches down; open batches leave memory only
once sealed, so when they alone hold more than half (a whole market's busiest minute), the
largest are sealed at once (`sealed_by: "budget"`) instead of reading waiting on the clock. A
read takes at most `MAX_READ_BYTES` from the socket (collector.binance.stream), and reads
already queued are counted, so the count passes the limit by at most one read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from collector.capture.batching import SealedBatch
from collector.counters import Registry

__all__ = ["PER_BATCH_BYTES", "InFlight"]

# A batch's own objects beside its frames' columns: seven arrays, its record, its journal entry.
PER_BATCH_BYTES = 1024


def cost(batch: SealedBatch) -> int:
    return batch.raw_bytes + PER_BATCH_BYTES


class InFlight:
    """The count, and the stream held back (and open batches sealed early) to keep it bounded.

    Event loop only. `open_bytes` and `shed` are bound by the capture (its open batches, and
    sealing the largest of them down to a number of bytes), `queued_bytes` by the daemon (the
    stream's reads waiting for the capture)."""

    def __init__(
        self, limit_bytes: int, *, hold_back: Callable[[bool], None], metrics: Registry | None = None
    ) -> None:
        self.limit_bytes = limit_bytes
        self.hold_back = hold_back
        self.open_bytes: Callable[[], int] = lambda: 0
        self.queued_bytes: Callable[[], int] = lambda: 0  # bound to the stream's reads not yet taken
        self.shed: Callable[[int], None] = lambda down_to_bytes: None
        self.sealed_bytes = 0  # sealed: waiting for the sealer, or being encoded and spooled
        self.held = False
        self.peak_bytes = 0
        self._checking = False
        if metrics is not None:
            metrics.gauge("buffered_bytes", "Bytes of trades in memory between the socket and the spool.",
                          lambda: self.bytes)  # fmt: skip
            metrics.gauge("buffered_bytes_peak", "The most buffered_bytes has been.", lambda: self.peak_bytes)

    @property
    def bytes(self) -> int:
        return self.queued_bytes() + self.open_bytes() + self.sealed_bytes

    def sealed(self, batch: SealedBatch) -> None:
        """A batch left the open ones for the sealer's queue (or came back to it)."""
        self.sealed_bytes += cost(batch)
        self.check()

    def spooled(self, batches: Iterable[SealedBatch]) -> None:
        """Batches are on disk (or recorded as dropped): their memory is free."""
        self.sealed_bytes -= sum(map(cost, batches))
        self.check()

    def check(self) -> None:
        """After anything counted changed: hold back at the limit, let go at half, and seal open
        batches early when they alone keep the count above half."""
        if self._checking:  # shedding seals batches, which comes back here
            return
        self._checking = True
        try:
            total = self.bytes
            self.peak_bytes = max(self.peak_bytes, total)
            if total >= self.limit_bytes:
                self._hold(True)
            elif total <= self.limit_bytes // 2:
                self._hold(False)
            if self.held and self.open_bytes() > self.limit_bytes // 2:
                self.shed(self.limit_bytes // 4)
        finally:
            self._checking = False

    def stall(self) -> None:
        """Hold back now, whatever the count (the spool refuses batches); `check` lets go at half."""
        self._hold(True)

    def _hold(self, hold: bool) -> None:
        if hold != self.held:
            self.held = hold
            self.hold_back(hold)
