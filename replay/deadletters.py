"""Dead letters you can act on: list, show, and redrive (re-submit to the stream after a fix).

Each quarantined record is one object, `s3://dead-letter-ecom/kinesis-trigger/<shard>/<seq>.json`,
holding the reason, its source (stream, shard, sequence number), the time and the record's bytes.
A redriven letter moves to `redriven/` with the sequence number it was re-put at, so nothing is
lost and the same letter is never redriven twice.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ecom_core import aws, config
from ecom_core.events import record_field

REDRIVEN_PREFIX = "redriven/"


@dataclass(frozen=True)
class Letter:
    key: str
    body: dict[str, Any]

    @property
    def reason(self) -> str:
        return self.body.get("reason", "")

    @property
    def data(self) -> bytes:
        if self.body.get("data_base64"):
            return base64.b64decode(self.body["data_base64"])
        return (self.body.get("data") or "").encode("utf-8")

    @property
    def kind(self) -> str:
        return self.body.get("kind") or self.reason.split(":", 1)[0]

    def summary(self) -> dict[str, Any]:
        source = self.body.get("source", {})
        return {
            "key": self.key,
            "kind": self.kind,
            "reason": self.reason[:200],
            "shard_id": source.get("shard_id"),
            "sequence_number": source.get("sequence_number"),
            "quarantined_at": self.body.get("quarantined_at"),
            "size": self.body.get("size"),
        }


def letters(cfg: config.Stack | None = None, prefix: str | None = None) -> Iterator[Letter]:
    r = config.resources()
    s3 = aws.client("s3", cfg)
    prefix = r.dead_letter_prefix if prefix is None else prefix
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=r.dead_letter_bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=r.dead_letter_bucket, Key=obj["Key"])["Body"].read()
            yield Letter(obj["Key"], json.loads(body))


def get(key_or_sequence: str, cfg: config.Stack | None = None) -> Letter:
    r = config.resources()
    s3 = aws.client("s3", cfg)
    if "/" in key_or_sequence:
        key = key_or_sequence
    else:
        matches = [letter.key for letter in letters(cfg) if letter.key.endswith(f"/{key_or_sequence}.json")]
        if not matches:
            raise KeyError(f"no dead letter with sequence number {key_or_sequence}")
        key = matches[0]
    try:
        body = s3.get_object(Bucket=r.dead_letter_bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise KeyError(f"no dead letter {key}") from None
    return Letter(key, json.loads(body))


def top_reasons(cfg: config.Stack | None = None, n: int = 10) -> tuple[int, list[tuple[str, int]]]:
    counter = Counter(letter.kind for letter in letters(cfg))
    return sum(counter.values()), counter.most_common(n)


def _partition_key(data: bytes, fallback: str) -> str:
    invoice = record_field(data, "InvoiceNo")
    if isinstance(invoice, (str, int)) and not isinstance(invoice, bool) and str(invoice):
        return str(invoice)[:256]
    return fallback


def redrive(letter: Letter, cfg: config.Stack | None = None) -> str:
    """Put the record back on the stream, then move the letter to redriven/. Returns the new sequence number."""
    r = config.resources()
    s3 = aws.client("s3", cfg)
    kinesis = aws.client("kinesis", cfg)
    out = kinesis.put_record(
        StreamName=r.stream, Data=letter.data, PartitionKey=_partition_key(letter.data, letter.key)
    )
    moved = dict(letter.body, redriven_as={"shard_id": out["ShardId"], "sequence_number": out["SequenceNumber"]})
    s3.put_object(
        Bucket=r.dead_letter_bucket,
        Key=REDRIVEN_PREFIX + letter.key,
        Body=json.dumps(moved, ensure_ascii=False).encode("utf-8"),
        ContentType="application/json",
    )
    s3.delete_object(Bucket=r.dead_letter_bucket, Key=letter.key)
    return out["SequenceNumber"]


# ---------------------------------------------------------------- discarded batches (AWS)
# With bounded retries (AWS, LocalStack) the mapping gives up on a batch that keeps failing and
# sends only its coordinates to the OnFailure queue (the records stay on the stream until they
# expire). MiniStack retries forever and never sends these, but the platform must stay lossless
# where retries are bounded: `ecom dlq batches` lists them and `redrive --batches` re-reads each
# range from the stream and puts its records back. Redelivery is harmless (keys are event ids).


@dataclass(frozen=True)
class FailedBatch:
    message_id: str
    receipt_handle: str
    shard_id: str
    start_sequence: str
    end_sequence: str
    batch_size: int
    condition: str

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> FailedBatch:
        body = json.loads(message["Body"])
        info = body["KinesisBatchInfo"]
        return cls(
            message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            shard_id=info["shardId"],
            start_sequence=info["startSequenceNumber"],
            end_sequence=info["endSequenceNumber"],
            batch_size=int(info.get("batchSize", 0)),
            condition=body.get("requestContext", {}).get("condition", ""),
        )


def _queue_url(sqs, r: config.Resources) -> str:
    return sqs.get_queue_url(QueueName=r.dead_letter_queue)["QueueUrl"]


def failed_batches(cfg: config.Stack | None = None, visibility: int = 0) -> list[FailedBatch]:
    """Every OnFailure record in the queue. With visibility 0 (listing) nothing is hidden or consumed."""
    r = config.resources()
    sqs = aws.client("sqs", cfg)
    url = _queue_url(sqs, r)
    seen: dict[str, FailedBatch] = {}
    while True:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=visibility, WaitTimeSeconds=0
        ).get("Messages", [])
        fresh = [m for m in messages if m["MessageId"] not in seen]
        if not fresh:
            return list(seen.values())
        for message in fresh:
            seen[message["MessageId"]] = FailedBatch.from_message(message)


def redrive_batch(batch: FailedBatch, cfg: config.Stack | None = None) -> int:
    """Put the batch's records back on the stream, then delete its queue message. Returns records re-put."""
    r = config.resources()
    kinesis = aws.client("kinesis", cfg)
    iterator = kinesis.get_shard_iterator(
        StreamName=r.stream,
        ShardId=batch.shard_id,
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=batch.start_sequence,
    )["ShardIterator"]
    end = int(batch.end_sequence)
    pending: list[dict[str, Any]] = []
    done = False
    while iterator and not done:
        page = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        for record in page["Records"]:
            if int(record["SequenceNumber"]) > end:
                done = True
                break
            pending.append({"Data": record["Data"], "PartitionKey": _partition_key(record["Data"], batch.shard_id)})
        if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
            break
        iterator = page.get("NextShardIterator")
    for start in range(0, len(pending), 500):
        chunk = pending[start : start + 500]
        for _attempt in range(8):
            out = kinesis.put_records(StreamName=r.stream, Records=chunk)
            chunk = [rec for rec, res in zip(chunk, out["Records"], strict=True) if res.get("ErrorCode")]
            if not chunk:
                break
        else:
            raise RuntimeError(
                f"could not re-put {len(chunk)} records of batch {batch.message_id}; "
                f"its queue message is kept, run the redrive again"
            )
    sqs = aws.client("sqs", cfg)
    sqs.delete_message(QueueUrl=_queue_url(sqs, r), ReceiptHandle=batch.receipt_handle)
    return len(pending)
