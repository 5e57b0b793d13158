"""The Postgres connection (psycopg2) and schema, for local tools and the Postgres dialect. Never in a
Lambda zip: the job reaches the warehouse through the Redshift Data API (warehouse/redshift_data.py)."""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Iterator

import psycopg2
import psycopg2.extensions

from ecom_core import config
from warehouse.tables import FACT_TABLE, MANIFEST_TABLE, REJECTS_TABLE, analytics_sql, schema_sql, sql_file

__all__ = ["FACT_TABLE", "MANIFEST_TABLE", "REJECTS_TABLE", "analytics_sql", "schema_sql", "connect", "connection",
           "ensure_schema", "count"]


def connect(dsn: str | None = None) -> psycopg2.extensions.connection:
    return psycopg2.connect(dsn or config.stack().warehouse_dsn, connect_timeout=10, application_name="ecom-pipeline")


@contextmanager
def connection(dsn: str | None = None) -> Iterator[psycopg2.extensions.connection]:
    conn = connect(dsn)
    try:
        yield conn
    finally:
        conn.close()


def ensure_schema(conn: psycopg2.extensions.connection) -> None:
    with conn.cursor() as cur:
        # Serialise concurrent first runs (CREATE ... IF NOT EXISTS can still race on catalogs).
        cur.execute("SELECT pg_advisory_xact_lock(74311)")
        cur.execute(schema_sql())
        _add_star_columns(cur)
        cur.execute(sql_file("postgres_indexes.sql"))
        _ensure_analytics_views(cur)
    conn.commit()


def _add_star_columns(cur) -> None:
    """Bring a fact table created before the star schema up to date, in the caller's transaction:
    add the derived columns, fill them from the source columns, and build the dimensions and the
    duplicate flags from the facts already there (the same SQL the load runs per file)."""
    from warehouse import star

    cur.execute("SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'dw' AND table_name = 'fact_sales_line'")
    present = {row[0] for row in cur.fetchall()}
    missing = [name for name in star.DERIVED_COLUMN_TYPES if name not in present]
    if not missing:
        return
    for name in missing:
        cur.execute(f'ALTER TABLE {FACT_TABLE} ADD COLUMN "{name}" {star.DERIVED_COLUMN_TYPES[name]}')
    assignments = ", ".join(f'"{name}" = {star.DERIVED_COLUMNS[name]}' for name in missing if name in star.DERIVED_COLUMNS)
    if assignments:
        cur.execute(f"UPDATE {FACT_TABLE} SET {assignments}")
    for name in missing:
        cur.execute(f'ALTER TABLE {FACT_TABLE} ALTER COLUMN "{name}" SET NOT NULL')
    star.rebuild_from_facts(cur)


def _ensure_analytics_views(cur) -> None:
    """(Re)create schema `analytics` when analytics.sql changed; its checksum is the schema's comment.
    Dropping first is what lets a new version change a view's columns (CREATE OR REPLACE cannot)."""
    sql = analytics_sql()
    marker = "analytics.sql sha256 " + hashlib.sha256(sql.encode("utf-8")).hexdigest()[:16]
    cur.execute("SELECT obj_description(n.oid, 'pg_namespace'), "
                "(SELECT count(*) FROM pg_views AS v WHERE v.schemaname = n.nspname) "
                "FROM pg_namespace AS n WHERE n.nspname = 'analytics'")
    row = cur.fetchone()
    # A view dropped behind our back (e.g. by a DROP COLUMN ... CASCADE on the fact table) counts as a change.
    if row is not None and row[0] == marker and row[1] == sql.count("CREATE VIEW"):
        return
    cur.execute("DROP SCHEMA IF EXISTS analytics CASCADE")
    cur.execute(sql)
    cur.execute(f"COMMENT ON SCHEMA analytics IS '{marker}'")


def count(conn: psycopg2.extensions.connection, table: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        return int(cur.fetchone()[0])
