"""What a person meets in the first hour: each command says the truth about what it did and what is wrong."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from collector.config import load_settings
from collector.daemon.preflight import directory_problem
from collector.exceptions import ConfigError
from collector.feed.archive import ArchiveFeed
from collector.feed.server import FeedServer
from collector.feed.simulated import Market
from collector.feed.tapes import MarketTape
from tests.support.cli import run_cli
from tests.support.threaded_feed import ThreadedFeed

# ---- settings that cannot work ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["s3:/bucket/prefix", "s3:bucket", "S3:/bucket"])
def test_an_s3_url_with_a_slash_missing_is_refused_not_taken_for_a_directory(value: str) -> None:
    with pytest.raises(ConfigError, match="looks like an S3 URL but is not one; write s3://bucket/prefix"):
        load_settings({"COLLECTOR_DESTINATION": value})


def test_a_destination_that_is_a_file_or_under_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert "is a file, not a directory" in (
        directory_problem(tmp_path / "file", "COLLECTOR_DESTINATION") or ""
    )
    assert "is a file" in (directory_problem(tmp_path / "file" / "below", "COLLECTOR_DESTINATION") or "")
    assert directory_problem(tmp_path / "new" / "deeper", "COLLECTOR_DESTINATION") is None


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_a_directory_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert "cannot write" in (directory_problem(locked, "COLLECTOR_DESTINATION") or "")
    assert "cannot be made" in (directory_problem(locked / "landing", "COLLECTOR_DESTINATION") or "")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc on this system")
def test_a_directory_the_kernel_will_not_make_is_refused_even_where_permissions_allow_it(
    tmp_path: Path,
) -> None:
    """Root may write /proc by its permission bits; the kernel makes nothing there."""
    assert "cannot be made" in (
        directory_problem(Path("/proc/trade-lake-landing"), "COLLECTOR_DESTINATION") or ""
    )
    done = run_cli("check-config", env={"COLLECTOR_DESTINATION": "/proc/trade-lake-landing"}, cwd=tmp_path)
    assert (
        done.returncode == 2
        and "COLLECTOR_DESTINATION='/proc/trade-lake-landing' cannot be made" in done.stderr
    )
    demo = run_cli("demo", "--destination", "/proc/trade-lake-landing", cwd=tmp_path, timeout=20)
    assert demo.returncode == 2 and "cannot be made" in demo.stderr


def test_the_directory_check_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "existing").mkdir()
    assert directory_problem(tmp_path / "existing", "COLLECTOR_SPOOL_DIR") is None
    assert directory_problem(tmp_path / "new" / "deeper", "COLLECTOR_SPOOL_DIR") is None
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["existing"]


@pytest.mark.parametrize(
    ("value", "said"),
    [("lots", "not a whole number"), ("1.5x", "not a whole number"), ("soon", "not a number")],
)
def test_number_settings_say_what_was_wrong_in_words(value: str, said: str) -> None:
    name = "SPOOL_MAX_BYTES" if "whole" in said else "MAX_BATCH_AGE_S"
    with pytest.raises(ConfigError) as info:
        load_settings({f"COLLECTOR_{name}": value})
    assert said in str(info.value) and "invalid literal" not in str(info.value)
    assert "could not convert" not in str(info.value)


def test_check_config_names_settings_as_a_user_sets_them_and_refuses_a_file_destination(
    tmp_path: Path,
) -> None:
    (tmp_path / "landing").write_text("oops")
    done = run_cli("check-config", env={"COLLECTOR_DESTINATION": str(tmp_path / "landing")}, cwd=tmp_path)
    assert done.returncode == 2
    assert "COLLECTOR_DESTINATION=" in done.stderr and "is a file, not a directory" in done.stderr
    printed = json.loads(done.stdout)
    assert "COLLECTOR_SYMBOLS" in printed and "symbols" not in printed
    run = run_cli("run", env={"COLLECTOR_DESTINATION": str(tmp_path / "landing")}, cwd=tmp_path)
    assert run.returncode == 2 and "is a file, not a directory" in run.stderr
    assert "permissions" not in run.stderr


@pytest.mark.parametrize("command", ["check-config", "run", "demo"])
def test_a_utf16_env_file_stops_every_command_with_exit_2_naming_it(tmp_path: Path, command: str) -> None:
    (tmp_path / ".env").write_bytes("COLLECTOR_SYMBOLS=ETHUSDT\n".encode("utf-16"))
    done = run_cli(command, *(["--seconds", "1"] if command == "demo" else []), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "env file '.env' is UTF-16 text" in done.stderr and "iconv -f UTF-16 -t UTF-8" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_broken_env_line_is_not_configuration_ok(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('this is not a setting\nCOLLECTOR_DESTINATION="unterminated\n')
    done = run_cli("check-config", cwd=tmp_path)
    assert done.returncode == 2
    assert "env file '.env', line 1: 'this is not a setting' is not NAME=value" in done.stderr
    assert "line 2: 'COLLECTOR_DESTINATION=\"unterminated' has a quote that is not closed" in done.stderr
    assert "configuration OK" not in done.stderr and "could not parse" not in done.stderr
    (tmp_path / "envdir").mkdir()
    directory = run_cli("check-config", "--env-file", "envdir", cwd=tmp_path)
    assert directory.returncode == 2 and "env file 'envdir' is a directory" in directory.stderr


# ---- run: unknown symbols, no network, the first lines ------------------------------------------------


# ---- status ---------------------------------------------------------------------------------------------


def test_status_prints_the_health_one_field_a_line_not_one_line_of_thousands(tmp_path: Path) -> None:
    import http.server

    health = {
        "healthy": True,
        "verdict": "ok",
        "last_trade_id": {f"S{i:04d}USDT": 10**12 + i for i in range(200)},
    }
    body = json.dumps(health).encode()

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = run_cli("status", "--port", str(server.server_address[1]), cwd=tmp_path)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == health and len(body) > 3_000
    assert max(len(line) for line in done.stdout.splitlines()) < 100


# ---- demo -------------------------------------------------------------------------------------------------


def test_demo_refuses_a_negative_time_and_an_unusable_directory(tmp_path: Path) -> None:
    negative = run_cli("demo", "--seconds", "-1", cwd=tmp_path)
    assert negative.returncode == 2 and "not a positive number of seconds" in negative.stderr
    (tmp_path / "file").write_text("x")
    unusable = run_cli("demo", "--destination", str(tmp_path / "file"), "--seconds", "1", cwd=tmp_path)
    assert unusable.returncode == 2 and "is a file, not a directory" in unusable.stderr


# ---- import and verify: a wrong name called by its name ------------------------------------------------


def test_import_and_verify_call_a_misspelt_symbol_a_typo_not_a_day_to_wait_for(tmp_path: Path) -> None:
    market = Market(("BTCUSDT",), 1_440)
    server = FeedServer(MarketTape(market, time.time_ns() // 1000), rate=0.0, archive=ArchiveFeed(market))
    (tmp_path / "lake").mkdir()
    with ThreadedFeed(server) as feed:
        rest = feed.url.replace("ws://", "http://")
        env = {"COLLECTOR_ARCHIVE_URL": rest, "COLLECTOR_REST_URL": rest, "COLLECTOR_SPOOL_DIR": "spool"}
        day = ["2024-12-30", "--destination", "lake"]
        imported = run_cli(
            "import", "--symbols", "BTCUSTD", "--from", day[0], "--to", *day, env=env, cwd=tmp_path
        )
        verified = run_cli("verify", "--symbols", "BTCUSTD", "--day", *day, env=env, cwd=tmp_path)
    for done, nothing in ((imported, "nothing was imported"), (verified, "nothing was compared")):
        assert done.returncode == 2, done.stderr
        assert f"--symbols: BTCUSTD is not a Binance spot symbol; closest: BTCUSDT; {nothing}" in done.stderr
        assert "later" not in done.stderr + done.stdout
    assert not list((tmp_path / "lake").iterdir())


def test_an_imports_days_are_the_same_days_in_its_log_and_its_summary(tmp_path: Path) -> None:
    market = Market(("BTCUSDT", "ETHUSDT"), 1_440)
    server = FeedServer(MarketTape(market, time.time_ns() // 1000), rate=0.0, archive=ArchiveFeed(market))
    with ThreadedFeed(server) as feed:
        rest = feed.url.replace("ws://", "http://")
        env = {"COLLECTOR_ARCHIVE_URL": rest, "COLLECTOR_REST_URL": rest, "COLLECTOR_SPOOL_DIR": "spool"}
        days = ["import", "--symbols", "BTCUSDT,ETHUSDT", "--from", "2024-12-29", "--to", "2024-12-30"]
        done = run_cli(*days, "--destination", "lake", env=env, cwd=tmp_path)
        tables = run_cli(*days, "--into", "table", "--destination", "lake2", env=env, cwd=tmp_path)
    for run, said in ((done, "into lake: 4 file(s)"), (tables, "into the tables (")):
        assert run.returncode == 0, run.stderr
        (started,) = [json.loads(line) for line in run.stderr.splitlines() if "import_started" in line]
        assert (started["days"], started["symbols"], started["files"]) == (2, 2, 4)
        assert run.stdout.startswith(f"imported 2 day(s) {said}"), run.stdout


def test_verify_refuses_a_landing_directory_that_does_not_exist_and_a_day_not_over(tmp_path: Path) -> None:
    env = {"COLLECTOR_ARCHIVE_URL": "http://127.0.0.1:9", "COLLECTOR_REST_URL": "http://127.0.0.1:9"}
    missing = run_cli(
        "verify", "--symbols", "BTCUSDT", "--day", "2024-12-30", "--destination", "nonexist-landing",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert missing.returncode == 2 and not missing.stdout
    assert "nonexist-landing does not exist; pass the landing directory" in missing.stderr
    (tmp_path / "lake").mkdir()
    future = run_cli("verify", "--symbols", "BTCUSDT", "--day", "2030-01-01", "--destination", "lake",
                     env=env, cwd=tmp_path)  # fmt: skip
    assert future.returncode == 2 and "--day 2030-01-01 has no archive yet" in future.stderr
    assert "later" not in future.stderr


# ---- flags that make no sense together, or at all ---------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["demo", "--rate", "-1"], "argument --rate: -1 must be 0 or more"),
        (["emulate", "--speed", "-2"], "argument --speed: -2 must be 0 or more"),
        (["emulate", "--count", "-5"], "argument --count: -5 must be 0 or more"),
        (["emulate", "--port", "70000"], "argument --port: 70000 is not a port number"),
        (["emulate", "--drop-every-s", "-5"], "argument --drop-every-s: -5 must be 0 or more"),
        (["status", "--wait", "-1"], "argument --wait: -1 must be 0 or more"),
        (["audit", ".", "--day", "2024-12-30", "--from", "2024-12-30T16:00"], "give one or the other"),
        (["audit", ".", "--day", "2024-12-30", "--to", "2024-12-30T16:00"], "give one or the other"),
        (["demo", "--from", "2024-12-30", "--to", "2024-12-31"], "add --archive"),
        (["emulate", "--replay", "x.gz", "--market"], "--replay serves a recording, --market a simulated"),
        (["emulate", "--clock-jump-s", "60"], "--clock-jump-every and --clock-jump-s: give both"),
    ],
)
def test_flags_that_make_no_sense_are_refused_with_the_reason(
    tmp_path: Path, argv: list[str], said: str
) -> None:
    done = run_cli(*argv, cwd=tmp_path, timeout=20)
    assert done.returncode == 2 and said in done.stderr, done.stderr
    assert not (tmp_path / "demo-landing").exists()


# ---- the stream's edge ------------------------------------------------------------------------------------


def test_a_close_frame_with_no_reason_is_answered_and_the_stream_goes_on() -> None:
    """Seen with real servers: a close frame with no payload (no code, no reason)."""
    import asyncio

    import structlog

    from collector.binance.stream import TradeStream

    served = 0
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        nonlocal served
        import base64
        import hashlib

        while served < 2:
            conn, _ = listener.accept()
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))  # fmt: skip
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())  # noqa: S324
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")  # fmt: skip
            payload = b"frame-%d" % served
            conn.sendall(
                bytes([0x81, len(payload)]) + payload + b"\x88\x00"
            )  # a text frame, then a bare close
            served += 1
            conn.settimeout(10)
            try:
                while conn.recv(4096):  # the client's close answer, then EOF
                    pass
            except OSError:
                pass
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    got: list[bytes] = []

    async def main() -> None:
        done = asyncio.Event()

        def on_chunk(frames: list[bytes], stamp: int) -> None:
            got.extend(frames)
            if len(got) >= 2:
                done.set()

        stream = TradeStream(f"ws://127.0.0.1:{port}/ws/btcusdt@trade", on_chunk, log=structlog.get_logger(),
                             initial_delay_s=0.01, max_delay_s=0.05)  # fmt: skip
        task = asyncio.create_task(stream.run())
        try:
            await asyncio.wait_for(done.wait(), timeout=60)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    listener.close()
    assert got == [b"frame-0", b"frame-1"]  # the listener survived the bare close and reconnected
