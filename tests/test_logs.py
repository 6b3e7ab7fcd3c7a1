"""Log lines: a counter line is every counter for machines, and what is not zero for a person."""

from __future__ import annotations

import io
import json
from typing import Any

from collector.logs import configure_logging, get_logger


def _stats() -> dict[str, Any]:
    """A whole market's collector.stats, its counters as the registry names them."""
    symbols = [f"S{i:04d}USDT" for i in range(1_500)]
    names = (
        "reconnects rotations stream_pauses gaps_filled backfilled_trades open_gaps gaps_unfilled "
        "landing_conflicts dropped_trades duplicate_trades gaps_opened missing_trade_ids quiet_proofs"
    )
    zeros = dict.fromkeys(names.split(), 0)
    return {
        "up": 1, "connected": 0, "uptime_seconds": 60.0, "streams": 1_500, **zeros,
        "trades_received": {s: 1_000 + i for i, s in enumerate(symbols)},
        "last_trade_id": {s: 10**12 + i for i, s in enumerate(symbols)},
        "trades_landed": {}, "upload_errors": {}, "upload_seconds": {"sum": 0.0, "count": 0},
        "last_landed_age_seconds": None,
    }  # fmt: skip


def test_a_counter_line_on_the_console_leaves_out_its_zeros_and_counts_its_long_maps() -> None:
    out = io.StringIO()
    configure_logging("info", "console", out)
    get_logger().info("collector.stats", **_stats())
    line = out.getvalue()
    assert len(line) < 300, line
    assert "trades_received='1,500 symbols, 2,624,250 in all'" in line
    assert "last_trade_id='1,500 symbols'" in line  # ids are not summed
    assert "connected=0" in line and "up=1" in line  # zeros that say something stay
    assert "reconnects" not in line and "trades_landed" not in line and "upload_seconds" not in line
    get_logger().info("collector.batch_landed", rows=0, symbol="BTCUSDT")  # other lines: as they are
    assert "rows=0" in out.getvalue()


def test_a_counter_line_in_json_keeps_every_counter() -> None:
    out = io.StringIO()
    configure_logging("info", "json", out)
    get_logger().info("collector.stats", **_stats())
    line = json.loads(out.getvalue())
    assert line["reconnects"] == 0 and len(line["trades_received"]) == 1_500
