"""The warehouse's schema in Redshift's SQL, ensured through the Data API by every ETL run and by the
operator's tools: the tables (schema.sql, created if missing), the fact table's Redshift layout, the
star columns added to a fact table from before them, and the analytics views (analytics.sql),
re-created only when that file changed (its checksum is kept in dw.schema_version), so a run does
not drop the views a report may be reading.
"""

from __future__ import annotations

import hashlib
import re

from warehouse import star, tables
from warehouse.recorder import RecordingConnection
from warehouse.redshift_data import DataApi, literal

# The fact table's physical layout on Redshift: an invoice's lines on one slice, sorted by the
# columns the load's duplicate-row flags look up per (invoice, stock code, time) group (the local
# Data API makes an index of a compound sort key, which is what keeps that look-up fast there).
FACT_LAYOUT = 'DISTKEY("invoice_no") COMPOUND SORTKEY("invoice_no", "stock_code", "invoice_ts")'
VERSION_TABLE = "dw.schema_version"


def split(sql: str) -> list[str]:
    """Statements of a .sql file, comments dropped (our .sql files have no "--" or ";" in literals)."""
    text = "\n".join(re.sub(r"--.*$", "", line) for line in sql.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


def table_statements() -> list[str]:
    """schema.sql as Redshift runs it: SYSDATE defaults, the fact table with its layout."""
    statements = [re.sub(r"DEFAULT CURRENT_TIMESTAMP", "DEFAULT SYSDATE", s) for s in split(tables.schema_sql())]
    statements = [
        f"{s} {FACT_LAYOUT}" if s.startswith(f"CREATE TABLE IF NOT EXISTS {tables.FACT_TABLE} ") else s
        for s in statements
    ]
    if sum(FACT_LAYOUT in s for s in statements) != 1:
        raise RuntimeError(f"schema.sql no longer creates {tables.FACT_TABLE} as one statement")
    return statements


def views_checksum() -> str:
    return hashlib.sha256(tables.analytics_sql().encode("utf-8")).hexdigest()[:16]


def view_statements() -> list[str]:
    """Drop and re-create schema `analytics` (dropping first lets a view's columns change), and
    record the checksum of analytics.sql it was made from."""
    return [
        "DROP SCHEMA IF EXISTS analytics CASCADE",
        *split(tables.analytics_sql()),
        f"DELETE FROM {VERSION_TABLE} WHERE \"part\" = 'analytics'",
        f'INSERT INTO {VERSION_TABLE} ("part", "checksum") VALUES (\'analytics\', {literal(views_checksum())})',
    ]


def schema_statements() -> list[str]:
    """Everything, unconditionally: the tables and the views (what a fresh warehouse runs)."""
    return table_statements() + view_statements()


def star_upgrade_statements(missing: list[str]) -> list[str]:
    """A fact table created before the star schema: add the derived columns, fill them from the
    source columns, and build the dimensions and duplicate flags from the facts already there
    (the statements the load runs per group, over the whole table)."""
    statements = [
        f'ALTER TABLE {tables.FACT_TABLE} ADD COLUMN "{name}" {star.DERIVED_COLUMN_TYPES[name]}' for name in missing
    ]
    assignments = ", ".join(
        f'"{name}" = {star.DERIVED_COLUMNS[name]}' for name in missing if name in star.DERIVED_COLUMNS
    )
    if assignments:
        statements.append(f"UPDATE {tables.FACT_TABLE} SET {assignments}")
    recorder = RecordingConnection()
    with recorder.cursor() as cur:
        star.rebuild_from_facts(cur)
    return statements + recorder.statements


def ensure_schema(api: DataApi) -> list[str]:
    """Bring the warehouse up to this version; returns what it changed ([] when nothing)."""
    api.run(table_statements())
    fact_schema, fact_name = tables.FACT_TABLE.split(".")
    present = {
        row[0]
        for row in api.query(
            f"SELECT column_name FROM information_schema.columns WHERE table_schema = {literal(fact_schema)} "
            f"AND table_name = {literal(fact_name)}"
        )
    }
    missing = [name for name in star.DERIVED_COLUMN_TYPES if name not in present]
    views = api.query(
        f'SELECT (SELECT "checksum" FROM {VERSION_TABLE} WHERE "part" = \'analytics\'), '
        f"(SELECT count(*) FROM information_schema.views WHERE table_schema = 'analytics')"
    )[0]
    changed: list[str] = []
    statements: list[str] = []
    if missing:
        statements += star_upgrade_statements(missing)
        changed.append(f"added the star columns {', '.join(missing)} and built the dimensions")
    # A view dropped behind our back (e.g. by a DROP COLUMN ... CASCADE on the fact table) counts as a change.
    if missing or views[0] != views_checksum() or int(views[1] or 0) != tables.analytics_sql().count("CREATE VIEW"):
        statements += view_statements()
        changed.append("re-created the analytics views")
    if statements:
        api.run(statements)
    return changed
