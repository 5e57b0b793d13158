"""The Redshift dialect of the warehouse: the schema and the group load as SQL Redshift runs, sent
through the Data API (warehouse/redshift_data.py) by the deployed job.

The load is the Postgres load's twin, step for step (etl/load.py): the same staging table, the same
per-file statistics, the same star-schema statements (warehouse/star.py, recorded rather than run),
the same manifest rows, all in one transaction (one BatchExecuteStatement). What differs:
- COPY reads from S3 with the job's COPY role instead of STDIN. Each file goes through a manifest of
  its own with `mandatory: true`, because `COPY FROM 's3://bucket/key'` is a prefix match: it would
  also load `key0`, `key.bak`, ... The rows of a file are tagged with its number by an UPDATE right
  after its COPY (Postgres uses a column default read from a setting).
- `LOCK dw.load_manifest` (Redshift has no lock modes). Redshift does not enforce primary keys, so
  files another loader committed meanwhile are dropped from the staging tables under that lock,
  and the manifest rows are inserted from the statistics query in the same transaction.
- Defaults: SYSDATE for CURRENT_TIMESTAMP. Postgres-only indexes (postgres_indexes.sql) are not run.
- Rows the warehouse refuses: Redshift's COPY fails the file; the job then screens the group in
  Python (etl.load.screen), COPYs the screened copies and COPYs the rejects into dw.load_rejects.
"""
from __future__ import annotations

import csv
import io
import json
import re
import uuid
from datetime import datetime, timezone

from ecom_core import aws, config
from ecom_core.faults import maybe_fail
from etl.load import ANALYZE_STAGE, COLUMN_LIST, STAGE, STAGE_FILES, Outcome, Reject, StagedFile, file_stats_sql, screen
from warehouse import star, tables
from warehouse.recorder import RecordingConnection
from warehouse.redshift_data import DataApi, RedshiftError, literal

REJECT_COLUMNS = '"file_key", "line_no", "event_id", "reason", "raw_line"'
COPY_OPTIONS = "FORMAT AS CSV IGNOREHEADER 1 EMPTYASNULL TIMEFORMAT 'auto' ACCEPTINVCHARS"


