"""The systemd units: the collector's service, and the daily compactor's service and timer. They
verify cleanly and are hardened: the collector to an exposure of 2.0 or lower, the compactor to
1.5 or lower with every hardening line of the collector's."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CODEDEPLOY = Path(__file__).resolve().parents[2] / "codedeploy"
UNIT = CODEDEPLOY / "collector.service"
COMPACT = CODEDEPLOY / "collector-compact.service"
TIMER = CODEDEPLOY / "collector-compact.timer"
EXEC = {
    UNIT: "ExecStart=/opt/collector/current/venv/bin/collector run\n",
    COMPACT: "ExecStart=/opt/collector/current/venv/bin/collector compact\n",
}

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (.ci/run installs it)"
)


def settings(path: Path) -> dict[str, str]:
    """Each `key=value` line; a key given twice keeps its values joined by newlines."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = f"{out[key]}\n{value}" if key in out else value
    return out


def hardening(path: Path) -> list[str]:
    """The lines of the unit's hardening section (to the end of [Service])."""
    section = path.read_text().split("# ---- hardening", 1)[1].split("\n[", 1)[0]
    return [line for line in section.splitlines()[1:] if line and not line.startswith("#")]


@needs_systemd
def test_units_verify_with_no_output_at_all(tmp_path: Path) -> None:
    """verify also checks that ExecStart exists; point it at a real binary, keep every other line.
    The timer is verified with the service it starts."""
    for unit, line in EXEC.items():
        text = unit.read_text()
        assert line in text
        (tmp_path / unit.name).write_text(text.replace(line, "ExecStart=/bin/true\n"))
    shutil.copy(TIMER, tmp_path / TIMER.name)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / u.name) for u in (UNIT, COMPACT, TIMER))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def exposure(unit: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = re.search(rf"Overall exposure level for {re.escape(unit.name)}: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@needs_systemd
def test_unit_exposure_is_two_or_lower() -> None:
    assert exposure(UNIT) <= 2.0


@needs_systemd
def test_the_compactors_exposure_is_one_and_a_half_or_lower() -> None:
    assert exposure(COMPACT) <= 1.5


def test_unit_promises_what_the_collector_does() -> None:
    text = UNIT.read_text()
    s = settings(UNIT)
    assert s["Type"] == "notify"
    assert s["Restart"] == "always"
    assert s["StateDirectory"] == "collector"
    assert s["DynamicUser"] == "yes"
    assert s["EnvironmentFile"] == "/opt/collector/.env"
    # systemd must give the collector more time than its own shutdown deadline (20 s by default).
    assert int(s["TimeoutStopSec"]) > 20
    assert "WatchdogSec" in s
    assert "COLLECTOR_SPOOL_DIR=/var/lib/collector/spool" in text
    assert "COLLECTOR_LOG_FORMAT=json" in text  # the journal gets JSON lines, never the console form
    assert "SocketBindAllow=tcp:9108" in text  # the health port, matching COLLECTOR_HEALTH_PORT's default


def test_the_compactor_runs_once_with_the_collectors_settings_user_and_spool() -> None:
    collector, compact = settings(UNIT), settings(COMPACT)
    assert compact["Type"] == "oneshot" and "Restart" not in compact  # the timer starts it again
    # The same settings, the same dynamic user (one UID), the same state directory and spool.
    for key in ("EnvironmentFile", "DynamicUser", "User", "Group", "StateDirectory", "StateDirectoryMode",
                "WorkingDirectory", "Environment", "UMask"):  # fmt: skip
        assert compact[key] == collector[key], key
    assert "COLLECTOR_SPOOL_DIR=/var/lib/collector/spool" in compact["Environment"]
    # Nothing that would keep it from writing the spool's compact/ folder, or lock it out.
    assert not {"ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "ReadWritePaths"} & set(compact)
    # A deadline for a run; the collector wins CPU, disk and memory when they compete.
    assert compact["TimeoutStartSec"] == "3h"
    assert int(compact["Nice"]) > 0 and int(compact["CPUWeight"]) < 100 and int(compact["IOWeight"]) < 100
    assert compact["MemoryMax"] and int(compact["OOMScoreAdjust"]) > 0
    assert "[Install]" not in COMPACT.read_text()  # started by its timer, never at boot by itself


def test_the_compactor_is_hardened_like_the_collector_without_a_port() -> None:
    ours = hardening(COMPACT)
    assert [line for line in hardening(UNIT) if not line.startswith("SocketBindAllow=")] == ours
    assert "SocketBindDeny=any" in ours and not any(line.startswith("SocketBindAllow=") for line in ours)


def test_the_timer_starts_the_compactor_daily_after_midnight_utc() -> None:
    timer = settings(TIMER)
    assert timer["OnCalendar"] == "*-*-* 00:20:00 UTC"
    assert timer["Persistent"] == "true"  # a run missed while the instance was down happens at boot
    assert timer["Unit"] == COMPACT.name
    assert timer["RandomizedDelaySec"] == "5min"
    assert timer["WantedBy"] == "timers.target"


@needs_systemd
def test_the_timers_calendar_is_twenty_past_midnight_utc() -> None:
    result = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=2", settings(TIMER)["OnCalendar"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={"TZ": "Asia/Tokyo", "PATH": "/usr/bin:/bin"},  # the instance's zone does not move it
    )
    # Each elapse in UTC: on its own "(in UTC)" line, or on the elapse's line where local is UTC.
    times = [m.group(1) for line in result.stdout.splitlines() if not line.startswith("Normalized")
             if (m := re.search(r"\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d) UTC$", line))]  # fmt: skip
    assert times == ["00:20:00", "00:20:00"], result.stdout
