"""The CodeDeploy hooks run for real against a temporary root: SSM from moto's server, a real
venv and pip install of the bundle, the real collector started by a stand-in for systemctl."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from collector.lake.sinks import LocalSink
from tests.conftest import REPO, Proc, collector_env, free_port, start_emulator, stop_cleanly, wait_for
from tests.support.lake_days import land_symbol_day

HOOKS = ["application_stop", "before_install", "after_install", "application_start", "validate_service"]
BUNDLE = [
    "appspec.yml",
    "codedeploy",
    "collector",
    "pyproject.toml",
    "README.md",
    "CHANGELOG.md",
    ".env.example",
]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


class Deployer:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env

    def copy_bundle(self) -> None:
        """What CodeDeploy does between BeforeInstall and AfterInstall."""
        incoming = self.root / "incoming"
        for name in BUNDLE:
            source = REPO / name
            if source.is_dir():
                shutil.copytree(source, incoming / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, incoming / name)

    def hook(self, name: str, deployment: str) -> subprocess.CompletedProcess[str]:
        env = {**self.env, "DEPLOYMENT_ID": deployment, "LIFECYCLE_EVENT": name}
        return subprocess.run(
            ["bash", str(REPO / "codedeploy" / "scripts" / f"{name}.sh")],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    def deploy(
        self, deployment: str, *, twice: tuple[str, ...] = ()
    ) -> dict[str, subprocess.CompletedProcess[str]]:
        results = {}
        for name in HOOKS:
            if name == "after_install":
                self.copy_bundle()
            for _ in range(2 if name in twice else 1):
                results[name] = self.hook(name, deployment)
                if results[name].returncode != 0:
                    return results
        return results

    def current(self) -> str:
        return os.readlink(self.root / "current").rsplit("/", 1)[-1]

    def previous(self) -> str:
        return os.readlink(self.root / "previous").rsplit("/", 1)[-1]

    def calls(self) -> list[str]:
        return (self.root / ".fake-systemd" / "calls").read_text().splitlines()


def test_install_reinstall_and_a_failed_validation_that_keeps_the_previous_release(
    procs: Callable[..., Proc], tmp_path: Path, moto_endpoint: str, aws_env: dict[str, str]
) -> None:
    import boto3

    ssm = boto3.client("ssm", endpoint_url=moto_endpoint, region_name="ap-northeast-1")
    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--rate", "50")
    port = free_port()
    root = tmp_path / "opt-collector"
    good_env = (
        f"COLLECTOR_WS_URL={url}\nCOLLECTOR_DESTINATION={tmp_path / 'landing'}\n"
        f"COLLECTOR_SPOOL_DIR={tmp_path / 'spool'}\nCOLLECTOR_HEALTH_PORT={port}\n"
    )
    ssm.put_parameter(Name="/test/deploy/env", Type="SecureString", Value=good_env, Overwrite=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")},
        **aws_env,
        "AWS_ENDPOINT_URL_SSM": moto_endpoint,
        "TRADE_LAKE_ROOT": str(root),
        "TRADE_LAKE_UNIT_DIR": str(tmp_path / "systemd"),
        "TRADE_LAKE_SYSTEMCTL": str(REPO / "tests" / "support" / "fake_systemctl.sh"),
        "TRADE_LAKE_PYTHON": sys.executable,
        "TRADE_LAKE_SSM_PARAMETER": "/test/deploy/env",
        "TRADE_LAKE_DEPLOY_CONFIG": str(tmp_path / "no-deploy.env"),
        "TRADE_LAKE_VALIDATE_TIMEOUT_S": "90",
    }
    deployer = Deployer(root, env)
    try:
        # ---- first install; every hook but the slow build also runs twice, as a retry would
        results = deployer.deploy(
            "d-first", twice=("application_stop", "before_install", "application_start", "validate_service")
        )
        assert all(r.returncode == 0 for r in results.values()), _explain(results)
        assert deployer.current() == "d-first"
        assert not (root / "previous").exists()
        release = root / "releases" / "d-first"
        assert (release / "venv" / "bin" / "collector").exists()
        assert stat.S_IMODE((release / ".env").stat().st_mode) == 0o600
        assert (release / ".env").read_text() == good_env
        for unit in ("collector.service", "collector-compact.service", "collector-compact.timer"):
            assert (tmp_path / "systemd" / unit).read_text() == (REPO / "codedeploy" / unit).read_text()
        calls = deployer.calls()
        assert "enable collector.service" in calls
        assert calls.index("daemon-reload") < calls.index("enable collector-compact.timer")
        assert calls.index("start collector.service") < calls.index("restart collector-compact.timer")
        assert _healthy(port)

        # ---- the timer's compactor, beside the running collector: the release's own venv and
        # .env, its staging in the collector's spool
        land_symbol_day(LocalSink(tmp_path / "landing"), "ETHUSDT", date(2025, 11, 24), 1, {0: 3, 700: 9})
        start = [env["TRADE_LAKE_SYSTEMCTL"], "start", "collector-compact.service"]
        compact = subprocess.run(start, env=env, capture_output=True, text=True, timeout=600, check=False)
        log = (root / ".fake-systemd" / "compact.log").read_text()
        assert compact.returncode == 0, log
        assert "2025-11-24 committed: 12 trades" in log, log
        assert (tmp_path / "spool" / "compact" / "intents").is_dir()
        assert _healthy(port)

        # ---- a second deployment replaces it and keeps the first as previous
        results = deployer.deploy("d-second")
        assert all(r.returncode == 0 for r in results.values()), _explain(results)
        assert (deployer.current(), deployer.previous()) == ("d-second", "d-first")
        assert _healthy(port)

        # ---- a release whose settings cannot capture fails validation; the previous one stays
        bad_env = good_env.replace(url, f"ws://127.0.0.1:{free_port()}")
        ssm.put_parameter(Name="/test/deploy/env", Type="SecureString", Value=bad_env, Overwrite=True)
        deployer.env["TRADE_LAKE_VALIDATE_TIMEOUT_S"] = "8"
        results = deployer.deploy("d-broken")
        assert results["validate_service"].returncode == 1, _explain(results)
        assert "did not report healthy" in results["validate_service"].stdout
        assert deployer.current() == "d-second"
        assert (root / "releases" / "d-second" / "venv").is_dir()
        assert (root / "releases" / "d-first").is_dir()
        wait_for(lambda: _healthy(port), what="the previous release healthy again")
    finally:
        subprocess.run(
            [env["TRADE_LAKE_SYSTEMCTL"], "stop", "collector.service"], env=env, check=False, timeout=120
        )


def _healthy(port: int) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            doc: dict[str, Any] = json.loads(response.read())
            return bool(doc["healthy"])
    except (urllib.error.URLError, OSError):
        return False


def _explain(results: dict[str, subprocess.CompletedProcess[str]]) -> str:
    return "\n".join(f"--- {name} ({r.returncode})\n{r.stdout}\n{r.stderr}" for name, r in results.items())


def test_application_start_waits_for_the_spool_to_be_free_and_says_who_holds_it(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    """A collector started by hand holds the spool: the hook stops the unit, waits for the lock,
    fails naming the holder when it does not come free, and starts the new release once it does
    (rather than racing it: the new one would exit 2 and systemd would retry it in a loop)."""
    from collector.lock import holder_of

    _, url = start_emulator(procs, "--symbols", "BTCUSDT", "--rate", "50")
    root, spool = tmp_path / "opt-collector", tmp_path / "spool"
    release = root / "releases" / "d-new"  # built as AfterInstall would, with this checkout's venv
    (release / "venv" / "bin").mkdir(parents=True)
    (release / "venv" / "bin" / "collector").symlink_to(Path(sys.executable).parent / "collector")
    (release / ".env").write_text(
        f"COLLECTOR_WS_URL={url}\nCOLLECTOR_DESTINATION={tmp_path / 'landing'}\n"
        f"COLLECTOR_SPOOL_DIR={spool}\nCOLLECTOR_HEALTH_PORT=0\n"
    )
    (release / ".complete").touch()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")},
        "TRADE_LAKE_ROOT": str(root),
        "TRADE_LAKE_UNIT_DIR": str(tmp_path / "systemd"),
        "TRADE_LAKE_SYSTEMCTL": str(REPO / "tests" / "support" / "fake_systemctl.sh"),
        "TRADE_LAKE_DEPLOY_CONFIG": str(tmp_path / "no-deploy.env"),
        "TRADE_LAKE_LOCK_WAIT_S": "2",
    }
    deployer = Deployer(root, env)
    by_hand = procs("run", env=collector_env(url, tmp_path))
    by_hand.wait_event("collector.started")
    try:
        failed = deployer.hook("application_start", "d-new")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert f"the spool {spool} is still held by process {by_hand.popen.pid}" in failed.stdout
        assert "stop that process, then retry the deployment" in failed.stdout
        assert "start collector.service" not in deployer.calls()  # never started beside it

        deployer.env["TRADE_LAKE_LOCK_WAIT_S"] = "120"
        hook = subprocess.Popen(
            ["bash", str(REPO / "codedeploy" / "scripts" / "application_start.sh")],
            env={**deployer.env, "DEPLOYMENT_ID": "d-new", "LIFECYCLE_EVENT": "ApplicationStart"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(lambda: deployer.calls().count("stop collector.service") == 2, what="the hook's stop")
        stop_cleanly(by_hand)  # it lets go: the hook goes on
        out, _ = hook.communicate(timeout=120)
        assert hook.returncode == 0, out
        calls = deployer.calls()
        last_stop = len(calls) - 1 - calls[::-1].index("stop collector.service")
        assert calls.count("start collector.service") == 1  # once, after the wait that followed the stop
        assert calls.index("start collector.service") > last_stop
        pid = int((root / ".fake-systemd" / "collector.pid").read_text())
        wait_for(lambda: holder_of(spool) == pid, what="the new release's collector holding the spool")
    finally:
        subprocess.run([env["TRADE_LAKE_SYSTEMCTL"], "stop", "collector.service"], env=env, check=False,
                       timeout=120)  # fmt: skip