def _split(sql: str) -> list[str]:
    """Statements of a .sql file, comments dropped (our .sql files have no "--" or ";" in literals)."""
    text = "\n".join(re.sub(r"--.*$", "", line) for line in sql.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


# The fact table's physical layout on Redshift: an invoice's lines on one slice, sorted by the
# columns the load's duplicate-row flags look up per (invoice, stock code, time) group (the Postgres
# dialect's index fact_sales_line_row_group; the local Data API indexes a compound sort key too).
FACT_LAYOUT = 'DISTKEY("invoice_no") COMPOUND SORTKEY("invoice_no", "stock_code", "invoice_ts")'


def schema_statements() -> list[str]:
    """schema.sql and analytics.sql in Redshift's SQL (the views are dropped and re-created)."""
    statements = [re.sub(r"DEFAULT CURRENT_TIMESTAMP", "DEFAULT SYSDATE", s) for s in _split(tables.schema_sql())]
    statements = [f"{s} {FACT_LAYOUT}" if s.startswith(f"CREATE TABLE IF NOT EXISTS {tables.FACT_TABLE} ") else s
                  for s in statements]
    if sum(FACT_LAYOUT in s for s in statements) != 1:
        raise RuntimeError(f"schema.sql no longer creates {tables.FACT_TABLE} as one statement")
    return statements + ["DROP SCHEMA IF EXISTS analytics CASCADE"] + _split(tables.analytics_sql())


def star_stage_statements() -> list[str]:
    """The star schema's staging statements, exactly as the Postgres load runs them."""
    recorder = RecordingConnection()
    with recorder.cursor() as cur:
        star.stage_facts(cur, STAGE, STAGE_FILES)
    return recorder.statements


def star_write_statements() -> list[str]:
    """The star schema's writes (facts, flags, dimensions), exactly as the Postgres load runs them."""
    recorder = RecordingConnection()
    with recorder.cursor() as cur:
        star.write_facts(cur)
        star.refresh_duplicate_flags(cur)
        star.upsert_dimensions(cur)
    return recorder.statements


def star_statements() -> list[str]:
    return star_stage_statements() + star_write_statements()


def copy_statement(table: str, columns: str, manifest_url: str, iam_role: str) -> str:
    return f"COPY {table} ({columns}) FROM {literal(manifest_url)} IAM_ROLE {literal(iam_role)} MANIFEST {COPY_OPTIONS}"


def group_statements(files: list[tuple[str, str, str]], iam_role: str, rejects_manifest: str | None = None) -> list[str]:
    """One transaction loading a group: files = [(key, etag, manifest URL of the body to COPY)]."""
    statements = [
        f"LOCK {tables.MANIFEST_TABLE}",
        f"DROP TABLE IF EXISTS {STAGE}",
        f"DROP TABLE IF EXISTS {STAGE_FILES}",
        f'CREATE TEMPORARY TABLE {STAGE} AS SELECT {COLUMN_LIST}, CAST(NULL AS INTEGER) AS "file_no" '
        f"FROM {tables.FACT_TABLE} WHERE 1 = 0",
        f'CREATE TEMPORARY TABLE {STAGE_FILES} ("file_no" INTEGER NOT NULL, "file_key" VARCHAR(512) NOT NULL, '
        f'"etag" VARCHAR(128))',
    ]
    for number, (key, etag, manifest_url) in enumerate(files):
        statements += [
            copy_statement(STAGE, COLUMN_LIST, manifest_url, iam_role),
            f'UPDATE {STAGE} SET "file_no" = {number} WHERE "file_no" IS NULL',
            f'INSERT INTO {STAGE_FILES} ("file_no", "file_key", "etag") VALUES ({number}, {literal(key)}, {literal(etag)})',
        ]
    statements += [
        f'DELETE FROM {STAGE_FILES} WHERE "file_key" IN (SELECT "file_key" FROM {tables.MANIFEST_TABLE})',
        f'DELETE FROM {STAGE} WHERE "file_no" NOT IN (SELECT "file_no" FROM {STAGE_FILES})',
    ]
    if rejects_manifest:
        statements.append(copy_statement(tables.REJECTS_TABLE, REJECT_COLUMNS, rejects_manifest, iam_role))
    statements += [
        ANALYZE_STAGE,
        *star_stage_statements(),
        # The manifest rows, from the per-file statistics, before the facts change (new vs present).
        f'INSERT INTO {tables.MANIFEST_TABLE} ("file_key", "etag", "rows_in_file", "rows_inserted", "rows_updated") '
        f"{file_stats_sql(for_manifest=True)}",
        *star_write_statements(),
        f"DROP TABLE {STAGE}",
        f"DROP TABLE {STAGE_FILES}",
    ]
    return statements


def manifest_document(bucket: str, key: str) -> bytes:
    return json.dumps({"entries": [{"url": f"s3://{bucket}/{key}", "mandatory": True}]}).encode()


class RedshiftWarehouse:
    """The load interface (see etl/warehouses.py) on Redshift, through the Data API."""

    dialect = "redshift"

    def __init__(self, cfg: config.Stack | None = None, api: DataApi | None = None):
        self.cfg = cfg or config.stack()
        self.api = api or DataApi()
        self.r = config.resources()
        self.s3 = aws.client("s3", self.cfg)
        etl = config.etl()
        self.iam_role = f"arn:aws:iam::{aws.client('sts', self.cfg).get_caller_identity()['Account']}:role/" \
                        f"{etl.redshift_copy_role_name}"

    # -- schema, manifest, runs
    def ensure_schema(self) -> None:
        self.api.run(schema_statements())

    def loaded_keys(self) -> set[str]:
        return {row[0] for row in self.api.query(f'SELECT "file_key" FROM {tables.MANIFEST_TABLE}')}

    def manifest_files(self) -> int:
        return int(self.api.query(f"SELECT count(*) FROM {tables.MANIFEST_TABLE}")[0][0])

    def record_run(self, values: dict) -> None:
        columns = ", ".join(f'"{k}"' for k in values)
        self.api.run([f'DELETE FROM dw.etl_run WHERE "run_id" = {literal(values["run_id"])}',
                      f"INSERT INTO dw.etl_run ({columns}) VALUES ({', '.join(_lit(v) for v in values.values())})"])

    # -- the lease (one batch: lock, create the row once, take it if free, expired or ours)
    def acquire(self, holder: str, ttl: float) -> bool:
        from warehouse.lease import EPOCH, LEASE_TABLE, NAME, _now

        now = _now()
        expires = now.timestamp() + ttl
        self.api.run([
            f"LOCK {LEASE_TABLE}",
            f'INSERT INTO {LEASE_TABLE} ("name", "holder", "acquired_at", "expires_at") SELECT {literal(NAME)}, NULL, '
            f"{_lit(EPOCH)}, {_lit(EPOCH)} WHERE NOT EXISTS (SELECT 1 FROM {LEASE_TABLE} WHERE \"name\" = {literal(NAME)})",
            # holder_session NULL: the Postgres dialect's session check (warehouse/lease.py) must not
            # free a lease the Data API holds because an earlier holder's session is gone.
            f'UPDATE {LEASE_TABLE} SET "holder" = {literal(holder)}, "holder_session" = NULL, "acquired_at" = {_lit(now)}, '
            f'"expires_at" = {_lit(datetime.fromtimestamp(expires))} WHERE "name" = {literal(NAME)} AND '
            f'("holder" IS NULL OR "expires_at" < {_lit(now)} OR "holder" = {literal(holder)})'])
        rows = self.api.query(f'SELECT "holder" FROM {LEASE_TABLE} WHERE "name" = {literal(NAME)}')
        return bool(rows) and rows[0][0] == holder

    def renew(self, holder: str, ttl: float) -> None:
        from warehouse.lease import LeaseLost

        if not self.acquire(holder, ttl):
            raise LeaseLost(f"the ETL lease is no longer held by {holder}")

    def release(self, holder: str) -> None:
        from warehouse.lease import EPOCH, LEASE_TABLE, NAME

        self.api.run([f'UPDATE {LEASE_TABLE} SET "holder" = NULL, "expires_at" = {_lit(EPOCH)} '
                      f'WHERE "name" = {literal(NAME)} AND "holder" = {literal(holder)}'])

    def lease_holder(self) -> str:
        from warehouse.lease import LEASE_TABLE

        rows = self.api.query(f'SELECT "holder", "expires_at" FROM {LEASE_TABLE}')
        return f"{rows[0][0]} until {rows[0][1]}" if rows else "nobody"

    # -- the load
    def load_group(self, files: list[StagedFile]) -> list[tuple[str, Outcome | None]]:
        group = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        keys = [key for key, _, _ in files]
        try:
            statements = group_statements([(key, etag, self._manifest(group, n, key)) for n, (key, etag, _)
                                           in enumerate(files)], self.iam_role)
            # The job dying with its group prepared and nothing committed (the Postgres dialect's
            # fault of the same name fires inside the open transaction; a batch sent to the Data API
            # runs to its end whatever becomes of the caller).
            maybe_fail("load.after_copy")
            self.api.run(statements)
        except RedshiftError:
            # A value Redshift refused: screen every row, COPY the screened copies and the rejects.
            screened, rejects = [], []
            for n, (key, etag, fetch) in enumerate(files):
                text, refused = screen(key, fetch())
                clean_key = f"_etl/screened/{group}/{n}.csv"
                self.s3.put_object(Bucket=self.r.staging_bucket, Key=clean_key, Body=text.encode("utf-8"))
                screened.append((key, etag, self._manifest(group, n, clean_key)))
                rejects += refused
            self.api.run(group_statements(screened, self.iam_role, self._rejects(group, rejects)))
        return self._outcomes(keys)

    def _manifest(self, group: str, number: int, key: str) -> str:
        manifest_key = f"_etl/manifests/{group}/{number}.manifest"
        self.s3.put_object(Bucket=self.r.staging_bucket, Key=manifest_key,
                           Body=manifest_document(self.r.staging_bucket, key))
        return f"s3://{self.r.staging_bucket}/{manifest_key}"

    def _rejects(self, group: str, rejects: list[Reject]) -> str | None:
        if not rejects:
            return None
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["file_key", "line_no", "event_id", "reason", "raw_line"])
        writer.writerows(r.row() for r in rejects)
        key = f"_etl/rejects/{group}.csv"
        self.s3.put_object(Bucket=self.r.staging_bucket, Key=key, Body=out.getvalue().encode("utf-8"))
        return self._manifest(group, -1, key)

    def _outcomes(self, keys: list[str]) -> list[tuple[str, Outcome | None]]:
        wanted = ", ".join(literal(k) for k in keys)
        rows = self.api.query(
            f'SELECT m."file_key", m."rows_in_file", m."rows_inserted", m."rows_updated", '
            f'(SELECT count(*) FROM {tables.REJECTS_TABLE} j WHERE j."file_key" = m."file_key") '
            f'FROM {tables.MANIFEST_TABLE} m WHERE m."file_key" IN ({wanted})')
        found = {row[0]: tuple(int(v) for v in row[1:]) for row in rows}
        return [(key, found.get(key)) for key in keys]  # type: ignore[misc]

    def close(self) -> None:
        return None


def _lit(value) -> str:
    if isinstance(value, datetime):
        # To the microsecond, as Redshift's TIMESTAMP keeps it: a run's start cut to the second sorted
        # before a moment it came after (the bench, which reads runs since a time, missed one).
        return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S.%f}'"
    return literal(value)

