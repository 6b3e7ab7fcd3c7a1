"""After `terraform apply` against moto's server (.ci/terraform-apply): what an operator uses exists.

    python .ci/apply_check.py OUTPUTS_JSON STATE_JSON

OUTPUTS_JSON is `terraform output -json`, STATE_JSON is `terraform show -json`; boto3 reaches
the same server through AWS_ENDPOINT_URL (and AWS_DEFAULT_REGION). Exits 1 naming everything
that is missing, 0 when nothing is.

Two lists to extend as the stack grows:

- OUTPUTS: for each output, what it names and how to find that through the API. Every output
  the stack declares needs an entry: a new output without one fails the check, so nothing an
  operator is told to use goes unchecked.
- NEEDS: a resource and another whose effect it needs, not only its id (a policy that must grant
  before, a route that must exist before an instance boots), with why. Terraform records each
  resource's dependencies, transitively, in the state it applied; a need missing there means
  nothing orders the two, and the apply only works when the race goes the right way. moto
  refuses some of these itself (S3 logging before the target's policy); the record is checked
  for all of them, including those only AWS would refuse.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError


class Missing(Exception):
    """What an output names is not there (or not as the stack made it)."""


@functools.cache
def client(service: str) -> Any:
    return boto3.client(service)  # type: ignore[call-overload]


# ---- what each output names ---------------------------------------------------------------


def bucket_logging_to_the_log_bucket(name: str, outputs: dict[str, str]) -> None:
    client("s3").head_bucket(Bucket=name)
    enabled = client("s3").get_bucket_logging(Bucket=name).get("LoggingEnabled")
    if not enabled:
        raise Missing(f"bucket {name} exists but has no access logging")
    client("s3").head_bucket(Bucket=enabled["TargetBucket"])


def kms_key(arn: str, outputs: dict[str, str]) -> None:
    state = client("kms").describe_key(KeyId=arn)["KeyMetadata"]["KeyState"]
    if state != "Enabled":
        raise Missing(f"KMS key {arn} is {state}")


def iam_role(arn: str, outputs: dict[str, str]) -> None:
    role = client("iam").get_role(RoleName=arn.rsplit("/", 1)[-1])["Role"]
    if role["Arn"] != arn:
        raise Missing(f"IAM role {role['RoleName']} has ARN {role['Arn']}, not {arn}")


def codedeploy_application(name: str, outputs: dict[str, str]) -> None:
    client("codedeploy").get_application(applicationName=name)


def codedeploy_group(name: str, outputs: dict[str, str]) -> None:
    application = outputs["codedeploy_application"]
    client("codedeploy").get_deployment_group(applicationName=application, deploymentGroupName=name)


def autoscaling_group(name: str, outputs: dict[str, str]) -> None:
    groups = client("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    if not groups["AutoScalingGroups"]:
        raise Missing(f"no Auto Scaling group named {name}")


def lambda_function(name: str, outputs: dict[str, str]) -> None:
    client("lambda").get_function(FunctionName=name)


def ssm_parameter(name: str, outputs: dict[str, str]) -> None:
    client("ssm").get_parameter(Name=name)


def sns_topic(arn: str, outputs: dict[str, str]) -> None:
    client("sns").get_topic_attributes(TopicArn=arn)


def glue_table(qualified: str, outputs: dict[str, str]) -> None:
    database, _, table = qualified.partition(".")
    if not table:
        raise Missing(f"{qualified!r} is not database.table")
    client("glue").get_table(DatabaseName=database, Name=table)


def table_database(name: str, outputs: dict[str, str]) -> None:
    """The Iceberg tables' Glue database, located at the warehouse prefix."""
    location = client("glue").get_database(Name=name)["Database"].get("LocationUri")
    if location != outputs["table_warehouse"]:
        raise Missing(f"Glue database {name} is located at {location!r}, not at table_warehouse")


def table_warehouse(uri: str, outputs: dict[str, str]) -> None:
    if uri != f"s3://{outputs['landing_bucket']}/Tables/":
        raise Missing(f"{uri!r} is not the landing bucket's Tables/ prefix")
    client("s3").head_bucket(Bucket=outputs["landing_bucket"])


def iceberg_table(qualified: str, outputs: dict[str, str]) -> None:
    """A table `collector compact` creates on its first run: after the apply only its database is
    there, and the name must be one the compactor writes, in that database."""
    database, _, table = qualified.partition(".")
    if database != outputs["table_namespace"] or table not in ("trades", "bars_1m"):
        raise Missing(f"{qualified!r} is not trades or bars_1m in the database table_namespace")
    client("glue").get_database(Name=database)


def athena_workgroup(name: str, outputs: dict[str, str]) -> None:
    """Enabled, its configuration enforced, results in the results bucket under the stack's key."""
    group = client("athena").get_work_group(WorkGroup=name).get("WorkGroup")
    if not group:  # AWS refuses an unknown name; moto answers with nothing
        raise Missing(f"no Athena workgroup named {name}")
    config = group.get("Configuration", {})
    results = config.get("ResultConfiguration", {})
    encryption = results.get("EncryptionConfiguration", {})
    found = (group.get("State"), config.get("EnforceWorkGroupConfiguration"), results.get("OutputLocation"),
             encryption.get("EncryptionOption"), encryption.get("KmsKey"))  # fmt: skip
    wanted = ("ENABLED", True, f"s3://{outputs['athena_results_bucket']}/", "SSE_KMS", outputs["kms_key_arn"])
    if found != wanted:
        raise Missing(f"workgroup {name}: (state, enforced, results, encryption, key) {found}, not {wanted}")


