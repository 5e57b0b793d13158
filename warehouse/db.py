"""Warehouse connection and schema."""
from __future__ import annotations

from contextlib import contextmanager
from importlib import resources as importlib_resources
from typing import Iterator

import psycopg2
import psycopg2.extensions

from ecom import config

FACT_TABLE = "dw.fact_sales_line"
MANIFEST_TABLE = "dw.load_manifest"


def connect(dsn: str | None = None) -> psycopg2.extensions.connection:
    return psycopg2.connect(dsn or config.stack().warehouse_dsn, connect_timeout=10,
                            application_name="ecom-pipeline")


@contextmanager
def connection(dsn: str | None = None) -> Iterator[psycopg2.extensions.connection]:
    conn = connect(dsn)
    try:
        yield conn
    finally:
        conn.close()


def schema_sql() -> str:
    return importlib_resources.files("warehouse").joinpath("schema.sql").read_text(encoding="utf-8")


def ensure_schema(conn: psycopg2.extensions.connection) -> None:
    with conn.cursor() as cur:
        # Serialise concurrent first runs (CREATE ... IF NOT EXISTS can still race on catalogs).
        cur.execute("SELECT pg_advisory_xact_lock(74311)")
        cur.execute(schema_sql())
    conn.commit()


def count(conn: psycopg2.extensions.connection, table: str) -> int:
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")
        return int(cur.fetchone()[0])
