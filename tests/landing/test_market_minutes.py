"""The market-wide layout: its keys, its manifest, the part's encoding, and MarketMinutes'
assembly and crash recovery on a real spool and a real landing directory."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from collector.counters import Registry
from collector.lake.completion import UnfilledGap
from collector.lake.layout import (
    is_market_source,
    market_marker_key,
    market_object_key,
    market_source_key,
    object_key,
    parse_marker_key,
    parse_market_key,
    parse_market_marker_key,
    parse_object_key,
)
from collector.lake.market_manifest import (
    MarketFile,
    SymbolShare,
    build_market_manifest,
    merge_market_parts,
    parse_market_manifest,
    symbol_final,
)
from collector.lake.parquet import encode_batch
from collector.lake.sinks import LocalSink
from collector.landing.market_minutes import MarketMinutes
from collector.landing.spool import Spool, Spooled
from collector.logs import get_logger
from tests.support.batches import batch, market_part

MINUTE = 29_400_000  # 2025-11-24T16:00Z


# ---- keys -----------------------------------------------------------------------------------


def test_market_keys_are_built_and_parsed_and_never_taken_for_a_symbols() -> None:
    key = market_object_key(MINUTE, 2, "3f9a0c1b2d4e" + "0" * 52, prefix="lake/")
    assert key == "lake/Binance/_market/2025/11/24/16/00/part-002-3f9a0c1b2d4e.parquet"
    name = parse_market_key(key)
    assert name is not None and (name.minute, name.seq, name.file_name) == (
        MINUTE,
        2,
        "part-002-3f9a0c1b2d4e.parquet",
    )
    assert parse_object_key(key) is None and parse_marker_key(market_marker_key(MINUTE)) is None
    assert parse_market_marker_key("lake/" + market_marker_key(MINUTE)) == MINUTE
    source = market_source_key(object_key(symbol="ETHUSDT", minute=MINUTE, first_trade_id=5, last_trade_id=9))
    assert is_market_source(source) and parse_object_key(source).symbol == "ETHUSDT"  # type: ignore[union-attr]
    assert (
        parse_market_key(object_key(symbol="ETHUSDT", minute=MINUTE, first_trade_id=5, last_trade_id=9))
        is None
    )


# ---- the manifest ---------------------------------------------------------------------------


def test_the_manifest_lists_each_symbols_rows_and_ids_and_who_is_covered() -> None:
    part = MarketFile("part-000-aaaaaaaaaaaa.parquet", 900, "c2hh", 7)
    doc = build_market_manifest(
        MINUTE, [(part, [SymbolShare("ETHUSDT", 4, 10, 13), SymbolShare("BTCUSDT", 3, 1, 3)])],
        ["BTCUSDT", "ETHUSDT", "QUIETUSDT"], {"QUIETUSDT": [UnfilledGap(5, 6, "not_served")]}, written_at_s=0,
    )  # fmt: skip
    assert doc["rows"] == 7 and list(doc["symbols"]) == ["BTCUSDT", "ETHUSDT"]
    assert doc["symbols"]["ETHUSDT"] == {
        "rows": 4,
        "first_trade_id": 10,
        "last_trade_id": 13,
        "files": [part.name],
    }
    assert doc["covered"] == ["BTCUSDT", "ETHUSDT", "QUIETUSDT"]  # QUIETUSDT: no trade, proven
    assert doc["unfilled_gaps"]["QUIETUSDT"][0]["reason"] == "not_served"
    assert parse_market_manifest(json.dumps(doc).encode()) == doc


def test_a_late_part_merges_into_the_manifest_with_a_new_revision() -> None:
    first = MarketFile("part-000-aaaaaaaaaaaa.parquet", 900, "c2hh", 3)
    gaps = {"XUSDT": [UnfilledGap(7, 8, "rest_unavailable")]}
    doc = build_market_manifest(
        MINUTE, [(first, [SymbolShare("BTCUSDT", 3, 1, 3)])], ["BTCUSDT", "XUSDT"], gaps, written_at_s=0
    )
    late = MarketFile("part-001-bbbbbbbbbbbb.parquet", 300, "c2hi", 2)
    merged = merge_market_parts(
        doc, [(late, [SymbolShare("XUSDT", 2, 7, 8)])], ["XUSDT"], {"XUSDT": []}, written_at_s=1
    )
    assert merged is not None and merged["revision"] == 2 and merged["rows"] == 5
    assert merged["symbols"]["XUSDT"]["files"] == [late.name] and merged["unfilled_gaps"] == {}
    assert merge_market_parts(merged, [(late, [])], [], {}, written_at_s=2) is None  # listed already


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"manifest_version": 1}, "'layout' is missing"),
        ({**build_market_manifest(MINUTE, [], [], {}, written_at_s=0), "layout": "symbol"}, "not 'market'"),
        ({**build_market_manifest(MINUTE, [], [], {}, written_at_s=0), "symbols": {"A": {"rows": 1}}}, "A:"),
        (
            {**build_market_manifest(MINUTE, [], [], {}, written_at_s=0), "minute": "yesterday"},
            "not a minute",
        ),
    ],
)
def test_a_broken_manifest_is_refused_with_what_is_wrong(doc: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_market_manifest(json.dumps(doc).encode())


def test_a_symbols_minute_is_final_only_when_every_condition_holds() -> None:
    end = (MINUTE + 1) * 60
    ok = {
        "now_s": end + 5,
        "grace_s": 2,
        "proven_until_s": end,
        "open_gap_from_s": float("inf"),
        "pending": set(),
    }
    assert symbol_final(MINUTE, **ok)
    assert not symbol_final(MINUTE, **{**ok, "now_s": end + 1})  # within the grace
    assert not symbol_final(MINUTE, **{**ok, "proven_until_s": end - 1})
    assert not symbol_final(MINUTE, **{**ok, "proven_until_s": None})  # nothing seen since a restart
    assert not symbol_final(MINUTE, **{**ok, "open_gap_from_s": end - 30})
    assert not symbol_final(MINUTE, **{**ok, "pending": {MINUTE}})


# ---- assembly and recovery on real files ----------------------------------------------------


class Market:
    """A MarketMinutes over a real spool and landing directory, with the symbols' finality given."""

    def __init__(self, tmp: Path, members: dict[str, int], final: set[str], part_rows: int = 10**6) -> None:
        self.part_rows = part_rows
        self.spool = Spool(tmp / "spool")
        self.sink = LocalSink(tmp / "landing")
        self.members, self.final = members, final
        self.queued: list[Spooled] = []
        self.market = self.make(tmp)

    def make(self, tmp: Path) -> MarketMinutes:
        market = MarketMinutes(
            root=tmp / "spool" / "market", spool=self.spool, sink=self.sink, output_format="parquet",
            members=self.members.items, final=lambda s, m, now: s in self.final,
            still_expected=lambda s: True, gaps_in=lambda s, m: [], log=get_logger(), metrics=Registry(),
            part_rows=self.part_rows,
        )  # fmt: skip
        market.enqueue = self.queued.append
        market.budget = _Budget()
        return market

    def source(self, symbol: str, first: int, n: int, minute: int = MINUTE) -> str:
        b = batch(symbol, first, n, minute)
        key = market_source_key(object_key(symbol=symbol, minute=minute, first_trade_id=b.first_trade_id,
                                           last_trade_id=b.last_trade_id))  # fmt: skip
        entry = self.spool.put(key, encode_batch(b, "parquet"))
        self.market.add_source(Spooled(entry, parse_object_key(key), b.rows))
        return key

    def restart(self, tmp: Path) -> None:
        """A new MarketMinutes on what the last one left, recovered as Landing.recover does."""
        self.queued.clear()
        self.market = self.make(tmp)
        for entry in self.market.recover(self.spool.pending()):
            name = parse_object_key(entry.key)
            if name is not None and is_market_source(entry.key):
                self.market.add_source(Spooled(entry, name))
            else:
                self.queued.append(Spooled(entry, None))

    def land(self, spooled: Spooled) -> None:
        """What an uploader does: put, then tell the market, then let the spool go of it."""
        self.sink.put(spooled.entry.key, self.spool.read(spooled.entry), source=spooled.entry.path)
        self.market.landed(spooled.entry.key)
        self.spool.remove(spooled.entry)

    def marker(self, minute: int = MINUTE) -> dict[str, Any]:
        raw = self.sink.get(market_marker_key(minute))
        assert raw is not None, "no market marker"
        return parse_market_manifest(raw)


