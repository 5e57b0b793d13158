"""The Redshift dialect (etl/redshift.py): every statement the schema and the load emit parses as
Redshift SQL (sqlglot), and the load names the same tables, columns and keys as its Postgres twin
(the statements etl/load.py runs, recorded). No Redshift is reachable here: the Data API client is
exercised against a stub."""
from __future__ import annotations

import re

import pytest
import sqlglot
from sqlglot import exp

from ecom_core.contract import CSV_HEADER, WAREHOUSE_COLUMNS
from etl import load, postgres
from etl.redshift import group_statements, schema_statements, star_statements
from warehouse.recorder import RecordingConnection
from warehouse.redshift_data import DataApi, RedshiftError, literal

FILES = [("csv/shardId-000000000000/1-9.csv", "etag-1"), ("csv/shardId-000000000001/2-8.csv", "etag-2")]
ROLE = "arn:aws:iam::123456789012:role/ecom-redshift-copy-role"
BODY = (",".join(CSV_HEADER) + "\n").encode()


def redshift_load() -> list[str]:
    return group_statements([(key, etag, f"s3://staging-bucket-ecom/_etl/manifests/g/{n}.manifest")
                             for n, (key, etag) in enumerate(FILES)], ROLE,
                            rejects_manifest="s3://staging-bucket-ecom/_etl/manifests/g/-1.manifest")


def postgres_load() -> list[str]:
    """What etl/load.py sends Postgres for the same group, recorded (one stats row per file)."""
    def answer(sql: str) -> list[tuple]:
        if sql == load.FILE_STATS_SQL:
            return [(n, 0, 0, 0) for n in range(len(FILES))]
        return [(0, 0.0)] if "pg_class" in sql else []  # the fact table's statistics: empty, as they should be

    conn = RecordingConnection(answer)
    postgres.load_files(conn, [(key, etag, lambda: BODY) for key, etag in FILES])
    return [s for s in conn.statements if s not in ("COMMIT", "ROLLBACK")]


def parse(sql: str, dialect: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read=dialect, error_level=sqlglot.ErrorLevel.RAISE)


def kind(sql: str, dialect: str) -> tuple[str, str]:
    """(verb, table it acts on): how twins are paired."""
    lock = re.match(r"LOCK (?:TABLE )?([\w.\"]+)", sql)
    if lock:
        return "LOCK", lock.group(1)
    tree = parse(sql, dialect)
    target = tree.find(exp.Table)
    name = ".".join(p for p in (target.db, target.name) if p) if target else ""
    return type(tree).__name__.upper(), name


def names(sql: str, dialect: str) -> tuple[set[str], set[str]]:
    tree = parse(sql, dialect)
    tables = {".".join(p for p in (t.db, t.name) if p) for t in tree.find_all(exp.Table)}
    columns = {c.name for c in tree.find_all(exp.Column)} | {i.name for i in tree.find_all(exp.Identifier)}
    return tables, columns


def test_every_redshift_statement_parses():
    statements = schema_statements() + redshift_load()
    assert len(statements) > 60
    for sql in statements:
        if sql.startswith("LOCK "):
            assert re.fullmatch(r"LOCK dw\.\w+", sql), sql  # Redshift's form: no TABLE, no lock mode
            continue
        tree = parse(sql, "redshift")
        assert not isinstance(tree, exp.Command), sql[:120]
    text = "\n".join(statements).replace(ROLE, "<role>")
    # Postgres-only syntax the dialect must not carry.
    for forbidden in ("ON CONFLICT", "::", "FROM STDIN", "set_config", "current_setting", "SERIAL", "ANY(",
                      "CURRENT_TIMESTAMP", "VALUES (1, '1'"):
        assert forbidden not in text, forbidden


def test_the_schema_creates_the_same_tables_and_columns_on_both():
    from warehouse import db

    postgres = [s for s in re.split(r";\s*\n", db.schema_sql()) if "CREATE TABLE" in s]
    redshift = [s for s in schema_statements() if s.startswith("CREATE TABLE")]

    def tables(statements: list[str], dialect: str) -> dict[str, set[str]]:
        out = {}
        for sql in statements:
            sql = "\n".join(re.sub(r"--.*$", "", line) for line in sql.splitlines())
            tree = parse(sql[sql.index("CREATE"):], dialect)
            table = tree.find(exp.Table)
            out[f"{table.db}.{table.name}"] = {c.name for c in tree.find_all(exp.ColumnDef)}
        return out

    assert tables(redshift, "redshift") == tables(postgres, "postgres")
    assert {"dw.fact_sales_line", "dw.load_manifest", "dw.load_rejects", "dw.etl_lease", "dw.etl_run",
            "dw.dim_product", "dw.dim_customer", "dw.dim_date", "dw.dim_country"} <= set(tables(redshift, "redshift"))


