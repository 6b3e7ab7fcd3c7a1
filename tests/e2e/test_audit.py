"""The collector marks minutes in S3 over HTTP, and `collector audit` reads them there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import Proc, stop_cleanly, wait_for
from tests.support.audit import _audit, _capture


def test_the_collector_marks_minutes_in_s3_and_the_audit_reads_them_there(
    procs: Callable[..., Proc], tmp_path: Path, s3_bucket: tuple[Any, str], moto_endpoint: str
) -> None:
    client, bucket = s3_bucket
    extra = {
        "destination": f"s3://{bucket}/lake/",
        "s3_endpoint_url": moto_endpoint,
        "s3_region": "ap-northeast-1",
    }
    stop_cleanly(_capture(procs, tmp_path, **extra))
    env = {"COLLECTOR_S3_ENDPOINT_URL": moto_endpoint, "COLLECTOR_S3_REGION": "ap-northeast-1"}
    code, report = _audit(f"s3://{bucket}/lake/", env=env)
    assert code == 0 and report["ok"] and report["markers"] >= 4, report["problems"]

    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="lake/")["Contents"]]
    marker = next(k for k in keys if k.endswith("_SUCCESS"))
    head = client.head_object(Bucket=bucket, Key=marker)
    assert head["ServerSideEncryption"] == "AES256" and head["ContentType"] == "application/json"
    victim = next(
        k for k in keys if k.endswith(".parquet") and f"{k.rsplit('/', 1)[0]}/_SUCCESS" in keys and k > marker
    )
    client.delete_object(Bucket=bucket, Key=victim)
    code, report = wait_for(lambda: _audit(f"s3://{bucket}/lake/", env=env), what="audit")
    assert code == 1 and report["problem_counts"]["missing_file"] == 1
