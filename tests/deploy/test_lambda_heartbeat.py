"""The news-heartbeat Lambda against moto's S3 server over HTTP."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_handler() -> ModuleType:
    spec = importlib.util.spec_from_file_location("news_heartbeat", REPO / "lambda" / "news_heartbeat.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["news_heartbeat"] = module
    spec.loader.exec_module(module)
    return module


EVENT = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2026-11-22T21:05:00Z",
    "region": "ap-northeast-1",
    "resources": ["arn:aws:events:ap-northeast-1:123456789012:rule/trade-lake-news-heartbeat"],
    "detail": {},
}


@pytest.fixture
def lam(monkeypatch: pytest.MonkeyPatch, s3_bucket: tuple[Any, str], moto_endpoint: str) -> ModuleType:
    _, bucket = s3_bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.setenv("LANDING_BUCKET", bucket)
    monkeypatch.setenv("APP_VERSION", "abc123")
    monkeypatch.delenv("DATA_SOURCE", raising=False)
    return load_handler()


def test_heartbeat_lands_under_ext_with_a_payload_that_says_what_it_is(
    lam: ModuleType, s3_bucket: tuple[Any, str], capsys: pytest.CaptureFixture[str]
) -> None:
    client, bucket = s3_bucket
    result = lam.handler(EVENT, SimpleNamespace(aws_request_id="req-1"))
    assert result["key"] == "Ext/TEST/2026/11/22/20261122T210500Z-News.json"
    assert result["outcome"] == "written"
    obj = client.get_object(Bucket=bucket, Key=result["key"])
    payload = json.loads(obj["Body"].read())
    assert payload == {
        "kind": "heartbeat",
        "source": "TEST",
        "description": "External-ingestion heartbeat written by the news-heartbeat Lambda",
        "scheduled_time": "2026-11-22T21:05:00Z",
        "event_id": EVENT["id"],
        "rule": EVENT["resources"][0],
        "invocation_id": "req-1",
        "version": "abc123",
    }
    assert obj["ServerSideEncryption"] == "AES256"
    log = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert log["event"] == "heartbeat.landed" and log["key"] == result["key"]


def test_data_source_is_configurable(lam: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_SOURCE", "Reuters")
    assert lam.handler(EVENT, None)["key"].startswith("Ext/Reuters/2026/11/22/")


def test_a_retried_event_writes_the_same_key_once(lam: ModuleType, s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    first = lam.handler(EVENT, SimpleNamespace(aws_request_id="req-1"))
    second = lam.handler(EVENT, SimpleNamespace(aws_request_id="req-2"))
    assert first["key"] == second["key"]
    assert second["outcome"] == "already_written"
    listed = client.list_objects_v2(Bucket=bucket, Prefix="Ext/")["Contents"]
    assert len(listed) == 1
    body = json.loads(client.get_object(Bucket=bucket, Key=first["key"])["Body"].read())
    assert body["invocation_id"] == "req-1"  # the first write stands


def test_a_missing_bucket_is_a_clear_error(lam: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDING_BUCKET", "no-such-landing-bucket")
    with pytest.raises(lam.HeartbeatError, match='landing bucket "no-such-landing-bucket" does not exist'):
        lam.handler(EVENT, None)


def test_missing_settings_and_bad_events_are_clear_errors(
    lam: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(lam.HeartbeatError, match="no schedule 'time'"):
        lam.handler({"id": "x"}, None)
    with pytest.raises(lam.HeartbeatError, match="not an ISO 8601 timestamp"):
        lam.handler({**EVENT, "time": "yesterday"}, None)
    monkeypatch.setenv("DATA_SOURCE", "../etc")
    with pytest.raises(lam.HeartbeatError, match="not a safe path segment"):
        lam.handler(EVENT, None)
    monkeypatch.delenv("LANDING_BUCKET")
    with pytest.raises(lam.HeartbeatError, match="LANDING_BUCKET is not set"):
        lam.handler(EVENT, None)
