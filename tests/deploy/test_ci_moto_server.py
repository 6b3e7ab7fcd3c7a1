"""The moto server CI applies the stack against (.ci/moto_server.py), with moto's two gaps filled.

Started as CI starts it, as its own process; each test talks to it over HTTP with boto3.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    where = tmp_path_factory.mktemp("moto") / "endpoint"
    server = subprocess.Popen(
        [sys.executable, str(REPO / ".ci" / "moto_server.py"), str(where)],
        env={**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def written() -> str | None:
        if server.poll() is not None:
            assert server.stdout is not None
            pytest.fail(f"moto_server.py exited with {server.returncode}: {server.stdout.read()}")
        return where.read_text().strip() if where.is_file() else None

    try:
        yield wait_for(written, what="moto_server.py to write its endpoint")
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0  # SIGTERM is its ordinary stop


def client(endpoint: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint)  # credentials and region: the aws_env fixture


def buckets(s3: Any, name: str) -> tuple[str, str]:
    source, target = f"{name}-source", f"{name}-logs"
    for bucket in (source, target):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"})
    return source, target


def deny_without_tls(bucket: str) -> dict[str, Any]:
    """The stack's own statement: a string Principal, as AWS documents it."""
    return {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def log_delivery(bucket: str) -> dict[str, Any]:
    return {
        "Effect": "Allow",
        "Principal": {"Service": "logging.s3.amazonaws.com"},
        "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{bucket}/*",
    }


def enable_logging(s3: Any, source: str, target: str) -> None:
    s3.put_bucket_logging(
        Bucket=source, BucketLoggingStatus={"LoggingEnabled": {"TargetBucket": target, "TargetPrefix": "x/"}}
    )


def test_logging_is_allowed_when_the_target_policy_also_has_a_wildcard_principal(
    endpoint: str, aws_env: dict[str, str]
) -> None:
    s3 = client(endpoint, "s3")
    source, target = buckets(s3, "wildcard-and-grant")
    policy = {"Version": "2012-10-17", "Statement": [deny_without_tls(target), log_delivery(target)]}
    s3.put_bucket_policy(Bucket=target, Policy=json.dumps(policy))

    enable_logging(s3, source, target)  # moto alone answers 500 here

    assert s3.get_bucket_logging(Bucket=source)["LoggingEnabled"]["TargetBucket"] == target
    # The check sees a filtered view; the policy S3 keeps is the one put.
    assert json.loads(s3.get_bucket_policy(Bucket=target)["Policy"]) == policy


def test_logging_is_still_refused_when_the_target_policy_grants_the_logging_service_nothing(
    endpoint: str, aws_env: dict[str, str]
) -> None:
    s3 = client(endpoint, "s3")
    source, target = buckets(s3, "wildcard-only")
    s3.put_bucket_policy(
        Bucket=target, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny_without_tls(target)]})
    )

    with pytest.raises(ClientError) as refused:
        enable_logging(s3, source, target)
    assert refused.value.response["Error"]["Code"] == "InvalidTargetBucketForLogging"

    source, target = buckets(s3, "no-policy")
    with pytest.raises(ClientError) as refused:
        enable_logging(s3, source, target)
    assert refused.value.response["Error"]["Code"] == "InvalidTargetBucketForLogging"


def test_a_codedeploy_group_then_its_application_can_be_deleted(
    endpoint: str, aws_env: dict[str, str]
) -> None:
    codedeploy = client(endpoint, "codedeploy")
    codedeploy.create_application(applicationName="app", computePlatform="Server")
    codedeploy.create_deployment_group(
        applicationName="app",
        deploymentGroupName="group",
        serviceRoleArn="arn:aws:iam::123456789012:role/codedeploy",
    )

    codedeploy.delete_deployment_group(applicationName="app", deploymentGroupName="group")
    with pytest.raises(codedeploy.exceptions.DeploymentGroupDoesNotExistException):
        codedeploy.get_deployment_group(applicationName="app", deploymentGroupName="group")
    with pytest.raises(codedeploy.exceptions.DeploymentGroupDoesNotExistException):
        codedeploy.delete_deployment_group(applicationName="app", deploymentGroupName="group")

    codedeploy.delete_application(applicationName="app")
    with pytest.raises(codedeploy.exceptions.ApplicationDoesNotExistException):
        codedeploy.get_application(applicationName="app")
    with pytest.raises(codedeploy.exceptions.ApplicationDoesNotExistException):
        codedeploy.delete_application(applicationName="app")


def test_the_managed_policies_the_stack_attaches_exist(endpoint: str, aws_env: dict[str, str]) -> None:
    iam = client(endpoint, "iam")
    for arn in (
        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
        "arn:aws:iam::aws:policy/service-role/AWSCodeDeployRole",
    ):
        assert iam.get_policy(PolicyArn=arn)["Policy"]["Arn"] == arn
