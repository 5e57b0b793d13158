"""MiniStack as the embedded stack runs it (bootstrap/local/ministack/, started by
bootstrap/ministack_launcher.py): each patch checked against MiniStack's own code, the refusal to
patch another release, and the runtime libraries Python functions see. No stack; the same on the
running stack (functions that see only their zip): tests/stack/bootstrap/local/test_ministack.py."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import pytest

from bootstrap.local.ministack import _patching, process, server
from bootstrap.local.ministack import dynamodb as dynamodb_patch
from bootstrap.local.ministack import kinesis as kinesis_patch
from bootstrap.local.ministack import lambda_runtime as runtime_patch
from bootstrap.local.ministack import lambda_svc as svc_patch
from ecom_core import config


def test_the_launchers_kinesis_expiry_keeps_ministacks_behaviour():
    """bootstrap/local/ministack/kinesis.py replaces MiniStack's per-call pass over every retained record
    with a check of the oldest one; the records kept must be exactly MiniStack's."""
    from ministack.services import kinesis

    now = time.time()

    def stream(ages: list[float]) -> dict:
        return {
            "RetentionPeriodHours": 24,
            "shards": {
                "shardId-000000000000": {
                    "records": [{"ApproximateArrivalTimestamp": now - age, "n": i} for i, age in enumerate(ages)]
                },
                "shardId-000000000001": {"records": []},
            },
        }

    day = 24 * 3600
    for ages in ([], [10, 5, 1], [day + 60, day + 1, 100, 1], [day + 5, day + 2], [day + 3, 10]):
        ours, theirs = stream(ages), stream(ages)
        untouched = ours["shards"]["shardId-000000000000"]["records"]
        kinesis_patch.expire_records_when_due(ours)
        kinesis._expire_records(theirs)
        assert ours == theirs, ages
        if not ages or max(ages) < day:  # nothing due: the same list, not a copy
            assert ours["shards"]["shardId-000000000000"]["records"] is untouched


def test_the_launcher_serves_with_ministacks_settings_or_leaves_it_to_ministack(monkeypatch):

    monkeypatch.setenv("GATEWAY_PORT", "4999")
    monkeypatch.setenv("BIND_HOST", "127.0.0.1")
    monkeypatch.delenv("USE_SSL", raising=False)
    settings = server.uvicorn_settings()
    assert settings["host"] == "127.0.0.1" and settings["port"] == 4999
    assert (settings["http"], settings["loop"]) == ("httptools", "uvloop")
    assert settings["lifespan"] == "on"  # MiniStack's startup, and its state saved at shutdown
    assert settings["timeout_keep_alive"] == 75 and not settings["date_header"] and not settings["server_header"]
    assert settings["proxy_headers"] is False  # the client address as the socket gives it, as hypercorn
    monkeypatch.setenv("USE_SSL", "1")  # HTTPS: MiniStack's own server, with its certificate handling
    assert server.uvicorn_settings() is None


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
            self.calls.append(
                (
                    first.split(":")[0],
                    [r["kinesis"]["sequenceNumber"] for r in event["Records"]],
                    started,
                    time.monotonic(),
                    event,
                )
            )
            if first in self.fail_once:
                self.fail_once.discard(first)
                return {"error": True, "body": {"errorType": "Boom", "errorMessage": "injected"}}
        return {}


def _fake_mapping(monkeypatch, records_per_shard: int, batch_size: int, function) -> dict:
    """One Kinesis mapping on a two-shard stream, inside MiniStack's own modules (in this process)."""
    from ministack.services import kinesis, lambda_svc

    arn = "arn:aws:kinesis:us-east-1:000000000000:stream/poller-test"
    stream = {
        "StreamARN": arn,
        "StreamStatus": "ACTIVE",
        "shards": {
            f"shardId-00000000000{s}": {
                "records": [
                    {
                        "Data": f"{s}-{n}".encode(),
                        "PartitionKey": f"p{s}",
                        "SequenceNumber": f"{s}{n:04d}",
                        "ApproximateArrivalTimestamp": 1.0,
                    }
                    for n in range(records_per_shard)
                ]
            }
            for s in (0, 1)
        },
    }
    esm = {
        "UUID": "esm-poller-test",
        "EventSourceArn": arn,
        "FunctionName": "f",
        "BatchSize": batch_size,
        "StartingPosition": "TRIM_HORIZON",
        "Enabled": True,
    }
    monkeypatch.setattr(lambda_svc, "_iter_all_esms", lambda: iter([("000000000000", "us-east-1", esm)]))
    monkeypatch.setattr(lambda_svc, "_get_func_record_for_qualifier", lambda name, qualifier: ({"name": name}, {}))
    monkeypatch.setattr(kinesis, "_streams", type("Streams", (), {"get_scoped": lambda self, a, r, n: stream})())
    monkeypatch.setattr(lambda_svc, "_execute_function", function)
    monkeypatch.setattr(lambda_svc, "_ESM_BACKOFF_SECONDS", 0.0)
    lambda_svc._kinesis_positions.pop(esm["UUID"], None)
    lambda_svc._esm_backoff_until.pop(esm["UUID"], None)
    return esm


