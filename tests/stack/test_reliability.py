"""Faults, poison records and restarts lose nothing and duplicate nothing (on the embedded stack).

Fault injection is configuration (ECOM_FAULTS, see ecom_core/faults.py): for kinesis-trigger it is
set in the deployed function's environment; for the ETL in the environment of the ETL process.
Every test ends with a per-event reconciliation that must be exact.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from bootstrap import stack
from ecom_core import aws, config
from ecom_core.faults import FaultInjected
from etl.run import run_once
from etl.transform import TRANSFORM_THREADS
from tests.support.helpers import InFaultWindow, assert_exact, counts, replay_file
from warehouse.reconcile import open_ledger, read_ledgers, reconcile
from warehouse.status import wait_for_drain

pytestmark = pytest.mark.stack
FULL = config.FULL_FILE


def _wait_updated(lam, name: str) -> None:
    for _ in range(200):
        conf = lam.get_function_configuration(FunctionName=name)
        if conf.get("LastUpdateStatus", "Successful") != "InProgress":
            return
        time.sleep(0.1)


@contextmanager
def trigger_faults(stack_env, spec: str, batch_size: int | None = None):
    """kinesis-trigger with ECOM_FAULTS=spec (and optionally a smaller mapping batch: more invocations)."""
    r = config.resources()
    lam = aws.client("lambda", stack_env["cfg"])
    original = lam.get_function_configuration(FunctionName=r.trigger_function)["Environment"]["Variables"]
    mapping = lam.list_event_source_mappings(FunctionName=r.trigger_function)["EventSourceMappings"][0]
    lam.update_function_configuration(
        FunctionName=r.trigger_function, Environment={"Variables": {**original, "ECOM_FAULTS": spec}}
    )
    _wait_updated(lam, r.trigger_function)
    if batch_size:
        lam.update_event_source_mapping(UUID=mapping["UUID"], BatchSize=batch_size)
    try:
        yield
    finally:
        lam.update_function_configuration(FunctionName=r.trigger_function, Environment={"Variables": original})
        _wait_updated(lam, r.trigger_function)
        if batch_size:
            lam.update_event_source_mapping(UUID=mapping["UUID"], BatchSize=mapping["BatchSize"])


def injected_faults(stack_env, point: str) -> int:
    """How often the emulator saw kinesis-trigger fail at `point` (its log names each failed batch)."""
    log = stack_env["data_dir"] / "logs" / "ministack.log"
    return log.read_text(errors="replace").count(f"errorMessage=injected fault at {point}")


@pytest.mark.parametrize("point", ["trigger.before_dynamodb", "trigger.mid_dynamodb", "trigger.after_dynamodb"])
def test_trigger_faults_at_each_point_reconcile_exactly(stack_env, clean_stores, point):
    before = injected_faults(stack_env, point)
    with trigger_faults(stack_env, f"{point}=0.1", batch_size=100):
        result = replay_file(stack_env, FULL, rows=10000, concurrency=4)
    assert result.accepted == 10000
    faults = injected_faults(stack_env, point) - before
    assert faults >= 1, "no fault was injected: the test proved nothing"
    run_once(stack_env["cfg"])
    summary = assert_exact(stack_env, 10000)
    print(f"{point}: {faults} injected faults; reconcile {summary['stages']['warehouse']}")


def _put(kinesis, stream, records):
    out = kinesis.put_records(StreamName=stream, Records=records)
    assert out["FailedRecordCount"] == 0
    high: dict[str, str] = {}
    for r in out["Records"]:
        high[r["ShardId"]] = max(high.get(r["ShardId"], "0"), r["SequenceNumber"], key=int)
    return high


GOOD = {
    "InvoiceNo": "999001",
    "StockCode": "85123A",
    "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
    "Quantity": 6,
    "InvoiceDate": "2010-12-01T08:26:00",
    "UnitPrice": 2.55,
    "CustomerID": 17850,
    "Country": "United Kingdom",
}


def test_poison_records_are_quarantined_and_the_shard_keeps_moving(stack_env, clean_stores):
    r = config.resources()
    kinesis = aws.client("kinesis", stack_env["cfg"])
    poison = {
        "not json": b"{this is not json",
        "not utf-8": b"\xff\xfe\xa3 not text",
        "array": json.dumps([GOOD]).encode(),
        "missing fields": json.dumps({"event_id": "poison-missing", "InvoiceNo": "999001"}).encode(),
        "wrong types": json.dumps(dict(GOOD, event_id="poison-types", Quantity="six", UnitPrice=None)).encode(),
        "900 KB": json.dumps(dict(GOOD, event_id="poison-big", Description="x" * 900_000)).encode(),
        "no event id": json.dumps(GOOD).encode(),
    }
    records = []
    for i in range(10):  # good and bad interleaved, one partition key: the same shard and batches
        records.append({"Data": json.dumps(dict(GOOD, event_id=f"good-{i}")).encode(), "PartitionKey": "999001"})
        if i < len(poison):
            records.append({"Data": list(poison.values())[i], "PartitionKey": "999001"})
    high = _put(kinesis, r.stream, records)
    assert wait_for_drain(high, stack_env["cfg"], timeout=120)

    c = counts(stack_env["cfg"])
    assert c["quarantined"] == len(poison)
    assert c["invoice_lines"] == 10  # every good record of the same batches was written
    letters = {}
    from replay.deadletters import letters as all_letters

    for letter in all_letters(stack_env["cfg"]):
        letters[letter.body["data"] if letter.body["data"] is not None else letter.body["data_base64"]] = letter
        assert letter.body["source"]["shard_id"].startswith("shardId-")
        assert letter.body["source"]["sequence_number"].isdigit() and letter.body["quarantined_at"]
    reasons = {
        name: letters[data.decode("utf-8") if name != "not utf-8" else base64.b64encode(data).decode()].reason
        for name, data in poison.items()
    }
    assert reasons["not json"].startswith("not JSON")
    assert reasons["not utf-8"].startswith("not UTF-8")
    assert "must be a JSON object" in reasons["array"]
    assert "Quantity: is required" in reasons["missing fields"] and "Country: is required" in reasons["missing fields"]
    assert (
        "Quantity: must be an integer" in reasons["wrong types"] and "UnitPrice: is required" in reasons["wrong types"]
    )
    assert "Description: longer than 1000 bytes" in reasons["900 KB"]
    assert "event_id: is required" in reasons["no event id"]
    assert letters[poison["900 KB"].decode()].body["size"] == len(poison["900 KB"])

    # The shard keeps moving: records after the poison are processed too.
    high = _put(
        kinesis,
        r.stream,
        [{"Data": json.dumps(dict(GOOD, event_id="after-poison")).encode(), "PartitionKey": "999001"}],
    )
    assert wait_for_drain(high, stack_env["cfg"], timeout=60)
    assert counts(stack_env["cfg"])["invoice_lines"] == 11

    # dlq: list, show, redrive (still invalid, so it comes back as a new letter; the old one is kept aside).
    env = {**os.environ, **stack_env["env"]}
    ecom = [sys.executable, "-m", "ecom"]
    listing = json.loads(
        subprocess.run(ecom + ["dlq", "list", "--json"], env=env, capture_output=True, text=True, check=True).stdout
    )
    assert len(listing) == len(poison)
    target = next(letter for letter in listing if "Quantity: must be an integer" in letter["reason"])
    shown = json.loads(
        subprocess.run(
            ecom + ["dlq", "show", target["sequence_number"]], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert json.loads(shown["data"])["event_id"] == "poison-types"
    out = subprocess.run(ecom + ["dlq", "redrive", target["key"]], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "1 redriven" in out.stdout
    new_sequence = out.stdout.split("sequence ")[1].split()[0]
    assert wait_for_drain({target["shard_id"]: new_sequence}, stack_env["cfg"], timeout=60)
    after = json.loads(
        subprocess.run(ecom + ["dlq", "list", "--json"], env=env, capture_output=True, text=True, check=True).stdout
    )
    assert len(after) == len(poison)
    assert target["key"] not in {letter["key"] for letter in after}
    assert any(letter["sequence_number"] == new_sequence for letter in after)
    status = json.loads(
        subprocess.run(ecom + ["status", "--json"], env=env, capture_output=True, text=True, check=True).stdout
    )
    assert status["quarantined"] == len(poison)
    assert sorted(map(tuple, status["dead_letter_reasons"])) == sorted(
        [
            ("invalid event ((event))", 1),
            ("invalid event (Country, InvoiceDate, Quantity, StockCode, UnitPrice)", 1),
            ("invalid event (Description)", 1),
            ("invalid event (Quantity, UnitPrice)", 1),
            ("invalid event (event_id)", 1),
            ("not JSON", 1),
            ("not UTF-8", 1),
        ]
    )


def _etl(stack_env, faults: str = "") -> subprocess.CompletedProcess:
    """`ecom etl run` in a process of its own, with ECOM_FAULTS. A run killed by a fault leaves its
    lease to expire, and the next run waits for that: 10 s here, not the default 120 s (nothing else
    runs the ETL meanwhile, so the short lease changes no outcome, only the wait)."""
    env = {**os.environ, **stack_env["env"], "ECOM_FAULTS": faults, "ECOM_ETL_LEASE_SECONDS": "10"}
    return subprocess.run(
        [sys.executable, "-m", "ecom", "etl", "run"], env=env, capture_output=True, text=True, timeout=300
    )


def test_etl_killed_between_copy_and_commit_loads_each_file_once(stack_env, clean_stores):
    replay_file(stack_env, FULL, rows=6000)
    first = _etl(stack_env, "load.after_copy=1:kill")
    assert first.returncode == -9, first.stderr
    c = counts(stack_env["cfg"])
    assert c["warehouse_rows"] == 0 and c["files_loaded"] == 0  # the killed transaction left nothing
    # Keep killing about half the loads until a run gets through: every run commits a few files.
    for attempt in range(30):  # noqa: B007 - read after the loop: whether any run was killed first
        run = _etl(stack_env, "load.after_copy=0.4:kill")
        if run.returncode == 0:
            break
        assert run.returncode == -9, run.stderr
    else:
        pytest.fail("the ETL never got through")
    assert attempt >= 1 or counts(stack_env["cfg"])["files_loaded"] > 0
    c = counts(stack_env["cfg"])
    assert c["files_loaded"] == c["staging_files"] > 1
    assert_exact(stack_env, 6000)


def test_etl_killed_between_csv_and_raw_move_loses_nothing(stack_env, clean_stores):
    replay_file(stack_env, FULL, rows=6000)
    pending = counts(stack_env["cfg"])["raw_objects_pending"]
    assert pending > 1
    run = _etl(stack_env, "transform.after_csv=1:kill")
    assert run.returncode == -9
    c = counts(stack_env["cfg"])
    # CSVs written (one per transform thread at most: the first to get there was killed), no raw moved.
    assert 1 <= c["staging_files"] <= TRANSFORM_THREADS and c["raw_objects_pending"] == pending
    run = _etl(stack_env)
    assert run.returncode == 0, run.stderr
    c = counts(stack_env["cfg"])
    assert c["raw_objects_pending"] == 0 and c["raw_objects_processed"] == c["staging_files"] == pending
    assert c["files_loaded"] == pending
    assert_exact(stack_env, 6000)


def test_emulator_and_postgres_restarts_lose_nothing(stack_env, clean_stores):
    cfg = stack_env["cfg"]
    outcome: dict = {}

    def run_replay():
        try:
            outcome["result"] = replay_file(stack_env, FULL, rows=15000, concurrency=2, batch_size=250)
        except BaseException as exc:  # surfaced below
            outcome["error"] = exc

    thread = threading.Thread(target=run_replay)
    thread.start()
    time.sleep(1.5)  # mid-replay
    stack.restart_ministack(cfg)  # graceful stop (state saved), start again
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].accepted == 15000

    # Postgres restarted while a load is in the middle of its transactions.
    # Loads commit a group of files at a time: hold the (first) group's transaction open for 6 s,
    # after its COPY and fact write, and restart Postgres inside that window: once the run says it
    # is there (a fixed delay missed the window on a slow machine: the run was still transforming).
    env = {**os.environ, **stack_env["env"], "ECOM_FAULTS": "load.after_copy=1:sleep=6"}
    etl = InFaultWindow([sys.executable, "-m", "ecom", "etl", "run"], env)
    stack.restart_postgres(cfg)
    returncode, err = etl.finish()
    # The group's transaction was open in the job's Data API session when Postgres went: it is gone,
    # never half committed. The run then failed or redid the group in a new session (warehouse/redshift.py
    # runs a failed group once more as it is); either way the next run leaves every file loaded once,
    # none of them through the screening path (nothing in it was refused).
    assert returncode == 0 or "connection" in err.lower() or "terminat" in err.lower(), err[-500:]
    run_once(cfg)
    c = counts(cfg)
    assert c["files_loaded"] == c["staging_files"]
    screened = aws.client("s3", cfg).list_objects_v2(Bucket=config.resources().staging_bucket, Prefix="_etl/screened/")
    assert screened.get("KeyCount", 0) == 0
    assert_exact(stack_env, 15000)


def test_soak_with_random_faults_and_a_concurrent_etl_loop(stack_env, clean_stores):
    rows = int(os.environ.get("ECOM_SOAK_ROWS", "100000"))
    cfg = stack_env["cfg"]
    stop = threading.Event()
    etl_runs = {"ok": 0, "faulted": 0}

    def etl_loop():
        # The ETL in this process fails at 1% of its fault points too.
        os.environ["ECOM_FAULTS"] = "transform.after_csv=0.01,load.after_copy=0.01"
        try:
            while not stop.is_set():
                try:
                    run_once(cfg)
                    etl_runs["ok"] += 1
                except FaultInjected:
                    etl_runs["faulted"] += 1
                stop.wait(1.0)
        finally:
            os.environ.pop("ECOM_FAULTS", None)

    spec = "trigger.before_dynamodb=0.01,trigger.mid_dynamodb=0.01,trigger.after_dynamodb=0.01"
    loop = threading.Thread(target=etl_loop)
    with trigger_faults(stack_env, spec, batch_size=200):
        loop.start()
        try:
            result = replay_file(stack_env, FULL, rows=rows, concurrency=4)
        finally:
            stop.set()
            loop.join(timeout=600)
    assert result.accepted == rows
    run_once(cfg)
    summary = assert_exact(stack_env, rows)
    faults = sum(injected_faults(stack_env, p) for p in spec.replace("=0.01", "").split(","))
    print(f"soak: {rows} rows, {faults} trigger faults (cumulative), ETL runs {etl_runs}, {summary['stages']}")
    assert etl_runs["ok"] + etl_runs["faulted"] >= 2


def test_batches_discarded_after_bounded_retries_can_be_redriven(stack_env, clean_stores, tmp_path):
    """AWS gives up on a batch after MaximumRetryAttempts and sends only its coordinates to the
    OnFailure queue (MiniStack never does). Simulate exactly that: records on the stream whose effects
    are gone, plus the OnFailure record AWS would send; `dlq redrive --batches` must restore them."""
    cfg = stack_env["cfg"]
    r = config.resources()
    from tests.conftest import write_slice

    source = write_slice(1, 300, tmp_path / "discarded-batch.csv")  # its own file: event ids no other test uses
    result = replay_file(stack_env, source)
    assert result.accepted == 300
    # Forget what the consumer did for one shard, as if its batch had been discarded.
    from bootstrap.reset import empty_stores

    kinesis = aws.client("kinesis", cfg)
    shard = sorted(result.high_water)[0]
    records = []
    iterator = kinesis.get_shard_iterator(StreamName=r.stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
        "ShardIterator"
    ]
    while True:
        page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
        records += page["Records"]
        if not page["Records"]:
            break
        iterator = page["NextShardIterator"]
    accepted = read_ledgers(cfg)  # the stream also holds earlier tests' records: keep this test's only
    ours = [rec for rec in records if json.loads(rec["Data"]).get("event_id") in accepted]
    assert 0 < len(ours) < 300
    empty_stores(cfg)
    sqs = aws.client("sqs", cfg)
    url = sqs.get_queue_url(QueueName=r.dead_letter_queue)["QueueUrl"]
    sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps(
            {
                "requestContext": {
                    "requestId": "test",
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": 51,
                },
                "responseContext": {"statusCode": 200, "functionError": "Unhandled"},
                "version": "1.0",
                "KinesisBatchInfo": {
                    "shardId": shard,
                    "startSequenceNumber": ours[0]["SequenceNumber"],
                    "endSequenceNumber": ours[-1]["SequenceNumber"],
                    "batchSize": len(ours),
                    "streamArn": stack_env["stream_arn"],
                },
            }
        ),
    )
    env = {**os.environ, **stack_env["env"]}
    listed = json.loads(
        subprocess.run(
            [sys.executable, "-m", "ecom", "dlq", "batches", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert [(b["shard_id"], b["batch_size"]) for b in listed] == [(shard, len(ours))]
    out = subprocess.run(
        [sys.executable, "-m", "ecom", "dlq", "redrive", "--batches"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert f"1 batches redriven ({len(ours)} records re-put)" in out.stdout
    from replay.deadletters import failed_batches

    assert failed_batches(cfg) == []
    tip = max(
        (
            rec["SequenceNumber"]
            for rec in kinesis.get_records(
                ShardIterator=kinesis.get_shard_iterator(
                    StreamName=r.stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"],
                Limit=10000,
            )["Records"]
        ),
        key=int,
    )
    assert wait_for_drain({shard: tip}, cfg, timeout=60)
    assert counts(cfg)["invoice_lines"] == len(ours)


DEEP_RECORD = b'{"a":' * 100_000 + b"1" + b"}" * 100_000  # 600 KB: within a Kinesis record's 1 MiB


def test_a_deeply_nested_record_on_the_stream_breaks_no_operator_tool(stack_env, clean_stores):
    """Another producer puts a record nested 100,000 deep on the stream: the trigger quarantines it,
    and reconcile, `dlq list`, `dlq show` and `dlq redrive` all go on past it (they crashed with
    RecursionError for as long as the record was retained)."""
    cfg = stack_env["cfg"]
    kinesis = aws.client("kinesis", cfg)
    answer = kinesis.put_records(
        StreamName=config.resources().stream, Records=[{"Data": DEEP_RECORD, "PartitionKey": "deep"}]
    )
    assert not answer.get("FailedRecordCount"), answer
    record = answer["Records"][0]
    assert wait_for_drain({record["ShardId"]: record["SequenceNumber"]}, cfg, timeout=120)
    assert counts(cfg)["quarantined"] == 1

    result = reconcile(cfg, accepted=set())
    stream = next(s for s in result.stages if s.name == "stream")
    assert stream.unreadable >= 1 and result.dead_lettered == set()  # counted, not crashed on
    env = {**os.environ, **stack_env["env"]}

    def ecom(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "ecom", *args], env=env, capture_output=True, text=True, timeout=120
        )

    listed = ecom("dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [letter] = [row for row in json.loads(listed.stdout) if row["stage"] == "stream"]
    assert ecom("dlq", "show", letter["key"]).returncode == 0
    redriven = ecom("dlq", "redrive", letter["key"])
    assert redriven.returncode == 0, redriven.stderr
    reconciled = ecom("reconcile")
    assert reconciled.returncode in (0, 1) and "Traceback" not in reconciled.stderr, reconciled.stderr


def test_reconcile_counts_every_accepted_event_not_just_the_replayed_ones(stack_env, clean_stores):
    """What the API accepted is what reached the stream, whoever sent it. Events another producer
    put on the stream (no replay ledger) are checked through every stage; an event in a store that
    was never accepted, or one a ledger holds that the stream lost, makes reconcile NOT exact (the
    CLI exits 1). Stream records from before the last reset are history, not missing events."""
    from ecom_core.config import SAMPLE_FILE
    from handlers.events import accept_event

    cfg = stack_env["cfg"]
    replay_file(stack_env, SAMPLE_FILE, rows=40)  # a replay: its ledger holds 40 ids
    other = [
        accept_event(
            {
                "InvoiceNo": "581587",
                "StockCode": f"2272{i}",
                "Description": "CIRCUS PARADE",
                "Quantity": 4,
                "InvoiceDate": "12/9/2011 12:50",
                "UnitPrice": 2.55,
                "CustomerID": 12680,
                "Country": "France",
            }
        )
        for i in range(5)
    ]
    kinesis = aws.client("kinesis", cfg)
    answer = kinesis.put_records(
        StreamName=config.resources().stream,
        Records=[{"Data": json.dumps(e).encode(), "PartitionKey": "581587"} for e in other],
    )
    assert not answer.get("FailedRecordCount"), answer
    assert wait_for_drain({rec["ShardId"]: rec["SequenceNumber"] for rec in answer["Records"]}, cfg, timeout=120)
    run_once(cfg)
    assert_exact(stack_env, 45)  # the other producer's 5 included
    env = {**os.environ, **stack_env["env"]}

    def cli_reconcile() -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "ecom", "reconcile", "--json"], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == (0 if json.loads(done.stdout)["exact"] else 1), done.stderr
        return json.loads(done.stdout)

    assert cli_reconcile()["exact"]
    # One of the other producer's events lost from DynamoDB: missing, though no ledger names it.
    dynamodb = aws.client("dynamodb", cfg)
    table = config.resources().invoice_table
    keys = [k["AttributeName"] for k in dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]]
    [item] = [i for i in aws.items(dynamodb.scan, TableName=table) if i["LineId"]["S"] == other[0]["event_id"]]
    dynamodb.delete_item(TableName=table, Key={k: item[k] for k in keys})
    lost = cli_reconcile()
    assert not lost["exact"] and lost["stages"]["dynamodb"]["missing_ids"] == [other[0]["event_id"]]
    dynamodb.put_item(TableName=table, Item=item)
    # An item written around the API: unexpected, and a failure.
    forged = dict(item, LineId={"S": "never-accepted-0001"})
    dynamodb.put_item(TableName=table, Item=forged)
    around = cli_reconcile()
    assert not around["exact"] and around["stages"]["dynamodb"]["unexpected_ids"] == ["never-accepted-0001"]
    dynamodb.delete_item(TableName=table, Key={k: forged[k] for k in keys})
    # An id a replay ledger holds that the stream never got (an acknowledged event lost): missing.
    with open_ledger(cfg, SAMPLE_FILE) as ledger:
        ledger.write("acknowledged-then-lost\n")
    gone = reconcile(cfg)
    assert not gone.exact
    assert {s.name: s.missing for s in gone.stages}["stream"] == ["acknowledged-then-lost"]
