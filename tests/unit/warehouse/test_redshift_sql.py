"""The warehouse's SQL (warehouse/redshift.py, warehouse/schema.py, warehouse/lease.py): every statement
the schema, the load and the lease emit parses as Redshift SQL (sqlglot) and carries no Postgres-only
syntax; the Data API client (warehouse/redshift_data.py) against a stub. The same statements run on
the stack's local Data API in tests/stack/bootstrap/local/test_redshift_data.py and every pipeline
test."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal

import pytest
import sqlglot
from sqlglot import exp

from ecom_core.contract import WAREHOUSE_COLUMNS
from warehouse.redshift import group_load, star_statements
from warehouse.redshift_data import WAIT_SECONDS, DataApi, RedshiftError, bind, literal
from warehouse.schema import schema_statements, star_upgrade_statements

FILES = [("csv/shardId-000000000000/1-9.csv", "etag-1"), ("csv/shardId-000000000001/2-8.csv", "etag-2")]
ROLE = "arn:aws:iam::123456789012:role/ecom-redshift-copy-role"


def redshift_load() -> list[str]:
    """Every statement of a group's load, in the order they run."""
    prepare, transaction = group_load(
        [(key, etag, f"s3://staging-bucket-ecom/_etl/manifests/g/{n}.manifest") for n, (key, etag) in enumerate(FILES)],
        ROLE,
        rejects_manifest="s3://staging-bucket-ecom/_etl/manifests/g/-1.manifest",
    )
    return prepare + transaction


def lease_statements() -> list[str]:
    from warehouse import lease

    class Recorder:
        def __init__(self):
            self.sent = []

        def run(self, statements):
            self.sent += statements

        def statement(self, sql, *args, **kwargs):
            self.sent.append(sql)
            return type("R", (), {"rows": []})()

    api = Recorder()
    lease.acquire(api, "holder-1", 60)
    lease.release(api, "holder-1")
    return api.sent


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
    statements = schema_statements() + redshift_load() + lease_statements() + star_upgrade_statements(["amount"])
    assert len(statements) > 60
    for sql in statements:
        if sql.startswith("LOCK "):
            assert re.fullmatch(r"LOCK dw\.\w+", sql), sql  # Redshift's form: no TABLE, no lock mode
            continue
        tree = parse(sql, "redshift")
        assert not isinstance(tree, exp.Command), sql[:120]
    text = "\n".join(statements).replace(ROLE, "<role>")
    # Postgres-only syntax the warehouse SQL must not carry.
    for forbidden in (
        "ON CONFLICT",
        "::",
        "FROM STDIN",
        "set_config",
        "current_setting",
        "SERIAL",
        "ANY(",
        "CURRENT_TIMESTAMP",
        "VALUES (1, '1'",
        "pg_backend_pid",
        "pg_stat_activity",
        "IN EXCLUSIVE MODE",
    ):
        assert forbidden not in text, forbidden


def test_the_schema_creates_every_table_the_pipeline_uses():
    created = {}
    for sql in schema_statements():
        if sql.startswith("CREATE TABLE"):
            tree = parse(sql, "redshift")
            table = tree.find(exp.Table)
            created[f"{table.db}.{table.name}"] = {c.name for c in tree.find_all(exp.ColumnDef)}
    assert {
        "dw.fact_sales_line",
        "dw.load_manifest",
        "dw.load_rejects",
        "dw.etl_lease",
        "dw.etl_run",
        "dw.dim_product",
        "dw.dim_customer",
        "dw.dim_date",
        "dw.dim_country",
        "dw.schema_version",
    } == set(created)
    assert set(WAREHOUSE_COLUMNS) <= created["dw.fact_sales_line"]
    fact = next(s for s in schema_statements() if s.startswith("CREATE TABLE IF NOT EXISTS dw.fact_sales_line"))
    assert fact.endswith('DISTKEY("invoice_no") COMPOUND SORTKEY("invoice_no", "stock_code", "invoice_ts")')