class _Budget:
    def __init__(self) -> None:
        self.used = 0

    def release(self, size: int) -> None:
        self.used -= size

    def holds(self, size: int) -> None:
        self.used += size


NOW = (MINUTE + 1) * 60 + 30


def test_a_minute_is_held_until_every_symbol_is_final_then_lands_as_one_part(tmp_path: Path) -> None:
    m = Market(tmp_path, {"BTCUSDT": MINUTE, "ETHUSDT": MINUTE, "QUIETUSDT": MINUTE, "NEWUSDT": MINUTE + 1},
               final={"BTCUSDT", "ETHUSDT"})  # fmt: skip
    m.source("ETHUSDT", 7, 3)
    m.source("BTCUSDT", 100, 5)
    asyncio.run(m.market.assemble_once(NOW))
    assert m.queued == [] and m.market.cursor == MINUTE  # QUIETUSDT is not proven yet
    m.final.add("QUIETUSDT")
    asyncio.run(m.market.assemble_once(NOW))
    (part,) = m.queued
    assert m.market.cursor == MINUTE + 1
    assert [e.key for e in m.spool.pending()] == [part.entry.key]  # the sources are gone
    m.land(part)
    doc = m.marker()
    assert doc["covered"] == ["BTCUSDT", "ETHUSDT", "QUIETUSDT"]  # NEWUSDT starts next minute
    assert {s: (e["first_trade_id"], e["last_trade_id"]) for s, e in doc["symbols"].items()} == {
        "BTCUSDT": (100, 104), "ETHUSDT": (7, 9)}  # fmt: skip
    (listed,) = doc["files"]
    landed = (tmp_path / "landing" / part.entry.key).read_bytes()
    assert listed["bytes"] == len(landed) and listed["rows"] == 8
    assert not list((tmp_path / "spool" / "market" / "intents").iterdir())


