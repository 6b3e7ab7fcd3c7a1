"""The capture core: a chunk fed whole gives exactly what its frames give one by one.

The columnar fast path and the frame-by-frame path must agree on every batch (rows, columns,
ids, seal reasons), on the journal, on gaps and on what is skipped; these tests feed the same
frames both ways and compare everything.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import astuple
from typing import Any

import pytest

from collector.capture.batching import SealedBatch
from collector.capture.core import CaptureCore, ChunkResult
from collector.capture.decode import decode_frame, decode_trades
from collector.feed.tapes import GeneratedTape
from tests.conftest import RECORDING_2023, RECORDING_2024, recording
from tests.support.oracle import OneByOne


def make_core(**overrides: Any) -> CaptureCore:
    settings: dict[str, Any] = {
        "time_unit": "ms",
        "max_batch_bytes": 2_000_000,
        "max_batch_age_s": 60.0,
        "minute_grace_s": 5.0,
    }
    settings.update(overrides)
    return CaptureCore(**settings)


def generated(n: int, symbols: tuple[str, ...] = ("BTCUSDT",), **tape: Any) -> list[bytes]:
    source = GeneratedTape(symbols, count=n, **tape)
    return [t.payload_ms.encode() for t in source.take(n * len(symbols))]


def trade(
    trade_id: int,
    *,
    t_ms: int = 1_723_161_255_342,
    price: str = "61837.63000000",
    quantity: str = "0.02000000",
    sym: str = "BTCUSDT",
) -> bytes:
    return (
        f'{{"e":"trade","E":{t_ms + 1},"s":"{sym}","t":{trade_id},"p":"{price}","q":"{quantity}",'
        f'"T":{t_ms},"m":true,"M":true}}'
    ).encode()


def combined(frame: bytes, stream: str = "btcusdt@trade") -> bytes:
    return b'{"stream":"' + stream.encode() + b'","data":' + frame + b"}"


def run(
    core: CaptureCore | OneByOne, chunks: list[list[bytes]], stamp: int = 7
) -> tuple[list[ChunkResult], list[SealedBatch]]:
    results = [core.feed_chunk(chunk, stamp, 0.0) for chunk in chunks]
    core.flush()
    return results, core.take_sealed()


def batch_view(batches: list[SealedBatch]) -> list[tuple[Any, ...]]:
    """Batches by id: across symbols the order of sealing may differ (a chunk is split by symbol)."""
    for b in batches:  # the id range kept while buffering is what a scan of the ids finds
        assert b.id_range == (min(b.columns.trade_id), max(b.columns.trade_id)), b.batch_id
    view = [
        (b.batch_id, b.symbol, b.minute, b.reason, b.raw_bytes, *(list(c) for c in astuple(b.columns)))
        for b in batches
    ]
    return sorted(view, key=lambda v: v[0])


def journal_view(results: list[ChunkResult]) -> dict[str, list[bytes]]:
    """Each batch's journal lines, in order."""
    lines: dict[str, list[bytes]] = {}
    for r in results:
        for batch_id, frames in r.journal:
            lines.setdefault(batch_id, []).extend(frames)
    return lines


def compare_whole_and_one_by_one(frames: list[bytes], chunk: int, **core: Any) -> CaptureCore:
    """The core fed `chunk` frames a read against the plain one-trade-at-a-time reference."""
    whole = make_core(**core)
    settings: dict[str, Any] = {
        "time_unit": "ms",
        "max_batch_bytes": 2_000_000,
        "max_batch_age_s": 60.0,
        "minute_grace_s": 5.0,
        **core,
    }
    one = OneByOne(**settings)
    chunks = [frames[i : i + chunk] for i in range(0, len(frames), chunk)]
    whole_results, whole_batches = run(whole, chunks)
    one_results, one_batches = run(one, [[raw] for raw in frames])
    assert batch_view(whole_batches) == batch_view(one_batches)
    assert journal_view(whole_results) == journal_view(one_results)
    assert whole.stats.trades == one.stats.trades
    assert (whole.stats.duplicates, whole.stats.skipped, whole.stats.gaps) == (
        one.stats.duplicates,
        one.stats.skipped,
        one.stats.gaps,
    )
    return whole