def _drain(poll, function, expected_calls: int, timeout: float = 10) -> None:

    deadline = time.monotonic() + timeout
    while len(function.calls) < expected_calls or svc_patch._shards_in_flight:
        assert time.monotonic() < deadline, function.calls
        if not poll():
            time.sleep(0.01)


def test_the_launchers_kinesis_poller_runs_shards_side_by_side_in_order(monkeypatch):
    """bootstrap/local/ministack/lambda_svc.py invokes each shard's batch on its own thread (as AWS runs the
    shards of a stream concurrently), one batch per shard at a time, in sequence order; the event
    it builds is MiniStack's own, and a failed batch is retried from the same position."""
    from ministack.services import lambda_svc

    # MiniStack's own poller first: the events it builds, one batch after another.
    theirs = _RecordingFunction()
    esm = _fake_mapping(monkeypatch, records_per_shard=7, batch_size=3, function=theirs)
    _drain(lambda_svc._poll_kinesis, theirs, expected_calls=6)

    ours = _RecordingFunction(seconds=0.3, fail_once=("shardId-000000000001:10003",))
    _fake_mapping(monkeypatch, records_per_shard=7, batch_size=3, function=ours)
    assert svc_patch.poll_kinesis_shards_concurrently() is True  # both shards dispatched at once
    assert svc_patch.poll_kinesis_shards_concurrently() is False  # each shard has its batch in flight
    _drain(svc_patch.poll_kinesis_shards_concurrently, ours, expected_calls=7)

    for shard in ("shardId-000000000000", "shardId-000000000001"):
        sequences = [seqs for s, seqs, *_ in ours.calls if s == shard]
        expected = [seqs for s, seqs, *_ in theirs.calls if s == shard]
        if shard.endswith("1"):  # the failed batch came again, from the same position
            assert sequences[1] == sequences[2] == expected[1]
            sequences = sequences[:1] + sequences[2:]
        assert sequences == expected, shard
        spans = [(start, end) for s, _, start, end, _ in ours.calls if s == shard]
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False)), (
            "one batch per shard at a time"
        )
    first = {s: (start, end) for s, _, start, end, _ in reversed(ours.calls)}
    (a_start, a_end), (b_start, b_end) = first.values()
    assert a_start < b_end and b_start < a_end, "the two shards' first batches overlapped"
    assert [
        event for *_, event in theirs.calls if event["Records"][0]["eventID"].startswith("shardId-000000000000")
    ] == [event for *_, event in ours.calls if event["Records"][0]["eventID"].startswith("shardId-000000000000")]
    # The event is a KinesisBatchEvent, which the worker hand-off writes with orjson (test below).
    assert all(type(event) is runtime_patch.KinesisBatchEvent for *_, event in ours.calls)
    assert lambda_svc._kinesis_positions[esm["UUID"]] == {"shardId-000000000000": 7, "shardId-000000000001": 7}
    assert esm["LastProcessingResult"] == "OK - 1 records"


def _create_invoice_table(dynamodb, table: str) -> None:
    """The invoice table's shape (InvoiceNo, LineId), created through MiniStack's own handler."""
    dynamodb._create_table(
        {
            "TableName": table,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [
                {"AttributeName": "InvoiceNo", "KeyType": "HASH"},
                {"AttributeName": "LineId", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "InvoiceNo", "AttributeType": "S"},
                {"AttributeName": "LineId", "AttributeType": "S"},
            ],
        }
    )


