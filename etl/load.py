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

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Callable

import psycopg2.extensions

from ecom_core import aws, config
from ecom_core.contract import COLUMNS, CSV_HEADER, SchemaDrift, csv_row_problem
from etl.transform import list_keys
from ecom_core.faults import maybe_fail
from warehouse import db, star

STAGE = "stage_sales_line"
STAGE_FILES = "stage_files"
# Files per transaction: large enough that commits and statement set-up are amortised, small enough
# that a failed group is cheap to redo. (A Kinesis trigger batch of 5,000 records is one file.)
FILES_PER_TRANSACTION = 100
COLUMN_LIST = ", ".join(f'"{w}"' for _, _, w in COLUMNS)
# Statistics for the planner on the columns the group's statements partition and join by (the
# dedupe window, the file join, the per-invoice look-up): a quarter of what all 13 columns cost.
ANALYZE_STAGE = f'ANALYZE {STAGE} ("event_id", "file_no", "invoice_no")'


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
                      f"warehouse/schema.sql and ecom_core/contract.py, then rerun `ecom etl load`.", key=key)


def record_in_manifest(cur, key: str, etag: str, rows: int, inserted: int, updated: int) -> None:
    """The file counts as loaded only together with its rows: same transaction, before COMMIT."""
    cur.execute(f'INSERT INTO {db.MANIFEST_TABLE} ("file_key", "etag", "rows_in_file", "rows_inserted", '
                f'"rows_updated") VALUES (%s, %s, %s, %s, %s)', (key, etag, rows, inserted, updated))


def file_stats_sql(for_manifest: bool = False) -> str:
    """Per file of the group: rows, distinct events, and events new to the warehouse (each counted
    in the first file of the group that has it, as sequential per-file loads would have counted
    it). Run after star.stage_facts (which looked each event up once) and before the facts are
    written. `for_manifest`: as the manifest's columns (file_key, etag, rows_in_file with the
    file's rejected rows, rows_inserted, rows_updated), for an INSERT ... SELECT."""
    # A file's distinct events: its rows less the extra copies of an event it holds more than once,
    # counted among the group's repeated events only (star.REPEATED_EVENTS, usually none) instead of
    # a count(DISTINCT) that sorts every event id of the group.
    stats = f"""
    FROM {STAGE_FILES} f
    LEFT JOIN (SELECT "file_no", count(*) AS rows FROM {STAGE} GROUP BY "file_no") r ON r."file_no" = f."file_no"
    LEFT JOIN (SELECT "file_no", sum("copies" - 1) AS extra
               FROM (SELECT d."file_no", d."event_id", count(*) AS "copies"
                     FROM {STAGE} AS d JOIN {star.REPEATED_EVENTS} AS e ON e."event_id" = d."event_id"
                     GROUP BY d."file_no", d."event_id") AS c
               GROUP BY "file_no") x ON x."file_no" = f."file_no"
    LEFT JOIN (SELECT "first_file_no" AS "file_no", count(*) AS new_events
               FROM {star.STAGE_FACT} WHERE "is_new" GROUP BY "first_file_no") n ON n."file_no" = f."file_no\""""
    events = 'coalesce(r.rows, 0) - coalesce(x.extra, 0)'
    if not for_manifest:
        return f'SELECT f."file_no", coalesce(r.rows, 0), {events}, coalesce(n.new_events, 0) {stats}'
    return (f'SELECT f."file_key", f."etag", coalesce(r.rows, 0) + coalesce(j.rejected, 0), coalesce(n.new_events, 0), '
            f'{events} - coalesce(n.new_events, 0) {stats}\n'
            f'    LEFT JOIN (SELECT "file_key", count(*) AS rejected FROM {db.REJECTS_TABLE} GROUP BY "file_key") j '
            f'ON j."file_key" = f."file_key"')


FILE_STATS_SQL = file_stats_sql()

StagedFile = tuple[str, str, Callable[[], bytes]]  # (key, etag, fetch the body)
# Per file: (rows, inserted, updated, rejected), or None when the manifest already had it.
Outcome = tuple[int, int, int, int]


