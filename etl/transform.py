"""Raw JSON Lines (batch-process-ecom/raw/) -> UTF-8 CSV (staging-bucket-ecom/csv/).

Each raw object is moved to processed/ only after its CSV is written, and only the objects this
run listed are touched: unlike the original sync-then-`rm --recursive`, an object that arrives
meanwhile stays for the next run. Re-running is harmless: keys are deterministic (the CSV for
raw/X.jsonl is csv/X.csv), so a crash between the CSV write and the move just redoes the same work.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ecom_core import aws, config, json_codec
from ecom_core.contract import COLUMNS, CSV_HEADER
from ecom_core.faults import maybe_fail


@dataclass
class TransformResult:
    objects: int = 0
    rows: int = 0
    csv_keys: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def list_keys(s3: aws.Client, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def staging_key_for(raw_key: str, r: config.Resources) -> str:
    relative = raw_key[len(r.raw_prefix) :]
    base = relative[: -len(".jsonl")] if relative.endswith(".jsonl") else relative
    return f"{r.staging_prefix}{base}.csv"


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def jsonl_to_csv(body: bytes) -> tuple[bytes, int]:
    """Returns the CSV bytes (UTF-8, header row, RFC 4180 quoting) and the number of data rows."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    rows = 0
    seen: set[str] = set()
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json_codec.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {number}: not JSON ({exc})") from exc
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        writer.writerow([_csv_value(event.get(field_name)) for _, field_name, _ in COLUMNS])
        rows += 1
    return out.getvalue().encode("utf-8"), rows


# Raw objects converted at once. Each takes four S3 calls and a few milliseconds of CPU: while the
# stream consumer keeps the emulator busy, the calls wait in its queue (24 s for a 90-object
# backlog one at a time; docs/performance.md), and on AWS they are round trips. A few in flight
# overlap the waits; the order of the result stays the listing's.
TRANSFORM_THREADS = 4


def _transform_object(s3: aws.Client, r: config.Resources, raw_key: str) -> tuple[str, int] | str:
    """One raw object -> its staging CSV, then moved to processed/. Returns (staging key, rows),
    or why it was left in place."""
    body = s3.get_object(Bucket=r.raw_bucket, Key=raw_key)["Body"].read()
    try:
        data, rows = jsonl_to_csv(body)
    except (ValueError, KeyError) as exc:
        # Left in place (not moved, not deleted) and reported: nothing is dropped silently.
        return f"s3://{r.raw_bucket}/{raw_key}: {exc}"
    staging_key = staging_key_for(raw_key, r)
    s3.put_object(Bucket=r.staging_bucket, Key=staging_key, Body=data, ContentType="text/csv; charset=utf-8")
    maybe_fail("transform.after_csv")
    processed_key = r.processed_prefix + raw_key[len(r.raw_prefix) :]
    s3.copy_object(Bucket=r.raw_bucket, Key=processed_key, CopySource={"Bucket": r.raw_bucket, "Key": raw_key})
    s3.delete_object(Bucket=r.raw_bucket, Key=raw_key)
    return staging_key, rows


def transform(cfg: config.Stack | None = None) -> TransformResult:
    r = config.resources()
    s3 = aws.client("s3", cfg)
    result = TransformResult()
    raw_keys = [obj["Key"] for obj in list_keys(s3, r.raw_bucket, r.raw_prefix)]
    with ThreadPoolExecutor(max_workers=TRANSFORM_THREADS, thread_name_prefix="transform") as pool:
        # Every object is finished or failed before this returns; the first failure raises (the
        # objects done so far are in staging and processed/, the rest stay raw for the next run).
        outcomes = list(pool.map(lambda key: _transform_object(s3, r, key), raw_keys))
    for outcome in outcomes:
        if isinstance(outcome, str):
            result.errors.append(outcome)
            continue
        staging_key, rows = outcome
        result.objects += 1
        result.rows += rows
        result.csv_keys.append(staging_key)
    return result
