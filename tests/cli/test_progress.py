"""The import's progress bar and its log lines, on a real pseudo-terminal: neither runs into the other."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from collector.cli.progress import TerminalLines
from collector.feed.archive import ArchiveFeed
from collector.feed.server import FeedServer
from collector.feed.simulated import Market
from collector.feed.tapes import MarketTape
from tests.conftest import DEADLINE_S
from tests.support.threaded_feed import ThreadedFeed

BAR = re.compile(r"\[[#.]+\] files \d+/\d+")
COLUMNS = 100


def screen(raw: str) -> list[str]:
    """The lines a terminal shows for `raw`: carriage returns, erase-line and colours applied."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", raw)
    lines: list[str] = []
    line: list[str] = []
    col = i = 0
    while i < len(text):
        if text.startswith("\x1b[K", i):
            del line[col:]
            i += 3
            continue
        char = text[i]
        if char == "\r":
            col = 0
        elif char == "\n":
            lines.append("".join(line))
            line, col = [], 0
        elif col < len(line):
            line[col] = char
            col += 1
        else:
            line.append(char)
            col += 1
        i += 1
    lines.append("".join(line))
    return lines


def run_on_a_terminal(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal of COLUMNS columns as its stdin, stdout and stderr."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd)
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
        code = proc.wait(timeout=30)
    return code, out.decode(errors="replace")


def test_log_lines_scroll_above_the_bar_and_never_run_into_it_on_a_terminal(tmp_path: Path) -> None:
    market = Market(("BTCUSDT", "ETHUSDT"), 20_000)
    server = FeedServer(MarketTape(market, time.time_ns() // 1000), rate=0.0, archive=ArchiveFeed(market))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_") and k != "COLUMNS"}
    with ThreadedFeed(server) as feed:
        rest = feed.url.replace("ws://", "http://")
        env.update(
            COLLECTOR_ARCHIVE_URL=rest, COLLECTOR_REST_URL=rest, COLLECTOR_SPOOL_DIR="spool", TERM="xterm"
        )
        argv = [sys.executable, "-m", "collector.cli", "import", "--symbols", "BTCUSDT,ETHUSDT",
                "--from", "2024-12-29", "--to", "2024-12-30", "--destination", "lake"]  # fmt: skip
        code, raw = run_on_a_terminal(argv, env, tmp_path)
    assert code == 0, raw
    lines = screen(raw)
    done = [line for line in lines if "collector.import_file_done" in line]
    bars = [line for line in lines if BAR.search(line)]
    assert len(done) == 4 and bars, raw
    for line in done:  # each log line is a line of its own, from its first column
        assert re.match(r"\d\d:\d\d:\d\d \[info", line) and not BAR.search(line), line
    for line in bars:  # and the bar too, within the terminal's width (a wrapped line cannot be erased)
        assert BAR.match(line) and len(line) < COLUMNS, line
    assert "files 4/4" in bars[-1]
    assert lines.index(bars[-1]) < next(
        i for i, line in enumerate(lines) if line.startswith("imported 2 day(s)")
    )


def test_a_line_written_in_parts_is_never_cut_by_the_bar() -> None:
    out = io.StringIO()
    lines = TerminalLines(out)
    lines.show("[....] files 0/2")
    lines.write("12:00:00 [info] collector.import_file_done")
    lines.show("[##..] files 1/2")  # from another thread, between the message and its newline
    lines.write("\n")
    lines.end()
    assert screen(out.getvalue()) == [
        "12:00:00 [info] collector.import_file_done",
        "[##..] files 1/2",
        "",
    ]