def test_the_load_is_the_postgres_load_step_for_step():
    pg, rs = postgres_load(), redshift_load()
    pg_kinds = {kind(s, "postgres"): s for s in pg}
    rs_kinds = {kind(s, "redshift"): s for s in rs}
    # Where the dialects differ, and why (each documented in etl/redshift.py).
    only_postgres = {
        ("SELECT", "dw.load_manifest"),       # files already loaded: Postgres asks first (ANY(%s)) ...
        ("SELECT", ""),                       # set_config: the file number as a COPY column default
        ("ALTER", "stage_sales_line"),        # ... and that default on the staging table
        ("LOCK", "dw.fact_sales_line"),       # auto-analyze kept off the fact table during a load ...
        ("SELECT", "pg_class"),               # ... and its statistics checked (Redshift: no autoanalyze race)
    }
    only_redshift = {
        ("UPDATE", "stage_sales_line"),       # ... Redshift tags each file's rows after its COPY
        ("DELETE", "stage_files"),            # ... and drops already-loaded files under the lock
        ("DELETE", "stage_sales_line"),
        ("COPY", "dw.load_rejects"),          # rejects arrive by COPY (a batch takes no parameters)
    }
    stats_select = next(k for k, s in pg_kinds.items() if s == load.FILE_STATS_SQL)
    only_postgres.add(stats_select)           # the statistics: read by Postgres, INSERT ... SELECT on Redshift
    assert set(pg_kinds) - set(rs_kinds) == only_postgres
    assert set(rs_kinds) - set(pg_kinds) == only_redshift
    for key in set(pg_kinds) & set(rs_kinds):
        pg_tables, pg_columns = names(pg_kinds[key], "postgres")
        rs_tables, rs_columns = names(rs_kinds[key], "redshift")
        if key == ("INSERT", "dw.load_manifest"):
            # VALUES from Python vs SELECT from the statistics (+ each file's rejects).
            pg_tables |= {"stage_files", "stage_sales_line", "dw.fact_sales_line", "dw.load_rejects"}
            assert {"file_key", "etag", "rows_in_file", "rows_inserted", "rows_updated"} <= rs_columns & pg_columns
            continue
        if key == ("CREATE", "stage_sales_line"):
            pg_columns.add("file_no")  # added by the ALTER above on Postgres
        if key == ("COPY", "stage_sales_line"):
            pg_columns.discard("STDIN")  # the source: STDIN there, an S3 manifest here
        assert rs_tables == pg_tables, key
        assert rs_columns == pg_columns, (key, rs_columns ^ pg_columns)


def test_copy_reads_each_file_through_a_mandatory_manifest_with_the_copy_role():
    copies = [s for s in redshift_load() if s.startswith("COPY stage_sales_line")]
    assert len(copies) == len(FILES)
    for number, sql in enumerate(copies):
        assert f"FROM 's3://staging-bucket-ecom/_etl/manifests/g/{number}.manifest'" in sql
        assert f"IAM_ROLE '{ROLE}' MANIFEST" in sql and "IGNOREHEADER 1" in sql
        assert ", ".join(f'"{c}"' for c in WAREHOUSE_COLUMNS) in sql
    from etl.redshift import manifest_document
    import json

    assert json.loads(manifest_document("b", "csv/x.csv")) == {"entries": [{"url": "s3://b/csv/x.csv", "mandatory": True}]}


def test_star_sql_is_shared_not_copied():
    rs = redshift_load()
    star = star_statements()
    assert star and all(s in rs for s in star)
    assert all(s in postgres_load() for s in star)
    merges = [s for s in star if s.lstrip().startswith("MERGE")]
    assert len(merges) == 4 and all("WHEN MATCHED" in m and "WHEN NOT MATCHED" in m for m in merges)  # dimensions
    # The facts: the present events updated, the new ones inserted, as stage_fact tells them apart.
    fact_writes = [m.group(1) for m in (re.match(r'\s*(UPDATE|INSERT INTO) dw\."fact_sales_line"', s) for s in star) if m]
    assert fact_writes == ["UPDATE", "INSERT INTO", "UPDATE"]  # the last: the duplicate flags


