"""Where objects land: an S3 bucket or a local directory, with the same keys and guarantees.

Both sinks are idempotent and never overwrite: writing a key that already holds the same
bytes counts as landed; a key that holds other bytes raises LandingConflict with both
checksums. S3 writes use `If-None-Match: *` (a conditional write) and a SHA-256 checksum
that S3 verifies before it accepts the object.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from collector.exceptions import LandingConflict, SinkError, SinkPermanentError, SinkUnavailable
from collector.files import fsync_directory, write_atomically
from collector.lake.layout import exchange_root, latest_trade_id, marker_key

if TYPE_CHECKING:
    from collector.config import S3Destination, Settings

__all__ = ["LocalSink", "PutOutcome", "S3Sink", "Sink", "make_sink", "sha256_b64", "write_marker"]

PutOutcome = Literal["created", "already_present"]


def sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def make_sink(settings: Settings) -> Sink:
    """The sink COLLECTOR_DESTINATION names: an S3 bucket (and prefix) or a local directory."""
    from collector.config import S3Destination

    if isinstance(settings.destination, S3Destination):
        return S3Sink(
            settings.destination,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            sse=settings.s3_sse,
            kms_key_id=settings.s3_kms_key_id,
        )
    return LocalSink(settings.destination)


class Sink(Protocol):
    def put(self, key: str, data: bytes, *, source: Path | None = None) -> PutOutcome:
        """Land `data` at `key` unless it is there already; `source` is a durable file holding
        the same bytes (the spooled copy), which a sink on the same disk may link instead."""

    def probe(self) -> None:
        """Raise SinkPermanentError or SinkUnavailable unless the destination can take objects."""

    def latest_trade_id(self, symbol: str, now_s: float, lookback_hours: int = 48) -> int | None:
        """The highest trade id landed for `symbol` in the last `lookback_hours`, if any."""

    def put_marker(self, key: str, data: bytes) -> None:
        """Write a completion marker, replacing any earlier one (markers are rewritten on backfill)."""

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no such key."""

    def list_keys(self, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object under `prefix`, keys relative to the sink's root, sorted."""

    def list_stamped(self, prefix: str) -> list[tuple[str, int, str]]:
        """(key, size, stamp) of every object under `prefix`, sorted: the stamp changes whenever the
        object is written again (S3's ETag; a file's modification time)."""

    def list_dirs(self, prefix: str) -> list[str]:
        """The names one level below `prefix` (a folder path ending in /) that hold objects."""

    def describe(self, key: str = "") -> str: ...


@dataclass(frozen=True, slots=True)
class LocalSink:
    """A directory with the landing layout; writes are atomic and durable."""

    root: Path

    def describe(self, key: str = "") -> str:
        return str(self.root / key)

    def latest_trade_id(self, symbol: str, now_s: float, lookback_hours: int = 48) -> int | None:
        return latest_trade_id(
            lambda prefix: [k for k, _ in self.list_keys(prefix)], symbol, now_s, lookback_hours
        )

    def probe(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SinkPermanentError(
                f"landing directory {self.root} is not writable: {exc.strerror}; "
                "fix its permissions or set COLLECTOR_DESTINATION",
                key="",
            ) from exc

    def _unwritable(self, path: Path, key: str, exc: OSError) -> SinkError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # passes once space is freed: tried again
            return SinkUnavailable(f"cannot write {path}: {exc.strerror}; free space on its disk", key=key)
        return SinkPermanentError(
            f"cannot write {path}: {exc.strerror}; make {self.root} writable or set COLLECTOR_DESTINATION",
            key=key,
        )

    def put_marker(self, key: str, data: bytes) -> None:
        path = self.root / key
        try:
            write_atomically(path, data, replace=True)
        except OSError as exc:
            raise self._unwritable(path, key, exc) from exc

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def list_dirs(self, prefix: str) -> list[str]:
        base = self.root / prefix
        return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []

    def list_keys(self, prefix: str) -> list[tuple[str, int]]:
        return [(key, size) for key, size, _ in self.list_stamped(prefix)]

    def list_stamped(self, prefix: str) -> list[tuple[str, int, str]]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        found = []
        root = str(self.root) + os.sep
        for folder, _, names in os.walk(base):
            for name in names:
                if name.startswith("."):  # dot files are writes in flight
                    continue
                path = os.path.join(folder, name)
                try:
                    stat = os.stat(path)
                except FileNotFoundError:
                    continue  # gone between the listing and the look
                key = path.removeprefix(root).replace(os.sep, "/")
                found.append((key, stat.st_size, str(stat.st_mtime_ns)))
        return sorted(found)

    def put(self, key: str, data: bytes, *, source: Path | None = None) -> PutOutcome:
        path = self.root / key
        try:
            if source is not None and _link(source, path):
                return "created"  # the spooled file itself, already fsynced: no second copy
            if write_atomically(path, data, replace=False):
                return "created"
            existing = path.read_bytes()
        except OSError as exc:
            raise self._unwritable(path, key, exc) from exc
        if existing == data:
            return "already_present"
        raise LandingConflict(
            f"{path} already exists with different content; it was left untouched",
            key=key,
            existing_sha256=sha256_b64(existing),
            local_sha256=sha256_b64(data),
        )


_TRANSIENT_CODES = {
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
    "ConditionalRequestConflict",
    "OperationAborted",
}
_KMS_CODES = {
    "KMS.DisabledException",
    "KMS.NotFoundException",
    "KMS.KMSInvalidStateException",
    "KMS.AccessDeniedException",
}
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
}


class S3Sink:
    """An S3 bucket (and key prefix). Blocking: call it from a worker thread."""

    def __init__(
        self,
        destination: S3Destination,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        sse: str = "AES256",
        kms_key_id: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = destination.bucket
        self.prefix = destination.prefix
        self.sse = sse
        self.kms_key_id = kms_key_id
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                config=Config(
                    # Our own retry loop backs off for minutes; botocore's few quick retries
                    # smooth over single dropped connections first.
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=5,
                    read_timeout=30,
                    request_checksum_calculation="when_required",
                ),
            )
        self.client = client
        self.region = region or getattr(client.meta, "region_name", None) or "the configured region"

    def describe(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def latest_trade_id(self, symbol: str, now_s: float, lookback_hours: int = 48) -> int | None:
        return latest_trade_id(
            lambda prefix: [k for k, _ in self.list_keys(prefix)], symbol, now_s, lookback_hours
        )

    def probe(self) -> None:
        """List one key under the trade prefix: proves the bucket exists and we may use it."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=exchange_root(self.prefix), MaxKeys=1)
        except ClientError as exc:
            raise self._classify(exc, "") from exc
        except BotoCoreError as exc:
            raise self._classify_botocore(exc, "") from exc

    def put(self, key: str, data: bytes, *, source: Path | None = None) -> PutOutcome:
        from botocore.exceptions import BotoCoreError, ClientError

        full_key = self.prefix + key
        checksum = sha256_b64(data)
        extra: dict[str, str] = {"ServerSideEncryption": self.sse}
        if self.kms_key_id:
            extra["SSEKMSKeyId"] = self.kms_key_id
        try:
            response = self.client.put_object(
                Bucket=self.bucket,
                Key=full_key,
                Body=data,
                IfNoneMatch="*",
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
                **extra,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "PreconditionFailed" or _status(exc) == 412:
                return self._compare_existing(full_key, key, checksum)
            raise self._classify(exc, key) from exc
        except BotoCoreError as exc:
            raise self._classify_botocore(exc, key) from exc
        returned = response.get("ChecksumSHA256")
        if returned is not None and returned != checksum:
            raise SinkUnavailable(
                f"S3 confirmed {self.describe(key)} with checksum {returned}, "
                f"expected {checksum}; will retry",
                key=key,
            )
        return "created"

    def put_marker(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        extra: dict[str, str] = {"ServerSideEncryption": self.sse}
        if self.kms_key_id:
            extra["SSEKMSKeyId"] = self.kms_key_id
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=data,
                ContentType="application/json",
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=sha256_b64(data),
                **extra,
            )
        except ClientError as exc:
            raise self._classify(exc, key) from exc
        except BotoCoreError as exc:
            raise self._classify_botocore(exc, key) from exc

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404") or _status(exc) == 404:
                return None
            raise self._classify(exc, key) from exc
        except BotoCoreError as exc:
            raise self._classify_botocore(exc, key) from exc
        return body

    def list_keys(self, prefix: str) -> list[tuple[str, int]]:
        return [(key, size) for key, size, _ in self.list_stamped(prefix)]

    def list_stamped(self, prefix: str) -> list[tuple[str, int, str]]:
        from botocore.exceptions import BotoCoreError, ClientError

        found: list[tuple[str, int, str]] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                found.extend(
                    (obj["Key"][len(self.prefix) :], int(obj["Size"]), str(obj.get("ETag", "")).strip('"'))
                    for obj in page.get("Contents", [])
                )
        except ClientError as exc:
            raise self._classify(exc, prefix) from exc
        except BotoCoreError as exc:
            raise self._classify_botocore(exc, prefix) from exc
        return sorted(found)

    def list_dirs(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        found: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix, Delimiter="/"
            )
            for page in pages:
                found.extend(
                    p["Prefix"][len(self.prefix + prefix) :].rstrip("/")
                    for p in page.get("CommonPrefixes", [])
                )
        except ClientError as exc:
            raise self._classify(exc, prefix) from exc
        except BotoCoreError as exc:
            raise self._classify_botocore(exc, prefix) from exc
        return sorted(found)

    def _compare_existing(self, full_key: str, key: str, checksum: str) -> PutOutcome:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=full_key, ChecksumMode="ENABLED")
            existing = head.get("ChecksumSHA256")
            if existing is None:  # written without a checksum: compare the bytes themselves
                body = self.client.get_object(Bucket=self.bucket, Key=full_key)["Body"].read()
                existing = sha256_b64(body)
        except ClientError as exc:
            raise self._classify(exc, key) from exc
        except BotoCoreError as exc:
            raise self._classify_botocore(exc, key) from exc
        if existing == checksum:
            return "already_present"
        raise LandingConflict(
            f"{self.describe(key)} already exists with sha256 {existing}, ours is {checksum}; "
            "it was not overwritten: compare the two and remove the wrong one by hand",
            key=key,
            existing_sha256=existing,
            local_sha256=checksum,
        )

    def _classify(self, exc: Any, key: str) -> SinkUnavailable | SinkPermanentError:
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        message = error.get("Message", "")
        status = _status(exc)
        where = self.describe(key)
        if code in _TRANSIENT_CODES or status in (500, 502, 503, 504) or status == 429:
            return SinkUnavailable(f"S3 is unavailable for {where} ({code or status}); retrying", key=key)
        if code == "NoSuchBucket":
            return SinkPermanentError(
                f'landing bucket "{self.bucket}" does not exist in {self.region}; create it or set '
                "COLLECTOR_DESTINATION (data stays in the spool)",
                key=key,
            )
        if code in _KMS_CODES or "KMS" in code or "kms" in message.lower():
            return SinkPermanentError(
                f"the KMS key for {where} cannot be used ({code}: {message}); enable the key or grant "
                "the instance role kms:GenerateDataKey on it, or set COLLECTOR_S3_KMS_KEY_ID "
                "(data stays in the spool)",
                key=key,
            )
        if code in _CREDENTIAL_CODES:
            return SinkPermanentError(
                f"AWS rejected the credentials writing {where} ({code}); check the instance role "
                "or AWS_* variables (data stays in the spool)",
                key=key,
            )
        if code == "AccessDenied" or status == 403:
            needed = (
                f"s3:PutObject on arn:aws:s3:::{self.bucket}/{exchange_root(self.prefix)}*"
                if key
                else f"s3:ListBucket on arn:aws:s3:::{self.bucket} for prefix {exchange_root(self.prefix)}"
            )
            return SinkPermanentError(
                f"access denied on {where}; grant {needed} to the collector's role (data stays in the spool)",
                key=key,
            )
        return SinkPermanentError(
            f"S3 refused {where}: {code or status} {message}; data stays in the spool", key=key
        )

    def _classify_botocore(self, exc: Exception, key: str) -> SinkUnavailable | SinkPermanentError:
        from botocore.exceptions import NoCredentialsError, NoRegionError

        if isinstance(exc, NoCredentialsError):
            return SinkPermanentError(
                "no AWS credentials found; attach an instance role or set AWS_PROFILE / AWS_ACCESS_KEY_ID "
                "(data stays in the spool)",
                key=key,
            )
        if isinstance(exc, NoRegionError):
            return SinkPermanentError(
                "no AWS region configured; set COLLECTOR_S3_REGION or AWS_REGION", key=key
            )
        return SinkUnavailable(f"cannot reach S3 for {self.describe(key)}: {exc}; retrying", key=key)


def _link(source: Path, path: Path) -> bool:
    """Hard-link `source` at `path`, durably; False when it exists already or cannot be linked
    (another file system): the caller then compares or copies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, path)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            return False
        raise
    fsync_directory(path.parent)
    return True


def _status(exc: Any) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def write_marker(sink: Sink, doc: dict[str, Any], symbol: str, minute: int) -> str:
    key = marker_key(symbol, minute)
    sink.put_marker(key, (json.dumps(doc, indent=1) + "\n").encode())
    return key
