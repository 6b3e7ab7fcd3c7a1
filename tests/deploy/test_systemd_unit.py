"""The systemd unit: it verifies cleanly and is hardened to an exposure of 2.0 or lower."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "codedeploy" / "collector.service"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (.ci/run installs it)"
)


def test_unit_verifies_with_no_output_at_all(tmp_path: Path) -> None:
    """verify also checks that ExecStart exists; point it at a real binary, keep every other line."""
    text = UNIT.read_text()
    assert "ExecStart=/opt/collector/current/venv/bin/collector run\n" in text
    unit = tmp_path / "collector.service"
    unit.write_text(
        text.replace("ExecStart=/opt/collector/current/venv/bin/collector run", "ExecStart=/bin/true")
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_unit_exposure_is_two_or_lower() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    match = re.search(r"Overall exposure level for collector\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_unit_promises_what_the_collector_does() -> None:
    text = UNIT.read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["Type"] == "notify"
    assert settings["Restart"] == "always"
    assert settings["StateDirectory"] == "collector"
    assert settings["DynamicUser"] == "yes"
    assert settings["EnvironmentFile"] == "/opt/collector/.env"
    # systemd must give the collector more time than its own shutdown deadline (20 s by default).
    assert int(settings["TimeoutStopSec"]) > 20
    assert "WatchdogSec" in settings
    assert "COLLECTOR_SPOOL_DIR=/var/lib/collector/spool" in text
    assert "COLLECTOR_LOG_FORMAT=json" in text  # the journal gets JSON lines, never the console form
    assert "SocketBindAllow=tcp:9108" in text  # the health port, matching COLLECTOR_HEALTH_PORT's default
