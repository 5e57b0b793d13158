"""Raw JSON Lines (batch-process-ecom/raw/) -> UTF-8 CSV (staging-bucket-ecom/csv/).

Each raw object is moved to processed/ only after its CSV is written, and only the objects this
run listed are touched: unlike the original sync-then-`rm --recursive`, an object that arrives
meanwhile stays for the next run. Re-running is harmless: keys are deterministic (the CSV for
raw/X.jsonl is csv/X.csv), so a crash between the CSV write and the move just redoes the same work.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any, Iterator

from ecom_core import aws, config
from ecom_core.contract import COLUMNS, CSV_HEADER
from ecom_core.faults import maybe_fail


@dataclass
class TransformResult:
    objects: int = 0
    rows: int = 0
    csv_keys: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def list_keys(s3, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def staging_key_for(raw_key: str, r: config.Resources) -> str:
    relative = raw_key[len(r.raw_prefix):]
    base = relative[:-len(".jsonl")] if relative.endswith(".jsonl") else relative
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
            event = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {number}: not JSON ({exc})") from exc
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        writer.writerow([_csv_value(event.get(field_name)) for _, field_name, _ in COLUMNS])
        rows += 1
    return out.getvalue().encode("utf-8"), rows


def transform(cfg: config.Stack | None = None) -> TransformResult:
    r = config.resources()
    s3 = aws.client("s3", cfg)
    result = TransformResult()
    for obj in list(list_keys(s3, r.raw_bucket, r.raw_prefix)):
        raw_key = obj["Key"]
        body = s3.get_object(Bucket=r.raw_bucket, Key=raw_key)["Body"].read()
        try:
            data, rows = jsonl_to_csv(body)
        except (ValueError, KeyError) as exc:
            # Left in place (not moved, not deleted) and reported: nothing is dropped silently.
            result.errors.append(f"s3://{r.raw_bucket}/{raw_key}: {exc}")
            continue
        staging_key = staging_key_for(raw_key, r)
        s3.put_object(Bucket=r.staging_bucket, Key=staging_key, Body=data, ContentType="text/csv; charset=utf-8")
        maybe_fail("transform.after_csv")
        processed_key = r.processed_prefix + raw_key[len(r.raw_prefix):]
        s3.copy_object(Bucket=r.raw_bucket, Key=processed_key, CopySource={"Bucket": r.raw_bucket, "Key": raw_key})
        s3.delete_object(Bucket=r.raw_bucket, Key=raw_key)
        result.objects += 1
        result.rows += rows
        result.csv_keys.append(staging_key)
    return result