def test_the_launchers_batch_write_checks_each_item_once_with_ministacks_results(monkeypatch):
    """bootstrap/local/ministack/dynamodb.py makes MiniStack's BatchWriteItem validate each item once (flat
    string/number items in one pass of its own), resolve each item's key once, and skip
    consumed-capacity sizing nobody asked for: every response and the stored items (numbers
    canonicalised) must be
    exactly MiniStack's, bad members (a bad number, an empty or oversized key, duplicate keys, an
    item over 400 KB) still reject the whole call, and capacity is still reported when asked."""
    import json

    from ministack.services import dynamodb

    table = "launcher-batch-write-test"

    def line(invoice: str, line_id: str, **extra) -> dict:
        return {
            "PutRequest": {
                "Item": {
                    "InvoiceNo": {"S": invoice},
                    "LineId": {"S": line_id},
                    "Quantity": {"N": "06"},
                    "UnitPrice": {"N": "2.550"},
                    **extra,
                }
            }
        }

    requests = [
        [line("536365", "a"), line("536365", "b", Description={"S": "WHITE HANGING HEART"})],
        [line("536365", "a", Quantity={"N": "-12"})],  # overwrite
        [line("536366", "c"), line("536366", "d", Quantity={"N": "1e999"})],  # bad number
        [line("536367", "e"), line("", "f")],  # empty key
        [line("536368", "g"), line("536368", "g")],  # duplicate keys
        [line("536369", "h"), line("536369", "i", Description={"S": "x" * 410_000})],  # over 400 KB
        [line("536370", "j" * 1025)],  # sort key too long
        [line("536371", "k"), {"DeleteRequest": {"Key": {"InvoiceNo": {"S": "536365"}, "LineId": {"S": "b"}}}}],
        [line("536373", "m", Description={"S": ""}, Gift={"BOOL": True}), line("536373", "n", Quantity={"N": "+7"})],
    ]
    calls = [{"RequestItems": {table: batch}} for batch in requests]
    calls += [
        {"RequestItems": {table: [line("536372", "l")]}, "ReturnConsumedCapacity": mode}
        for mode in ("TOTAL", "INDEXES")
    ]

    def run() -> tuple[list, dict]:
        _create_invoice_table(dynamodb, table)
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

    validations: list[list[int]] = []  # per call, the id of each item validated
    resolutions: list[list[int]] = []  # per call, the id of each item whose key MiniStack resolved
    theirs = run()
    original_validate = dynamodb._validate_item
    monkeypatch.setattr(
        dynamodb,
        "_validate_item",
        lambda item, *a, **k: validations[-1].append(id(item)) or original_validate(item, *a, **k),
    )
    original_resolve = dynamodb._resolve_table_key_values
    monkeypatch.setattr(
        dynamodb,
        "_resolve_table_key_values",
        lambda table, attrs, allow_extra: (
            (allow_extra and resolutions[-1].append(id(attrs))) or original_resolve(table, attrs, allow_extra)
        ),
    )
    for name in ("_batch_write_item", "_accumulate_write_capacity", "_values_error_response"):
        monkeypatch.setattr(dynamodb, name, getattr(dynamodb, name))  # undone after the test
    dynamodb_patch.batch_write_item_doing_each_check_once(dynamodb)
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
    from ministack.services import dynamodb

    definitions = [
        {"AttributeName": "CustomerID", "AttributeType": "N"},
        {"AttributeName": "InvoiceNo", "AttributeType": "S"},
        {"AttributeName": "InvoiceDate", "AttributeType": "S"},
    ]
    index = {
        "IndexName": "ByDate",
        "Projection": {"ProjectionType": "ALL"},
        "KeySchema": [
            {"AttributeName": "CustomerID", "KeyType": "HASH"},
            {"AttributeName": "InvoiceDate", "KeyType": "RANGE"},
        ],
    }
    tables = [
        {"AttributeDefinitions": definitions},
        {"AttributeDefinitions": definitions, "GlobalSecondaryIndexes": []},
        {"AttributeDefinitions": definitions, "LocalSecondaryIndexes": [index]},
        {"AttributeDefinitions": definitions, "GlobalSecondaryIndexes": [index]},
    ]
    items = [
        {"CustomerID": {"N": "17850"}, "InvoiceNo": {"S": "536365"}, "InvoiceDate": {"S": "2010-12-01T08:26:00"}},
        {"CustomerID": {"N": "17850"}, "InvoiceDate": {"N": "5"}},
        {"CustomerID": {"N": "1"}, "InvoiceDate": {"S": ""}},
        {"InvoiceDate": {"S": "x", "N": "1"}},
        {"InvoiceDate": "text"},
        {},
    ]
    theirs = dynamodb._validate_index_key_values
    monkeypatch.setattr(dynamodb, "_validate_index_key_values", theirs)  # put back after the test
    dynamodb_patch.index_checks_only_with_indexes(dynamodb)
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
    assert sum(answer is not None for answer in answers) >= 6  # the indexed tables refused the bad items


