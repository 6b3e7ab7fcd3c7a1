"""`collector compact`: final days of the landing zone into `trades` and `bars_1m`, a commit a day.

    for each day asked for (or every day not in the table yet, and the last RECHECK_DAYS again):
        listing ─▶ ready? (days.py) ─▶ digest unchanged? ─▶ markers read (read.plan_day)
            ─▶ objects fetched and checked, sliced, sorted (read.DayReader)
            ─▶ trades' files + bars' files written (write.DataFiles) ─▶ one commit per table
    then snapshots older than COLLECTOR_TABLE_SNAPSHOT_DAYS expired

A day that fails a check is not committed: its files are deleted and it is reported with every
defect; the command exits 1. A rerun commits nothing for a day whose markers are unchanged; a
marker rewritten since (a gap filled late, an import over live days) rebuilds that day and
replaces it in one commit. A run killed at any point leaves nothing visible; the next one
deletes the files it had written (write.Intents) and does the day again.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from collector.lake.sinks import Sink
from collector.lock import staging_directory
from collector.table.catalog import LakeTables
from collector.table.days import DayState, Streams
from collector.table.read import DayReader, plan_day
from collector.table.schema import BARS_SCHEMA, TRADES_SCHEMA, arrow_schema
from collector.table.write import DataFiles, Intents, commit_day, day_property, write_slices

__all__ = ["RECHECK_DAYS", "Compactor", "DayOutcome", "WarehouseError"]

# Days already in the table looked at again on every run without a range: a gap left unfilled
# at the end of a day is retried by the collector for about an hour and a quarter after it.
RECHECK_DAYS = 2


@dataclass
class DayOutcome:
    day: str
    status: str  # committed, unchanged, not_ready, defects, empty
    rows: int = 0
    bars: int = 0
    files: int = 0
    seconds: float = 0.0
    unfilled_gaps: int = 0
    detail: str = ""
    defects: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class WarehouseError(Exception):
    """The table's files could not be written: the message says where, and what to do."""


