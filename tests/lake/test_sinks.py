"""Sinks: the local directory and S3 over real HTTP (moto's server), idempotent, never overwriting."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from collector.config import S3Destination
from collector.exceptions import LandingConflict, SinkPermanentError, SinkUnavailable
from collector.lake.sinks import LocalSink, S3Sink

KEY = "Binance/BTCUSDT/2024/08/08/23/54/batch-1-2.parquet"


def test_local_sink_writes_the_layout_and_is_idempotent(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    assert sink.put(KEY, b"abc") == "created"
    assert (tmp_path / KEY).read_bytes() == b"abc"
    assert sink.put(KEY, b"abc") == "already_present"
    assert [p.name for p in (tmp_path / KEY).parent.iterdir()] == ["batch-1-2.parquet"]  # no temp files left


def test_local_sink_never_overwrites_different_bytes(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    sink.put(KEY, b"original")
    with pytest.raises(LandingConflict) as info:
        sink.put(KEY, b"other")
    assert (tmp_path / KEY).read_bytes() == b"original"
    assert info.value.existing_sha256 != info.value.local_sha256


def test_local_sink_unwritable_destination_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "Binance").write_text("a file where a directory must be")
    with pytest.raises(SinkPermanentError, match="COLLECTOR_DESTINATION"):
        LocalSink(tmp_path).put(KEY, b"x")


def s3_sink(client: Any, bucket: str, prefix: str = "") -> S3Sink:
    return S3Sink(S3Destination(bucket, prefix), client=client)


def test_s3_put_lands_with_checksum_and_encryption(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    data = b"parquet bytes"
    assert s3_sink(client, bucket, "raw/").put(KEY, data) == "created"
    head = client.head_object(Bucket=bucket, Key="raw/" + KEY, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert head["ServerSideEncryption"] == "AES256"
    assert client.get_object(Bucket=bucket, Key="raw/" + KEY)["Body"].read() == data


def test_s3_retried_put_of_the_same_bytes_counts_as_landed(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    sink = s3_sink(client, bucket)
    sink.put(KEY, b"same")
    assert sink.put(KEY, b"same") == "already_present"
    assert len(client.list_objects_v2(Bucket=bucket)["Contents"]) == 1


def test_s3_conflicting_bytes_are_reported_and_never_overwritten(s3_bucket: tuple[Any, str]) -> None:
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key=KEY, Body=b"someone else's bytes")  # no checksum stored
    with pytest.raises(LandingConflict) as info:
        s3_sink(client, bucket).put(KEY, b"ours")
    assert "not overwritten" in str(info.value)
    assert info.value.local_sha256 == base64.b64encode(hashlib.sha256(b"ours").digest()).decode()
    assert client.get_object(Bucket=bucket, Key=KEY)["Body"].read() == b"someone else's bytes"


def test_s3_missing_bucket_names_the_bucket_and_the_fix(s3_bucket: tuple[Any, str]) -> None:
    client, _ = s3_bucket
    with pytest.raises(SinkPermanentError) as info:
        s3_sink(client, "no-such-landing-bucket").put(KEY, b"x")
    message = str(info.value)
    assert 'landing bucket "no-such-landing-bucket" does not exist' in message
    assert "COLLECTOR_DESTINATION" in message
    assert "data stays in the spool" in message


def test_s3_unreachable_endpoint_is_transient(aws_env: dict[str, str]) -> None:
    import socket

    import boto3
    from botocore.config import Config

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="ap-northeast-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(SinkUnavailable, match="cannot reach S3"):
        s3_sink(client, "landing-bucket").put(KEY, b"x")


def test_a_full_landing_disk_is_tried_again_and_a_denied_one_is_not(tmp_path: Path) -> None:
    import errno

    sink = LocalSink(tmp_path)
    full = sink._unwritable(tmp_path / "k", "k", OSError(errno.ENOSPC, "No space left on device"))
    assert isinstance(full, SinkUnavailable) and "free space on its disk" in str(full)
    denied = sink._unwritable(tmp_path / "k", "k", OSError(errno.EACCES, "Permission denied"))
    assert isinstance(denied, SinkPermanentError)
