"""The "Glue job": staging CSV -> warehouse, exactly once per file and per event.

Per group of files (up to FILES_PER_TRANSACTION), in one transaction (the aws-sdk-pandas
staging-table + merge pattern):
  1. skip the files the load manifest already has;
  2. COPY each file into one temporary staging table, every row tagged with its file's number;
  3. stage the facts: one row per event_id (the last file wins, as if the files had been loaded one
     after another), derived columns such as amount and the cancellation/guest flags computed;
  4. write them to the fact table (UPDATE the events it has, INSERT the others), recompute the
     duplicate-row flags where the files changed a group, upsert the dimensions (warehouse/star.py);
  5. record every file in the manifest, with its own row counts.
A crash anywhere before COMMIT leaves nothing behind; a rerun loads each file once. One fact write
per group instead of one per file: the per-file transactions, commits and index probes were most of
the load time (docs/performance.md), and the manifest stays per file. UPDATE/INSERT and MERGE from
tables, not ON CONFLICT, so the statements carry to Redshift (where COPY reads from S3 instead of STDIN and the
file number comes from a COPY per file into its own staging table); see docs/warehouse.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ecom_core import aws, config
from ecom_core.contract import SchemaDrift
from etl.transform import list_keys
from etl.warehouses import open_warehouse
from warehouse.staging import Outcome

# Files per transaction: large enough that commits and statement set-up are amortised, small enough
# that a failed group is cheap to redo. (A Kinesis trigger batch of 5,000 records is one file.)
FILES_PER_TRANSACTION = 100


@dataclass
class LoadResult:
    files_seen: int = 0
    files_loaded: int = 0
    files_skipped: int = 0
    rows_in_files: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_rejected: int = 0
    loaded_keys: list[str] = field(default_factory=list)


def pending_keys(done: set[str], cfg: config.Stack | None = None) -> list[dict]:
    """Staging files not in `done` (the manifest's keys), in key order."""
    r = config.resources()
    s3 = aws.client("s3", cfg)
    return sorted(
        (o for o in list_keys(s3, r.staging_bucket, r.staging_prefix) if o["Key"] not in done), key=lambda o: o["Key"]
    )


def load(
    cfg: config.Stack | None = None, after_group: Callable[[], None] | None = None, *, schema_ready: bool = False
) -> LoadResult:
    """Load every pending staging file into the configured warehouse, a group per transaction (in
    a session of its own); `after_group` runs after each committed group (the ETL run renews its
    lease there). `schema_ready`: the caller has just ensured the schema (an ETL run does, once
    per tick), so this does not again."""
    r = config.resources()
    s3 = aws.client("s3", cfg)
    result = LoadResult()

    def fetcher(key: str) -> Callable[[], bytes]:
        return lambda: s3.get_object(Bucket=r.staging_bucket, Key=key)["Body"].read()

    warehouse = open_warehouse(cfg)
    try:
        if not schema_ready:
            warehouse.ensure_schema()
        pending = pending_keys(warehouse.loaded_keys(), cfg)
        for start in range(0, len(pending), FILES_PER_TRANSACTION):
            group = [
                (o["Key"], o.get("ETag", "").strip('"'), fetcher(o["Key"]))
                for o in pending[start : start + FILES_PER_TRANSACTION]
            ]
            try:
                outcomes = warehouse.load_group(group)
            except SchemaDrift as drift:
                # The group's transaction is void. Load the files before the drifted one (as a
                # file-by-file load would have), then stop naming it: nothing after it is loaded.
                keys = [key for key, _, _ in group]
                before = group[: keys.index(drift.key)] if drift.key in keys else []
                if before:
                    _account(result, warehouse.load_group(before))
                raise
            _account(result, outcomes)
            if after_group is not None:
                after_group()
    finally:
        warehouse.close()
    return result


def _account(result: LoadResult, outcomes: list[tuple[str, Outcome | None]]) -> None:
    for key, outcome in outcomes:
        result.files_seen += 1
        if outcome is None:
            result.files_skipped += 1
            continue
        rows, inserted, updated, rejected = outcome
        result.files_loaded += 1
        result.rows_in_files += rows
        result.rows_inserted += inserted
        result.rows_updated += updated
        result.rows_rejected += rejected
        result.loaded_keys.append(key)
