"""The warehouse side of the load: each group of staging files as one transaction of Redshift SQL,
sent through the Data API (warehouse/redshift_data.py) by the deployed job and every local run (the
local stack's Data API runs it on Postgres), with the schema, the lease and the run log.

Per group (etl/load.py describes the steps; warehouse/staging.py has the staging tables):
- COPY each file from S3 with the COPY role into a temporary table of its own (the session's, so
  before the transaction and in batches: group_load's `prepare`). Each file goes through a manifest
  of its own with `mandatory: true`, because `COPY FROM 's3://bucket/key'` is a prefix match: it
  would also load `key0`, `key.bak`, ... One INSERT ... SELECT ... UNION ALL then fills the staging
  table, each file's rows with its number.
- Then the transaction, in the same session: `LOCK dw.load_manifest`. Redshift does not enforce
  primary keys, so files another loader committed meanwhile are dropped from the staging tables
  under that lock, and the manifest rows are inserted from the statistics query in the same
  transaction.
- The star schema's statements (warehouse/star.py, recorded rather than run: they are written as
  calls on a cursor), the manifest rows, all in that transaction (one BatchExecuteStatement).
- Rows the warehouse refuses: Redshift's COPY fails the file; the job then screens the group in
  Python (warehouse.staging.screen), COPYs the screened copies and COPYs the rejects into dw.load_rejects.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from ecom_core import aws, config
from ecom_core.faults import maybe_fail
from warehouse import lease, schema, star, tables
from warehouse.recorder import RecordingConnection
from warehouse.redshift_data import DataApi, RedshiftError, literal
from warehouse.staging import (
    ANALYZE_STAGE,
    COLUMN_LIST,
    STAGE,
    STAGE_FILES,
    Outcome,
    Reject,
    StagedFile,
    file_stats_sql,
    screen,
)

# Manifests put at once before a group's COPYs (boto3 clients are thread-safe).
MANIFEST_THREADS = 8
REJECT_COLUMNS = '"file_key", "line_no", "event_id", "reason", "raw_line"'
COPY_OPTIONS = "FORMAT AS CSV IGNOREHEADER 1 EMPTYASNULL TIMEFORMAT 'auto' ACCEPTINVCHARS"


def star_stage_statements() -> list[str]:
    """The star schema's staging statements (warehouse/star.py, recorded)."""
    recorder = RecordingConnection()
    with recorder.cursor() as cur:
        star.stage_facts(cur, STAGE, STAGE_FILES)
    return recorder.statements


def star_write_statements() -> list[str]:
    """The star schema's writes: facts, duplicate flags, dimensions (warehouse/star.py, recorded)."""
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


def group_load(
    files: list[tuple[str, str, str]], iam_role: str, rejects_manifest: str | None = None
) -> tuple[list[str], list[str]]:
    """(prepare, transaction) loading a group: files = [(key, etag, manifest URL of the body to COPY)].

    `prepare` fills the session's temporary staging tables: nothing another session can see, so
    it needs neither the manifest's lock nor the group's transaction, and goes in batches (a
    statement per round trip was 0.5 s of the full file's 111 files). `transaction` takes the lock,
    drops the files another loader committed meanwhile, and writes the warehouse and the manifest."""
    per_file = [f"{STAGE}_{number}" for number in range(len(files))]
    prepare = [f"DROP TABLE IF EXISTS {', '.join([STAGE, STAGE_FILES, *per_file])}"]
    prepare += [
        f'CREATE TEMPORARY TABLE {STAGE} AS SELECT {COLUMN_LIST}, CAST(NULL AS INTEGER) AS "file_no" '
        f"FROM {tables.FACT_TABLE} WHERE 1 = 0",
        f'CREATE TEMPORARY TABLE {STAGE_FILES} ("file_no" INTEGER NOT NULL, "file_key" VARCHAR(512) NOT NULL, '
        f'"etag" VARCHAR(128))',
    ]
    # Each file into a temporary table of its own, then all of them into the staging table in one
    # INSERT that numbers their rows: tagging each file's rows with an UPDATE after its COPY
    # rescanned and rewrote the growing staging table every time (2.7 s of a 12.5 s full-file load).
    for table, (_, _, manifest_url) in zip(per_file, files, strict=True):
        prepare += [
            f"CREATE TEMPORARY TABLE {table} AS SELECT {COLUMN_LIST} FROM {tables.FACT_TABLE} WHERE 1 = 0",
            copy_statement(table, COLUMN_LIST, manifest_url, iam_role),
        ]
    if files:
        prepare += [
            f'INSERT INTO {STAGE} ({COLUMN_LIST}, "file_no") '
            + " UNION ALL ".join(
                f"SELECT {COLUMN_LIST}, {number} FROM {table}" for number, table in enumerate(per_file)
            ),
            f'INSERT INTO {STAGE_FILES} ("file_no", "file_key", "etag") VALUES '
            + ", ".join(f"({number}, {literal(key)}, {literal(etag)})" for number, (key, etag, _) in enumerate(files)),
            f"DROP TABLE {', '.join(per_file)}",
        ]
    transaction = [
        f"LOCK {tables.MANIFEST_TABLE}",
        f'DELETE FROM {STAGE_FILES} WHERE "file_key" IN (SELECT "file_key" FROM {tables.MANIFEST_TABLE})',
        f'DELETE FROM {STAGE} WHERE "file_no" NOT IN (SELECT "file_no" FROM {STAGE_FILES})',
    ]
    if rejects_manifest:
        transaction.append(copy_statement(tables.REJECTS_TABLE, REJECT_COLUMNS, rejects_manifest, iam_role))
    transaction += [
        ANALYZE_STAGE,
        *star_stage_statements(),
        # The manifest rows, from the per-file statistics, before the facts change (new vs present).
        f'INSERT INTO {tables.MANIFEST_TABLE} ("file_key", "etag", "rows_in_file", "rows_inserted", "rows_updated") '
        f"{file_stats_sql(for_manifest=True)}",
        *star_write_statements(),
        f"DROP TABLE {STAGE}, {STAGE_FILES}",
    ]
    return prepare, transaction


