"""How S3's refusals are told apart: botocore's Stubber answers, one function under test."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from collector.config import S3Destination
from collector.exceptions import SinkPermanentError, SinkUnavailable
from collector.lake.sinks import S3Sink

KEY = "Binance/BTCUSDT/2024/08/08/23/54/batch-1-2.parquet"


def sink_answering(code: str, status: int, message: str = "") -> S3Sink:
    client = boto3.client(
        "s3",
        region_name="ap-northeast-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",  # noqa: S106 (a stub)
    )
    stubber = Stubber(client)
    stubber.add_client_error(
        "put_object", service_error_code=code, service_message=message, http_status_code=status
    )
    stubber.activate()
    return S3Sink(S3Destination("landing-zone", "raw/"), client=client, region="ap-northeast-1")


@pytest.mark.parametrize(
    ("code", "status", "message", "says"),
    [
        (
            "AccessDenied",
            403,
            "Access Denied",
            "grant s3:PutObject on arn:aws:s3:::landing-zone/raw/Binance/*",
        ),
        ("KMS.DisabledException", 400, "key is disabled", "enable the key or grant"),
        ("AccessDenied", 403, "not authorized to perform kms:GenerateDataKey", "the KMS key for"),
        ("InvalidAccessKeyId", 403, "", "AWS rejected the credentials"),
        ("NoSuchBucket", 404, "", 'landing bucket "landing-zone" does not exist in ap-northeast-1'),
    ],
)
def test_permanent_errors_say_what_to_fix(code: str, status: int, message: str, says: str) -> None:
    with pytest.raises(SinkPermanentError) as info:
        sink_answering(code, status, message).put(KEY, b"x")
    assert says in str(info.value)
    assert "s3://landing-zone/raw/" + KEY in str(info.value) or "landing-zone" in str(info.value)


@pytest.mark.parametrize(
    ("code", "status"), [("SlowDown", 503), ("InternalError", 500), ("RequestTimeout", 400)]
)
def test_throttling_and_server_errors_are_transient(code: str, status: int) -> None:
    with pytest.raises(SinkUnavailable):
        sink_answering(code, status).put(KEY, b"x")