def test_parameters_travel_as_named_parameters_and_only_safe_values_inline():
    assert bind('SELECT 1 WHERE "a" = %s AND "b" = %s AND "c" = %s AND "d" LIKE \'x%%\'', ("o'k", None, 7)) == (
        'SELECT 1 WHERE "a" = :p1 AND "b" = NULL AND "c" = 7 AND "d" LIKE \'x%\'',
        [{"name": "p1", "value": "o'k"}],
    )
    assert bind("SELECT %s", (datetime(2011, 12, 9, 12, 50),)) == (
        "SELECT :p1",
        [{"name": "p1", "value": "2011-12-09T12:50:00"}],
    )
    assert bind("SELECT 'no parameters: %s stays'", ()) == ("SELECT 'no parameters: %s stays'", [])
    assert bind("SELECT %s, %s", (Decimal("12.345678901234567890"), 2.5)) == ("SELECT 12.345678901234567890, 2.5", [])
    with pytest.raises(ValueError):
        bind("SELECT %s", (1, 2))


def test_results_are_typed_by_their_column_metadata():
    from warehouse.redshift_data import _typed

    assert _typed({"stringValue": "12.500"}, "numeric") == Decimal("12.500")
    assert _typed({"stringValue": "2011-12-09 12:50:00"}, "timestamp") == datetime(2011, 12, 9, 12, 50)
    assert _typed({"stringValue": "2011-12-09"}, "date") == date(2011, 12, 9)
    assert _typed({"longValue": 3}, "int8") == 3 and _typed({"isNull": True}, "numeric") is None
    assert _typed({"stringValue": "x"}, "varchar") == "x"


def test_copy_reads_each_file_through_a_mandatory_manifest_with_the_copy_role():
    copies = [s for s in redshift_load() if s.startswith("COPY stage_sales_line_")]
    assert len(copies) == len(FILES)
    # The files' rows reach the staging table in one INSERT numbering them; no UPDATE rewrites the
    # growing staging table after every COPY (quadratic in the files of a group).
    [fill] = [s for s in redshift_load() if s.startswith("INSERT INTO stage_sales_line ")]
    assert fill.count(" UNION ALL ") == len(FILES) - 1 and ", 1 FROM stage_sales_line_1" in fill
    assert not [s for s in redshift_load() if s.startswith("UPDATE stage_sales_line")]
    for number, sql in enumerate(copies):
        assert f"FROM 's3://staging-bucket-ecom/_etl/manifests/g/{number}.manifest'" in sql
        assert f"IAM_ROLE '{ROLE}' MANIFEST" in sql and "IGNOREHEADER 1" in sql
        assert ", ".join(f'"{c}"' for c in WAREHOUSE_COLUMNS) in sql
    import json

    from warehouse.redshift import manifest_document

    assert json.loads(manifest_document("b", "csv/x.csv")) == {
        "entries": [{"url": "s3://b/csv/x.csv", "mandatory": True}]
    }


def test_star_sql_is_shared_not_copied():
    rs = redshift_load()
    star = star_statements()
    assert star and all(s in rs for s in star)
    merges = [s for s in star if s.lstrip().startswith("MERGE")]
    assert len(merges) == 4 and all("WHEN MATCHED" in m and "WHEN NOT MATCHED" in m for m in merges)  # dimensions
    # The facts: the present events updated, the new ones inserted, as stage_fact tells them apart.
    fact_writes = [
        m.group(1) for m in (re.match(r'\s*(UPDATE|INSERT INTO) dw\."fact_sales_line"', s) for s in star) if m
    ]
    assert fact_writes == ["UPDATE", "INSERT INTO", "UPDATE"]  # the last: the duplicate flags


class StubDataApi:
    def __init__(self, statuses):
        self.statuses = list(statuses)
        self.calls = []

    def batch_execute_statement(self, **kwargs):
        self.calls.append(("batch", kwargs))
        return {"Id": "s-1", **({"SessionId": "session-1"} if "SessionKeepAliveSeconds" in kwargs else {})}

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
    assert stub.calls == [
        (
            "batch",
            {
                "Sqls": ["SELECT 1", "SELECT 2"],
                "WaitTimeSeconds": WAIT_SECONDS,
                "WorkgroupName": "wg",
                "Database": "dev",
            },
        )
    ]
    # An answer that says FINISHED (WaitTimeSeconds) needs no DescribeStatement.
    stub = StubDataApi([])
    stub.batch_execute_statement = lambda **kwargs: {"Id": "s-1", "Status": "FINISHED"}
    DataApi(etl, stub, sleep=lambda s: None).run(["SELECT 1", "SELECT 2"])
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
    assert stub.calls[0] == (
        "execute",
        {
            "Sql": "BEGIN",
            "SessionKeepAliveSeconds": SESSION_KEEP_ALIVE_SECONDS,
            "WaitTimeSeconds": WAIT_SECONDS,
            "WorkgroupName": "wg",
            "Database": "dev",
        },
    )
    assert stub.calls[1:] == [
        ("execute", {"Sql": sql, "SessionId": "session-1", "WaitTimeSeconds": WAIT_SECONDS})
        for sql in [*statements, "COMMIT"]
    ]
    failing = StubDataApi(
        [{"Status": "FINISHED"}] * 3 + [{"Status": "FAILED", "Error": "ERROR: boom"}, {"Status": "FINISHED"}]
    )
    with pytest.raises(RedshiftError, match="boom"):
        DataApi(etl, failing, sleep=lambda s: None).run(statements)
    assert [kwargs["Sql"] for _, kwargs in failing.calls] == ["BEGIN", "SELECT 0", "SELECT 1", "SELECT 2", "ROLLBACK"]