def test_a_minute_without_trades_gets_a_marker_with_zero_rows(tmp_path: Path) -> None:
    m = Market(tmp_path, {"QUIETUSDT": MINUTE}, final={"QUIETUSDT"})
    asyncio.run(m.market.assemble_once(NOW))
    assert m.queued == [] and m.marker()["rows"] == 0 and m.marker()["covered"] == ["QUIETUSDT"]


def test_trades_that_come_after_the_marker_land_as_a_second_part_and_a_revision(tmp_path: Path) -> None:
    m = Market(tmp_path, {"BTCUSDT": MINUTE}, final={"BTCUSDT"})
    m.source("BTCUSDT", 100, 5)
    asyncio.run(m.market.assemble_once(NOW))
    m.land(m.queued.pop())
    m.source("BTCUSDT", 105, 2)  # a filled gap's trades
    asyncio.run(m.market.assemble_once(NOW + 1))
    late = m.queued.pop()
    assert parse_market_key(late.entry.key).seq == 1  # type: ignore[union-attr]
    m.land(late)
    doc = m.marker()
    assert doc["revision"] == 2 and doc["rows"] == 7 and doc["symbols"]["BTCUSDT"]["last_trade_id"] == 106


@pytest.mark.parametrize("crash_after", ["intent", "part_spooled", "part_landed"])
def test_a_crash_at_any_step_of_assembly_lands_the_minute_once(tmp_path: Path, crash_after: str) -> None:
    m = Market(tmp_path, {"BTCUSDT": MINUTE, "ETHUSDT": MINUTE}, final={"BTCUSDT", "ETHUSDT"})
    m.source("BTCUSDT", 100, 5)
    m.source("ETHUSDT", 7, 3)
    asyncio.run(m.market.assemble_once(NOW))
    (part,) = m.queued
    intent = next((tmp_path / "spool" / "market" / "intents").iterdir())
    if crash_after == "intent":  # the part never got into the spool: its sources still are
        m.spool.remove(part.entry)
        for source in json.loads(intent.read_text())["sources"]:
            again = batch(*(("BTCUSDT", 100, 5) if "BTC" in source else ("ETHUSDT", 7, 3)))
            m.spool.put(source, encode_batch(again, "parquet"))
        (tmp_path / "spool" / "market" / "cursor.json").unlink()
    elif crash_after == "part_landed":  # landed and out of the spool, the marker not written
        m.sink.put(part.entry.key, m.spool.read(part.entry), source=part.entry.path)
        m.spool.remove(part.entry)
    # The next start:
    m.queued.clear()
    m.market = m.make(tmp_path)
    left = m.market.recover(m.spool.pending())
    for entry in left:
        name = parse_object_key(entry.key)
        if name is not None and is_market_source(entry.key):
            m.market.add_source(Spooled(entry, name))
        else:
            m.queued.append(Spooled(entry, None))
    asyncio.run(m.market.assemble_once(NOW + 5))
    for spooled in m.queued:
        m.land(spooled)
    doc = m.marker()
    assert doc["rows"] == 8 and len(doc["files"]) == 1 and doc["revision"] == 1
    landed = list((tmp_path / "landing" / "Binance" / "_market").rglob("*.parquet"))
    assert len(landed) == 1  # one part, never two with the same trades
    assert m.spool.pending() == [] and not list(intent.parent.iterdir())