class StubDataApi:
    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.calls = []

    def batch_execute_statement(self, **kwargs):
        self.calls.append(("batch", kwargs))
        return {"Id": "s-1"}

    def execute_statement(self, **kwargs):
        self.calls.append(("execute", kwargs))
        return {"Id": "s-2", **({"SessionId": "session-1"} if "SessionKeepAliveSeconds" in kwargs else {})}

    def describe_statement(self, Id):
        return self.statuses.pop(0)

    def get_statement_result(self, **kwargs):
        if "NextToken" not in kwargs:
            return {"Records": [[{"stringValue": "a"}, {"longValue": 1}]], "NextToken": "t"}
        return {"Records": [[{"isNull": True}, {"booleanValue": True}]]}

    def cancel_statement(self, Id):
        self.calls.append(("cancel", Id))


def test_data_api_runs_a_batch_as_one_transaction_and_reads_results():
    from ecom_core import config

    etl = config.Etl(redshift_workgroup="wg", redshift_database="dev", redshift_cluster="")
    stub = StubDataApi([{"Status": "STARTED"}, {"Status": "FINISHED"}])
    DataApi(etl, stub, sleep=lambda s: None).run(["SELECT 1", "SELECT 2"])
    assert stub.calls == [("batch", {"Sqls": ["SELECT 1", "SELECT 2"], "WorkgroupName": "wg", "Database": "dev"})]
    stub = StubDataApi([{"Status": "FINISHED", "HasResultSet": True}])
    assert DataApi(etl, stub, sleep=lambda s: None).query("SELECT x") == [["a", 1], [None, True]]
    failing = StubDataApi([{"Status": "FAILED", "Error": "ERROR: Load into table 'stage_sales_line' failed"}])
    with pytest.raises(RedshiftError, match="Load into table"):
        DataApi(etl, failing, sleep=lambda s: None).run(["COPY ..."])
    cluster = config.Etl(redshift_cluster="c1", redshift_database="dev")
    stub = StubDataApi([{"Status": "FINISHED"}])
    DataApi(cluster, stub, sleep=lambda s: None).run(["SELECT 1"])
    assert stub.calls[0][1]["ClusterIdentifier"] == "c1"


def test_a_transaction_beyond_one_batch_runs_in_a_session_of_its_own():
    """BatchExecuteStatement takes at most 40 statements; a group's load is more. Past 40, `run`
    opens a session, sends BEGIN, each statement and COMMIT, and ROLLBACK when one fails."""
    from ecom_core import config
    from warehouse.redshift_data import MAX_BATCH_STATEMENTS, SESSION_KEEP_ALIVE_SECONDS

    etl = config.Etl(redshift_workgroup="wg", redshift_database="dev", redshift_cluster="")
    statements = [f"SELECT {n}" for n in range(MAX_BATCH_STATEMENTS + 1)]
    stub = StubDataApi([{"Status": "FINISHED"}] * (len(statements) + 2))
    DataApi(etl, stub, sleep=lambda s: None).run(statements)
    assert stub.calls[0] == ("execute", {"Sql": "BEGIN", "SessionKeepAliveSeconds": SESSION_KEEP_ALIVE_SECONDS,
                                         "WorkgroupName": "wg", "Database": "dev"})
    assert stub.calls[1:] == [("execute", {"Sql": sql, "SessionId": "session-1"}) for sql in [*statements, "COMMIT"]]
    failing = StubDataApi([{"Status": "FINISHED"}] * 3 + [{"Status": "FAILED", "Error": "ERROR: boom"},
                                                          {"Status": "FINISHED"}])
    with pytest.raises(RedshiftError, match="boom"):
        DataApi(etl, failing, sleep=lambda s: None).run(statements)
    assert [kwargs["Sql"] for _, kwargs in failing.calls] == ["BEGIN", "SELECT 0", "SELECT 1", "SELECT 2", "ROLLBACK"]
    # A group of files is more than one batch holds: this is the path every group load takes.
    assert len(group_statements([("k", "e", "s3://b/m")], "arn")) > MAX_BATCH_STATEMENTS


def test_literals_refuse_what_they_cannot_quote_safely():
    assert literal("csv/it's.csv") == "'csv/it''s.csv'" and literal(None) == "NULL" and literal(3) == "3"
    for bad in ("a\\b", "nul\x00", "\u00a3"):
        with pytest.raises(ValueError):
            literal(bad)


def test_timestamps_reach_redshift_to_the_microsecond():
    """The run log and the lease compare times: one cut to the second sorts before a moment it came
    after (the bench, reading the runs since a time, missed a run that way)."""
    from datetime import datetime

    from etl.redshift import _lit

    assert _lit(datetime(2026, 12, 5, 17, 0, 1, 250000)) == "TIMESTAMP '2026-12-05 17:00:01.250000'"
