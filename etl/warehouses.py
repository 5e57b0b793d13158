"""One load interface, two warehouse dialects.

    Postgres (the local stand-in; psycopg2, COPY FROM STDIN)     -> PostgresWarehouse, below
    Redshift (AWS; the Data API, COPY from S3 with an IAM role)  -> etl/redshift.RedshiftWarehouse

`etl.run` and `etl.load` speak only this interface: the schema, which files are loaded, loading a
group of files as one transaction, the ETL lease and the run log. `open_warehouse` picks the dialect
from configuration (ECOM_WAREHOUSE; redshift on the aws target, postgres elsewhere).
"""
from __future__ import annotations

from typing import Protocol

from ecom_core import config
from etl.load import Outcome, StagedFile
from warehouse import db, lease


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


class PostgresWarehouse:
    dialect = "postgres"

    def __init__(self, dsn: str | None = None):
        self.conn = db.connect(dsn)

    def ensure_schema(self) -> None:
        db.ensure_schema(self.conn)

    def loaded_keys(self) -> set[str]:
        from etl.load import loaded_keys

        return loaded_keys(self.conn)

    def load_group(self, files: list[StagedFile]) -> list[tuple[str, Outcome | None]]:
        from etl.load import load_group

        return load_group(self.conn, files)

    def manifest_files(self) -> int:
        count = db.count(self.conn, db.MANIFEST_TABLE)
        self.conn.commit()
        return count

    def record_run(self, values: dict) -> None:
        columns = ", ".join(f'"{k}"' for k in values)
        with self.conn.cursor() as cur:
            cur.execute('DELETE FROM dw.etl_run WHERE "run_id" = %s', (values["run_id"],))
            cur.execute(f"INSERT INTO dw.etl_run ({columns}) VALUES ({', '.join(['%s'] * len(values))})",
                        tuple(values.values()))
        self.conn.commit()

    def acquire(self, holder: str, ttl: float) -> bool:
        return lease.acquire(self.conn, holder, ttl)

    def renew(self, holder: str, ttl: float) -> None:
        lease.renew(self.conn, holder, ttl)

    def release(self, holder: str) -> None:
        lease.release(self.conn, holder)

    def lease_holder(self) -> str:
        current = lease.current(self.conn)
        return f"{current.holder} until {current.expires_at}"

    def close(self) -> None:
        self.conn.close()


def open_warehouse(cfg: config.Stack | None = None, dsn: str | None = None) -> Warehouse:
    if config.etl().warehouse == "redshift":
        from etl.redshift import RedshiftWarehouse

        return RedshiftWarehouse(cfg)
    return PostgresWarehouse(dsn)
