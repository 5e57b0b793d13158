"""The warehouse's table names and SQL files: what every dialect and every tool shares, with no
driver (the job's zip carries this module; the Postgres connection is in warehouse/db.py)."""

from __future__ import annotations

from importlib import resources as importlib_resources

FACT_TABLE = "dw.fact_sales_line"
MANIFEST_TABLE = "dw.load_manifest"
REJECTS_TABLE = "dw.load_rejects"


def sql_file(name: str) -> str:
    return importlib_resources.files("warehouse").joinpath(name).read_text(encoding="utf-8")


def schema_sql() -> str:
    return sql_file("schema.sql")


def analytics_sql() -> str:
    return sql_file("analytics.sql")
