"""The local Redshift Data API (bootstrap/local/redshift_data): boto3's unchanged `redshift-data`
client and the project's RedshiftWarehouse, against the stack's Postgres and MiniStack S3.

The tests share one server (a thread of this process) on the session's stack. Test tables live in
schema rsdata_test, dropped at the end. The translation of Redshift SQL alone, without a stack:
tests/unit/bootstrap/local/redshift_data/test_translate.py."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
import threading
import time
from decimal import Decimal

import boto3
import psycopg2
import pytest

ROLE = "arn:aws:iam::000000000000:role/ecom-redshift-copy-role"
TARGET = {"WorkgroupName": "ecom", "Database": "dev"}
BUCKET = "rsdata-test-bucket"


# ------------------------------------------------------------------ the server on the stack
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(dsn: str, s3_endpoint: str):
    """The API on a free port, in a thread of this process."""
    import uvicorn

    from bootstrap.local.redshift_data.server import make_app

    port = _free_port()
    app = make_app(dsn, s3_endpoint, page_rows=1000)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield app, f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(10)
        app.engine.shutdown()


def _client(url: str):
    return boto3.client(
        "redshift-data",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture(scope="module")
def server(stack_env):
    cfg = stack_env["cfg"]
    with psycopg2.connect(cfg.warehouse_dsn) as conn, conn.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS rsdata_test CASCADE")
    with serve(cfg.warehouse_dsn, cfg.endpoint_url) as (app, url):
        yield {"url": url, "cfg": cfg, "app": app}
    with psycopg2.connect(cfg.warehouse_dsn) as conn, conn.cursor() as cur:
        cur.execute("DROP SCHEMA IF EXISTS rsdata_test CASCADE")


@pytest.fixture(scope="module")
def client(server):
    return _client(server["url"])


@pytest.fixture(scope="module")
def s3(server):
    from ecom_core import aws

    s3 = aws.client("s3", server["cfg"])
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    return s3


@pytest.fixture
def pg(server):
    conn = psycopg2.connect(server["cfg"].warehouse_dsn)
    conn.autocommit = True
    yield conn.cursor()
    conn.close()


def wait(client, statement_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.describe_statement(Id=statement_id)
        if status["Status"] in ("FINISHED", "FAILED", "ABORTED"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.02)


def run(client, sql: str, **params) -> dict:
    kwargs = {"Parameters": [{"name": k, "value": v} for k, v in params.items()]} if params else {}
    return wait(client, client.execute_statement(Sql=sql, **TARGET, **kwargs)["Id"])


def batch(client, sqls: list[str]) -> dict:
    return wait(client, client.batch_execute_statement(Sqls=sqls, **TARGET)["Id"])


def in_session(client, session_id: str, sql: str) -> dict:
    return wait(client, client.execute_statement(Sql=sql, SessionId=session_id)["Id"])


def open_session(client, keep_alive: int = 60, sql: str = "BEGIN") -> str:
    answer = client.execute_statement(Sql=sql, SessionKeepAliveSeconds=keep_alive, **TARGET)
    assert wait(client, answer["Id"])["Status"] == "FINISHED"
    return answer["SessionId"]


@pytest.mark.stack
def test_keys_are_stored_duplicated_and_indexed(client, pg):
    assert (
        batch(
            client,
            [
                "CREATE SCHEMA IF NOT EXISTS rsdata_test",
                "CREATE TABLE rsdata_test.keyed (id varchar(20) NOT NULL PRIMARY KEY, a integer, b integer, "
                "UNIQUE (a, b))",
                "INSERT INTO rsdata_test.keyed VALUES ('x', 1, 2), ('x', 1, 2)",
            ],
        )["Status"]
        == "FINISHED"
    )
    pg.execute("SELECT count(*) FROM rsdata_test.keyed")
    assert pg.fetchone() == (2,)  # duplicates stored, as Redshift stores them
    pg.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'rsdata_test' AND tablename = 'keyed' "
        "ORDER BY indexname"
    )
    assert pg.fetchall() == [
        ("keyed_a_b_key", "CREATE INDEX keyed_a_b_key ON rsdata_test.keyed USING btree (a, b)"),
        ("keyed_id_key", "CREATE INDEX keyed_id_key ON rsdata_test.keyed USING btree (id)"),
    ]
    # CREATE TABLE IF NOT EXISTS again: nothing new, no error
    assert (
        run(client, "CREATE TABLE IF NOT EXISTS rsdata_test.keyed (id varchar(20) PRIMARY KEY)")["Status"] == "FINISHED"
    )


@pytest.mark.stack
def test_session_transaction_commits_and_rolls_back(client, pg):
    run(client, "CREATE SCHEMA IF NOT EXISTS rsdata_test")
    run(client, "CREATE TABLE IF NOT EXISTS rsdata_test.tx (n integer)")
    answer = client.execute_statement(Sql="BEGIN", SessionKeepAliveSeconds=60, **TARGET)
    session = answer["SessionId"]
    assert answer["WorkgroupName"] == "ecom" and answer["Database"] == "dev"
    begin = wait(client, answer["Id"])
    assert begin["Status"] == "FINISHED" and begin["SessionId"] == session
    for n in (1, 2):
        assert in_session(client, session, f"INSERT INTO rsdata_test.tx VALUES ({n})")["ResultRows"] == 1
    pg.execute("SELECT count(*) FROM rsdata_test.tx")
    assert pg.fetchone() == (0,)  # not committed yet: invisible to others
    seen = in_session(client, session, "SELECT count(*) FROM rsdata_test.tx")
    assert client.get_statement_result(Id=seen["Id"])["Records"] == [[{"longValue": 2}]]  # visible in the session
    assert in_session(client, session, "COMMIT")["Status"] == "FINISHED"
    pg.execute("SELECT count(*) FROM rsdata_test.tx")
    assert pg.fetchone() == (2,)
    # the session goes on: another transaction, rolled back
    for sql in ("BEGIN", "INSERT INTO rsdata_test.tx VALUES (3)", "DELETE FROM rsdata_test.tx WHERE n = 1"):
        assert in_session(client, session, sql)["Status"] == "FINISHED"
    assert in_session(client, session, "ROLLBACK")["Status"] == "FINISHED"
    pg.execute("SELECT n FROM rsdata_test.tx ORDER BY n")
    assert pg.fetchall() == [(1,), (2,)]
    # a failed statement aborts the open transaction, as on Redshift (also one failing before Postgres)
    in_session(client, session, "BEGIN")
    in_session(client, session, "INSERT INTO rsdata_test.tx VALUES (4)")
    assert in_session(client, session, "UNLOAD ('SELECT 1') TO 's3://b/p' IAM_ROLE 'x'")["Status"] == "FAILED"
    after = in_session(client, session, "INSERT INTO rsdata_test.tx VALUES (5)")
    assert after["Status"] == "FAILED" and "current transaction is aborted" in after["Error"]
    in_session(client, session, "ROLLBACK")
    pg.execute("SELECT count(*) FROM rsdata_test.tx")
    assert pg.fetchone() == (2,)
    # DescribeStatement, ListStatements and ListSessions show the session
    listed = client.list_statements(MaxResults=10)["Statements"]
    assert all(s.get("SessionId") == session for s in listed[:3])
    sessions = client.list_sessions(SessionId=session)["Sessions"]
    assert [(s["SessionId"], s["Status"], s["SessionAliveSeconds"], s["WorkgroupName"]) for s in sessions] == [
        (session, "AVAILABLE", 60, "ecom")
    ]
    # a batch in the session: its own transaction; refused while a BEGIN is open
    assert (
        wait(
            client,
            client.batch_execute_statement(
                Sqls=["INSERT INTO rsdata_test.tx VALUES (6)", "INSERT INTO rsdata_test.tx VALUES (7)"],
                SessionId=session,
            )["Id"],
        )["Status"]
        == "FINISHED"
    )
    in_session(client, session, "BEGIN")
    with pytest.raises(client.exceptions.ValidationException, match="open transaction"):
        client.batch_execute_statement(Sqls=["SELECT 1"], SessionId=session)
    in_session(client, session, "ROLLBACK")
    pg.execute("SELECT count(*) FROM rsdata_test.tx")
    assert pg.fetchone() == (4,)


@pytest.mark.stack
def test_session_temp_tables_are_the_sessions_own(client):
    one = open_session(client, sql="CREATE TEMP TABLE scratch (v varchar(10))")
    assert in_session(client, one, "INSERT INTO scratch VALUES ('one')")["Status"] == "FINISHED"
    seen = in_session(client, one, "SELECT v FROM scratch")
    assert client.get_statement_result(Id=seen["Id"])["Records"] == [[{"stringValue": "one"}]]
    two = open_session(client, sql="SELECT 1")
    missing = in_session(client, two, "SELECT v FROM scratch")
    assert missing["Status"] == "FAILED" and 'relation "scratch" does not exist' in missing["Error"]
    assert run(client, "SELECT v FROM scratch")["Status"] == "FAILED"  # nor outside any session


@pytest.mark.stack
def test_session_refusals(client):
    session = open_session(client, sql="SELECT 1")
    with pytest.raises(client.exceptions.ValidationException, match="SessionId cannot be specified with WorkgroupName"):
        client.execute_statement(Sql="SELECT 1", SessionId=session, WorkgroupName="ecom")
    with pytest.raises(client.exceptions.ValidationException, match="Database"):
        client.batch_execute_statement(Sqls=["SELECT 1"], SessionId=session, Database="dev")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.execute_statement(Sql="SELECT 1", SessionId="00000000-0000-4000-8000-000000000000")
    # one statement at a time: a call while the previous one runs is refused (AWS queues nothing)
    sleeper = client.execute_statement(Sql="SELECT pg_sleep(1)", SessionId=session)
    with pytest.raises(client.exceptions.ValidationException, match="is busy"):
        client.execute_statement(Sql="SELECT 2", SessionId=session)
    assert client.list_sessions(SessionId=session)["Sessions"][0]["CurrentStatementId"] == sleeper["Id"]
    assert wait(client, sleeper["Id"])["Status"] == "FINISHED"
    assert in_session(client, session, "SELECT 2")["Status"] == "FINISHED"


@pytest.mark.stack
def test_session_expiry_rolls_back_and_refuses(client, pg):
    run(client, "CREATE SCHEMA IF NOT EXISTS rsdata_test")
    run(client, "CREATE TABLE IF NOT EXISTS rsdata_test.expiring (n integer)")
    session = open_session(client, keep_alive=1)
    assert in_session(client, session, "INSERT INTO rsdata_test.expiring VALUES (1)")["Status"] == "FINISHED"
    pg.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'local-redshift-data' "
        "AND state = 'idle in transaction'"
    )
    assert pg.fetchone()[0] >= 1
    time.sleep(0.6)  # a call within the keep-alive keeps it open (the idle time counts from the last statement)
    assert in_session(client, session, "INSERT INTO rsdata_test.expiring VALUES (2)")["Status"] == "FINISHED"
    time.sleep(0.6)
    assert in_session(client, session, "SELECT 1")["Status"] == "FINISHED"
    deadline = time.monotonic() + 5
    while client.list_sessions(SessionId=session)["Sessions"][0]["Status"] != "CLOSED":
        assert time.monotonic() < deadline, "the session did not expire"
        time.sleep(0.1)
    with pytest.raises(client.exceptions.ValidationException, match="is closed"):
        client.execute_statement(Sql="COMMIT", SessionId=session)
    pg.execute("SELECT count(*) FROM rsdata_test.expiring")
    assert pg.fetchone() == (0,)  # the open transaction was rolled back
    assert session not in [s["SessionId"] for s in client.list_sessions()["Sessions"]]  # AVAILABLE/BUSY only
    assert session in [s["SessionId"] for s in client.list_sessions(Status="CLOSED")["Sessions"]]


@pytest.mark.stack
def test_session_call_latency(client, pg):
    """The project's client sends a long transaction as BEGIN, each statement, COMMIT, polling
    DescribeStatement right after each ExecuteStatement: a quick statement must already be FINISHED
    at that first DescribeStatement (the settle window), so each costs two round trips, no sleep."""
    run(client, "CREATE SCHEMA IF NOT EXISTS rsdata_test")
    run(client, "CREATE TABLE IF NOT EXISTS rsdata_test.latency (n integer, s varchar(20))")
    session = open_session(client)
    calls, not_finished = 80, 0
    started = time.perf_counter()
    for n in range(calls):
        answer = client.execute_statement(Sql=f"INSERT INTO rsdata_test.latency VALUES ({n}, 'x')", SessionId=session)
        if client.describe_statement(Id=answer["Id"])["Status"] != "FINISHED":
            not_finished += 1
    per_call = (time.perf_counter() - started) / calls
    assert in_session(client, session, "COMMIT")["Status"] == "FINISHED"
    print(f"session: {per_call * 1000:.1f} ms per ExecuteStatement + DescribeStatement ({calls} calls)")
    assert not_finished == 0 and per_call < 0.05


@pytest.mark.stack
def test_redshift_ddl_runs_and_primary_keys_are_informational(client, pg):
    assert (
        batch(
            client,
            [
                "CREATE SCHEMA IF NOT EXISTS rsdata_test",
                "CREATE TABLE rsdata_test.events (id integer NOT NULL PRIMARY KEY ENCODE az64 DISTKEY, "
                "name varchar(max) ENCODE zstd, amount numeric(10,2), created timestamp DEFAULT SYSDATE, "
                "UNIQUE (name)) DISTSTYLE KEY COMPOUND SORTKEY(id, created)",
                "INSERT INTO rsdata_test.events (id, name, amount) VALUES (1, 'a', 1.50), (1, 'a', 2.25)",
            ],
        )["Status"]
        == "FINISHED"
    )
    pg.execute("SELECT count(*), count(DISTINCT id), max(created) IS NOT NULL FROM rsdata_test.events")
    assert pg.fetchone() == (2, 1, True)  # both rows stored, as Redshift stores them
    pg.execute(
        "SELECT is_nullable FROM information_schema.columns WHERE table_schema = 'rsdata_test' "
        "AND table_name = 'events' AND column_name = 'id'"
    )
    assert pg.fetchone() == ("NO",)  # NOT NULL kept


@pytest.mark.stack
def test_typed_results_and_column_metadata(client):
    status = run(
        client,
        "SELECT CAST(7 AS INTEGER) AS i, CAST(8 AS BIGINT) AS b, CAST(2.5 AS NUMERIC(10,3)) AS n, "
        "CAST(1.25 AS FLOAT8) AS f, TRUE AS ok, CAST('x' AS VARCHAR(12)) AS s, "
        "CAST('2011-12-09 12:50:00' AS TIMESTAMP) AS ts, CAST('2011-12-09' AS DATE) AS d, "
        "CAST(NULL AS INTEGER) AS z, GETDATE() IS NOT NULL AS now_ok",
    )
    assert status["HasResultSet"] and status["ResultRows"] == 1 and status["QueryString"].startswith("SELECT")
    result = client.get_statement_result(Id=status["Id"])
    assert result["TotalNumRows"] == 1
    assert result["Records"][0] == [
        {"longValue": 7},
        {"longValue": 8},
        {"stringValue": "2.500"},
        {"doubleValue": 1.25},
        {"booleanValue": True},
        {"stringValue": "x"},
        {"stringValue": "2011-12-09 12:50:00"},
        {"stringValue": "2011-12-09"},
        {"isNull": True},
        {"booleanValue": True},
    ]
    meta = {c["name"]: c for c in result["ColumnMetadata"]}
    assert [c["name"] for c in result["ColumnMetadata"]] == ["i", "b", "n", "f", "ok", "s", "ts", "d", "z", "now_ok"]
    assert {k: meta[k]["typeName"] for k in meta} == {
        "i": "int4",
        "b": "int8",
        "n": "numeric",
        "f": "float8",
        "ok": "bool",
        "s": "varchar",
        "ts": "timestamp",
        "d": "date",
        "z": "int4",
        "now_ok": "bool",
    }
    assert (meta["n"]["precision"], meta["n"]["scale"]) == (10, 3) and meta["s"]["precision"] == 12
    assert meta["i"]["label"] == "i" and meta["i"]["isSigned"] and meta["s"]["isCaseSensitive"]


@pytest.mark.stack
def test_parameters_are_bound_by_name(client):
    status = run(client, "SELECT CAST(:n AS INTEGER) + 1 AS next, :s AS s, ':x' AS literal", n="41", s="it's")
    assert client.get_statement_result(Id=status["Id"])["Records"][0] == [
        {"longValue": 42},
        {"stringValue": "it's"},
        {"stringValue": ":x"},
    ]


@pytest.mark.stack
def test_sql_error_is_a_failed_statement_not_an_http_error(client):
    status = run(client, "SELECT * FROM rsdata_test.no_such_table")
    assert status["Status"] == "FAILED"
    assert status["Error"] == 'ERROR: relation "rsdata_test.no_such_table" does not exist'
    with pytest.raises(client.exceptions.ValidationException):
        client.get_statement_result(Id=status["Id"])
    refused = run(client, "UNLOAD ('SELECT 1') TO 's3://b/p' IAM_ROLE 'arn:aws:iam::1:role/r'")
    assert refused["Status"] == "FAILED" and "UNLOAD" in refused["Error"] and "not supported" in refused["Error"]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.describe_statement(Id="00000000-0000-4000-8000-000000000000")
    with pytest.raises(client.exceptions.ValidationException):
        client.execute_statement(Sql="SELECT 1", Database="dev")  # neither workgroup nor cluster


@pytest.mark.stack
def test_failed_batch_leaves_nothing_behind(client, pg):
    status = batch(
        client,
        [
            "CREATE SCHEMA IF NOT EXISTS rsdata_test",
            "CREATE TABLE rsdata_test.half_done (a integer)",
            "INSERT INTO rsdata_test.half_done VALUES (1)",
            "INSERT INTO rsdata_test.half_done VALUES ('not a number')",
            "INSERT INTO rsdata_test.half_done VALUES (3)",
        ],
    )
    assert status["Status"] == "FAILED" and "invalid input syntax for type integer" in status["Error"]
    assert [s["Status"] for s in status["SubStatements"]] == ["FINISHED", "FINISHED", "FINISHED", "FAILED", "ABORTED"]
    assert [s["Id"] for s in status["SubStatements"]] == [f"{status['Id']}:{n}" for n in range(1, 6)]
    assert client.describe_statement(Id=f"{status['Id']}:4")["Error"] == status["Error"]
    pg.execute("SELECT to_regclass('rsdata_test.half_done')")
    assert pg.fetchone() == (None,)


def _csv(rows: list[list], header: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def _manifest(s3, key: str, entries: list[tuple[str, bool]]) -> str:
    s3.put_object(
        Bucket=BUCKET,
        Key=key,
        Body=json.dumps({"entries": [{"url": url, "mandatory": mandatory} for url, mandatory in entries]}).encode(),
    )
    return f"s3://{BUCKET}/{key}"


COPY_OPTIONS = "FORMAT AS CSV IGNOREHEADER 1 EMPTYASNULL TIMEFORMAT 'auto' ACCEPTINVCHARS"


@pytest.mark.stack
def test_copy_from_s3_through_a_manifest(client, s3, pg):
    header = ["id", "name", "ts"]
    s3.put_object(
        Bucket=BUCKET,
        Key="copy/one.csv",
        Body=_csv([[1, "a, quoted", "2011-01-02T03:04:05"], [2, "", "2011-01-02 03:04:06"]], header),
    )
    s3.put_object(Bucket=BUCKET, Key="copy/one.csv.bak", Body=_csv([[99, "never", "2011-01-01"]], header))
    manifest = _manifest(s3, "copy/one.manifest", [(f"s3://{BUCKET}/copy/one.csv", True)])
    status = batch(
        client,
        [
            "CREATE SCHEMA IF NOT EXISTS rsdata_test",
            "CREATE TABLE rsdata_test.copied (id integer, name varchar(20), ts timestamp)",
            f"COPY rsdata_test.copied (id, name, ts) FROM '{manifest}' IAM_ROLE '{ROLE}' MANIFEST {COPY_OPTIONS}",
        ],
    )
    assert status["Status"] == "FINISHED", status.get("Error")
    assert status["SubStatements"][2]["ResultRows"] == 2
    pg.execute("SELECT id, name, ts FROM rsdata_test.copied ORDER BY id")
    assert [(i, n, str(t)) for i, n, t in pg.fetchall()] == [
        (1, "a, quoted", "2011-01-02 03:04:05"),
        (2, None, "2011-01-02 03:04:06"),
    ]
    # Without MANIFEST the source is a key prefix, as on Redshift: one.csv and one.csv.bak both load.
    status = run(
        client, f"COPY rsdata_test.copied FROM 's3://{BUCKET}/copy/one.csv' IAM_ROLE '{ROLE}' CSV IGNOREHEADER 1"
    )
    assert status["Status"] == "FINISHED", status.get("Error")
    pg.execute("SELECT count(*), count(*) FILTER (WHERE name = '') FROM rsdata_test.copied")
    assert pg.fetchone() == (5, 1)  # without EMPTYASNULL an empty varchar field is '' (Redshift's rule)


@pytest.mark.stack
def test_copy_failures_fail_the_statement(client, s3, pg):
    run(client, "CREATE SCHEMA IF NOT EXISTS rsdata_test")
    run(client, "CREATE TABLE IF NOT EXISTS rsdata_test.strict (id integer, name varchar(20))")
    missing = _manifest(s3, "copy/missing.manifest", [(f"s3://{BUCKET}/copy/absent.csv", True)])
    status = run(client, f"COPY rsdata_test.strict FROM '{missing}' IAM_ROLE '{ROLE}' MANIFEST {COPY_OPTIONS}")
    assert status["Status"] == "FAILED"
    assert (
        status["Error"].startswith("ERROR: Manifest file is invalid") and "mandatory file not found" in status["Error"]
    )
    optional = _manifest(s3, "copy/optional.manifest", [(f"s3://{BUCKET}/copy/absent.csv", False)])
    assert (
        run(client, f"COPY rsdata_test.strict FROM '{optional}' IAM_ROLE '{ROLE}' MANIFEST {COPY_OPTIONS}")["Status"]
        == "FINISHED"
    )
    s3.put_object(Bucket=BUCKET, Key="copy/bad.csv", Body=_csv([[1, "ok"], ["two", "bad"]], ["id", "name"]))
    bad = _manifest(s3, "copy/bad.manifest", [(f"s3://{BUCKET}/copy/bad.csv", True)])
    status = batch(
        client,
        [
            "INSERT INTO rsdata_test.strict VALUES (0, 'before')",
            f"COPY rsdata_test.strict FROM '{bad}' IAM_ROLE '{ROLE}' MANIFEST {COPY_OPTIONS}",
        ],
    )
    assert status["Status"] == "FAILED"
    assert status["Error"] == (
        "ERROR: Load into table 'strict' failed.  Check 'stl_load_errors' system table for details."
    )
    pg.execute("SELECT count(*) FROM rsdata_test.strict")
    assert pg.fetchone() == (0,)  # the batch rolled back, the INSERT with it
    errors = run(
        client, "SELECT filename, line_number, colname, err_reason FROM stl_load_errors ORDER BY starttime DESC LIMIT 1"
    )
    record = client.get_statement_result(Id=errors["Id"])["Records"][0]
    assert record[0] == {"stringValue": f"s3://{BUCKET}/copy/bad.csv"} and record[1] == {"longValue": 3}
    assert record[2] == {"stringValue": "id"} and "integer" in record[3]["stringValue"]


@pytest.mark.stack
def test_large_results_are_paged(client):
    status = run(client, "SELECT g AS n, CAST(g AS VARCHAR(10)) AS s FROM generate_series(1, 2500) AS g ORDER BY g")
    pages, kwargs = [], {"Id": status["Id"]}
    while True:
        page = client.get_statement_result(**kwargs)
        pages.append(page)
        if "NextToken" not in page:
            break
        kwargs["NextToken"] = page["NextToken"]
    assert [len(p["Records"]) for p in pages] == [1000, 1000, 500]  # the test server pages at 1,000 rows
    assert all(p["TotalNumRows"] == 2500 for p in pages)
    values = [r[0]["longValue"] for p in pages for r in p["Records"]]
    assert values == list(range(1, 2501))
    from warehouse.redshift_data import DataApi

    assert len(DataApi(client=client, poll_seconds=0.01).query("SELECT g FROM generate_series(1, 2500) AS g")) == 2500


@pytest.mark.stack
def test_cancel_list_and_catalog(client):
    started = client.execute_statement(Sql="SELECT pg_sleep(20)", StatementName="rsdata-sleeper", **TARGET)
    time.sleep(0.2)
    assert client.cancel_statement(Id=started["Id"])["Status"] is True
    assert wait(client, started["Id"], timeout=5)["Status"] == "ABORTED"
    listed = client.list_statements(StatementName="rsdata-sleeper")["Statements"]
    assert [s["Id"] for s in listed] == [started["Id"]] and listed[0]["Status"] == "ABORTED"
    assert (
        batch(
            client,
            [
                "CREATE SCHEMA IF NOT EXISTS rsdata_test",
                "CREATE TABLE rsdata_test.cat_one (key varchar(40) NOT NULL, n bigint)",
                "CREATE VIEW rsdata_test.cat_two AS SELECT key FROM rsdata_test.cat_one",
            ],
        )["Status"]
        == "FINISHED"
    )
    assert "rsdata_test" in client.list_schemas(**TARGET)["Schemas"]
    tables = client.list_tables(**TARGET, SchemaPattern="rsdata_test", TablePattern="cat_%")["Tables"]
    assert tables == [
        {"name": "cat_one", "schema": "rsdata_test", "type": "TABLE"},
        {"name": "cat_two", "schema": "rsdata_test", "type": "VIEW"},
    ]
    columns = client.describe_table(**TARGET, Schema="rsdata_test", Table="cat_one")["ColumnList"]
    assert [(c["name"], c["typeName"], c["nullable"], c["precision"]) for c in columns] == [
        ("key", "varchar", 0, 40),
        ("n", "int8", 1, 64),
    ]
    assert client.list_databases(WorkgroupName="ecom", Database="dev")["Databases"]


@pytest.mark.stack
def test_redshift_warehouse_loads_the_stack_postgres(client, server, clean_stores, pg):
    """The project's Redshift load (warehouse/redshift.py), unchanged, through this API: schema, lease,
    a group of staging files COPYed from S3 in one batch, the run log, the outcomes."""
    from ecom_core import aws, config
    from warehouse.redshift import RedshiftWarehouse
    from warehouse.redshift_data import DataApi

    cfg = server["cfg"]
    r = config.resources()
    s3 = aws.client("s3", cfg)
    warehouse = RedshiftWarehouse(cfg, api=DataApi(client=client, poll_seconds=0.05))
    # AWS takes at most 40 statements per BatchExecuteStatement; a group load is more
    # (warehouse/redshift.group_load), so the client sends it in a session: the COPYs into the
    # session's staging tables in batches of 40, then the transaction as one batch. This server
    # keeps AWS's limit of 40 (server["app"].max_batch_statements).
    assert server["app"].max_batch_statements == 40
    _round_trip(warehouse, cfg, r, s3, pg)


def _round_trip(warehouse, cfg, r, s3, pg) -> None:
    from ecom_core.contract import CSV_HEADER

    warehouse.ensure_schema()
    assert warehouse.acquire("rsdata-test", 60) and not warehouse.acquire("someone-else", 60)
    rows_a = [
        [
            "ev-1",
            "536365",
            "85123A",
            "WHITE HANGING HEART",
            6,
            "2010-12-01T08:26:00",
            "2.55",
            "17850",
            "United Kingdom",
        ],
        ["ev-2", "C536379", "D", "Discount", -1, "2010-12-01T09:41:00", "27.5", "14527", "United Kingdom"],
    ]
    rows_b = [
        ["ev-3", "536370", "22728", "", 24, "2010-12-01T08:45:00", "3.75", "", "France"],
        [
            "ev-1",
            "536365",
            "85123A",
            "WHITE HANGING HEART",
            6,
            "2010-12-01T08:26:00",
            "2.55",
            "17850",
            "United Kingdom",
        ],
    ]
    files = []
    for name, rows in (("a", rows_a), ("b", rows_b)):
        key = f"{r.staging_prefix}rsdata/{name}.csv"
        body = _csv(rows, CSV_HEADER)
        etag = s3.put_object(Bucket=r.staging_bucket, Key=key, Body=body)["ETag"].strip('"')
        files.append((key, etag, lambda body=body: body))
    started = time.perf_counter()
    outcomes = warehouse.load_group(files)
    elapsed = time.perf_counter() - started
    print(f"load_group of 2 files: {elapsed:.2f} s")
    # b.csv: ev-3 is new, ev-1 came with a.csv (an update), as the Postgres load counts them
    assert outcomes == [(files[0][0], (2, 2, 0, 0)), (files[1][0], (2, 1, 1, 0))]
    warehouse.load_group(files)  # again: the manifest already has both files, nothing changes
    pg.execute(
        "SELECT event_id, amount, is_cancellation, is_guest, description, customer_id FROM dw.fact_sales_line "
        "ORDER BY event_id"
    )
    assert [(e, str(a), c, g, d, cid) for e, a, c, g, d, cid in pg.fetchall()] == [
        ("ev-1", "15.300", False, False, "WHITE HANGING HEART", 17850),
        ("ev-2", "-27.500", True, False, "Discount", 14527),
        ("ev-3", "90.000", False, True, None, None),
    ]
    assert warehouse.loaded_keys() >= {files[0][0], files[1][0]}
    warehouse.record_run(
        {"run_id": "rsdata-run", "started_at": "2024-01-01 00:00:00", "outcome": "ok", "files_loaded": 2}
    )
    pg.execute("SELECT outcome, files_loaded FROM dw.etl_run WHERE run_id = 'rsdata-run'")
    assert pg.fetchone() == ("ok", 2)
    assert warehouse.lease_holder().startswith("rsdata-test until ")
    warehouse.release("rsdata-test")
    assert warehouse.acquire("someone-else", 60)
    warehouse.release("someone-else")
    pg.execute("SELECT count(*) FROM dw.load_manifest")
    assert pg.fetchone() == (2,)
    pg.execute("SELECT stock_code FROM analytics.top_products ORDER BY stock_code")
    assert pg.fetchall() == [("22728",), ("85123A",)]  # D is the discount code, not a product
    # Every analyst view answers through the API (the operator's and BI tools' questions).
    pg.execute("SELECT table_name FROM information_schema.views WHERE table_schema = 'analytics' ORDER BY 1")
    views = [v for (v,) in pg.fetchall()]
    assert len(views) >= 12
    for view in views:
        warehouse.api.query(f"SELECT * FROM analytics.{view}")
    # Typed by the column's metadata (numeric -> Decimal), as a driver would give it.
    assert warehouse.api.query("SELECT revenue FROM analytics.revenue_by_country WHERE country = 'France'") == [
        [Decimal("90.000")]
    ]


@pytest.mark.stack
@pytest.mark.skipif(not os.environ.get("RSDATA_BENCH"), reason="a measurement (10-30 s): RSDATA_BENCH=1 runs it")
def test_key_index_speeds_up_a_group_load(server):
    """RedshiftWarehouse.load_group of 300 rows against a fact table of 300k rows (RSDATA_BENCH_ROWS),
    with the index the translator adds for the dropped PRIMARY KEY (event_id) and without it. In a
    database of its own: the stack's warehouse was made by the Postgres path (real keys, its indexes)."""
    cfg = server["cfg"]
    admin = psycopg2.connect(cfg.warehouse_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS rsdata_bench")
        cur.execute("CREATE DATABASE rsdata_bench")
    dsn = psycopg2.extensions.make_dsn(cfg.warehouse_dsn, dbname="rsdata_bench")
    try:
        with serve(dsn, cfg.endpoint_url) as (_, url):
            conn = psycopg2.connect(dsn)  # not `with conn:` (psycopg2 2.9 opens a transaction even in autocommit)
            conn.autocommit = True
            try:
                _bench(_client(url), cfg, conn.cursor())
            finally:
                conn.close()
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS rsdata_bench WITH (FORCE)")
        admin.close()


def _bench(client, cfg, pg) -> None:
    from ecom_core import aws, config
    from ecom_core.contract import CSV_HEADER
    from warehouse.redshift import RedshiftWarehouse
    from warehouse.redshift_data import DataApi

    r = config.resources()
    s3 = aws.client("s3", cfg)
    warehouse = RedshiftWarehouse(cfg, api=DataApi(client=client, poll_seconds=0.01))
    warehouse.ensure_schema()
    pg.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'dw' AND tablename = 'fact_sales_line'")
    assert pg.fetchall() == [("fact_sales_line_event_id_key",)]
    pg.execute(
        "INSERT INTO dw.fact_sales_line (event_id, invoice_no, stock_code, description, quantity, unit_price, "
        "invoice_ts, customer_id, country, source_file, product_code, date_key, amount, is_cancellation, "
        "is_adjustment, is_guest, is_zero_price) SELECT 'bench-' || g, CAST(500000 + g / 20 AS VARCHAR), "
        "'S' || (g % 3000), 'ITEM ' || (g % 3000), 1 + g % 12, 2.5, TIMESTAMP '2011-01-01' + g * INTERVAL '1 minute', "
        "12000 + g % 4000, 'United Kingdom', 'bench.csv', 'S' || (g % 3000), 20110101, 2.5, FALSE, FALSE, FALSE, "
        f"FALSE FROM generate_series(1, {int(os.environ.get('RSDATA_BENCH_ROWS', '300000'))}) AS g"
    )
    pg.execute("ANALYZE dw.fact_sales_line")

    def load(label: str, run: int) -> float:
        files = []
        for f in range(2):
            rows = [
                [
                    f"bench-{run}-{f}-{n}" if n % 3 else f"bench-{run * 1000 + f * 150 + n + 1}",
                    f"9{run}{f}{n:04d}",
                    f"S{n % 3000}",
                    f"ITEM {n % 3000}",
                    1 + n % 5,
                    "2011-06-01T10:00:00",
                    "1.25",
                    str(12000 + n),
                    "United Kingdom",
                ]
                for n in range(150)
            ]
            key = f"{r.staging_prefix}bench/{run}-{f}.csv"
            body = _csv(rows, CSV_HEADER)
            etag = s3.put_object(Bucket=r.staging_bucket, Key=key, Body=body)["ETag"].strip('"')
            files.append((key, etag, lambda body=body: body))
        started = time.perf_counter()
        warehouse.load_group(files)
        elapsed = time.perf_counter() - started
        pg.execute(
            "SELECT count(*), count(*) FILTER (WHERE event_id LIKE %s) FROM dw.fact_sales_line", (f"bench-{run}-%",)
        )
        print(f"load_group of 300 rows, {label}: {elapsed:.2f} s (fact rows, new ones: {pg.fetchone()})")
        return elapsed

    with_index = [load("with the event_id index", run) for run in (1, 2)]
    pg.execute("DROP INDEX dw.fact_sales_line_event_id_key")
    pg.execute("ANALYZE dw.fact_sales_line")
    without = [load("without it", run) for run in (3, 4)]
    print(f"best of 2: {min(with_index):.2f} s with the index, {min(without):.2f} s without")