def test_a_start_without_local_state_finds_each_symbols_last_id_in_the_newest_market_minutes(
    tmp_path: Path,
) -> None:
    from collector.lake.holdings import latest_market_ids

    m = Market(tmp_path, {"BTCUSDT": MINUTE, "QUIETUSDT": MINUTE}, final={"BTCUSDT", "QUIETUSDT"})
    m.source("QUIETUSDT", 40, 2)  # its last trade, a minute before the newest
    m.source("BTCUSDT", 100, 5)
    asyncio.run(m.market.assemble_once(NOW))
    m.source("BTCUSDT", 105, 5, MINUTE + 1)
    asyncio.run(m.market.assemble_once(NOW + 60))
    for part in m.queued:
        m.land(part)
    # A part that landed with no marker yet (the collector stopped in between): read too.
    data = market_part([batch("BTCUSDT", 110, 3, MINUTE + 2)])
    import hashlib

    m.sink.put(market_object_key(MINUTE + 2, 0, hashlib.sha256(data).hexdigest()), data)
    found = latest_market_ids(m.sink, (MINUTE + 3) * 60)
    assert found == {"BTCUSDT": 112, "QUIETUSDT": 41}


def test_a_corrupt_source_is_set_aside_and_named_as_an_unfilled_gap_not_a_stuck_minute(
    tmp_path: Path,
) -> None:
    m = Market(tmp_path, {"BTCUSDT": MINUTE, "ETHUSDT": MINUTE}, final={"BTCUSDT", "ETHUSDT"})
    m.source("BTCUSDT", 100, 5)
    m.source("ETHUSDT", 7, 3)
    eth = next(s for s in m.market.sources[MINUTE].values() if s.name.symbol == "ETHUSDT")  # type: ignore[union-attr]
    eth.entry.path.write_bytes(b"not what was spooled")
    asyncio.run(m.market.assemble_once(NOW))
    m.land(m.queued.pop())
    doc = m.marker()
    assert doc["symbols"].keys() == {"BTCUSDT"} and doc["covered"] == ["BTCUSDT", "ETHUSDT"]
    (gap,) = doc["unfilled_gaps"]["ETHUSDT"]
    assert (gap["first_missing"], gap["last_missing"], gap["reason"]) == (7, 9, "spool_corrupt")
    assert list((tmp_path / "spool" / "corrupt").rglob("*"))  # kept aside for a person to look at


def test_a_late_source_found_corrupt_is_declared_in_the_marker_it_would_have_joined(tmp_path: Path) -> None:
    m = Market(tmp_path, {"BTCUSDT": MINUTE}, final={"BTCUSDT"})
    m.source("BTCUSDT", 100, 5)
    asyncio.run(m.market.assemble_once(NOW))
    m.land(m.queued.pop())
    m.source("BTCUSDT", 105, 2)  # a filled gap's trades, then the disk lets them down
    next(iter(m.market.sources[MINUTE].values())).entry.path.write_bytes(b"torn")
    asyncio.run(m.market.assemble_once(NOW + 1))
    doc = m.marker()
    assert m.queued == [] and doc["revision"] == 2 and doc["rows"] == 5
    declared = [(g["first_missing"], g["reason"]) for g in doc["unfilled_gaps"]["BTCUSDT"]]
    assert declared == [(105, "spool_corrupt")]