@dataclass(frozen=True)
class Reject:
    file_key: str
    line_no: int           # line in the staging CSV (header = 1); 0 for the whole file
    event_id: str | None
    reason: str
    raw_line: str | None   # JSON, non-ASCII escaped: storable whatever the bytes were

    def row(self) -> tuple:
        return (self.file_key, self.line_no, self.event_id, self.reason[:1000],
                None if self.raw_line is None else self.raw_line[:65535])


def _safe(text: str, limit: int) -> str:
    return json.dumps(text, ensure_ascii=True)[1:-1][:limit]


def screen(key: str, body: bytes) -> tuple[str, list[Reject]]:
    """The file's CSV with only the rows the warehouse can store, and the rest as rejects.

    The slow path: the load first tries a group as it is (our transform writes only rows that
    passed ingestion's rules) and screens only after the warehouse refused something.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ",".join(CSV_HEADER) + "\n", [Reject(key, 0, None, f"file is not UTF-8 ({exc.reason} at byte "
                                                                    f"{exc.start})", None)]
    header_line, _, rest = text.partition("\n")
    check_header(key, header_line)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    rejects: list[Reject] = []
    reader = csv.reader(io.StringIO(rest))
    while True:
        line_no = reader.line_num + 2  # the row about to be read starts on this line (header = 1)
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rejects.append(Reject(key, line_no, None, f"not CSV: {exc}", None))
            continue
        row = dict(zip(CSV_HEADER, values))
        problem = (f"{len(values)} fields, expected {len(CSV_HEADER)}" if len(values) != len(CSV_HEADER)
                   else csv_row_problem(row))
        if problem:
            rejects.append(Reject(key, line_no, _safe(row.get("event_id") or "", 256) or None, problem,
                                  json.dumps(values, ensure_ascii=True)))
        else:
            writer.writerow(values)
    return out.getvalue(), rejects


def record_rejects(cur, rejects: list[Reject]) -> None:
    if rejects:
        cur.executemany(f'INSERT INTO {db.REJECTS_TABLE} ("file_key", "line_no", "event_id", "reason", "raw_line") '
                        f'VALUES (%s, %s, %s, %s, %s)', [r.row() for r in rejects])


def load_group(conn: psycopg2.extensions.connection,
               files: list[StagedFile]) -> list[tuple[str, Outcome | None]]:
    """Load a group of staging files; no row the warehouse refuses ever stops the group.

    1. The whole group in one transaction, as it is (the fast path: nearly always).
    2. If the warehouse refused a value: again, every row screened first (`screen`); refused rows
       go to the rejects table in the same transaction.
    3. If it still refuses (something the screen does not know): file by file, screened; a file
       that still fails has all its rows set aside with the warehouse's error, so the files
       behind it load.
    """
    try:
        return load_files(conn, files)
    except SchemaDrift:
        conn.rollback()
        raise
    except (psycopg2.DataError, psycopg2.IntegrityError, UnicodeDecodeError):
        conn.rollback()
    try:
        return load_files(conn, files, screened=True)
    except (psycopg2.DataError, psycopg2.IntegrityError):
        conn.rollback()
    outcomes: list[tuple[str, Outcome | None]] = []
    for file in files:
        try:
            outcomes += load_files(conn, [file], screened=True)
        except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
            conn.rollback()
            outcomes += set_file_aside(conn, file, f"refused by the warehouse: {type(exc).__name__}: "
                                                   f"{str(exc).strip()}"[:1000])
    return outcomes


def set_file_aside(conn: psycopg2.extensions.connection, file: StagedFile, reason: str) -> list[tuple[str, Outcome | None]]:
    """Every data row of the file to the rejects table, and the file to the manifest (0 inserted)."""
    key, etag, fetch = file
    body = fetch()
    lines = body.decode("utf-8", errors="replace").split("\n")[1:]
    rejects = [Reject(key, number, _safe(line.split(",", 1)[0], 256) or None, reason, json.dumps(line, ensure_ascii=True))
               for number, line in enumerate(lines, start=2) if line.strip()]
    with conn.cursor() as cur:
        cur.execute(f'LOCK TABLE {db.MANIFEST_TABLE} IN EXCLUSIVE MODE')
        cur.execute(f'SELECT 1 FROM {db.MANIFEST_TABLE} WHERE "file_key" = %s', (key,))
        if cur.fetchone():
            conn.rollback()
            return [(key, None)]
        record_rejects(cur, rejects)
        record_in_manifest(cur, key, etag, len(rejects), 0, 0)
    conn.commit()
    return [(key, (len(rejects), 0, 0, len(rejects)))]


def keep_fact_statistics_true(cur) -> None:
    """Postgres: the planner must never take the fact table for empty while it holds rows.

    Auto-analyze sampling the fact table while a load's INSERT is still uncommitted counts none of
    those rows: it records the table's pages with zero rows (pg_class.reltuples = 0), and from then
    on the planner estimates one row for it. After a first load into an empty warehouse that turned
    the duplicate-flag statements into nested loops over the whole table: 593 s instead of ~1 s for
    the full file (docs/performance.md, round six). So a load holds SHARE UPDATE EXCLUSIVE on the
    table until it commits (auto-vacuum and auto-analyze skip a table they cannot lock; readers and
    writers are not blocked), and statistics left that way earlier (fewer rows than pages) are
    renewed first, inside the transaction."""
    cur.execute(f"LOCK TABLE {db.FACT_TABLE} IN SHARE UPDATE EXCLUSIVE MODE")
    cur.execute("SELECT relpages, reltuples FROM pg_class WHERE oid = CAST(%s AS regclass)", (db.FACT_TABLE,))
    pages, rows = cur.fetchone()
    if pages > 0 and rows < pages:
        cur.execute(f"ANALYZE {db.FACT_TABLE}")


def load_files(conn: psycopg2.extensions.connection, files: list[StagedFile], *,
               screened: bool = False) -> list[tuple[str, Outcome | None]]:
    """Load a group of staging files in one transaction.

    Returns, per file in order, (key, (rows, inserted, updated, rejected)) or (key, None) if it was
    already loaded. Bodies are fetched one at a time, right before their COPY (bounded memory).
    `screened`: check every row first and set refused rows aside (see `load_group`).
    """
    outcomes: dict[str, Outcome] = {}
    rejected: dict[str, int] = {}
    with conn.cursor() as cur:
        # Loaders running at the same time serialise here; the manifest check is then reliable.
        cur.execute(f'LOCK TABLE {db.MANIFEST_TABLE} IN EXCLUSIVE MODE')
        keys = [key for key, _, _ in files]
        cur.execute(f'SELECT "file_key" FROM {db.MANIFEST_TABLE} WHERE "file_key" = ANY(%s)', (keys,))
        done = {row[0] for row in cur.fetchall()}
        todo, seen = [], set(done)
        for file in files:
            if file[0] not in seen:  # a key listed twice is loaded once
                seen.add(file[0])
                todo.append(file)
        if not todo:
            conn.rollback()
            return [(key, None) for key in keys]
        keep_fact_statistics_true(cur)
        # Same column types as the fact table, none of its constraints (CTAS works on Redshift too),
        # plus the number of the file each row came from, filled in by COPY from a setting.
        cur.execute(f"DROP TABLE IF EXISTS {STAGE}")
        cur.execute(f"DROP TABLE IF EXISTS {STAGE_FILES}")
        cur.execute(f"CREATE TEMPORARY TABLE {STAGE} AS SELECT {COLUMN_LIST} FROM {db.FACT_TABLE} WHERE 1 = 0")
        cur.execute("SELECT set_config('ecom.load_file_no', '-1', true)")  # must exist when the column is added
        cur.execute(f"ALTER TABLE {STAGE} ADD COLUMN \"file_no\" integer "
                    f"DEFAULT current_setting('ecom.load_file_no')::integer")
        cur.execute(f'CREATE TEMPORARY TABLE {STAGE_FILES} ("file_no" integer NOT NULL, '
                    f'"file_key" varchar(512) NOT NULL, "etag" varchar(128))')
        for number, (key, etag, fetch) in enumerate(todo):
            if screened:
                text, rejects = screen(key, fetch())
                record_rejects(cur, rejects)
                rejected[key] = len(rejects)
            else:
                text = fetch().decode("utf-8")
                check_header(key, text.split("\n", 1)[0])
            cur.execute("SELECT set_config('ecom.load_file_no', %s, true)", (str(number),))
            cur.copy_expert(f"COPY {STAGE} ({COLUMN_LIST}) FROM STDIN WITH (FORMAT csv, HEADER true)",
                            io.StringIO(text))
            del text
            cur.execute(f'INSERT INTO {STAGE_FILES} ("file_no", "file_key", "etag") VALUES (%s, %s, %s)',
                        (number, key, etag))
        cur.execute(ANALYZE_STAGE)
        star.stage_facts(cur, STAGE, STAGE_FILES)
        cur.execute(FILE_STATS_SQL)
        stats = {row[0]: row[1:] for row in cur.fetchall()}
        star.write_facts(cur)
        star.refresh_duplicate_flags(cur)
        star.upsert_dimensions(cur)
        for number, (key, etag, _) in enumerate(todo):
            rows, events, inserted = stats[number]
            # rows_in_file counts every data row, the rejected ones included.
            rows += rejected.get(key, 0)
            outcomes[key] = (rows, inserted, events - inserted, rejected.get(key, 0))
            record_in_manifest(cur, key, etag, rows, inserted, events - inserted)
        cur.execute(f"DROP TABLE {STAGE}")
        cur.execute(f"DROP TABLE {STAGE_FILES}")
        maybe_fail("load.after_copy")
    conn.commit()
    reported: set[str] = set()
    answer = []
    for key in keys:
        answer.append((key, outcomes.get(key) if key not in done and key not in reported else None))
        reported.add(key)
    return answer


def load_file(conn: psycopg2.extensions.connection, key: str, etag: str, body: bytes) -> Outcome | None:
    """Load one staging file. Returns (rows, inserted, updated, rejected), or None if already loaded."""
    return load_group(conn, [(key, etag, lambda: body)])[0][1]


def loaded_keys(conn: psycopg2.extensions.connection) -> set[str]:
    with conn.cursor() as cur:
        cur.execute(f'SELECT "file_key" FROM {db.MANIFEST_TABLE}')
        keys = {row[0] for row in cur.fetchall()}
    conn.commit()
    return keys


def pending_keys(done: set[str], cfg: config.Stack | None = None) -> list[dict]:
    """Staging files not in `done` (the manifest's keys), in key order."""
    r = config.resources()
    s3 = aws.client("s3", cfg)
    return sorted((o for o in list_keys(s3, r.staging_bucket, r.staging_prefix) if o["Key"] not in done),
                  key=lambda o: o["Key"])


def load(cfg: config.Stack | None = None, dsn: str | None = None,
         after_group: Callable[[], None] | None = None, *, schema_ready: bool = False) -> LoadResult:
    """Load every pending staging file into the configured warehouse, a group per transaction (in
    a session of its own); `after_group` runs after each committed group (the ETL run renews its
    lease there). `schema_ready`: the caller has just ensured the schema (an ETL run does, once
    per tick), so this does not again."""
    from etl.warehouses import open_warehouse

    r = config.resources()
    s3 = aws.client("s3", cfg)
    result = LoadResult()

    def fetcher(key: str) -> Callable[[], bytes]:
        return lambda: s3.get_object(Bucket=r.staging_bucket, Key=key)["Body"].read()

    warehouse = open_warehouse(cfg, dsn)
    try:
        if not schema_ready:
            warehouse.ensure_schema()
        pending = pending_keys(warehouse.loaded_keys(), cfg)
        for start in range(0, len(pending), FILES_PER_TRANSACTION):
            group = [(o["Key"], o.get("ETag", "").strip('"'), fetcher(o["Key"]))
                     for o in pending[start:start + FILES_PER_TRANSACTION]]
            try:
                outcomes = warehouse.load_group(group)
            except SchemaDrift as drift:
                # The group's transaction is void. Load the files before the drifted one (as a
                # file-by-file load would have), then stop naming it: nothing after it is loaded.
                keys = [key for key, _, _ in group]
                before = group[:keys.index(drift.key)] if drift.key in keys else []
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