class Compactor:
    """Compacts days of one landing zone into one pair of tables."""

    def __init__(
        self, sink: Sink, tables: LakeTables, staging: Path, *, log: Any, snapshot_days: float
    ) -> None:
        self.sink, self.tables, self.staging, self.log = sink, tables, staging, log
        self.snapshot_days = snapshot_days
        self.intents = Intents(staging / "intents")
        self._trades_schema = arrow_schema(TRADES_SCHEMA)
        self._bars_schema = arrow_schema(BARS_SCHEMA)

    def run(self, days: list[date] | None) -> list[DayOutcome]:
        """Each day asked for, or every candidate day (see the module's docstring), in order; one
        run at a time per staging directory (a second is refused, naming the first's PID)."""
        with staging_directory(self.staging, command="collector compact", emptied=False):
            self._clean_leftovers()
            streams = Streams(self.sink)
            wanted = days if days is not None else self._candidates(streams)
            outcomes = [self.compact(streams, day, asked=days is not None) for day in wanted]
            if any(o.status == "committed" for o in outcomes):
                self._expire()
            return outcomes

    def compact(self, streams: Streams, day: date, *, asked: bool = True) -> DayOutcome:
        started = time.monotonic()
        state = streams.state(day)
        if state.empty:
            return DayOutcome(day.isoformat(), "empty", detail=state.why_not())
        if not state.ready:
            if not asked:
                self.log.info("collector.compact_waiting", day=str(day), why=state.why_not())
            return DayOutcome(day.isoformat(), "not_ready", detail=state.why_not())
        digest = state.digest()
        if all(t.properties.get(day_property(day)) == digest for t in (self.tables.trades, self.tables.bars)):
            return DayOutcome(day.isoformat(), "unchanged", detail="its markers are those it was built from")
        outcome = self._build(state, digest)
        outcome.seconds = round(time.monotonic() - started, 3)
        self.log.info("collector.compact_day", **outcome.as_dict())
        return outcome

    def _build(self, state: DayState, digest: str) -> DayOutcome:
        day = state.day
        plan = plan_day(self.sink, state)
        outcome = DayOutcome(day.isoformat(), "defects", unfilled_gaps=plan.unfilled_gaps)
        if plan.defects:
            outcome.defects = [str(d) for d in plan.defects[:50]]
            return outcome
        intent = self.intents.begin(f"{day.isoformat()}-{int(time.time() * 1000)}")
        staging = self.staging / day.isoformat()
        trades = DataFiles(self.tables.trades, day, self._trades_schema, intent)
        minute_bars = DataFiles(self.tables.bars, day, self._bars_schema, intent)
        try:
            reader = DayReader(self.sink, plan, staging, self._trades_schema)
            outcome.bars = write_slices(reader.slices(), trades, minute_bars)
            if reader.defects or trades.rows != plan.total_rows:
                outcome.defects = [str(d) for d in reader.defects[:50]] or [
                    f"read {trades.rows} trades, the markers say {plan.total_rows}"
                ]
                trades.discard()
                minute_bars.discard()
                return outcome
            summary = {"trade-lake.source": "landing", "trade-lake.rows": str(trades.rows),
                       "trade-lake.unfilled-gaps": str(plan.unfilled_gaps)}  # fmt: skip
            outcome.detail = self._commit(day, digest, summary, trades, minute_bars)
        except OSError as exc:  # the warehouse or the staging disk: full, read-only, gone
            trades.discard()
            minute_bars.discard()
            raise WarehouseError(
                f"{day}: writing the table's files failed ({exc.strerror or exc}); nothing committed. "
                f"Free space on (or fix) {self.tables.where} and the staging directory {self.staging}, "
                "then run again"
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        Intents.done(intent)
        outcome.status, outcome.rows, outcome.files = "committed", trades.rows, len(trades.paths)
        return outcome

    def _commit(self, day: date, digest: str, summary: dict[str, str], *writers: DataFiles) -> str:
        """Each table's day committed (a table that has it already, from a run killed between the
        two commits, is left as it is); notes on what another run did meanwhile."""
        notes = []
        files = [writer.finish() for writer in writers]
        for table, written in zip((self.tables.trades, self.tables.bars), files, strict=True):
            if table.properties.get(day_property(day)) == digest:
                self._delete(table, written)
                continue
            done = commit_day(table, day, written, digest, summary)
            if not done.committed:
                self._delete(table, written)
                notes.append(done.note)
        return "; ".join(notes)

    def _candidates(self, streams: Streams) -> list[date]:
        """Days not in the table yet, and the last RECHECK_DAYS of those that are; never today."""
        today = datetime.now(tz=UTC).date()
        days = [d for d in streams.all_days() if d < today]
        known = {d for d in days if self.tables.trades.properties.get(day_property(d))}
        recent = sorted(known)[-RECHECK_DAYS:]
        return [d for d in days if d not in known or d in recent]

    def _clean_leftovers(self) -> None:
        """Files of runs killed before their commit: deleted, unless a snapshot references them."""
        if not any(self.intents.root.glob("*.jsonl")) if self.intents.root.is_dir() else True:
            return
        referenced: set[str] = set()
        for table in (self.tables.trades, self.tables.bars):
            snapshot = table.current_snapshot()
            if snapshot is not None:
                for manifest in snapshot.manifests(table.io):
                    referenced.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(table.io))
        for path in self.intents.clean(self.tables.trades.io, referenced):
            self.log.info("collector.compact_leftover_deleted", path=path)

    def _expire(self) -> None:
        """Snapshots older than the configured age go (the current one always stays), and with them
        the data files only they held: those a replaced day's commit removed from the table."""
        from pyiceberg.manifest import ManifestEntryStatus

        cutoff = datetime.now(tz=UTC) - timedelta(days=self.snapshot_days)
        for table in (self.tables.trades, self.tables.bars):
            table.refresh()
            current = table.current_snapshot()
            old = [s for s in table.snapshots() if s.timestamp_ms < cutoff.timestamp() * 1000
                   and (current is None or s.snapshot_id != current.snapshot_id)]  # fmt: skip
            if not old:
                continue
            removed = {
                entry.data_file.file_path
                for snapshot in old
                for manifest in snapshot.manifests(table.io)
                if manifest.added_snapshot_id == snapshot.snapshot_id
                for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False)
                if entry.status == ManifestEntryStatus.DELETED
            }
            table.maintenance.expire_snapshots().older_than(cutoff).commit()
            live = {task.file.file_path for task in table.scan().plan_files()}
            self._delete(table, sorted(removed - live))
            if removed - live:
                self.log.info(
                    "collector.compact_expired", table=table.name()[-1], files_deleted=len(removed - live)
                )

    def _delete(self, table: Any, files: list[Any]) -> None:
        """Delete data files (DataFile objects, or their paths) no snapshot keeps."""
        for data_file in files:
            with contextlib.suppress(FileNotFoundError, OSError):
                table.io.delete(data_file if isinstance(data_file, str) else data_file.file_path)