@pytest.mark.parametrize("chunk", [1, 7, 500, 5000])
def test_generated_trades_in_chunks_match_one_by_one_and_take_the_fast_path(chunk: int) -> None:
    frames = generated(5000)
    core = compare_whole_and_one_by_one(frames, chunk, max_batch_bytes=50_000)  # size seals inside chunks
    assert core.stats.sealed["size"] >= 10
    assert core.stats.slow_frames <= chunk  # only the very first chunk: no last id to continue from


def test_decode_trades_agrees_with_decode_frame_field_for_field_on_the_recordings() -> None:
    for path in (recording(RECORDING_2024), recording(RECORDING_2023)):
        with gzip.open(path, "rb") as handle:
            frames = [
                raw for line in handle if b'"e":"trade"' in (raw := line.rstrip(b"\n").partition(b" ")[2])
            ]
        columns = decode_trades(frames, combined=True)
        assert columns is not None, path.name
        slow = [decode_frame(raw, 0) for raw in frames]
        assert list(columns.symbols) == [t.symbol for t in slow]  # type: ignore[union-attr]
        assert list(columns.trade_ids) == [t.trade_id for t in slow]  # type: ignore[union-attr]
        assert list(columns.prices) == [t.price for t in slow]  # type: ignore[union-attr]
        assert list(columns.quantities) == [t.quantity for t in slow]  # type: ignore[union-attr]
        assert list(columns.trade_times) == [t.trade_time for t in slow]  # type: ignore[union-attr]
        assert list(columns.event_times) == [t.event_time for t in slow]  # type: ignore[union-attr]
        assert list(columns.is_buyer_maker) == [t.is_buyer_maker for t in slow]  # type: ignore[union-attr]
        compare_whole_and_one_by_one(frames, 300, max_batch_bytes=200_000, combined=True)


@pytest.mark.parametrize(
    "odd",
    [
        trade(11, price="1.5"),  # fewer than 8 decimals: exact, but not Binance's usual shape
        trade(11, price="-1.00000000"),
        trade(11, price="1.000000001"),
        trade(11, price="12345678901.00000000"),
        trade(11, price="1.00000000 2.00000000"),  # would pass a check of the texts joined by spaces
        trade(11, price=""),
        trade(11, quantity=" 1.00000000"),
        trade(11, quantity="1_0.00000000"),  # int() takes underscores
        trade(11, quantity="\uff11.00000000"),  # int() takes other scripts' digits
        trade(11, sym="btcusdt"),
        b"",
        b'{"e":"trade","E":1,"s":"BTCUSDT","t":-11,"p":"1.00000000","q":"1.00000000","T":1,"m":true}',
        b'{"e":"trade","E":1,"s":"BTCUSDT","t":11.0,"p":"1.00000000","q":"1.00000000","T":1,"m":true}',
        b'{"e":"trade","E":1,"s":"BTCUSDT","t":11,"p":1.5,"q":"1.00000000","T":1,"m":true}',
        b'{"e":"trade","E":1,"s":"BTCUSDT","t":11,"p":"1.00000000","q":"1.00000000","T":1,"m":1}',
        b'{"e":"trade","E":1,"s":"BTCUSDT","t":11,"p":"1.00000000","T":1,"m":true}',
        b'{"e":"serverShutdown","E":1}',
        b'{"result":null,"id":1}',
        b"not json",
        b"[1, 2]",
        b'{"e":"trade"} {"e":"trade"}',
    ],
)
def test_an_unusual_frame_is_classified_alone_and_its_neighbours_stay_columnar(odd: bytes) -> None:
    frames = [trade(i) for i in range(1, 11)] + [odd] + [trade(i) for i in range(12, 20)]
    assert decode_trades(frames, combined=False) is None
    core = compare_whole_and_one_by_one(frames, len(frames))
    # The odd frame alone, and the first trade (nothing to continue from); at most two more
    # where a missing id 11 splits the run.
    assert core.stats.slow_frames <= 4


@pytest.mark.parametrize("chunk", [2000, 333, 1])
def test_a_burst_spanning_hours_of_trade_time_stays_columnar(chunk: int) -> None:
    """Trade times 30 ms apart: nearly every read of a burst crosses a minute."""
    frames = generated(12_000, clock_start_ms=1_723_161_255_342, clock_step_ms=30.0)
    core = compare_whole_and_one_by_one(frames, chunk)
    assert core.stats.slow_frames <= 1  # the very first trade: no last id to continue from
    assert len(core.take_sealed()) == 0 and core.stats.sealed["crowded"] + core.stats.sealed["shutdown"] == 7


