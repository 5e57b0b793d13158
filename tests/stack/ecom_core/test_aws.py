"""The ground package's AWS fast paths (ecom_core/aws.py) on the running emulator: the trigger's
writer and the ingestion producer through SignedPostFirst. Without a stack (local stand-in
servers): tests/unit/ecom_core/test_aws.py."""

from __future__ import annotations

import pytest

from ecom_core import aws, config


@pytest.mark.stack
def test_the_triggers_writer_stores_through_the_fast_path_and_finds_refused_items(stack_env):
    """On the running emulator: the stream trigger's writer (SignedPostFirst over BatchWriteItem)
    stores every valid item exactly, and an item DynamoDB refuses (over 400 KB) still comes back
    as botocore's ValidationException, so the trigger finds it by position and stores the rest."""
    from handlers import stream_trigger

    cfg = stack_env["cfg"]
    table = config.resources().invoice_table
    writer = stream_trigger.wire_client(cfg)
    assert isinstance(writer, aws.SignedPostFirst)
    items = [
        {
            "InvoiceNo": {"S": "fast-path-test"},
            "LineId": {"S": f"line-{n:02d}"},
            "Quantity": {"N": str(n)},
            "UnitPrice": {"N": "2.55"},
            "Description": {"S": "CAFÉ “CRÈME” ☕"},
        }
        for n in range(30)
    ]
    assert stream_trigger.write_items(table, items, writer) == []
    too_large = dict(items[3], LineId={"S": "too-large"}, Description={"S": "x" * 410_000})
    assert stream_trigger.write_items(table, items[:3] + [too_large] + items[4:6], writer) == [3]

    dynamodb = aws.client("dynamodb", cfg)
    stored = list(
        aws.items(
            dynamodb.query,
            TableName=table,
            ConsistentRead=True,
            KeyConditionExpression="InvoiceNo = :n",
            ExpressionAttributeValues={":n": {"S": "fast-path-test"}},
        )
    )
    assert sorted(stored, key=lambda i: i["LineId"]["S"]) == items
    for item in items:
        dynamodb.delete_item(TableName=table, Key={"InvoiceNo": item["InvoiceNo"], "LineId": item["LineId"]})


@pytest.mark.stack
def test_the_ingestion_producer_puts_records_byte_for_byte(stack_env):
    """On the running emulator: the ingestion Lambda's PutRecords path (wire-form records through
    SignedPostFirst) puts each event's canonical JSON, byte for byte, on the invoice's shard."""
    from handlers.events import accept_event
    from handlers.ingestion import encode_record, producer_client, wire_record
    from tests.unit.handlers.test_stream_trigger import _sample_events

    cfg = stack_env["cfg"]
    kinesis = aws.client("kinesis", cfg)
    stream = "fast-path-test"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    try:
        events = [accept_event(e) for e in _sample_events(40)]
        events[0] = dict(events[0], Description="CAFÉ “CRÈME” ☕")
        producer = producer_client(cfg)
        assert isinstance(producer, aws.SignedPostFirst)
        answer = producer.put_records(StreamName=stream, Records=[wire_record(e) for e in events])
        assert answer["FailedRecordCount"] == 0 and len(answer["Records"]) == 40
        shard = answer["Records"][0]["ShardId"]
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        records = kinesis.get_records(ShardIterator=iterator, Limit=100)["Records"]
        assert [(r["Data"], r["PartitionKey"]) for r in records] == [
            (encode_record(e)["Data"], e["InvoiceNo"]) for e in events
        ]
    finally:
        kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)
