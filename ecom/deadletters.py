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
from dataclasses import dataclass
from typing import Any, Iterator

from ecom import aws, config

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
        return {"key": self.key, "kind": self.kind, "reason": self.reason[:200], "shard_id": source.get("shard_id"),
                "sequence_number": source.get("sequence_number"), "quarantined_at": self.body.get("quarantined_at"),
                "size": self.body.get("size")}


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
        matches = [l.key for l in letters(cfg) if l.key.endswith(f"/{key_or_sequence}.json")]
        if not matches:
            raise KeyError(f"no dead letter with sequence number {key_or_sequence}")
        key = matches[0]
    try:
        body = s3.get_object(Bucket=r.dead_letter_bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise KeyError(f"no dead letter {key}") from None
    return Letter(key, json.loads(body))


def top_reasons(cfg: config.Stack | None = None, n: int = 10) -> tuple[int, list[tuple[str, int]]]:
    counter = Counter(l.kind for l in letters(cfg))
    return sum(counter.values()), counter.most_common(n)


def _partition_key(data: bytes, fallback: str) -> str:
    try:
        payload = json.loads(data)
        if isinstance(payload, dict) and isinstance(payload.get("InvoiceNo"), (str, int)) and str(payload["InvoiceNo"]):
            return str(payload["InvoiceNo"])[:256]
    except (ValueError, UnicodeDecodeError):
        pass
    return fallback


def redrive(letter: Letter, cfg: config.Stack | None = None) -> str:
    """Put the record back on the stream, then move the letter to redriven/. Returns the new sequence number."""
    r = config.resources()
    s3 = aws.client("s3", cfg)
    kinesis = aws.client("kinesis", cfg)
    out = kinesis.put_record(StreamName=r.stream, Data=letter.data,
                             PartitionKey=_partition_key(letter.data, letter.key))
    moved = dict(letter.body, redriven_as={"shard_id": out["ShardId"], "sequence_number": out["SequenceNumber"]})
    s3.put_object(Bucket=r.dead_letter_bucket, Key=REDRIVEN_PREFIX + letter.key,
                  Body=json.dumps(moved, ensure_ascii=False).encode("utf-8"), ContentType="application/json")
    s3.delete_object(Bucket=r.dead_letter_bucket, Key=letter.key)
    return out["SequenceNumber"]
