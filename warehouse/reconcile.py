"""Per-event reconciliation across every stage: what was accepted, and where each event is now.

Accepted events are every event the API put on the stream, whoever sent it (the stream is where
an answer of 200 puts an event), with the trigger's raw archive for events the stream no longer
retains, and the replay ledgers (`<data dir>/ledger/*.ids`, one event id per line, written as the
API accepts each batch): an id a ledger holds that the stream lost is missing there. Since the
last reset (`mark_reset`: the stores emptied, the stream's positions recorded), older stream
records are history. Each store is read in full and compared by event id:
    missing     accepted, not in the store, and not in the dead letters (or warehouse rejects)
    duplicated  more than one row for one event id where there must be one (warehouse)
    unexpected  in a store but never accepted (written around the API)
Any of them makes the reconciliation not exact. Stream and raw/staging copies of one event are
normal under at-least-once delivery; they are counted ("copies"), not failures.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TextIO

from ecom_core import aws, config
from ecom_core.events import record_field
from warehouse import schema, tables
from warehouse.redshift_data import DataApi
from warehouse.status import shard_positions, stream_records

# The stages in data-path order; the ones whose exactness is the platform's promise are marked.
EXACT_STAGES = ("dynamodb", "warehouse")


@dataclass
class Stage:
    name: str
    ids: set[str] = field(default_factory=set)
    rows: int = 0  # rows/records/items read, copies included
    unreadable: int = 0  # records that carry no event id (poison)
    duplicated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def as_dict(self, limit: int = 100) -> dict:
        return {
            "distinct_events": len(self.ids),
            "rows": self.rows,
            "unreadable": self.unreadable,
            "missing": len(self.missing),
            "duplicated": len(self.duplicated),
            "unexpected": len(self.unexpected),
            "missing_ids": sorted(self.missing)[:limit],
            "duplicated_ids": sorted(self.duplicated)[:limit],
            "unexpected_ids": sorted(self.unexpected)[:limit],
        }


@dataclass
class Reconciliation:
    accepted: set[str]
    stages: list[Stage]
    dead_lettered: set[str]
    warehouse_rejected: set[str] = field(default_factory=set)

    @property
    def exact(self) -> bool:
        return all(not s.missing and not s.unexpected for s in self.stages) and all(
            not s.duplicated for s in self.stages if s.name in EXACT_STAGES
        )

    def as_dict(self, limit: int = 100) -> dict:
        return {
            "exact": self.exact,
            "accepted": len(self.accepted),
            "dead_lettered": len(self.dead_lettered),
            "warehouse_rejected": len(self.warehouse_rejected),
            "stages": {s.name: s.as_dict(limit) for s in self.stages},
        }


def ledger_dir(cfg: config.Stack | None = None) -> Path:
    return (cfg or config.stack()).data_dir / "ledger"


def open_ledger(cfg: config.Stack | None, source: Path) -> TextIO:
    """A new ledger file for one replay run (append-only, one accepted event id per line)."""
    from datetime import datetime

    directory = ledger_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    return open(directory / f"{stamp}-{Path(source).name}.ids", "a", encoding="utf-8")


def read_ledgers(cfg: config.Stack | None = None) -> set[str]:
    ids: set[str] = set()
    for path in sorted(ledger_dir(cfg).glob("*.ids")):
        with open(path, encoding="utf-8") as handle:
            ids.update(line.strip() for line in handle if line.strip())
    return ids


def _event_id_of(data: bytes | str) -> str | None:
    event_id = record_field(data, "event_id")
    return event_id if isinstance(event_id, str) else None


BASELINE_FILE = "stream-baseline.json"


def mark_reset(cfg: config.Stack | None = None) -> dict[str, str]:
    """The stores were just emptied: record each shard's last sequence number, so that the records
    before it (which the stream keeps) are history to the reconciliation, not missing events."""
    shards = shard_positions(aws.client("kinesis", cfg), config.resources().stream)
    last = {shard: info["last_sequence"] for shard, info in shards.items() if info["last_sequence"] is not None}
    directory = ledger_dir(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / BASELINE_FILE).write_text(json.dumps(last), encoding="utf-8")
    return last


def stream_baseline(cfg: config.Stack | None = None) -> dict[str, int]:
    path = ledger_dir(cfg) / BASELINE_FILE
    if not path.exists():
        return {}
    return {shard: int(seq) for shard, seq in json.loads(path.read_text(encoding="utf-8")).items()}


def stream_stage(cfg: config.Stack, r: config.Resources) -> Stage:
    stage = Stage("stream")
    baseline = stream_baseline(cfg)
    for shard, record in stream_records(aws.client("kinesis", cfg), r.stream):
        if int(record["SequenceNumber"]) <= baseline.get(shard, -1):
            continue
        stage.rows += 1
        event_id = _event_id_of(record["Data"])
        if event_id is None:
            stage.unreadable += 1
        else:
            stage.ids.add(event_id)
    return stage


def dynamodb_stage(cfg: config.Stack, r: config.Resources) -> Stage:
    client = aws.client("dynamodb", cfg)
    stage = Stage("dynamodb")
    for item in aws.items(client.scan, TableName=r.invoice_table, ProjectionExpression="LineId"):
        stage.rows += 1
        stage.ids.add(item["LineId"]["S"])
    return stage


def _objects(s3: aws.Client, bucket: str, prefixes: Iterable[str]) -> Iterator[bytes]:
    for prefix in prefixes:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()


def raw_stage(cfg: config.Stack, r: config.Resources) -> Stage:
    s3 = aws.client("s3", cfg)
    stage = Stage("raw")
    for body in _objects(s3, r.raw_bucket, (r.raw_prefix, r.processed_prefix)):
        for line in body.splitlines():
            if line.strip():
                stage.rows += 1
                event_id = _event_id_of(line)
                if event_id is None:
                    stage.unreadable += 1
                else:
                    stage.ids.add(event_id)
    return stage


def staging_stage(cfg: config.Stack, r: config.Resources) -> Stage:
    s3 = aws.client("s3", cfg)
    stage = Stage("staging")
    for body in _objects(s3, r.staging_bucket, (r.staging_prefix,)):
        # Files another producer wrote may not be UTF-8 or CSV: what cannot be read counts as
        # unreadable (the load sets such rows aside as rejects), never stops the reconciliation.
        reader = csv.reader(io.StringIO(body.decode("utf-8", errors="replace")))
        try:
            header = next(reader, [])
            column = header.index("event_id") if "event_id" in header else 0
            for row in reader:
                stage.rows += 1
                if row:
                    stage.ids.add(row[column])
                else:
                    stage.unreadable += 1
        except csv.Error:
            stage.unreadable += 1
    return stage


# Event ids read per statement: keyset pages keep each result far below the Data API's 100 MB.
WAREHOUSE_PAGE_ROWS = 200_000


def warehouse_stage(api: DataApi) -> Stage:
    """Every event id in the fact table with its copies, read through the Redshift Data API."""
    stage = Stage("warehouse")
    after: str | None = None
    while True:
        # The last id of the page before travels as a parameter: ids other producers sent may hold
        # anything a literal could not carry.
        where = "" if after is None else 'WHERE "event_id" > :after '
        rows = api.statement(
            f'SELECT "event_id", count(*) FROM {tables.FACT_TABLE} {where}'
            f'GROUP BY "event_id" ORDER BY "event_id" LIMIT {WAREHOUSE_PAGE_ROWS}',
            None if after is None else [{"name": "after", "value": after}],
        ).rows
        for event_id, copies in rows:
            stage.rows += copies
            stage.ids.add(event_id)
            if copies > 1:
                stage.duplicated.append(event_id)
        if len(rows) < WAREHOUSE_PAGE_ROWS:
            return stage
        after = rows[-1][0]


def dead_letter_ids(cfg: config.Stack, r: config.Resources) -> tuple[set[str], int]:
    s3 = aws.client("s3", cfg)
    ids, total = set(), 0
    for body in _objects(s3, r.dead_letter_bucket, (r.dead_letter_prefix,)):
        total += 1
        letter = json.loads(body)
        event_id = _event_id_of(letter.get("data") or "")
        if event_id:
            ids.add(event_id)
    return ids, total


def reconcile(cfg: config.Stack | None = None, accepted: set[str] | None = None) -> Reconciliation:
    """Every stage against what was accepted: the stream's events since the last reset, the raw
    archive's, the replay ledgers' and `accepted` (ids the caller knows were accepted)."""
    cfg = cfg or config.stack()
    r = config.resources()
    dead, _ = dead_letter_ids(cfg, r)
    api = DataApi(cfg=cfg)
    schema.ensure_schema(api)
    rejected = warehouse_rejected_ids(api)
    stages = [
        stream_stage(cfg, r),
        dynamodb_stage(cfg, r),
        raw_stage(cfg, r),
        staging_stage(cfg, r),
        warehouse_stage(api),
    ]
    stream, raw = stages[0], stages[2]
    accepted = read_ledgers(cfg) | stream.ids | raw.ids | (accepted or set())
    for stage in stages:
        # A row the warehouse set aside is quarantined (counted, findable), not missing.
        quarantined = dead | rejected if stage.name == "warehouse" else dead
        # An event the trigger archived was on the stream, which may since have let it expire.
        present = stage.ids | raw.ids if stage is stream else stage.ids
        stage.missing = sorted(accepted - present - quarantined)
        stage.unexpected = sorted(stage.ids - accepted)
    return Reconciliation(accepted=accepted, stages=stages, dead_lettered=dead, warehouse_rejected=rejected)


def warehouse_rejected_ids(api: DataApi) -> set[str]:
    return {
        row[0]
        for row in api.statement(
            f'SELECT DISTINCT "event_id" FROM {tables.REJECTS_TABLE} WHERE "event_id" IS NOT NULL'
        ).rows
    }
