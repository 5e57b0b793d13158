"""The load interface `etl.run` and `etl.load` speak: the schema, which files are loaded, loading a
group of files as one transaction, the ETL lease and the run log.

One dialect implements it: Redshift's, through the Data API (warehouse/redshift.RedshiftWarehouse), on
every target. Locally the stack's own Data API (bootstrap/local/redshift_data) runs the same
statements on Postgres, so what a local run or test exercises is what runs on AWS.
"""

from __future__ import annotations

from typing import Protocol

from ecom_core import config
from warehouse.redshift import RedshiftWarehouse
from warehouse.staging import Outcome, StagedFile


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


def open_warehouse(cfg: config.Stack | None = None) -> Warehouse:
    return RedshiftWarehouse(cfg)