def test_a_late_part_beside_an_unreadable_marker_leaves_the_marker_as_it_is(tmp_path: Path) -> None:
    m = Market(tmp_path, {"BTCUSDT": MINUTE}, final={"BTCUSDT"})
    m.source("BTCUSDT", 100, 5)
    asyncio.run(m.market.assemble_once(NOW))
    m.land(m.queued.pop())
    marker = tmp_path / "landing" / market_marker_key(MINUTE)
    marker.write_bytes(b"{not json")
    m.source("BTCUSDT", 105, 2)
    asyncio.run(m.market.assemble_once(NOW + 1))
    late = m.queued.pop()
    assert parse_market_key(late.entry.key).seq == 1  # type: ignore[union-attr]  # numbered from the parts
    m.land(late)
    assert marker.read_bytes() == b"{not json"  # what cannot be read is not overwritten (audit names it)
    assert (tmp_path / "landing" / late.entry.key).exists()


def test_an_unreadable_intent_is_set_aside_at_start_and_its_sources_assembled_again(tmp_path: Path) -> None:
    m = Market(tmp_path, {"BTCUSDT": MINUTE}, final={"BTCUSDT"})
    m.source("BTCUSDT", 100, 5)
    intents = tmp_path / "spool" / "market" / "intents"
    (intents / f"{MINUTE}-0.json").write_text("{torn")
    m.market = m.make(tmp_path)
    left = m.market.recover(m.spool.pending())
    assert [e.key for e in left] == [e.key for e in m.spool.pending()]  # the source is kept
    assert (intents / f"{MINUTE}-0.unreadable").exists() and not (intents / f"{MINUTE}-0.json").exists()


