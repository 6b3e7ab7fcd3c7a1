"""The apply check (.ci/apply_check.py): it names what is missing, and passes only when nothing is.

CI runs it after `terraform apply` against moto's server (.ci/terraform-apply); these tests run
it without Terraform, against the session's moto server and hand-made outputs and state.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / ".ci" / "apply_check.py"
MODULE = REPO / "infra" / "terraform"


@pytest.fixture
def check(moto_endpoint: str, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    spec = importlib.util.spec_from_file_location("apply_check", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "apply_check", module)  # dataclasses look their module up
    spec.loader.exec_module(module)  # a fresh module: its clients are made for this endpoint
    return module


def declared(kind: str) -> set[str]:
    """`type.name` of every resource (or the name of every output) the module declares."""
    text = "\n".join(p.read_text() for p in sorted(MODULE.glob("*.tf")))
    if kind == "output":
        return set(re.findall(r'^output "(\w+)"', text, flags=re.M))
    return {f"{t}.{n}" for t, n in re.findall(r'^resource "(\w+)" "(\w+)"', text, flags=re.M)}


def state(dependencies: dict[str, list[str]]) -> dict[str, Any]:
    """The part of `terraform show -json` the check reads."""
    resources = [
        {"address": address, "mode": "managed", "type": address.split(".")[0], "name": address.split(".")[1]}
        | {"depends_on": needs}
        for address, needs in dependencies.items()
    ]
    return {"values": {"root_module": {"resources": resources}}}


def test_every_output_of_the_module_has_an_expectation_and_every_expectation_an_output(
    check: ModuleType,
) -> None:
    assert set(check.OUTPUTS) == declared("output")


def test_every_need_names_resources_the_module_declares(check: ModuleType) -> None:
    resources = declared("resource")
    named = {n.resource for n in check.NEEDS} | {n.needs for n in check.NEEDS}
    assert named - resources == set()


def test_a_new_output_without_an_expectation_is_refused_by_name(check: ModuleType) -> None:
    problems = check.check_outputs({"iceberg_table": "lake.trades_iceberg"}, {})
    assert problems == [
        "output iceberg_table: no expectation in .ci/apply_check.py OUTPUTS; add how to find what it names"
    ]


def test_a_resource_created_before_what_it_needs_is_named_with_the_fix(check: ModuleType) -> None:
    need = check.Need("aws_s3_bucket_logging.this", "aws_s3_bucket_policy.this", "the policy grants logging")
    unordered = state({"aws_s3_bucket_logging.this": ["aws_s3_bucket.this"], "aws_s3_bucket_policy.this": []})
    assert check.check_needs(unordered, [need]) == [
        "aws_s3_bucket_logging.this can be created before aws_s3_bucket_policy.this (the policy grants "
        "logging): nothing orders them; add depends_on = [aws_s3_bucket_policy.this]"
    ]
    ordered = state(
        {"aws_s3_bucket_logging.this": ["aws_s3_bucket_policy.this"], "aws_s3_bucket_policy.this": []}
    )
    assert check.check_needs(ordered, [need]) == []
    renamed = state({"aws_s3_bucket_policy.this": []})
    assert check.check_needs(renamed, [need]) == [
        "aws_s3_bucket_logging.this: not in the applied state (renamed? update NEEDS)"
    ]


def test_a_bucket_is_found_only_when_it_logs_to_a_bucket_that_exists(check: ModuleType) -> None:
    s3 = boto3.client("s3")
    suffix = os.getpid()
    source, target = f"apply-check-source-{suffix}", f"apply-check-logs-{suffix}"
    for bucket in (source, target):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"})

    assert check.check_outputs(
        {"landing_bucket": source}, {"landing_bucket": check.OUTPUTS["landing_bucket"]}
    ) == [f"output landing_bucket = {source!r}: bucket {source} exists but has no access logging"]

    grant = {
        "Effect": "Allow",
        "Principal": {"Service": "logging.s3.amazonaws.com"},
        "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{target}/*",
    }
    s3.put_bucket_policy(Bucket=target, Policy=json.dumps({"Version": "2012-10-17", "Statement": [grant]}))
    s3.put_bucket_logging(
        Bucket=source, BucketLoggingStatus={"LoggingEnabled": {"TargetBucket": target, "TargetPrefix": "x/"}}
    )
    assert (
        check.check_outputs({"landing_bucket": source}, {"landing_bucket": check.OUTPUTS["landing_bucket"]})
        == []
    )


def test_the_tables_database_and_the_workgroup_are_found_only_as_the_stack_makes_them(
    check: ModuleType,
) -> None:
    suffix = os.getpid()
    bucket, results, database = (
        f"apply-check-lake-{suffix}",
        f"apply-check-results-{suffix}",
        f"lake_{suffix}",
    )
    key = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
    boto3.client("s3").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"}
    )
    outputs = {
        "landing_bucket": bucket,
        "table_warehouse": f"s3://{bucket}/Tables/",
        "table_namespace": database,
        "iceberg_trades_table": f"{database}.trades",
        "iceberg_bars_table": f"{database}.bars",
        "athena_workgroup": f"apply-check-{suffix}",
        "athena_results_bucket": results,
        "kms_key_arn": key,
    }
    probed = (
        "table_warehouse",
        "table_namespace",
        "iceberg_trades_table",
        "iceberg_bars_table",
        "athena_workgroup",
    )
    probes = {name: check.OUTPUTS[name] for name in probed}
    glue, athena = boto3.client("glue"), boto3.client("athena")
    glue.create_database(DatabaseInput={"Name": database, "LocationUri": f"s3://{bucket}/elsewhere/"})
    athena.create_work_group(
        Name=outputs["athena_workgroup"],
        Configuration={"ResultConfiguration": {"OutputLocation": f"s3://{results}/"}},
    )

    def problems() -> list[str]:  # of the outputs probed here (the others have no probe in this test)
        return [p for p in check.check_outputs(outputs, probes) if p.split()[1] in probes]

    found = problems()
    assert any(p.startswith("output table_namespace") and "not at table_warehouse" in p for p in found)
    assert any(p.startswith("output iceberg_bars_table") and "is not trades or bars_1m" in p for p in found)
    assert any(p.startswith("output athena_workgroup") and "'SSE_KMS'" in p for p in found), found
    assert len(found) == 3, found

    glue.update_database(
        Name=database, DatabaseInput={"Name": database, "LocationUri": f"s3://{bucket}/Tables/"}
    )
    encrypted = {"EncryptionOption": "SSE_KMS", "KmsKey": key}
    outputs["athena_workgroup"] = f"apply-check-enforced-{suffix}"
    athena.create_work_group(
        Name=outputs["athena_workgroup"],
        Configuration={
            "EnforceWorkGroupConfiguration": True,
            "ResultConfiguration": {
                "OutputLocation": f"s3://{results}/",
                "EncryptionConfiguration": encrypted,
            },
        },
    )
    outputs["iceberg_bars_table"] = f"{database}.bars_1m"
    assert problems() == []


def test_nothing_applied_fails_naming_every_output_and_every_need(
    check: ModuleType, moto_endpoint: str, tmp_path: Path
) -> None:
    """As CI runs it, against an account where the stack was never applied."""
    suffix = os.getpid()
    values = {
        "landing_bucket": f"never-landing-{suffix}",
        "artifact_bucket": f"never-artifacts-{suffix}",
        "kms_key_arn": "arn:aws:kms:ap-northeast-1:123456789012:key/00000000-0000-0000-0000-000000000000",
        "deploy_role_arn": f"arn:aws:iam::123456789012:role/never-{suffix}",
        "codedeploy_application": f"never-{suffix}",
        "codedeploy_deployment_group": f"never-{suffix}",
        "autoscaling_group": f"never-{suffix}",
        "lambda_function": f"never-{suffix}",
        "ssm_parameter_name": f"/never/{suffix}",
        "alarm_topic_arn": f"arn:aws:sns:ap-northeast-1:123456789012:never-{suffix}",
        "glue_table": f"never_{suffix}.trades",
        "glue_market_table": f"never_{suffix}.trades_market",
        "table_namespace": f"never_{suffix}",
        "table_warehouse": f"s3://never-landing-{suffix}/Tables/",
        "iceberg_trades_table": f"never_{suffix}.trades",
        "iceberg_bars_table": f"never_{suffix}.bars_1m",
        "athena_workgroup": f"never-{suffix}",
        "athena_results_bucket": f"never-results-{suffix}",
    }
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps({k: {"sensitive": False, "type": "string", "value": v} for k, v in values.items()})
    )
    applied = tmp_path / "state.json"
    applied.write_text(json.dumps(state({})))

    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(outputs), str(applied)],
        env={**os.environ, "AWS_ENDPOINT_URL": moto_endpoint},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    for name, value in values.items():
        assert any(line.startswith(f"  - output {name} = {value!r}: ") for line in lines), (name, done.stderr)
    for need in check.NEEDS:
        assert f"  - {need.resource}: not in the applied state (renamed? update NEEDS)" in lines
