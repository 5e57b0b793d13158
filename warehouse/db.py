"""A direct connection to the local warehouse's Postgres (psycopg2), for what talks to Postgres as
Postgres: the bench's yardsticks (a bare COPY FROM STDIN, index shapes), tests that look at the
tables underneath, and `ecom endpoints` (the server's version). The pipeline, the job and the
operator's tools reach the warehouse through the Redshift Data API (warehouse/redshift_data.py),
as they do on AWS. Never in a Lambda zip: psycopg2 is not bundled."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.extensions

from ecom_core import config
from warehouse.tables import FACT_TABLE, MANIFEST_TABLE, REJECTS_TABLE

__all__ = ["FACT_TABLE", "MANIFEST_TABLE", "REJECTS_TABLE", "connect", "connection"]


def connect(dsn: str | None = None) -> psycopg2.extensions.connection:
    return psycopg2.connect(dsn or config.stack().warehouse_dsn, connect_timeout=10, application_name="ecom-pipeline")


@contextmanager
def connection(dsn: str | None = None) -> Iterator[psycopg2.extensions.connection]:
    conn = connect(dsn)
    try:
        yield conn
    finally:
        conn.close()