def test_the_launchers_remembered_number_checks_answer_as_ministacks(monkeypatch):
    """MiniStack's number checks, remembered per text by the launcher, give MiniStack's answers
    for valid, refused and odd inputs, the second time from memory."""
    from ministack.services import dynamodb

    texts = [
        "6",
        "06",
        "-12",
        "2.55",
        "2.550",
        "0.00001",
        "1e-05",
        "1E+3",
        "+7",
        "-0",
        "0.0",
        "1e125",
        "1e126",
        "9.9999E+125",
        "1e-130",
        "1e-131",
        "1" * 38,
        "1" * 39,
        "12345678901234567890123456789012345678.5",
        "",
        " 5",
        "5 ",
        "1_000",
        "abc",
        "NaN",
        "Infinity",
        "--1",
        ".5",
        "5.",
        "1e99999999999999999999",
    ]
    odd = [None, 5, 2.5, ["1"]]
    originals = {name: getattr(dynamodb, name) for name in dynamodb_patch.NUMBER_CHECKS}
    for name in dynamodb_patch.NUMBER_CHECKS:
        monkeypatch.setattr(dynamodb, name, originals[name])  # undone after the test
    dynamodb_patch.number_checks_remembered(dynamodb)

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
        info = remembered.cache_info()  # each text worked out once (the canonical form asks for the error too)
        assert info.misses == len(texts) and info.hits >= len(texts), (name, info)


def test_the_launchers_kinesis_shortcuts_answer_as_ministack():
    """The launcher's Kinesis shortcuts give MiniStack's answers: the shard a hash key routes to
    (bounds parsed once), the partition key's hash (remembered), and the event record's data (a
    strict base64 text passes as it is, anything else is handled as MiniStack handles it)."""
    import base64
    import os
    import random

    from ministack.services import kinesis

    top = 2**128 - 1
    for count in (1, 2, 3, 4):
        step = (top + 1) // count
        stream = {
            "shards": {
                f"shardId-{n:012d}": {
                    "starting_hash_key": str(n * step),
                    "ending_hash_key": str(top if n == count - 1 else (n + 1) * step - 1),
                }
                for n in range(count)
            }
        }
        keys = [0, top, step - 1, step, step + 1] + [random.randrange(top + 1) for _ in range(500)]
        assert [kinesis_patch.route_to_shard(k, stream) for k in keys] == [
            kinesis._route_to_shard(k, stream) for k in keys
        ]
    remembered = _patching.memoized_for_text(kinesis._partition_key_to_hash)
    for key in ["536365", "C536379", "", "CAFÉ ☕", "536365"]:
        assert remembered(key) == kinesis._partition_key_to_hash(key)

    def strictly_base64(text: str) -> bool:
        try:
            base64.b64decode(text, validate=True)
            return True
        except Exception:  # noqa: BLE001 - MiniStack's own test
            return False

    texts = [base64.b64encode(os.urandom(n)).decode() for n in range(40)]
    texts += ["", "abc", "A===", "AA=A", "====", "AB==", "AAA=", "AAAA\n", "AA AA", "AA-_", "QUJD\u00e9", '{"a":1}']
    for text in texts:
        record = {"Data": text, "PartitionKey": "536365", "SequenceNumber": "1", "ApproximateArrivalTimestamp": 1.0}
        event = svc_patch.kinesis_event_record(record, "shardId-000000000000", "arn", "000000000000", "us-east-1")
        expected = text if strictly_base64(text) else base64.b64encode(text.encode("utf-8")).decode("ascii")
        assert event["kinesis"]["data"] == expected, text


