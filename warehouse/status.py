"""Counts in every store, and waiting for the stream consumer to catch up."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from ecom_core import aws, config
from ecom_core.aws import count_keys
from warehouse import schema, tables
from warehouse.redshift_data import DataApi


def count_items(dynamodb: aws.Client, table: str) -> int:
    return sum(page["Count"] for page in aws.pages(dynamodb.scan, TableName=table, Select="COUNT"))


def stream_records(kinesis: aws.Client, stream: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every record retained on the stream, shard by shard, from TRIM_HORIZON to the tip."""
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10000)
            for record in page["Records"]:
                yield shard["ShardId"], record
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")


def shard_positions(
    kinesis: aws.Client, stream: str, consumed: dict[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """Per shard: records retained, the last sequence number, and how many records the consumer
    has not finished yet (`behind`, when `consumed` gives the consumer's position). On AWS the
    mapping's IteratorAge metric says the same in milliseconds; the emulator has no such metric."""
    shards: dict[str, dict[str, Any]] = {
        shard["ShardId"]: {"records": 0, "last_sequence": None, "behind": 0}
        for shard in kinesis.list_shards(StreamName=stream)["Shards"]
    }
    for shard_id, record in stream_records(kinesis, stream):
        info = shards[shard_id]
        info["records"] += 1
        info["last_sequence"] = record["SequenceNumber"]
        if int(record["SequenceNumber"]) > (consumed or {}).get(shard_id, -1):
            info["behind"] += 1
    return shards


def store_counts(cfg: config.Stack | None = None, *, include_stream: bool = True) -> dict[str, Any]:
    r = config.resources()
    s3 = aws.client("s3", cfg)
    dynamodb = aws.client("dynamodb", cfg)
    counts: dict[str, Any] = {}
    if include_stream:
        shards = shard_positions(aws.client("kinesis", cfg), r.stream, consumed_up_to(cfg))
        counts["stream_records"] = sum(s["records"] for s in shards.values())
        counts["shards"] = shards
    counts["invoice_lines"] = count_items(dynamodb, r.invoice_table)
    counts["customer_invoices"] = count_items(dynamodb, r.customer_table)
    counts["raw_objects_pending"] = count_keys(s3, r.raw_bucket, r.raw_prefix)
    counts["raw_objects_processed"] = count_keys(s3, r.raw_bucket, r.processed_prefix)
    counts["staging_files"] = count_keys(s3, r.staging_bucket, r.staging_prefix)
    counts["quarantined"] = count_keys(s3, r.dead_letter_bucket, r.dead_letter_prefix)
    counts.update(warehouse_counts(DataApi(cfg=cfg)))
    counts["staging_files_unloaded"] = counts["staging_files"] - counts["files_loaded"]
    return counts


def _last_sequence(key: str) -> int | None:
    # .../<shard>/<first>-<last>.jsonl  or  .../<shard>/<seq>.json
    stem = key.rsplit("/", 1)[-1].split(".", 1)[0]
    try:
        return int(stem.rsplit("-", 1)[-1])
    except ValueError:
        return None


def consumed_up_to(cfg: config.Stack | None = None, s3: aws.Client | None = None) -> dict[str, int]:
    """Per shard, the highest sequence number the consumer has finished (raw objects and dead letters)."""
    r = config.resources()
    s3 = s3 or aws.client("s3", cfg)
    high: dict[str, int] = {}
    sources = [
        (r.raw_bucket, r.raw_prefix),
        (r.raw_bucket, r.processed_prefix),
        (r.dead_letter_bucket, r.dead_letter_prefix),
    ]
    for bucket, prefix in sources:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                parts = obj["Key"][len(prefix) :].split("/")
                if len(parts) != 2:
                    continue
                seq = _last_sequence(obj["Key"])
                if seq is not None and seq > high.get(parts[0], -1):
                    high[parts[0]] = seq
    return high


def wait_for_drain(
    high_water: dict[str, str], cfg: config.Stack | None = None, timeout: float = 600, poll: float = 0.5
) -> bool:
    """Wait until the consumer has processed every shard up to `high_water`. False on timeout."""
    targets = {shard: int(seq) for shard, seq in high_water.items()}
    deadline = time.monotonic() + timeout
    s3 = aws.client("s3", cfg)  # one client for every poll (building one costs ~50 ms of CPU)
    while True:
        done = consumed_up_to(cfg, s3)
        if all(done.get(shard, -1) >= seq for shard, seq in targets.items()):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)


def warehouse_counts(api: DataApi | None = None) -> dict[str, Any]:
    """The warehouse's side of `ecom status`, read through the Redshift Data API (what the job uses)."""
    api = api or DataApi()
    schema.ensure_schema(api)
    rows = api.statement(
        f"SELECT (SELECT count(*) FROM {tables.FACT_TABLE}), (SELECT count(*) FROM {tables.MANIFEST_TABLE}), "
        f"(SELECT count(*) FROM {tables.REJECTS_TABLE})"
    ).rows[0]
    last = api.statement(
        'SELECT "run_id", "outcome", "finished_at", "files_loaded", "rows_inserted", "message" '
        'FROM dw.etl_run ORDER BY "started_at" DESC LIMIT 1'
    ).rows
    run = last[0] if last else None
    return {
        "warehouse_rows": rows[0],
        "files_loaded": rows[1],
        "warehouse_rejects": rows[2],
        "last_etl_run": None
        if run is None
        else {
            "run_id": run[0],
            "outcome": run[1],
            "finished_at": run[2].isoformat() if run[2] else None,
            "files_loaded": run[3],
            "rows_inserted": run[4],
            "message": run[5],
        },
    }


def load_rejects(limit: int | None = None, api: DataApi | None = None) -> list[dict[str, Any]]:
    """Rows the load set aside (dw.load_rejects), newest first: where each came from and why."""
    api = api or DataApi()
    schema.ensure_schema(api)
    rows = api.statement(
        f'SELECT "file_key", "line_no", "event_id", "reason", "raw_line", "rejected_at" '
        f'FROM {tables.REJECTS_TABLE} ORDER BY "rejected_at" DESC, "file_key", "line_no"'
        + (f" LIMIT {int(limit)}" if limit else "")
    ).rows
    return [
        {
            "file_key": f,
            "line_no": n,
            "event_id": e,
            "reason": r,
            "raw_line": raw,
            "rejected_at": at.isoformat(timespec="seconds"),
        }
        for f, n, e, r, raw, at in rows
    ]


# How AWS (and the embedded stack, which checks IAM) words a refusal: who, what, on which resource.
_DENIAL = re.compile(r"(\S+) is not authorized to perform: (\S+) on resource: \"?([^\s\"]+)")


def permission_denials(cfg: config.Stack | None = None, since_seconds: float = 900) -> dict[str, dict[str, Any]]:
    """Per function, the latest refusal its log shows in the last `since_seconds` (a function being
    denied keeps failing and being retried: the stream waits, nothing is quarantined), with how
    many log lines named one. Read from CloudWatch Logs, as an operator would on AWS."""
    r = config.resources()
    logs = aws.client("logs", cfg)
    start = int((time.time() - since_seconds) * 1000)
    found: dict[str, dict[str, Any]] = {}
    for function in (r.ingestion_function, r.trigger_function, r.reads_function, r.authorizer_function, r.etl_function):
        kwargs: dict[str, Any] = {"logGroupName": f"/aws/lambda/{function}", "startTime": start}
        try:
            while True:
                page = logs.filter_log_events(**kwargs)
                for event in page.get("events", []):
                    match = _DENIAL.search(event.get("message", ""))
                    if match:
                        entry = found.setdefault(function, {"times": 0})
                        entry.update(
                            times=entry["times"] + 1,
                            principal=match.group(1),
                            action=match.group(2),
                            resource=match.group(3),
                            at=event.get("timestamp"),
                        )
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        except ClientError as exc:
            if aws.error_code(exc) != "ResourceNotFoundException":  # no log group yet: nothing logged
                raise
    return found
