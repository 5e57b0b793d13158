"""One load interface, two warehouse dialects.

    Redshift (the Data API, COPY from S3 with an IAM role)  -> etl/redshift.RedshiftWarehouse: every
        target, the deployed job included (locally the stack's Data API runs it on Postgres)
    Postgres (psycopg2, COPY FROM STDIN)                     -> etl/postgres.PostgresWarehouse: local
        tools asked for it (ECOM_WAREHOUSE=postgres); not in the job's zip

`etl.run` and `etl.load` speak only this interface: the schema, which files are loaded, loading a
group of files as one transaction, the ETL lease and the run log. `open_warehouse` picks the dialect
from configuration (ECOM_WAREHOUSE).
"""
from __future__ import annotations

import importlib
from typing import Protocol

from ecom_core import config
from etl.load import Outcome, StagedFile


class Warehouse(Protocol):
    dialect: str

    def ensure_schema(self) -> None: ...
    def loaded_keys(self) -> set[str]: ...
    def load_group(self, files: list[StagedFile]) -> list[tuple[str, Outcome | None]]: ...
    def manifest_files(self) -> int: ...
    def record_run(self, values: dict) -> None: ...
    def acquire(self, holder: str, ttl: float) -> bool: ...
    def renew(self, holder: str, ttl: float) -> None: ...
    def release(self, holder: str) -> None: ...
    def lease_holder(self) -> str: ...
    def close(self) -> None: ...


def open_warehouse(cfg: config.Stack | None = None, dsn: str | None = None) -> Warehouse:
    if config.etl().warehouse == "redshift":
        from etl.redshift import RedshiftWarehouse

        return RedshiftWarehouse(cfg)
    # Imported by name, not by an import statement: psycopg2 is not in any zip, and the zip builder
    # (bootstrap/package.py) follows import statements. A job configured for Postgres fails here.
    return importlib.import_module("etl.postgres").PostgresWarehouse(dsn)
