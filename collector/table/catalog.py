"""The tables' catalog: opened from the settings, the tables made when missing, and refused when
an existing one is not ours.

    sql    a sqlite file, `catalog.db`, in the warehouse directory: nothing to run, the default
           beside a local landing directory (`<destination>-tables/`)
    glue   the AWS Glue Data Catalog, with the warehouse on S3: what Athena, EMR, Trino and
           Snowflake read; the default for an S3 landing zone (`s3://bucket/<prefix>Tables/`)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collector.config import S3Destination, Settings
from collector.exceptions import CollectorError
from collector.table.schema import (
    BARS,
    BARS_ORDER,
    BARS_SCHEMA,
    BARS_SPEC,
    TABLE_PROPERTIES,
    TRADES,
    TRADES_ORDER,
    TRADES_SCHEMA,
    TRADES_SPEC,
)

__all__ = ["CatalogError", "LakeTables", "open_tables", "warehouse_uri"]

_CREATE_ATTEMPTS = 4


class CatalogError(CollectorError):
    """The catalog or the warehouse cannot be used as configured: the message says what to do."""


@dataclass
class LakeTables:
    catalog: Any
    trades: Any  # pyiceberg Table
    bars: Any
    where: str  # for messages: the catalog and the warehouse


def warehouse_uri(warehouse: Path | S3Destination) -> str:
    if isinstance(warehouse, S3Destination):
        return f"s3://{warehouse.bucket}/{warehouse.prefix}".rstrip("/")
    return warehouse.resolve().as_uri()


def open_tables(settings: Settings) -> LakeTables:
    """The catalog and both tables, made if missing. Raises CatalogError saying what to do."""
    kind, warehouse = settings.table_location()
    where = f"{kind} catalog, warehouse {warehouse}"
    namespace = settings.table_namespace
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            catalog = _catalog(kind, warehouse, settings)  # a new sqlite catalog makes its own tables
            _namespace(catalog, namespace)
            trades = _table(catalog, namespace, TRADES, (TRADES_SCHEMA, TRADES_SPEC, TRADES_ORDER))
            bars = _table(catalog, namespace, BARS, (BARS_SCHEMA, BARS_SPEC, BARS_ORDER))
            return LakeTables(catalog, trades, bars, where)
        except CatalogError:
            raise
        except Exception as exc:  # the catalog's own errors: unreachable, refused, a broken file
            # Two first runs at once race to make the catalog's and the lake's tables (the loser's
            # CREATE or insert fails, or finds the sqlite file locked): looked at again, they are there.
            if kind != "sql" or attempt + 1 == _CREATE_ATTEMPTS:  # Glue answers a race itself
                raise CatalogError(f"the {where} cannot be used: {_reason(exc)}; {_advice(kind)}") from exc
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _namespace(catalog: Any, namespace: str) -> None:
    """The namespace, made only when the catalog says it is missing. pyiceberg's
    create_namespace_if_not_exists always asks Glue to create the database first, which needs
    glue:CreateDatabase even when it exists; the stack makes the database and grants the
    compactor no more than GetDatabase on it (infra/terraform/iam.tf)."""
    from pyiceberg.exceptions import NoSuchNamespaceError

    try:
        catalog.load_namespace_properties(namespace)
    except NoSuchNamespaceError:
        catalog.create_namespace_if_not_exists(namespace)


def _catalog(kind: str, warehouse: Path | S3Destination, settings: Settings) -> Any:
    if kind == "sql":
        if isinstance(warehouse, S3Destination):
            raise CatalogError(
                "COLLECTOR_TABLE_CATALOG=sql keeps its sqlite file in the warehouse directory, which "
                f"cannot be {warehouse}; set COLLECTOR_TABLE_CATALOG=glue, or a directory as "
                "COLLECTOR_TABLE_WAREHOUSE"
            )
        try:
            warehouse.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(
                f"the table warehouse {warehouse} cannot be made ({exc.strerror}); set "
                "COLLECTOR_TABLE_WAREHOUSE to a directory this user can write"
            ) from exc
        from pyiceberg.catalog.sql import SqlCatalog

        uri = f"sqlite:///{(warehouse / 'catalog.db').resolve()}"
        return SqlCatalog("lake", uri=uri, warehouse=warehouse_uri(warehouse), **_io_properties(settings))
    if not isinstance(warehouse, S3Destination):
        raise CatalogError(
            "COLLECTOR_TABLE_CATALOG=glue needs an s3:// COLLECTOR_TABLE_WAREHOUSE (Athena and Glue read "
            "tables on S3); set one, or COLLECTOR_TABLE_CATALOG=sql for a local table"
        )
    from pyiceberg.catalog.glue import GlueCatalog

    properties = _io_properties(settings)
    if settings.s3_region:
        properties["glue.region"] = settings.s3_region
    return GlueCatalog("lake", warehouse=warehouse_uri(warehouse), **properties)


def _io_properties(settings: Settings) -> dict[str, str]:
    """How the tables' files are read and written: pyarrow's S3 client, at the same endpoint and
    region as the landing zone, with the usual credential chain."""
    properties = {"py-io-impl": "pyiceberg.io.pyarrow.PyArrowFileIO"}
    if settings.s3_endpoint_url:
        properties["s3.endpoint"] = settings.s3_endpoint_url
    if settings.s3_region:
        properties["s3.region"] = properties["client.region"] = settings.s3_region
    return properties


def _table(catalog: Any, namespace: str, name: str, shape: tuple[Any, Any, Any]) -> Any:
    schema, spec, order = shape
    from pyiceberg.exceptions import NoSuchTableError

    identifier = f"{namespace}.{name}"
    try:
        table = catalog.load_table(identifier)
    except NoSuchTableError:
        return catalog.create_table_if_not_exists(
            identifier, schema=schema, partition_spec=spec, sort_order=order, properties=TABLE_PROPERTIES
        )
    _check_ours(table, identifier, schema, spec)
    return table


def _check_ours(table: Any, identifier: str, schema: Any, spec: Any) -> None:
    """An existing table must have our columns, types and partitioning: writing days of another
    shape into it would leave readers with two kinds of file. Refuse, and say how to migrate."""
    found = [(f.field_id, f.name, str(f.field_type), f.required) for f in table.schema().fields]
    wanted = [(f.field_id, f.name, str(f.field_type), f.required) for f in schema.fields]
    if found != wanted:
        differences = sorted(set(found) ^ set(wanted))
        raise CatalogError(
            f"the table {identifier} exists with other columns than this release writes "
            f"({', '.join(f'{n} {t}' for _, n, t, _ in differences[:6])}); nothing was written. Migrate it "
            f"with an ALTER TABLE (Athena, Spark) to the schema in collector/table/schema.py, or point "
            f"COLLECTOR_TABLE_NAMESPACE at a new namespace and compact the days again"
        )
    if [(f.source_id, str(f.transform)) for f in table.spec().fields] != [
        (f.source_id, str(f.transform)) for f in spec.fields
    ]:
        raise CatalogError(
            f"the table {identifier} is partitioned by {table.spec()}, not by day; nothing was written. "
            "Point COLLECTOR_TABLE_NAMESPACE at a new namespace and compact the days again"
        )


def _reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _advice(kind: str) -> str:
    if kind == "glue":
        return (
            "check the region (COLLECTOR_S3_REGION), the credentials, and that this role may use the Glue "
            "database COLLECTOR_TABLE_NAMESPACE and write the warehouse prefix"
        )
    return "check that COLLECTOR_TABLE_WAREHOUSE is a directory this user can write, on a disk with room"