def test_a_group_load_prepares_in_batches_then_runs_one_transaction_in_the_same_session():
    """A group's load: the staging tables filled in batches of up to 40 statements in a Data API
    session (temporary tables: no lock, no shared state), then the lock, the warehouse writes and
    the manifest rows as one batch in that session. A session that ends before the transaction
    fails the run (its staging tables went with it)."""
    from ecom_core import config
    from warehouse.redshift_data import MAX_BATCH_STATEMENTS, SESSION_KEEP_ALIVE_SECONDS

    files = [(f"csv/{n}.csv", "e", f"s3://b/{n}.manifest") for n in range(30)]
    prepare, transaction = group_load(files, "arn")
    assert len(prepare) > MAX_BATCH_STATEMENTS >= len(transaction)
    assert all(not s.startswith(("LOCK", "INSERT INTO dw.", "DELETE")) for s in prepare)
    assert transaction[0] == "LOCK dw.load_manifest"
    etl = config.Etl(redshift_workgroup="wg", redshift_database="dev", redshift_cluster="")
    stub = StubDataApi([{"Status": "FINISHED"}] * 3)
    stub.execute_statement = None  # every call a batch
    committed = []
    DataApi(etl, stub, sleep=lambda s: None).run(
        transaction, before_commit=lambda: committed.append(len(stub.calls)), prepare=prepare
    )
    chunks = [prepare[i : i + MAX_BATCH_STATEMENTS] for i in range(0, len(prepare), MAX_BATCH_STATEMENTS)]
    assert [kwargs["Sqls"] for _, kwargs in stub.calls] == [*chunks, transaction]
    assert stub.calls[0][1]["SessionKeepAliveSeconds"] == SESSION_KEEP_ALIVE_SECONDS
    assert all(kwargs.get("SessionId") == "session-1" for _, kwargs in stub.calls[1:])
    assert committed == [len(chunks)]  # the fault point: after the COPYs, before the transaction is sent

    # The session ended between the COPYs and the transaction: RedshiftError (the load retries).
    from botocore.exceptions import ClientError

    stub = StubDataApi([{"Status": "FINISHED"}] * 3)
    sent = []

    def batch(**kwargs):
        sent.append(kwargs)
        if len(sent) > len(chunks):
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "closed"}}, "Batch")
        return {"Id": "s-1", "SessionId": "session-1", "Status": "FINISHED"}

    stub.batch_execute_statement = batch
    with pytest.raises(RedshiftError, match="session ended"):
        DataApi(etl, stub, sleep=lambda s: None).run(transaction, prepare=prepare)


def test_literals_refuse_what_they_cannot_quote_safely():
    assert literal("csv/it's.csv") == "'csv/it''s.csv'" and literal(None) == "NULL" and literal(3) == "3"
    for bad in ("a\\b", "nul\x00", "\u00a3"):
        with pytest.raises(ValueError):
            literal(bad)


def test_timestamps_reach_redshift_to_the_microsecond():
    """The run log and the lease compare times: one cut to the second sorts before a moment it came
    after (the bench, reading the runs since a time, missed a run that way)."""
    from datetime import datetime

    from warehouse.redshift import _lit

    assert _lit(datetime(2026, 12, 5, 17, 0, 1, 250000)) == "TIMESTAMP '2026-12-05 17:00:01.250000'"
