"""News heartbeat: an EventBridge-scheduled Lambda that proves the external-ingestion path works.

Each scheduled event writes one small JSON object to the landing bucket:

    Ext/{dataSource}/YYYY/MM/DD/{YYYYMMDDTHHMMSSZ}-News.json

The key comes from the event's schedule time, so a retried delivery of the same event targets
the same key; the write is conditional (`If-None-Match: *`), so the retry finds the object and
succeeds without writing twice. Only boto3 (in the Lambda runtime) is needed.

Environment:
    LANDING_BUCKET    the landing bucket (required)
    DATA_SOURCE       the `{dataSource}` path segment (default TEST)
    KMS_KEY_ID        SSE-KMS key id or ARN; empty means SSE-S3 (AES256)
    APP_VERSION       recorded in the payload (set by the deployment)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError

__all__ = ["HeartbeatError", "handler", "heartbeat_key", "heartbeat_payload"]

_DATA_SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class HeartbeatError(Exception):
    """The heartbeat could not be written; the message says what to fix."""


def _log(event: str, **fields: Any) -> None:
    line = {"event": event, "timestamp": datetime.now(UTC).isoformat(), **fields}
    print(json.dumps(line, default=str), file=sys.stdout, flush=True)


def _schedule_time(event: dict[str, Any]) -> datetime:
    raw = event.get("time")
    if not isinstance(raw, str):
        raise HeartbeatError(
            f"event has no schedule 'time' (got {raw!r}); is this an EventBridge scheduled event?"
        )
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise HeartbeatError(f"event 'time' {raw!r} is not an ISO 8601 timestamp") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def heartbeat_key(data_source: str, scheduled: datetime) -> str:
    return f"Ext/{data_source}/{scheduled:%Y/%m/%d}/{scheduled:%Y%m%dT%H%M%SZ}-News.json"


def heartbeat_payload(event: dict[str, Any], data_source: str, scheduled: datetime, request_id: str) -> bytes:
    payload = {
        "kind": "heartbeat",
        "source": data_source,
        "description": "External-ingestion heartbeat written by the news-heartbeat Lambda",
        "scheduled_time": scheduled.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "event_id": event.get("id"),
        "rule": (event.get("resources") or [None])[0],
        "invocation_id": request_id,
        "version": os.environ.get("APP_VERSION", "unknown"),
    }
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()


def _settings() -> tuple[str, str, str | None]:
    bucket = os.environ.get("LANDING_BUCKET", "").strip()
    if not bucket:
        raise HeartbeatError("LANDING_BUCKET is not set; set it to the landing bucket's name")
    data_source = os.environ.get("DATA_SOURCE", "TEST").strip() or "TEST"
    if not _DATA_SOURCE_RE.fullmatch(data_source):
        raise HeartbeatError(
            f"DATA_SOURCE {data_source!r} is not a safe path segment "
            "(letters, digits, '_' and '-', at most 64)"
        )
    kms_key = os.environ.get("KMS_KEY_ID", "").strip() or None
    return bucket, data_source, kms_key


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    bucket, data_source, kms_key = _settings()
    scheduled = _schedule_time(event)
    key = heartbeat_key(data_source, scheduled)
    request_id = getattr(context, "aws_request_id", "local")
    body = heartbeat_payload(event, data_source, scheduled, request_id)
    encryption: dict[str, Any] = {"ServerSideEncryption": "AES256"}
    if kms_key:
        encryption = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key}
    client = boto3.client("s3")
    try:
        client.put_object(
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            IfNoneMatch="*",
            ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
            **encryption,
        )
        outcome = "written"
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "PreconditionFailed":
            outcome = "already_written"  # a retried delivery of the same scheduled event
        elif code == "NoSuchBucket":
            _log("heartbeat.failed", bucket=bucket, key=key, error=code)
            raise HeartbeatError(
                f'landing bucket "{bucket}" does not exist; fix LANDING_BUCKET or create the bucket'
            ) from exc
        elif code in ("AccessDenied", "AllAccessDisabled") or "KMS" in code:
            _log("heartbeat.failed", bucket=bucket, key=key, error=code)
            raise HeartbeatError(
                f"access denied writing s3://{bucket}/{key} ({code}); the function's role needs "
                f"s3:PutObject on arn:aws:s3:::{bucket}/Ext/* (and kms:GenerateDataKey on the key)"
            ) from exc
        else:
            _log("heartbeat.failed", bucket=bucket, key=key, error=code)
            raise
    _log(
        "heartbeat.landed",
        bucket=bucket,
        key=key,
        outcome=outcome,
        event_id=event.get("id"),
        invocation_id=request_id,
    )
    return {"bucket": bucket, "key": key, "outcome": outcome}