Probe = Callable[[str, dict[str, str]], None]

OUTPUTS: dict[str, Probe] = {
    "landing_bucket": bucket_logging_to_the_log_bucket,
    "artifact_bucket": bucket_logging_to_the_log_bucket,
    "kms_key_arn": kms_key,
    "deploy_role_arn": iam_role,
    "codedeploy_application": codedeploy_application,
    "codedeploy_deployment_group": codedeploy_group,
    "autoscaling_group": autoscaling_group,
    "lambda_function": lambda_function,
    "ssm_parameter_name": ssm_parameter,
    "alarm_topic_arn": sns_topic,
    "glue_table": glue_table,
    "glue_market_table": glue_table,
    "table_namespace": table_database,
    "table_warehouse": table_warehouse,
    "iceberg_trades_table": iceberg_table,
    "iceberg_bars_table": iceberg_table,
    "athena_workgroup": athena_workgroup,
    "athena_results_bucket": bucket_logging_to_the_log_bucket,
}


# ---- what must come before what -----------------------------------------------------------


@dataclass(frozen=True)
class Need:
    resource: str
    needs: str
    why: str


NEEDS: list[Need] = [
    Need(
        "aws_s3_bucket_logging.this",
        "aws_s3_bucket_policy.this",
        "S3 turns logging on only once the log bucket's policy grants logging.s3.amazonaws.com",
    ),
    Need(
        "aws_s3_bucket_lifecycle_configuration.this",
        "aws_s3_bucket_versioning.this",
        "the rules expire noncurrent versions, which exist only once versioning is on",
    ),
    *(
        Need("aws_autoscaling_group.collector", needed, "the instance's first boot needs " + why)
        for needed, why in [
            ("aws_route.internet", "the route out to install packages"),
            ("aws_route_table_association.public", "the subnet to use that route"),
            ("aws_ssm_parameter.collector_env", "the .env parameter it reads"),
            ("aws_iam_role_policy.collector", "the role's permission to read that parameter"),
            ("aws_iam_role_policy_attachment.collector_ssm", "Session Manager's policy"),
        ]
    ),
    Need(
        "aws_codedeploy_deployment_group.collector",
        "aws_iam_role_policy_attachment.codedeploy",
        "CodeDeploy hooks the Auto Scaling group as its service role, which needs its policy",
    ),
    Need(
        "aws_flow_log.vpc",
        "aws_iam_role_policy.flow_logs",
        "delivery starts at once, as the role, which needs its policy",
    ),
    Need(
        "aws_lambda_function.heartbeat",
        "aws_iam_role_policy.lambda",
        "Lambda checks the role may send to the dead-letter queue",
    ),
    Need(
        "aws_lambda_function.heartbeat",
        "aws_cloudwatch_log_group.lambda",
        "otherwise Lambda makes the group itself, unencrypted and kept forever",
    ),
]


# ---- the checks ---------------------------------------------------------------------------


def check_outputs(outputs: dict[str, str], probes: dict[str, Probe]) -> list[str]:
    problems = [
        f"output {name}: no expectation in .ci/apply_check.py OUTPUTS; add how to find what it names"
        for name in sorted(outputs.keys() - probes.keys())
    ]
    problems += [
        f"output {name}: expected by .ci/apply_check.py, but the stack has no such output"
        for name in sorted(probes.keys() - outputs.keys())
    ]
    for name, probe in probes.items():
        if name not in outputs:
            continue
        try:
            probe(outputs[name], outputs)
        except Missing as missing:
            problems.append(f"output {name} = {outputs[name]!r}: {missing}")
        except ClientError as error:
            info = error.response.get("Error", {})
            problems.append(
                f"output {name} = {outputs[name]!r}: not found through the API "
                f"({error.operation_name}: {info.get('Code')}: {info.get('Message')})"
            )
    return problems


def recorded_dependencies(state: dict[str, Any]) -> dict[str, set[str]]:
    """Each applied resource, as `type.name` (its instances together), and what the state says it needs."""
    found: dict[str, set[str]] = {}
    for resource in state.get("values", {}).get("root_module", {}).get("resources", []):
        if resource.get("mode") != "managed":
            continue
        key = f"{resource['type']}.{resource['name']}"
        found.setdefault(key, set()).update(resource.get("depends_on", []))
    return found


def check_needs(state: dict[str, Any], needs: list[Need]) -> list[str]:
    recorded = recorded_dependencies(state)
    problems = []
    for need in needs:
        if need.resource not in recorded:
            problems.append(f"{need.resource}: not in the applied state (renamed? update NEEDS)")
        elif need.needs not in recorded:
            problems.append(f"{need.needs}: not in the applied state (renamed? update NEEDS)")
        elif need.needs not in recorded[need.resource]:
            problems.append(
                f"{need.resource} can be created before {need.needs} ({need.why}): "
                f"nothing orders them; add depends_on = [{need.needs}]"
            )
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: apply_check.py OUTPUTS_JSON STATE_JSON", file=sys.stderr)
        return 2
    outputs = {name: entry["value"] for name, entry in json.loads(Path(argv[1]).read_text()).items()}
    state = json.loads(Path(argv[2]).read_text())
    problems = list(dict.fromkeys(check_outputs(outputs, OUTPUTS) + check_needs(state, NEEDS)))
    if problems:
        print(f"apply check: {len(problems)} problem(s) with the applied stack:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"apply check: {len(OUTPUTS)} outputs found through the API, {len(NEEDS)} orderings recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