def test_the_launchers_put_records_answers_and_stores_as_ministack(monkeypatch):
    """The launcher's PutRecords sizes strict base64 from its length and decodes for Firehose only
    on demand: the same answers, stored records, errors and fan-out as MiniStack's own, for real
    records, lenient or broken base64, odd types and every limit."""
    import base64
    import itertools

    from ministack.services import firehose, kinesis

    from bench.pipeline import canonical_events
    from ecom_core.config import PROJECT_ROOT
    from handlers.ingestion import wire_record

    real = [wire_record(e) for e in canonical_events(PROJECT_ROOT / "data" / "sample-data.csv", 120)]
    odd = [
        {"Data": d, "PartitionKey": "536365"}
        for d in ["abc", "AA AA", "QUJD\u00e9", "", None, "A===", "AB==", "AAA=", "AAAA\n", "AA-_", "Zm9v\n", "=AAA"]
    ]
    megabyte = base64.b64encode(b"x" * 1_048_576).decode()
    batches = [
        real[:100],
        real,
        odd,
        real[:3] + odd + real[3:6],
        [{"Data": "AAAA", "PartitionKey": "k", "ExplicitHashKey": str(2**127 + 5)}],
        [{"Data": "AAAA", "PartitionKey": "p" * 257}],
        [{"Data": "AAAA", "PartitionKey": "k"}] * 501,
        [{"Data": megabyte, "PartitionKey": "k"}],
        [{"Data": base64.b64encode(b"x" * 1_048_577).decode(), "PartitionKey": "k"}],
        [{"Data": megabyte, "PartitionKey": "k"}] * 5,
        [{"Data": megabyte, "PartitionKey": "k"}] * 6,
        [],
    ]

    # The 5 MB total to the byte, with no, one and two "=" of padding (sizes 0, 2 and 1 modulo 3).
    def sized(n: int, key: str = "k") -> dict:
        return {"Data": base64.b64encode(b"y" * n).decode(), "PartitionKey": key}

    batches += [
        [sized(1_048_575)] * 5,
        [sized(1_048_575)] * 4 + [sized(1_048_575, "kk")],
        [sized(1_048_575)] * 4 + [sized(1_048_574, "kk")],
        [sized(1_048_575)] * 4 + [sized(1_048_574, "kkk")],
        [sized(1_048_575)] * 4 + [sized(1_048_573, "kkk")],
        [sized(1_048_575)] * 4 + [sized(1_048_573, "kkkk")],
    ]
    top = 2**128 - 1

    def run(put_records, batch, status="ACTIVE", exists=True):
        stream = {
            "StreamName": "s",
            "StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/s",
            "StreamStatus": status,
            "RetentionPeriodHours": 24,
            "shards": {
                f"shardId-{n:012d}": {
                    "starting_hash_key": str(n * (top + 1) // 2),
                    "ending_hash_key": str(top if n else (top + 1) // 2 - 1),
                    "records": [],
                }
                for n in range(2)
            },
        }
        counter = itertools.count(1)
        fanned: list = []
        monkeypatch.setattr(kinesis, "_resolve_stream", lambda data: ("s", stream if exists else None))
        monkeypatch.setattr(kinesis, "_next_sequence_number", lambda: f"{next(counter):030d}")
        monkeypatch.setattr(kinesis.time, "time", lambda: 1764770000.1234)
        monkeypatch.setattr(
            firehose,
            "ingest_from_kinesis_source",
            lambda arn, records: fanned.append((arn, len(records), [tuple(r) for r in records])),
        )
        try:
            answer = put_records({"StreamName": "s", "Records": [dict(r) for r in batch]})
        except Exception as exc:  # noqa: BLE001 - compared below: MiniStack's own failures
            answer = (type(exc), str(exc))
        return answer, stream["shards"], fanned

    theirs = kinesis._put_records
    monkeypatch.setattr(kinesis, "_put_records", theirs)  # put back after the test
    kinesis_patch.put_records_without_decoding(kinesis)
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
    from ecom_core.config import PROJECT_ROOT
    from handlers.ingestion import wire_record

    def batch(partition_key=None):
        records = []
        for n, event in enumerate(canonical_events(PROJECT_ROOT / "data" / "sample-data.csv", 300)):
            record = wire_record(event)
            records.append(
                {
                    "Data": record["Data"],
                    "PartitionKey": partition_key or record["PartitionKey"],
                    "SequenceNumber": f"4960{n:052d}",
                    "ApproximateArrivalTimestamp": 1764770000.123 + n,
                }
            )
        arn = "arn:aws:kinesis:us-east-1:000000000000:stream/ecom-events"
        return runtime_patch.KinesisBatchEvent(
            Records=[
                svc_patch.kinesis_event_record(r, "shardId-000000000000", arn, "000000000000", "us-east-1")
                for r in records
            ]
        )

    ctx = {
        "request_id": "r-1",
        "invoked_function_arn": "arn:aws:lambda:us-east-1:000000000000:function:f",
        "timeout_ms": 60000,
        "trace_id": None,
        "depth": 0,
        "durable": {},
    }
    ascii_batch = batch()
    text = runtime_patch.envelope_dumps({"event": ascii_batch, "ctx": ctx})
    assert json.loads(text) == json.loads(json.dumps({"event": ascii_batch, "ctx": ctx}))
    assert text.startswith('{"event": {"Records":[{"kinesis":{'), "the batch was written by orjson"
    assert len(ascii_batch["Records"]) == 300

    accented = batch(partition_key="CAFÉ ☕")
    text = runtime_patch.envelope_dumps({"event": accented, "ctx": ctx})
    assert text == json.dumps({"event": accented, "ctx": ctx}) and text.isascii()

    for other in ({"event": {"Records": []}, "ctx": ctx}, {"a": float("nan")}, [1, 2], "x", {1: "int key"}):
        assert runtime_patch.envelope_dumps(other) == json.dumps(other)
    assert runtime_patch.envelope_dumps({"event": ascii_batch}, indent=2) == json.dumps(
        {"event": ascii_batch}, indent=2
    )

    # The hand-off's buffers, on a new thread per batch, grew glibc's per-thread arenas (~100 MB at
    # 200,000 rows): the launcher limits them to two (bench evidence in docs/emulator-notes.md).
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        assert process.two_malloc_arenas()
    # MiniStack's worker hand-off sees this json module: json itself but for dumps.
    module = runtime_patch.json_with_envelope_dumps()
    assert module.dumps is runtime_patch.envelope_dumps and module.loads is json.loads


def test_the_launcher_has_ministacks_dynamodb_read_requests_with_json_codec():
    """MiniStack's DynamoDB reads request bodies through ecom_core.json_codec once the
    launcher is applied (a fresh interpreter: apply() changes MiniStack's modules): json's answers,
    values and errors alike, on bodies orjson reads differently or refuses."""
    script = """
import json
import os
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
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=config.PROJECT_ROOT
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_launchers_remembered_projection_and_conditions_answer_as_ministack(monkeypatch):
    """The launcher plans a ProjectionExpression once per expression and remembers the condition
    tokens and grammar checks (MiniStack redid both for every item): every Query, Scan and GetItem
    below, good or refused, must answer exactly as MiniStack does."""
    import json

    from ministack.services import dynamodb

    table = "launcher-projection-test"
    items = [
        {
            "InvoiceNo": {"S": "536365"},
            "LineId": {"S": f"l{n}"},
            "Quantity": {"N": str(n - 2)},
            "Description": {"S": "WHITE HANGING HEART"} if n % 2 else {"NULL": True},
            "Info": {"M": {"a": {"S": "x"}, "b": {"L": [{"N": "1"}, {"S": "two"}, {"M": {"c": {"N": "3"}}}]}}},
            "Tags": {"L": [{"S": "t0"}, {"S": "t1"}]},
        }
        for n in range(6)
    ]
    items.append({"InvoiceNo": {"S": "C536379"}, "LineId": {"S": "only"}, "Quantity": {"N": "-1"}})
    key = {"TableName": table}
    requests = []
    for projection, names in [
        ("InvoiceNo, LineId, Quantity", None),
        ("Description, Info.a, Info.b[2].c", None),
        ("Tags[1], Tags[0], Info.b[0]", None),
        ("#q, #d", {"#q": "Quantity", "#d": "Description"}),
        ("Missing, Info.nothing, Tags[9]", None),
        ("Info, Info.a", None),
        ("LineId, LineId", None),
        ("Name", None),
        ("#n", {"#n": "LineId", "#unused": "x"}),
        ("Info.b[", None),
        ("", None),
    ]:
        extra = {"ProjectionExpression": projection, **({"ExpressionAttributeNames": names} if names else {})}
        requests.append(
            (
                "query",
                {
                    **key,
                    "KeyConditionExpression": "InvoiceNo = :n",
                    "ExpressionAttributeValues": {":n": {"S": "536365"}},
                    **extra,
                },
            )
        )
        requests.append(("scan", {**key, **extra}))
        requests.append(("get", {**key, "Key": {"InvoiceNo": {"S": "536365"}, "LineId": {"S": "l1"}}, **extra}))
    for condition, values in [
        ("InvoiceNo = :n AND begins_with(LineId, :p)", {":n": {"S": "536365"}, ":p": {"S": "l"}}),
        ("InvoiceNo = :n AND LineId BETWEEN :a AND :b", {":n": {"S": "536365"}, ":a": {"S": "l1"}, ":b": {"S": "l3"}}),
        ("InvoiceNo = :n AND LineId BETWEEN :b AND :a", {":n": {"S": "536365"}, ":a": {"S": "l1"}, ":b": {"S": "l3"}}),
        ("InvoiceNo = :n AND", {":n": {"S": "536365"}}),
        ("((InvoiceNo = :n))", {":n": {"S": "536365"}}),
        ("InvoiceNo = :missing", {":n": {"S": "536365"}}),
    ]:
        requests.append(("query", {**key, "KeyConditionExpression": condition, "ExpressionAttributeValues": values}))
    for condition in [
        "Quantity > :z",
        "Quantity > :z AND attribute_exists(Description)",
        "size(Tags) = :two",
        "Quantity >",
        "(Quantity > :z) OR NOT contains(Description, :w)",
        "Name = :z",
    ]:
        requests.append(
            (
                "scan",
                {
                    **key,
                    "FilterExpression": condition,
                    "ExpressionAttributeValues": {":z": {"N": "0"}, ":two": {"N": "2"}, ":w": {"S": "HEART"}},
                },
            )
        )
    handlers = {
        "query": lambda r: dynamodb._query(r),
        "scan": lambda r: dynamodb._scan(r),
        "get": lambda r: dynamodb._get_item(r),
    }

    def run() -> list:
        _create_invoice_table(dynamodb, table)
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
    dynamodb_patch.projection_planned_once(dynamodb)
    dynamodb_patch.condition_checks_remembered(dynamodb)
    ours = run()
    assert ours == theirs
    statuses = [status for _, status, _ in ours]
    assert statuses.count(200) > 30 and statuses.count(400) >= 10  # both kinds of answer were compared


# ---------------------------------------------------------------- refusing another MiniStack


def test_the_pinned_release_is_pyprojects():
    with open(os.path.join(config.PROJECT_ROOT, "pyproject.toml"), encoding="utf-8") as handle:
        assert f'"ministack=={_patching.MINISTACK_VERSION}"' in handle.read()


def test_every_patch_module_finds_what_it_patches_in_the_pinned_release():
    from bootstrap import ministack_launcher

    assert _patching.installed_version() == _patching.MINISTACK_VERSION
    ministack_launcher.check()  # raises, naming what is missing, otherwise
    for patch in ministack_launcher.PATCHES:
        assert patch.PATCHED and all(target.problem() is None for target in patch.PATCHED + patch.USED), patch


def test_a_patch_module_refuses_a_ministack_missing_a_name_before_patching_anything(monkeypatch):
    """A stand-in for another MiniStack: a name the module replaces deleted, one it replaces with a
    function made a non-function, one its replacements use deleted. apply() raises before it
    changes anything, naming each of them and the release."""
    from ministack.core import lambda_runtime
    from ministack.services import dynamodb, kinesis

    monkeypatch.delattr(kinesis, "_route_to_shard")
    before = {name: getattr(kinesis, name) for name in ("_expire_records", "_partition_key_to_hash", "_put_records")}
    with pytest.raises(_patching.PatchTargetMissing) as refused:
        kinesis_patch.apply()
    message = str(refused.value)
    assert "ministack.services.kinesis._route_to_shard (missing)" in message and "1.5.33" in message
    assert {name: getattr(kinesis, name) for name in before} == before  # nothing patched

    monkeypatch.setattr(dynamodb, "_tokenize", "not a function")
    monkeypatch.delattr(dynamodb, "_project_one")
    json_before, validate_before = dynamodb.json, dynamodb._validate_item
    with pytest.raises(_patching.PatchTargetMissing) as refused:
        dynamodb_patch.apply()
    assert "ministack.services.dynamodb._tokenize (not callable: str)" in str(refused.value)
    assert "names its replacements use: ministack.services.dynamodb._project_one (missing)" in str(refused.value)
    assert dynamodb.json is json_before and dynamodb._validate_item is validate_before

    # The worker script we amend must still hold the line we replace.
    monkeypatch.setattr(lambda_runtime, "_PYTHON_WORKER_SCRIPT", "print('another worker')")
    detect_before = lambda_runtime._detect_runtime_binary
    with pytest.raises(_patching.PatchTargetMissing, match="_PYTHON_WORKER_SCRIPT has 0 x"):
        runtime_patch.apply()
    assert lambda_runtime._detect_runtime_binary is detect_before and runtime_patch._isolated is None


def test_a_patch_module_refuses_another_release(monkeypatch):
    import importlib.metadata

    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "1.6.0" if name == "ministack" else real_version(name)
    )
    from ministack.services import kinesis

    expire_before = kinesis._expire_records
    with pytest.raises(
        _patching.PatchTargetMissing, match=r"MiniStack 1\.6\.0 is installed; these patches are for 1\.5\.33"
    ):
        kinesis_patch.apply()
    assert kinesis._expire_records is expire_before


# In a fresh interpreter: the launcher as `python -m bootstrap.ministack_launcher` runs it, with a
# stand-in for another MiniStack prepared first; prints what was patched (nothing, we expect).
_LAUNCHER_AGAINST = """
import gc, importlib, importlib.metadata, runpy, sys
from bootstrap import ministack_launcher
STAND_IN
targets = [t for p in ministack_launcher.PATCHES for t in p.PATCHED if t.problem() is None]
def value(t):
    v = importlib.import_module(t.module)
    for part in t.attribute.split("."):
        v = getattr(v, part)
    return v
before = {str(t): value(t) for t in targets}
callbacks = list(gc.callbacks)
try:
    runpy.run_module("bootstrap.ministack_launcher", run_name="__main__")
finally:
    changed = [name for name, v in ((str(t), value(t)) for t in targets) if v is not before[name]]
    print("changed:", changed, "gc callbacks changed:", gc.callbacks != callbacks)
"""


@pytest.mark.parametrize(
    "stand_in, named",
    [
        (
            "from ministack.services import lambda_svc\ndel lambda_svc._execute_function_warm",
            "ministack.services.lambda_svc._execute_function_warm (missing)",
        ),
        (
            "from ministack.core import lambda_runtime\ndel lambda_runtime.Worker._spawn",
            "ministack.core.lambda_runtime.Worker._spawn (missing)",
        ),
        (
            "real = importlib.metadata.version\n"
            "importlib.metadata.version = lambda n: '1.5.34' if n == 'ministack' else real(n)",
            "MiniStack 1.5.34 is installed; these patches are for 1.5.33",
        ),
    ],
)
def test_the_launcher_refuses_to_start_against_another_ministack(stand_in, named):
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER_AGAINST.replace("STAND_IN", stand_in)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config.PROJECT_ROOT,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "not starting MiniStack" in done.stderr and named in done.stderr, done.stderr
    assert "changed: [] gc callbacks changed: False" in done.stdout, done.stdout  # nothing patched, no server


def test_the_declared_names_are_exactly_what_the_launcher_changes(tmp_path):
    """Every name a patch module declares is replaced by apply(), and nothing else of MiniStack's
    modules (or its Worker class) is: the declarations are what the start-up check covers."""
    script = """
import importlib
from bootstrap import ministack_launcher
modules = sorted({t.module for p in ministack_launcher.PATCHES for t in p.PATCHED})
def snapshot():
    out = {}
    for name in modules:
        module = importlib.import_module(name)
        out.update({f"{name}.{k}": v for k, v in vars(module).items()})
        for cls in ("Worker",):
            if hasattr(module, cls):
                out.update({f"{name}.{cls}.{k}": v for k, v in vars(getattr(module, cls)).items()})
    return out
before = snapshot()
ministack_launcher.apply()
after = snapshot()
changed = sorted(k for k in after if k not in before or after[k] is not before[k])
declared = sorted(str(t) for p in ministack_launcher.PATCHES for t in p.PATCHED)
print(changed == declared or (changed, declared))
"""
    # As the embedded stack starts it: with saved state (durability.py patches nothing without).
    env = {**os.environ, "PERSIST_STATE": "1", "STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=config.PROJECT_ROOT, env=env
    )
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "True", (done.stdout, done.stderr)


# ---------------------------------------------------------------- functions see only their zip


def test_the_runtime_directory_holds_exactly_the_runtime_libraries(tmp_path):
    """build_isolated_python: boto3 and its dependencies (closed under their requirements), and an
    interpreter that finds nothing else of the virtualenv, nor PYTHONPATH."""
    import importlib.metadata
    import re

    wanted = {name.lower() for name in runtime_patch.RUNTIME_DISTRIBUTIONS}
    for name in wanted:  # what each requires (extras aside) is in the set: boto3 imports as on AWS
        for requirement in importlib.metadata.requires(name) or ():
            if "extra ==" not in requirement:
                assert re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() in wanted, (name, requirement)
    isolated = runtime_patch.build_isolated_python(str(tmp_path))
    entries = sorted(os.listdir(isolated.runtime_dir))
    assert {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3"} <= set(entries)
    assert all(
        e.endswith(".dist-info")
        for e in set(entries) - {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3"}
    ), entries
    probe = f"""
import importlib, sys
sys.path.insert(0, {str(isolated.runtime_dir)!r})
import boto3, botocore.session, s3transfer, jmespath, dateutil.parser, six, urllib3
missing = []
for name in ("psycopg2", "typer", "pandas", "orjson", "ministack", "ecom_core", "bootstrap", "pytest"):
    try:
        importlib.import_module(name)
    except ImportError:
        missing.append(name)
print(len(missing), [p for p in sys.path if "site-packages" in p], importlib.metadata.version("boto3"))
"""
    done = subprocess.run(
        [isolated.interpreter, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": config.PROJECT_ROOT},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["8", "[]", importlib.metadata.version("boto3")]
