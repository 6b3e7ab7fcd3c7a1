"""Settings from SSM Parameter Store (moto's server over HTTP): at start, and as a deployment's .env."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Proc


@pytest.fixture
def ssm(moto_endpoint: str, aws_env: dict[str, str]) -> tuple[Any, dict[str, str]]:
    import boto3

    client = boto3.client("ssm", endpoint_url=moto_endpoint, region_name="ap-northeast-1")
    return client, {**aws_env, "AWS_ENDPOINT_URL_SSM": moto_endpoint}


def test_settings_are_read_from_the_parameter_and_the_environment_wins(
    procs: Callable[..., Proc], tmp_path: Path, ssm: tuple[Any, dict[str, str]]
) -> None:
    client, env = ssm
    client.put_parameter(
        Name="/test/collector/env-a",
        Type="SecureString",
        Value="COLLECTOR_SYMBOLS=ETHUSDT,BNBUSDT\nCOLLECTOR_FORMAT=csv.gz\n",
        Overwrite=True,
    )
    env.update({"COLLECTOR_SSM_PARAMETER": "/test/collector/env-a", "COLLECTOR_FORMAT": "parquet"})
    proc = procs("check-config", env=env, cwd=tmp_path)
    assert proc.popen.wait(timeout=60) == 0, proc.stderr
    printed = json.loads("".join(proc.lines))
    assert printed["COLLECTOR_SYMBOLS"] == "ETHUSDT,BNBUSDT"
    assert printed["COLLECTOR_FORMAT"] == "parquet"


def test_a_missing_parameter_is_a_clear_error(
    procs: Callable[..., Proc], tmp_path: Path, ssm: tuple[Any, dict[str, str]]
) -> None:
    _, env = ssm
    env["COLLECTOR_SSM_PARAMETER"] = "/test/collector/nope"
    proc = procs("run", env=env, cwd=tmp_path)
    assert proc.popen.wait(timeout=60) == 2
    assert "SSM parameter '/test/collector/nope' does not exist in ap-northeast-1" in proc.stderr
    assert "fix COLLECTOR_SSM_PARAMETER" in proc.stderr


def test_a_bad_setting_in_the_parameter_names_the_setting(
    procs: Callable[..., Proc], tmp_path: Path, ssm: tuple[Any, dict[str, str]]
) -> None:
    client, env = ssm
    client.put_parameter(
        Name="/test/collector/env-b", Type="SecureString", Value="COLLECTOR_FORMAT=xml\n", Overwrite=True
    )
    env["COLLECTOR_SSM_PARAMETER"] = "/test/collector/env-b"
    proc = procs("check-config", env=env, cwd=tmp_path)
    assert proc.popen.wait(timeout=60) == 2
    assert "COLLECTOR_FORMAT='xml' is invalid" in proc.stderr


def test_fetch_env_writes_an_owner_only_file(
    procs: Callable[..., Proc], tmp_path: Path, ssm: tuple[Any, dict[str, str]]
) -> None:
    client, env = ssm
    client.put_parameter(
        Name="/test/collector/env-c", Type="SecureString", Value="COLLECTOR_SYMBOLS=BTCUSDT", Overwrite=True
    )
    out = tmp_path / "release" / ".env"
    proc = procs("fetch-env", "--parameter", "/test/collector/env-c", "--output", str(out), env=env)
    assert proc.popen.wait(timeout=60) == 0, proc.stderr
    assert out.read_text() == "COLLECTOR_SYMBOLS=BTCUSDT\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "COLLECTOR_SYMBOLS" in "".join(proc.lines) and "BTCUSDT" not in "".join(
        proc.lines
    )  # names, not values


def test_fetch_env_refuses_a_parameter_that_would_not_start_the_collector(
    procs: Callable[..., Proc], tmp_path: Path, ssm: tuple[Any, dict[str, str]]
) -> None:
    client, env = ssm
    client.put_parameter(
        Name="/test/collector/env-d",
        Type="SecureString",
        Value="COLLECTOR_MAX_BATCH_BYTES=-1\n",
        Overwrite=True,
    )
    out = tmp_path / ".env"
    proc = procs("fetch-env", "--parameter", "/test/collector/env-d", "--output", str(out), env=env)
    assert proc.popen.wait(timeout=60) == 2
    assert "COLLECTOR_MAX_BATCH_BYTES='-1' is invalid" in proc.stderr
    assert not out.exists()