def test_a_part_waits_for_the_cursor_past_its_minute_when_the_disk_refuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Landed and marked before the cursor said so, a restart would assemble the minute again from
    no sources, into an empty marker over the real one: the part waits for the cursor."""
    from collector.landing import market_minutes

    m = Market(tmp_path, {"BTCUSDT": MINUTE}, final={"BTCUSDT"})
    m.source("BTCUSDT", 100, 5)
    saved = market_minutes.write_atomically

    def full(path: Path, data: bytes, **kw: Any) -> bool:
        if path.name == "cursor.json":
            raise OSError(28, "No space left on device")
        return saved(path, data, **kw)

    monkeypatch.setattr(market_minutes, "write_atomically", full)
    with pytest.raises(OSError, match="No space left"):  # run() logs it and tries again each second
        asyncio.run(m.market.assemble_once(NOW))
    assert m.queued == [] and len(m.spool.pending()) == 1  # spooled, with its intent, not uploaded
    monkeypatch.setattr(market_minutes, "write_atomically", saved)  # space again
    asyncio.run(m.market.assemble_once(NOW + 1))
    (part,) = m.queued
    assert (
        json.loads((tmp_path / "spool" / "market" / "cursor.json").read_text())["next_minute"] == MINUTE + 1
    )
    m.land(part)
    m.market = m.make(tmp_path)  # a restart: nothing is assembled again over the marker
    m.market.recover(m.spool.pending())
    asyncio.run(m.market.assemble_once(NOW + 2))
    assert m.marker()["rows"] == 5 and m.marker()["revision"] == 1


# ---- a minute in several parts ----------------------------------------------------------------


def _keys_of(data: bytes) -> list[tuple[str, int]]:
    table = pq.read_table(io.BytesIO(data), columns=["symbol", "trade_id"])
    return list(zip(table.column("symbol").to_pylist(), table.column("trade_id").to_pylist(), strict=True))


def test_a_busy_minute_lands_in_several_parts_and_is_marked_once_all_have_landed(tmp_path: Path) -> None:
    m = Market(tmp_path, {"BTCUSDT": MINUTE, "ETHUSDT": MINUTE}, final={"BTCUSDT", "ETHUSDT"}, part_rows=10)
    m.source("ETHUSDT", 7, 6)
    m.source("BTCUSDT", 100, 12)
    m.source("BTCUSDT", 112, 7)
    asyncio.run(m.market.assemble_once(NOW))
    parts = list(m.queued)
    assert [parse_market_key(p.entry.key).seq for p in parts] == [0, 1, 2]  # type: ignore[union-attr]
    assert [p.rows for p in parts] == [10, 10, 5] and m.market.cursor == MINUTE + 1
    for part in parts[:2]:
        m.land(part)
        assert m.sink.get(market_marker_key(MINUTE)) is None  # not before every part has landed
    m.land(parts[2])
    doc = m.marker()
    assert [f["name"] for f in doc["files"]] == [parse_market_key(p.entry.key).file_name for p in parts]  # type: ignore[union-attr]
    assert doc["rows"] == 25 and [f["rows"] for f in doc["files"]] == [10, 10, 5]
    names = [f["name"] for f in doc["files"]]
    assert doc["symbols"]["BTCUSDT"] == {"rows": 19, "first_trade_id": 100, "last_trade_id": 118,
                                         "files": names[:2]}  # fmt: skip
    assert doc["symbols"]["ETHUSDT"]["files"] == names[1:]  # its first trade ends the second part
    whole = [k for p in parts for k in _keys_of((tmp_path / "landing" / p.entry.key).read_bytes())]
    assert whole == sorted(whole) == [("BTCUSDT", i) for i in range(100, 119)] + [
        ("ETHUSDT", i) for i in range(7, 13)]  # fmt: skip
    assert not list((tmp_path / "spool" / "market" / "intents").iterdir())


@pytest.mark.parametrize("crash_after", ["first_intent", "one_part_spooled", "every_part_spooled",
                                         "two_parts_landed", "every_part_landed"])  # fmt: skip
def test_a_crash_at_any_step_of_a_minute_in_parts_lands_it_once(tmp_path: Path, crash_after: str) -> None:
    m = Market(tmp_path, {"BTCUSDT": MINUTE, "ETHUSDT": MINUTE}, final={"BTCUSDT", "ETHUSDT"}, part_rows=4)
    sources = {m.source("BTCUSDT", 100, 6): ("BTCUSDT", 100, 6), m.source("ETHUSDT", 7, 5): ("ETHUSDT", 7, 5)}
    asyncio.run(m.market.assemble_once(NOW))
    parts = list(m.queued)
    assert len(parts) == 3
    intents = tmp_path / "spool" / "market" / "intents"
    kept = {"first_intent": 0, "one_part_spooled": 1}.get(crash_after)
    if kept is not None:  # cut short: part `kept`'s intent written, the part not spooled, sources kept
        for part in parts[kept:]:
            m.spool.remove(part.entry)
        for seq in range(kept + 1, 3):
            (intents / f"{MINUTE}-{seq}.json").unlink()
        for key, (symbol, first, n) in sources.items():
            m.spool.put(key, encode_batch(batch(symbol, first, n), "parquet"))
        (tmp_path / "spool" / "market" / "cursor.json").unlink()
    elif crash_after == "every_part_spooled":  # the sources not removed yet
        for key, (symbol, first, n) in sources.items():
            m.spool.put(key, encode_batch(batch(symbol, first, n), "parquet"))
    else:  # landed, out of the spool; the marker not written
        for part in parts[: 2 if crash_after == "two_parts_landed" else 3]:
            m.sink.put(part.entry.key, m.spool.read(part.entry), source=part.entry.path)
            m.spool.remove(part.entry)
    m.restart(tmp_path)
    asyncio.run(m.market.assemble_once(NOW + 5))
    for spooled in m.queued:
        m.land(spooled)
    doc = m.marker()
    assert doc["rows"] == 11 and len(doc["files"]) == 3 and doc["revision"] == 1
    landed = sorted((tmp_path / "landing" / "Binance" / "_market").rglob("*.parquet"))
    assert sorted(p.name for p in landed) == sorted(f["name"] for f in doc["files"])  # never a part twice
    whole = [k for p in sorted(landed) for k in _keys_of(p.read_bytes())]
    assert whole == [("BTCUSDT", i) for i in range(100, 106)] + [("ETHUSDT", i) for i in range(7, 12)]
    assert m.spool.pending() == [] and not list(intents.iterdir())


def test_a_later_assembly_of_a_minute_in_parts_is_one_more_revision(tmp_path: Path) -> None:
    m = Market(tmp_path, {"BTCUSDT": MINUTE}, final={"BTCUSDT"}, part_rows=4)
    m.source("BTCUSDT", 100, 5)
    asyncio.run(m.market.assemble_once(NOW))
    while m.queued:
        m.land(m.queued.pop(0))
    m.source("BTCUSDT", 105, 6)  # a filled gap's trades: two more parts, numbered on
    asyncio.run(m.market.assemble_once(NOW + 1))
    late = list(m.queued)
    assert [parse_market_key(p.entry.key).seq for p in late] == [2, 3]  # type: ignore[union-attr]
    m.land(late[1])
    assert m.marker()["revision"] == 1  # one of the two: not yet
    m.land(late[0])
    doc = m.marker()
    assert doc["revision"] == 2 and doc["rows"] == 11 and len(doc["files"]) == 4
