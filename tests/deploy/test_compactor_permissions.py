"""What `collector compact` asks of AWS, against what the stack grants it (infra/terraform/iam.tf).

A landed day in moto's S3 server, the tables' Glue database made first as Terraform makes it,
then `collector compact` with the Glue catalog: every AWS call boto3 makes is recorded (the
landing zone's reads and pyiceberg's Glue calls; pyarrow's S3 client writes the tables' files,
and the bucket afterwards shows where they went)."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from collector.lake.sinks import LocalSink
from tests.conftest import REPO
from tests.support.lake_days import land_symbol_day

DAY = date(2025, 11, 24)

pytestmark = pytest.mark.slow  # a whole day's 1,440 markers through moto's server, then a compaction


def granted(sid: str) -> set[str]:
    """The actions of one statement of the compactor's policy in iam.tf."""
    text = (REPO / "infra" / "terraform" / "iam.tf").read_text()
    policy = text.split("compactor_policy = {", 1)[1].split("\n  }\n", 1)[0]
    statement = re.split(rf'Sid\s+= "{sid}"', policy)[1].split("\n      },", 1)[0]
    action = re.search(r'Action\s+= (\[[^\]]*\]|"[^"]*")', statement)
    assert action, sid
    return set(re.findall(r'"([a-z0-9]+:\w+)"', action.group(1)))


@pytest.fixture
def landed_day(tmp_path: Path, s3_bucket: tuple[Any, str]) -> tuple[Any, str]:
    """One whole marked day of BTCUSDT at the root of a bucket, as the collector lands it."""
    client, bucket = s3_bucket
    sink = LocalSink(tmp_path / "landing")
    land_symbol_day(sink, "BTCUSDT", DAY, 1_000, {0: 5, 600: 40, 1439: 3})
    from concurrent.futures import ThreadPoolExecutor

    files = [p for p in sink.root.rglob("*") if p.is_file()]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: client.put_object(Bucket=bucket, Key=str(p.relative_to(sink.root)),
                                                  Body=p.read_bytes()), files))  # fmt: skip
    return client, bucket


def test_the_compactor_needs_only_what_the_stack_grants(
    tmp_path: Path,
    landed_day: tuple[Any, str],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import boto3
    import botocore.client

    client, bucket = landed_day
    namespace = re.sub(r"[^a-z0-9]", "_", bucket)  # a database of this test's own in the shared server
    monkeypatch.setenv("AWS_ENDPOINT_URL_GLUE", moto_endpoint)
    glue = boto3.client("glue", endpoint_url=moto_endpoint, region_name="ap-northeast-1")
    # As infra/terraform/tables.tf makes it: the database, its location the warehouse prefix.
    glue.create_database(DatabaseInput={"Name": namespace, "LocationUri": f"s3://{bucket}/Tables/"})
    landing_before = {o["Key"]: o["ETag"] for o in _objects(client, bucket, "Binance/")}

    calls: list[tuple[str, str, dict[str, Any]]] = []
    make_api_call = botocore.client.BaseClient._make_api_call

    def record(self: Any, operation: str, params: dict[str, Any]) -> Any:
        calls.append((self.meta.service_model.service_name, operation, params))
        return make_api_call(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    env = tmp_path / "compact.env"
    env.write_text(
        f"COLLECTOR_DESTINATION=s3://{bucket}\nCOLLECTOR_S3_ENDPOINT_URL={moto_endpoint}\n"
        f"COLLECTOR_S3_REGION=ap-northeast-1\nCOLLECTOR_SPOOL_DIR={tmp_path / 'spool'}\n"
        f"COLLECTOR_TABLE_NAMESPACE={namespace}\n"
    )
    from collector.cli.main import main

    assert main(["compact", "--env-file", str(env), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    days = [(d["day"], d["status"], d["rows"]) for d in report["days"]]
    assert days == [(DAY.isoformat(), "committed", 48)]
    assert report["tables"] == f"glue catalog, warehouse s3://{bucket}/Tables/"

    glue_calls = [(op, params) for service, op, params in calls if service == "glue"]
    # Every Glue action it takes is granted, and every one granted is taken: no CreateDatabase
    # (the database exists), nothing that lists or deletes.
    assert {op for op, _ in glue_calls} == {a.removeprefix("glue:") for a in granted("CommitTables")}
    assert {"GetDatabase", "GetTable", "CreateTable", "UpdateTable"} == {op for op, _ in glue_calls}
    assert all(params.get("DatabaseName", params.get("Name")) == namespace for _, params in glue_calls)

    # The landing zone is only read, under Binance/ (ListObjectsV2 is s3:ListBucket).
    s3_calls = [(op, params) for service, op, params in calls if service == "s3"]
    assert {op for op, _ in s3_calls} == {"ListObjectsV2", "GetObject"}
    assert {"s3:GetObject"} == granted("ReadLanding") and {"s3:ListBucket"} == granted("ListLanding")
    assert all(params.get("Prefix", params.get("Key", "")).startswith("Binance/") for _, params in s3_calls)
    assert {o["Key"]: o["ETag"] for o in _objects(client, bucket, "Binance/")} == landing_before

    # Everything it wrote is under Tables/, each table in the database's location.
    written = [o["Key"] for o in _objects(client, bucket, "") if not o["Key"].startswith("Binance/")]
    assert written and all(k.startswith(("Tables/trades/", "Tables/bars_1m/")) for k in written), written
    assert any(k.startswith("Tables/trades/data/day=2025-11-24/") for k in written)
    table = glue.get_table(DatabaseName=namespace, Name="trades")["Table"]
    assert table["Parameters"]["metadata_location"].startswith(f"s3://{bucket}/Tables/trades/metadata/")


def _objects(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o for page in pages for o in page.get("Contents", [])]
