"""One schema, said four times: the Parquet the collector writes, the Glue tables over it, the
documentation's table, and the Iceberg `trades` table compacted from it."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from collector.lake.parquet import landing_schema

REPO = Path(__file__).resolve().parents[2]

# How each Arrow type is spelled in Glue/Athena and in the README's table.
GLUE = {"string": "string", "int64": "bigint", "decimal64(18, 8)": "decimal(18,8)", "bool": "boolean"}
README = {"string": "string", "int64": "int64", "decimal64(18, 8)": "DECIMAL(18,8) as INT64", "bool": "bool"}


def arrow_columns(unit: str = "ms") -> list[tuple[str, str]]:
    out = []
    for field in landing_schema(unit):  # type: ignore[arg-type]
        kind = "timestamp" if pa.types.is_timestamp(field.type) else str(field.type)
        out.append((field.name, kind))
    return out


def glue_columns() -> list[tuple[str, str]]:
    text = (REPO / "infra" / "terraform" / "catalog.tf").read_text()
    return re.findall(r'\{ name = "(\w+)", type = "([^"]+)"', text)


def glue_tables() -> dict[str, str]:
    """Each `aws_glue_catalog_table` in catalog.tf: its name, and its text up to the next resource."""
    text = (REPO / "infra" / "terraform" / "catalog.tf").read_text()
    parts = re.split(r'^resource "aws_glue_catalog_table" "(\w+)" \{$', text, flags=re.M)[1:]
    return {name: body.split("\nresource ", 1)[0] for name, body in zip(parts[::2], parts[1::2], strict=True)}


def readme_columns() -> list[tuple[str, str]]:
    text = (REPO / "docs" / "landing.md").read_text()
    table = text.split("## Schema", 1)[1].split("\n\n", 2)[1]
    rows = [line.split("|")[1:3] for line in table.splitlines()[2:]]
    return [(name.strip().strip("`"), kind.strip()) for name, kind in rows]


def test_glue_table_matches_the_parquet_schema() -> None:
    expected = [(name, "timestamp" if kind == "timestamp" else GLUE[kind]) for name, kind in arrow_columns()]
    assert glue_columns() == expected


def test_every_glue_table_takes_its_columns_from_the_one_list() -> None:
    """Both layouts' tables (per symbol, market-wide) declare no columns of their own."""
    tables = glue_tables()
    assert set(tables) == {"trades", "trades_market"}
    for name, body in tables.items():
        assert re.search(r'dynamic "columns" \{\s*for_each = local\.trade_columns\s', body), name
        assert body.count('"columns"') == 1 and not re.search(r"^\s*columns \{", body, flags=re.M), name


def test_readme_schema_table_matches_the_parquet_schema() -> None:
    documented = readme_columns()
    assert [name for name, _ in documented] == [name for name, _ in arrow_columns()]
    for (name, kind), (_, doc) in zip(arrow_columns(), documented, strict=True):
        if kind == "timestamp":
            unit = "µs" if name == "received_at" else "ms or µs"
            assert doc == f"timestamp({unit}, UTC)", name
        elif name == "symbol":
            assert doc.startswith(README[kind]), name
        else:
            assert doc == README[kind], name


def test_both_time_units_share_the_columns() -> None:
    assert [n for n, _ in arrow_columns("ms")] == [n for n, _ in arrow_columns("us")]


def test_archive_objects_have_the_same_columns_with_event_and_receive_times_null() -> None:
    """The archive has neither time: nothing is invented, the two columns are optional there."""
    live, archive = landing_schema("ms"), landing_schema("ms", archive=True)
    assert live.names == archive.names
    assert [f.name for f in archive if f.nullable] == ["event_time", "received_at"]
    assert not any(f.nullable for f in live)
    glue = (REPO / "infra" / "terraform" / "catalog.tf").read_text()
    for name in ("event_time", "received_at"):
        assert re.search(rf'name = "{name}".*null in archive objects', glue), name
    table = (REPO / "docs" / "landing.md").read_text().split("## Schema", 1)[1].split("\n\n", 2)[1]
    assert table.count("null in archive objects") == 2


def test_the_trades_table_has_the_landing_columns_with_times_in_microseconds() -> None:
    """The silver table keeps every column of the landing zone, in its order, with its exact
    decimal type; its times are microseconds, which every landing unit converts to exactly."""
    import pyarrow as pa

    from collector.lake.parquet import landing_schema
    from collector.table.schema import TRADES_SCHEMA, arrow_schema

    table = arrow_schema(TRADES_SCHEMA)
    landing = landing_schema("ms", archive=True)
    assert table.names == landing.names
    for name in table.names:
        kind = table.field(name).type
        if pa.types.is_timestamp(kind):
            assert (kind.unit, kind.tz) == ("us", "UTC"), name
        elif pa.types.is_decimal(kind):
            assert (kind.precision, kind.scale) == (18, 8), name
        elif pa.types.is_large_string(kind):  # Iceberg's strings: the same UTF-8 in Parquet
            assert pa.types.is_string(landing.field(name).type), name
        else:
            assert kind == landing.field(name).type, name
        assert table.field(name).nullable == landing.field(name).nullable, name