def test_trade_times_out_of_order_inside_a_read_land_in_their_own_minutes() -> None:
    minute = 60_000 * 28_719_354
    times = [minute - 5, minute + 5, minute - 3, minute + 6, minute + 60_001, minute - 1, minute + 7]
    frames = [trade(100 + i, t_ms=t) for i, t in enumerate(times)]
    core = compare_whole_and_one_by_one(frames, len(frames))
    assert core.stats.trades["BTCUSDT"] == len(times)


def test_a_read_with_a_control_answer_and_a_gap_and_a_repeat_inside_matches_one_by_one() -> None:
    frames = (
        [trade(i) for i in range(1, 500)]
        + [b'{"result":null,"id":7}']
        + [trade(i) for i in range(495, 800)]  # 495..499 again
        + [trade(i) for i in range(810, 1500)]  # 800..809 missing
    )
    core = compare_whole_and_one_by_one(frames, len(frames))
    assert (core.stats.duplicates, core.stats.gaps, core.stats.missing_ids) == (5, 1, 10)
    assert core.stats.slow_frames < 20


def test_a_raw_newline_inside_a_frame_is_whitespace_on_both_paths() -> None:
    frames = [trade(i) for i in range(1, 20)]
    frames[10] = frames[10].replace(b',"E"', b',\n"E"')  # JSON whitespace: still a valid trade
    columns = decode_trades(frames, combined=False)
    assert columns is not None and columns.trade_ids == list(range(1, 20))
    compare_whole_and_one_by_one(frames, len(frames))


def test_gaps_duplicates_and_minute_boundaries_inside_a_chunk_match_one_by_one() -> None:
    minute = 60_000 * 28_719_354
    frames = (
        [trade(i, t_ms=minute - 10) for i in range(100, 120)]
        + [trade(i, t_ms=minute + 5) for i in range(120, 140)]  # a new minute mid-chunk
        + [trade(i, t_ms=minute + 6) for i in range(130, 135)]  # a reconnect's overlap
        + [trade(i, t_ms=minute + 7) for i in range(150, 160)]  # ids 140..149 never came
    )
    core = compare_whole_and_one_by_one(frames, 50)
    whole = make_core()
    whole.feed_chunk(frames[:40], 1, 0.0)
    result = whole.feed_chunk(frames[40:], 2, 0.0)
    (gap,) = result.gaps
    assert (gap.gap.first_missing, gap.gap.last_missing) == (140, 149)
    assert gap.previous_trade_time == minute + 5  # the last trade before the gap: its window opens there
    assert gap.trade_time == minute + 7
    assert core.stats.duplicates == 5


def test_a_combined_chunk_of_several_symbols_is_split_by_symbol_and_matches_one_by_one() -> None:
    frames = generated(3000, ("BTCUSDT", "ETHUSDT", "SOLUSDT"))
    wrapped = [combined(raw, json.loads(raw)["s"].lower() + "@trade") for raw in frames]
    core = compare_whole_and_one_by_one(wrapped, 900, combined=True, max_batch_bytes=100_000)
    assert set(core.stats.trades) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    assert core.stats.fast_chunks > 3 * 3


@pytest.mark.parametrize("chunk", [2, 3, 5])
def test_small_mixed_chunks_with_a_lone_trade_of_a_symbol_match_one_by_one(chunk: int) -> None:
    """A symbol with one trade in a chunk, and one with several, are both gathered right."""
    frames = generated(600, ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"))
    wrapped = [combined(raw, json.loads(raw)["s"].lower() + "@trade") for raw in frames]
    core = compare_whole_and_one_by_one(wrapped, chunk, combined=True, max_batch_bytes=20_000)
    assert core.stats.fast_chunks > 100


def test_a_wrong_guess_of_the_frame_form_costs_time_not_trades() -> None:
    frames = [trade(i) for i in range(1, 50)]
    assert decode_trades(frames, combined=True) == decode_trades(frames, combined=False)
    wrapped = [combined(raw) for raw in frames]
    assert decode_trades(wrapped, combined=False) == decode_trades(frames, combined=False)