def manifest_document(bucket: str, key: str) -> bytes:
    return json.dumps({"entries": [{"url": f"s3://{bucket}/{key}", "mandatory": True}]}).encode()


class RedshiftWarehouse:
    """The load interface (etl/warehouses.py) on Redshift, through the Data API."""

    dialect = "redshift"

    def __init__(self, cfg: config.Stack | None = None, api: DataApi | None = None):
        self.cfg = cfg or config.stack()
        self.api = api or DataApi(cfg=self.cfg)
        self.r = config.resources()
        self.s3 = aws.client("s3", self.cfg)
        etl = config.etl()
        self.iam_role = (
            f"arn:aws:iam::{aws.client('sts', self.cfg).get_caller_identity()['Account']}:role/"
            f"{etl.redshift_copy_role_name}"
        )

    # -- schema, manifest, runs
    def ensure_schema(self) -> None:
        schema.ensure_schema(self.api)

    def loaded_keys(self) -> set[str]:
        return {row[0] for row in self.api.query(f'SELECT "file_key" FROM {tables.MANIFEST_TABLE}')}

    def manifest_files(self) -> int:
        return int(self.api.query(f"SELECT count(*) FROM {tables.MANIFEST_TABLE}")[0][0])

    def record_run(self, values: dict) -> None:
        columns = ", ".join(f'"{k}"' for k in values)
        self.api.run(
            [
                f'DELETE FROM dw.etl_run WHERE "run_id" = {literal(values["run_id"])}',
                f"INSERT INTO dw.etl_run ({columns}) VALUES ({', '.join(_lit(v) for v in values.values())})",
            ]
        )

    # -- the lease (warehouse/lease.py)
    def acquire(self, holder: str, ttl: float) -> bool:
        return lease.acquire(self.api, holder, ttl)

    def renew(self, holder: str, ttl: float) -> None:
        lease.renew(self.api, holder, ttl)

    def release(self, holder: str) -> None:
        lease.release(self.api, holder)

    def lease_holder(self) -> str:
        held = lease.current(self.api)
        return f"{held.holder} until {held.expires_at}" if held.holder else "nobody"

    # -- the load
    def load_group(self, files: list[StagedFile]) -> list[tuple[str, Outcome | None]]:
        group = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        keys = [key for key, _, _ in files]
        prepare, transaction = group_load(
            list(zip(keys, [etag for _, etag, _ in files], self._manifests(group, keys), strict=True)),
            self.iam_role,
        )
        try:
            try:
                # The fault point (before_commit): every file COPYed into the session's staging
                # tables, nothing of the group's transaction committed (on the BEGIN path: its
                # facts, dimensions and manifest rows done inside the open transaction).
                self.api.run(transaction, before_commit=lambda: maybe_fail("load.after_copy"), prepare=prepare)
            except RedshiftError:
                # Once more as it is: a transaction lost to a restart or a dropped connection is not
                # a refused value (the group statements skip files committed meanwhile); a refused
                # value fails again.
                self.api.run(transaction, prepare=prepare)
        except RedshiftError:
            # A value Redshift refused: screen every row, COPY the screened copies and the rejects.
            screened, rejects = [], []
            for n, (key, etag, fetch) in enumerate(files):
                text, refused = screen(key, fetch())
                clean_key = f"_etl/screened/{group}/{n}.csv"
                self.s3.put_object(Bucket=self.r.staging_bucket, Key=clean_key, Body=text.encode("utf-8"))
                screened.append((key, etag, self._manifest(group, n, clean_key)))
                rejects += refused
            prepare, transaction = group_load(screened, self.iam_role, self._rejects(group, rejects))
            self.api.run(transaction, prepare=prepare)
        return self._outcomes(keys)

    def _manifests(self, group: str, keys: list[str]) -> list[str]:
        """A manifest per file (see _manifest), put a few at a time: one after another they were
        0.3 s of the full file's load, each PUT a round trip."""
        with ThreadPoolExecutor(MANIFEST_THREADS, thread_name_prefix="manifest") as pool:
            return list(pool.map(lambda numbered: self._manifest(group, *numbered), enumerate(keys)))

    def _manifest(self, group: str, number: int, key: str) -> str:
        manifest_key = f"_etl/manifests/{group}/{number}.manifest"
        self.s3.put_object(
            Bucket=self.r.staging_bucket, Key=manifest_key, Body=manifest_document(self.r.staging_bucket, key)
        )
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
            f'FROM {tables.MANIFEST_TABLE} m WHERE m."file_key" IN ({wanted})'
        )
        found = {row[0]: tuple(int(v) for v in row[1:]) for row in rows}
        return [(key, found.get(key)) for key in keys]  # type: ignore[misc]

    def close(self) -> None:
        return None


def _lit(value: object) -> str:
    return lease.timestamp(value) if isinstance(value, datetime) else literal(value)
