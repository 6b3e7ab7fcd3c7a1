"""The alarms' metrics in CloudWatch, published once a minute (COLLECTOR_CLOUDWATCH_NAMESPACE).

Credentials, region and endpoint come from the usual chain (instance role, AWS_* and
AWS_ENDPOINT_URL_<SERVICE> variables).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from collector.counters import Registry

__all__ = ["CloudWatchPublisher", "publish_alarm_metrics"]

# The alarms evaluate 5-minute periods; once a minute is plenty and costs little.
CLOUDWATCH_INTERVAL_S = 60.0


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
