"""The Postgres dialect of the load, lease and run log (psycopg2, COPY FROM STDIN): for local tools
and a Postgres warehouse reached directly. Never in a Lambda zip (psycopg2 is not bundled): the
deployed job loads through the Redshift Data API (etl/redshift.py) on every target.

Per group of files, in one transaction: the steps etl/load.py describes.
"""
from __future__ import annotations

import io
import json

import psycopg2
import psycopg2.extensions

from ecom_core.faults import maybe_fail
from etl.load import (ANALYZE_STAGE, COLUMN_LIST, FILE_STATS_SQL, STAGE, STAGE_FILES, Outcome, Reject, SchemaDrift,
                      StagedFile, _safe, check_header, screen)
from warehouse import db, lease, star


def record_in_manifest(cur, key: str, etag: str, rows: int, inserted: int, updated: int) -> None:
    """The file counts as loaded only together with its rows: same transaction, before COMMIT."""
    cur.execute(f'INSERT INTO {db.MANIFEST_TABLE} ("file_key", "etag", "rows_in_file", "rows_inserted", '
                f'"rows_updated") VALUES (%s, %s, %s, %s, %s)', (key, etag, rows, inserted, updated))


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


class PostgresWarehouse:
    dialect = "postgres"

    def __init__(self, dsn: str | None = None):
        self.conn = db.connect(dsn)

    def ensure_schema(self) -> None:
        db.ensure_schema(self.conn)

    def loaded_keys(self) -> set[str]:
        return loaded_keys(self.conn)

    def load_group(self, files: list[StagedFile]) -> list[tuple[str, Outcome | None]]:
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


