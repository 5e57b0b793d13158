"""The "Glue job": staging CSV -> warehouse, exactly once per file and per event.

Per file, in one transaction (the aws-sdk-pandas staging-table + merge pattern):
  1. skip it if the load manifest already has it;
  2. COPY it into a temporary staging table;
  3. MERGE into the fact table on event_id (duplicates inside the file collapse first, derived
     columns such as amount and the cancellation/guest flags are computed on the way);
  4. recompute the duplicate-row flags of the groups the file touched, upsert the dimensions;
  5. record it in the manifest.
A crash anywhere before COMMIT leaves nothing behind; a rerun loads the file once. MERGE, not
ON CONFLICT, so the same statements run on Redshift (where COPY reads from S3 instead of STDIN);
see warehouse/star.py and docs/warehouse.md.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

import psycopg2.extensions

from ecom import aws, config
from etl.contract import COLUMNS, CSV_HEADER, SchemaDrift
from etl.transform import list_keys
from handlers.faults import maybe_fail
from warehouse import db, star

STAGE = "stage_sales_line"
COLUMN_LIST = ", ".join(f'"{w}"' for _, _, w in COLUMNS)


@dataclass
class LoadResult:
    files_seen: int = 0
    files_loaded: int = 0
    files_skipped: int = 0
    rows_in_files: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    loaded_keys: list[str] = field(default_factory=list)


def check_header(key: str, header_line: str) -> None:
    header = next(csv.reader([header_line]))
    if header == CSV_HEADER:
        return
    unexpected = [c for c in header if c not in CSV_HEADER]
    missing = [c for c in CSV_HEADER if c not in header]
    details = []
    if unexpected:
        details.append(f"new column(s) {', '.join(unexpected)} not in the warehouse")
    if missing:
        details.append(f"missing column(s) {', '.join(missing)}")
    if not details:
        details.append(f"columns in a different order: {', '.join(header)}")
    raise SchemaDrift(f"{key}: {'; '.join(details)}. Nothing from this file was loaded; add the column to "
                      f"warehouse/schema.sql and etl/contract.py, then rerun `ecom etl load`.")


def record_in_manifest(cur, key: str, etag: str, rows: int, inserted: int, updated: int) -> None:
    """The last statement before COMMIT: the file counts as loaded only together with its rows."""
    cur.execute(f'INSERT INTO {db.MANIFEST_TABLE} ("file_key", "etag", "rows_in_file", "rows_inserted", '
                f'"rows_updated") VALUES (%s, %s, %s, %s, %s)', (key, etag, rows, inserted, updated))


def load_file(conn: psycopg2.extensions.connection, key: str, etag: str, body: bytes) -> tuple[int, int, int] | None:
    """Load one staging file in one transaction. Returns (rows, inserted, updated), or None if already loaded."""
    text = body.decode("utf-8")
    check_header(key, text.split("\n", 1)[0])
    with conn.cursor() as cur:
        # Loaders running at the same time serialise here; the manifest check is then reliable.
        cur.execute(f'LOCK TABLE {db.MANIFEST_TABLE} IN EXCLUSIVE MODE')
        cur.execute(f'SELECT 1 FROM {db.MANIFEST_TABLE} WHERE "file_key" = %s', (key,))
        if cur.fetchone():
            conn.rollback()
            return None
        # Same column types as the fact table, none of its constraints (CTAS works on Redshift too).
        cur.execute(f"DROP TABLE IF EXISTS {STAGE}")
        cur.execute(f"CREATE TEMPORARY TABLE {STAGE} AS SELECT {COLUMN_LIST} FROM {db.FACT_TABLE} WHERE 1 = 0")
        cur.copy_expert(f"COPY {STAGE} ({COLUMN_LIST}) FROM STDIN WITH (FORMAT csv, HEADER true)", io.StringIO(text))
        cur.execute(f"SELECT count(*) FROM {STAGE}")
        rows = cur.fetchone()[0]
        star.stage_facts(cur, STAGE, key)
        inserted = star.count_new_events(cur)
        merged = star.merge_facts(cur)
        star.refresh_duplicate_flags(cur)
        star.upsert_dimensions(cur)
        record_in_manifest(cur, key, etag, rows, inserted, merged - inserted)
        maybe_fail("load.after_copy")
    conn.commit()
    return rows, inserted, merged - inserted


def loaded_keys(conn: psycopg2.extensions.connection) -> set[str]:
    with conn.cursor() as cur:
        cur.execute(f'SELECT "file_key" FROM {db.MANIFEST_TABLE}')
        keys = {row[0] for row in cur.fetchall()}
    conn.commit()
    return keys


def pending_keys(conn, cfg: config.Stack | None = None) -> list[dict]:
    r = config.resources()
    s3 = aws.client("s3", cfg)
    done = loaded_keys(conn)
    return [o for o in list_keys(s3, r.staging_bucket, r.staging_prefix) if o["Key"] not in done]


def load(cfg: config.Stack | None = None, dsn: str | None = None) -> LoadResult:
    r = config.resources()
    s3 = aws.client("s3", cfg)
    result = LoadResult()
    with db.connection(dsn) as conn:
        db.ensure_schema(conn)
        for obj in sorted(pending_keys(conn, cfg), key=lambda o: o["Key"]):
            result.files_seen += 1
            response = s3.get_object(Bucket=r.staging_bucket, Key=obj["Key"])
            outcome = load_file(conn, obj["Key"], response.get("ETag", "").strip('"'), response["Body"].read())
            if outcome is None:
                result.files_skipped += 1
                continue
            rows, inserted, updated = outcome
            result.files_loaded += 1
            result.rows_in_files += rows
            result.rows_inserted += inserted
            result.rows_updated += updated
            result.loaded_keys.append(obj["Key"])
    return result
