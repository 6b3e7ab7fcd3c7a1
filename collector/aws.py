"""The AWS calls at the collector's edges, besides landing: the .env from SSM and alarm metrics.

Both read credentials, region and endpoints from the usual chain (instance role, AWS_* and
AWS_ENDPOINT_URL_<SERVICE> variables).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from collector.counters import Registry
from collector.exceptions import ConfigError

__all__ = ["CloudWatchPublisher", "fetch_parameter", "publish_alarm_metrics"]

# The alarms evaluate 5-minute periods; once a minute is plenty and costs little.
CLOUDWATCH_INTERVAL_S = 60.0


def fetch_parameter(name: str, region: str | None = None) -> str:
    """A decrypted SSM parameter's value. Raises ConfigError that says what to do."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        client = boto3.client("ssm", region_name=region)
        return str(client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        where = f"in {client.meta.region_name}"
        if code == "ParameterNotFound":
            raise ConfigError(
                [
                    f"SSM parameter {name!r} does not exist {where}; create it with `aws ssm put-parameter "
                    "--type SecureString` or fix COLLECTOR_SSM_PARAMETER"
                ]
            ) from exc
        if code in ("AccessDeniedException", "AccessDenied") or "KMS" in code:
            raise ConfigError(
                [
                    f"not allowed to read SSM parameter {name!r} {where} ({code}); grant "
                    "ssm:GetParameter on it and kms:Decrypt on its key to this machine's role"
                ]
            ) from exc
        raise ConfigError([f"reading SSM parameter {name!r} failed: {code} {exc}"]) from exc
    except NoCredentialsError as exc:
        raise ConfigError(
            [f"no AWS credentials to read SSM parameter {name!r}; attach an instance role"]
        ) from exc
    except BotoCoreError as exc:
        raise ConfigError([f"cannot read SSM parameter {name!r}: {exc}"]) from exc


class CloudWatchPublisher:
    """Puts the alarm metrics (no dimensions) into one namespace. Blocking: call from a thread."""

    def __init__(self, namespace: str, region: str | None = None, client: Any = None) -> None:
        self.namespace = namespace
        if client is None:
            import boto3

            client = boto3.client("cloudwatch", region_name=region)
        self.client = client

    def publish(self, values: Mapping[str, tuple[float, str]]) -> None:
        """values: metric name -> (value, unit)."""
        self.client.put_metric_data(
            Namespace=self.namespace,
            MetricData=[
                {"MetricName": name, "Value": value, "Unit": unit} for name, (value, unit) in values.items()
            ],
        )


async def publish_alarm_metrics(publisher: CloudWatchPublisher, metrics: Registry, log: Any) -> None:
    """Once a minute, the three numbers the alarms read, from the counters' registry."""
    while True:
        landed_age = metrics.value("last_landed_age_seconds")
        values = {
            # Nothing landed yet: as old as the process, so a collector that never lands alarms.
            "LastLandedBatchAgeSeconds": (
                landed_age if landed_age is not None else metrics.value("uptime_seconds"),
                "Seconds",
            ),
            "SpoolBytes": (float(metrics.value("spool_bytes")), "Bytes"),
            # Recorded in the last day: the alarm clears a day after the last unfillable gap.
            "UnfilledGaps": (float(metrics.value("gaps_unfilled_last_day")), "Count"),
        }
        try:
            await asyncio.to_thread(publisher.publish, values)
            log.debug("collector.metrics_published", namespace=publisher.namespace)
        except Exception as exc:  # metrics must never stop capture
            log.warning("collector.metrics_publish_failed", namespace=publisher.namespace, error=str(exc))
        await asyncio.sleep(CLOUDWATCH_INTERVAL_S)
