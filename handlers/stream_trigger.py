"""Lambda `kinesis-trigger`: a Kinesis batch -> DynamoDB (OLTP) + one raw JSON Lines object in S3.

Delivery is at least once and a raising handler is retried (forever on MiniStack, which ignores
the mapping's retry limit), so:
- every write is idempotent: DynamoDB items are keyed by event id, the raw object's key comes from
  the shard and the batch's first/last sequence numbers;
- a record that can never succeed (bad JSON, bad fields, a line naming another customer than its
  invoice's first) is quarantined with its reason and never raises; only transient errors
  (throttling, the emulator restarting) raise, and the retry is safe.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from ecom_core import aws, config, heap, json_codec
from ecom_core.events import OrderLine, event_json, id_digest
from ecom_core.faults import armed, maybe_fail
from handlers.events import GUEST, InvalidEvent, exact_decimal, normalize_event

RESOURCES = config.resources()
BATCH_WRITE_LIMIT = 25
# BatchWriteItem chunks in flight per invocation. Profiling showed the trigger half waiting on
# the network and half building requests; a few threads overlap the two (and on AWS they
# overlap round trips). Small, because a batch has at most a few hundred chunks.
WRITE_THREADS = config.limits().trigger_write_threads
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()
_write_pool: ThreadPoolExecutor | None = None


class StreamRecord(NamedTuple):
    """One Kinesis record of the Lambda event, its data decoded. (A named tuple, not a frozen
    dataclass: built for every record, and a frozen dataclass's __init__ costs three times as much.)"""

    shard_id: str
    sequence_number: str
    data: bytes
    arrival: float | None
    partition_key: str = ""  # the InvoiceNo, when data-ingestion put it (anything, for other producers)

    @classmethod
    def from_lambda(cls, record: dict[str, Any]) -> StreamRecord:
        kinesis = record["kinesis"]
        event_id = str(record.get("eventID", ""))
        shard_id = event_id.split(":", 1)[0] if ":" in event_id else "shardId-unknown"
        return cls(
            shard_id=shard_id,
            sequence_number=str(kinesis["sequenceNumber"]),
            data=base64.b64decode(kinesis["data"]),
            arrival=kinesis.get("approximateArrivalTimestamp"),
            partition_key=str(kinesis.get("partitionKey", "")),
        )


@dataclass
class DeadLetter:
    record: StreamRecord
    kind: str  # short and stable, for counting: "not UTF-8", "not JSON", "invalid event (Quantity)"
    reason: str  # the full explanation

    def key(self) -> str:
        return f"{RESOURCES.dead_letter_prefix}{self.record.shard_id}/{self.record.sequence_number}.json"

    def body(self) -> bytes:
        try:
            text, b64 = self.record.data.decode("utf-8"), None
        except UnicodeDecodeError:
            text, b64 = None, base64.b64encode(self.record.data).decode("ascii")
        return json.dumps(
            {
                "kind": self.kind,
                "reason": self.reason,
                "source": {
                    "stream": RESOURCES.stream,
                    "shard_id": self.record.shard_id,
                    "sequence_number": self.record.sequence_number,
                    "approximate_arrival": self.record.arrival,
                },
                "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "data": text,
                "data_base64": b64,
                "size": len(self.record.data),
            },
            ensure_ascii=False,
        ).encode("utf-8")


@dataclass
class Batch:
    shard_id: str
    first_sequence: str
    last_sequence: str
    events: list[OrderLine] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)  # events[i] as its DynamoDB item
    lines: list[bytes] = field(default_factory=list)  # events[i] as its raw JSON line
    records: list[StreamRecord] = field(default_factory=list)  # the record events[i] came from
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0

    def raw_key(self) -> str:
        return f"{RESOURCES.raw_prefix}{self.shard_id}/{self.first_sequence}-{self.last_sequence}.jsonl"


def decode_batch(records: list[StreamRecord]) -> Batch:
    """Split a batch into usable events (deduplicated by event id) and dead letters."""
    batch = Batch(
        shard_id=records[0].shard_id,
        first_sequence=records[0].sequence_number,
        last_sequence=records[-1].sequence_number,
    )
    decode_into(batch, records, set())
    return batch


def decode_into(batch: Batch, records: list[StreamRecord], seen: set[str]) -> None:
    """Decode `records` (a slice of the batch, in order) into `batch`; `seen` holds the event ids so far."""
    for record in records:
        try:
            text = record.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            batch.dead_letters.append(DeadLetter(record, "not UTF-8", f"not UTF-8: {exc}"[:500]))
            continue
        try:
            payload = json_codec.loads(text)
        except RecursionError:
            batch.dead_letters.append(DeadLetter(record, "not JSON", "not JSON: nested too deeply"))
            continue
        except ValueError as exc:
            batch.dead_letters.append(DeadLetter(record, "not JSON", f"not JSON: {exc}"[:500]))
            continue
        try:
            event = normalize_event(payload, assign_id=False)
            # Serialised here, per record, so that a value DynamoDB's types cannot hold is this
            # record's dead letter, not a failure of the whole batch retried forever.
            item = invoice_wire_item(event)
        except InvalidEvent as exc:
            fields = ", ".join(sorted({e.field for e in exc.errors}))
            batch.dead_letters.append(
                DeadLetter(record, f"invalid event ({fields})"[:200], f"invalid event: {exc}"[:2000])
            )
            continue
        except Exception as exc:  # noqa: BLE001 - any per-record failure is the record's, not the batch's
            batch.dead_letters.append(
                DeadLetter(record, "not storable", f"not storable: {type(exc).__name__}: {exc}"[:2000])
            )
            continue
        if event["event_id"] in seen:
            batch.duplicates += 1  # the producer retried; the first copy wins, the effect is the same
            continue
        seen.add(event["event_id"])
        batch.events.append(event)
        batch.items.append(item)
        # The event's canonical JSON: the record's own bytes when ingestion wrote it (the same
        # encoder, the same values), and one line even when another producer's record was not.
        # (Encoding is cheaper than checking whether the record already is canonical: 0.4 against 1.9 us.)
        batch.lines.append(event_json(event))
        batch.records.append(record)


def invoice_item(event: OrderLine) -> dict[str, Any]:
    """One invoice line. SK = event id, so repeated (InvoiceNo, StockCode) lines never collide."""
    item = {
        "InvoiceNo": event["InvoiceNo"],
        "LineId": event["event_id"],
        "StockCode": event["StockCode"],
        "Quantity": exact_decimal(event["Quantity"]),
        "UnitPrice": exact_decimal(event["UnitPrice"]),
        "InvoiceDate": event["InvoiceDate"],
        "Country": event["Country"],
    }
    if event["Description"] is not None:
        item["Description"] = event["Description"]
    if event["CustomerID"] is not None:
        item["CustomerID"] = event["CustomerID"]
    return item


def line_digest(line_ids: Iterable[str]) -> str:
    """Order-free fingerprint of a set of line ids (ecom_core.events.id_digest): an entry records
    which lines it was computed from, so a later batch can tell its lines are those."""
    return format(id_digest(line_ids), "x")


def _price_text(price: int | float) -> str:
    """str(exact_decimal(price)) for a price normalize_event accepted: at most 3 decimals and |price| <=
    10^9, so repr() never takes the exponent form (below 1e-4 or from 1e16) and is already the exact
    decimal text; without the Decimal round trip (a tenth of this function's time)."""
    return repr(price) if type(price) is float else str(price)


def invoice_wire_item(event: OrderLine) -> dict[str, Any]:
    """`serialize_item(invoice_item(event))`, built directly (a quarter of the trigger's per-record
    CPU went to the generic serializer). Numbers as boto3 writes them: the exact decimal text.
    Valid only for events `normalize_event` accepted (types and ranges known)."""
    item = {
        "InvoiceNo": {"S": event["InvoiceNo"]},
        "LineId": {"S": event["event_id"]},
        "StockCode": {"S": event["StockCode"]},
        "Quantity": {"N": str(event["Quantity"])},
        "UnitPrice": {"N": _price_text(event["UnitPrice"])},
        "InvoiceDate": {"S": event["InvoiceDate"]},
        "Country": {"S": event["Country"]},
    }
    if event["Description"] is not None:
        item["Description"] = {"S": event["Description"]}
    if event["CustomerID"] is not None:
        item["CustomerID"] = {"N": str(event["CustomerID"])}
    return item


def customer_totals(lines: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pure: the customer entry of every (customer, invoice) among `lines` (invoice items as
    `invoice_item` builds them or DynamoDB returns them): line count, exact total, the invoice's
    earliest minute (an invoice can span two) and that line's country, and the digest of the line
    ids it counts. Guest lines make no entry."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for line in lines:
        if line.get("CustomerID") is not None:
            groups.setdefault((int(line["CustomerID"]), line["InvoiceNo"]), []).append(line)
    entries: list[dict[str, Any]] = []
    for (customer_id, invoice_no), own in sorted(groups.items(), key=lambda g: (g[0][1], g[0][0])):
        first = min(own, key=lambda line: (line["InvoiceDate"], line["LineId"]))
        entries.append(
            {
                "CustomerID": customer_id,
                "InvoiceNo": invoice_no,
                "InvoiceDate": first["InvoiceDate"],
                "Country": first["Country"],
                "LineCount": len(own),
                "Total": sum((Decimal(line["Quantity"]) * Decimal(line["UnitPrice"]) for line in own), Decimal(0)),
                "LineDigest": line_digest(line["LineId"] for line in own),
            }
        )
    return entries


def plain_item(item: dict[str, Any]) -> dict[str, Any]:
    """A wire-format item as the document client gives it (str, Decimal...); strings, most of
    every item here, without the type dispatch."""
    return {name: value["S"] if "S" in value else _deserializer.deserialize(value) for name, value in item.items()}


def stored_invoice_lines(invoice_no: str, dynamodb: aws.Client | None = None) -> list[dict[str, Any]]:
    """Every line of an invoice as stored, read strongly consistent: the lines this batch just
    wrote must be counted (AWS Query is eventually consistent by default)."""
    dynamodb = dynamodb or wire_client()
    return [
        plain_item(item)
        for item in aws.items(
            dynamodb.query,
            TableName=RESOURCES.invoice_table,
            KeyConditionExpression="InvoiceNo = :n",
            ExpressionAttributeValues={":n": {"S": invoice_no}},
            ConsistentRead=True,
            ProjectionExpression="InvoiceNo, CustomerID, InvoiceDate, Country, Quantity, UnitPrice, LineId",
        )
    ]


def whole_in_batch(events: list[OrderLine]) -> set[str]:
    """Invoices whose lines in this batch form one unbroken run that neither opens nor closes the
    batch. A producer sends an invoice's lines together and the stream keeps them in order on one
    shard (PartitionKey = InvoiceNo), so such an invoice is whole here, unless some of its lines
    also came at another time: `customer_entries` checks that against the stored entry."""
    runs: list[str] = []
    for event in events:
        if not runs or runs[-1] != event["InvoiceNo"]:
            runs.append(event["InvoiceNo"])
    if len(runs) < 3:
        return set()
    seen_twice = {invoice for invoice, n in Counter(runs).items() if n > 1}
    return set(runs[1:-1]) - seen_twice - {runs[0], runs[-1]}


def batch_get(
    table: str,
    keys: list[dict[str, Any]],
    projection: str | None = None,
    dynamodb: aws.Client | None = None,
    *,
    attempts: int = 10,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """The stored items among wire-format `keys` (plain values), strongly consistent, one
    BatchGetItem per 100 keys; UnprocessedKeys retried with backoff."""
    dynamodb = dynamodb or wire_client()
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), 100):
        request: dict[str, Any] = {table: {"Keys": keys[start : start + 100], "ConsistentRead": True}}
        if projection:
            request[table]["ProjectionExpression"] = projection
        for attempt in range(attempts):
            answer = dynamodb.batch_get_item(RequestItems=request)
            found.extend(map(plain_item, answer.get("Responses", {}).get(table, [])))
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
            sleep(min(0.05 * 2**attempt, 2.0))
        else:
            raise RuntimeError(f"DynamoDB left keys of {table} unread (UnprocessedKeys)")
    return found


def stored_entries(
    keys: list[tuple[int, str]],
    dynamodb: aws.Client | None = None,
    *,
    attempts: int = 10,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[tuple[int, str], tuple[int, str | None]]:
    """(LineCount, LineDigest) of the stored customer entries among `keys`."""
    items = batch_get(
        RESOURCES.customer_table,
        [{"CustomerID": {"N": str(c)}, "InvoiceNo": {"S": i}} for c, i in keys],
        "CustomerID, InvoiceNo, LineCount, LineDigest",
        dynamodb,
        attempts=attempts,
        sleep=sleep,
    )
    return {
        (int(item["CustomerID"]), item["InvoiceNo"]): (int(item.get("LineCount", -1)), item.get("LineDigest"))
        for item in items
    }


# The dead-letter kind of a line naming someone other than its invoice's owner (keep_owned_lines).
FOREIGN_LINE = "not the invoice's customer"


def stored_owners(invoices: Iterable[str], dynamodb: aws.Client | None = None) -> dict[str, int | str]:
    """The owner of each of `invoices` that has one (customer id, or GUEST)."""
    items = batch_get(
        RESOURCES.invoice_owner_table, [{"InvoiceNo": {"S": i}} for i in sorted(set(invoices))], dynamodb=dynamodb
    )
    return {item["InvoiceNo"]: int(item["CustomerID"]) if "CustomerID" in item else GUEST for item in items}


def owner_item(invoice_no: str, owner: int | str) -> dict[str, Any]:
    item = {"InvoiceNo": {"S": invoice_no}}
    if owner != GUEST:
        item["CustomerID"] = {"N": str(owner)}
    return item


def keep_owned_lines(batch: Batch, start: int, owners: dict[str, int | str]) -> dict[str, int | str]:
    """An invoice belongs to its first customer. Checks the lines `batch.events[start:]` (this
    slice's) against their invoices' owners in `owners` (stored ones, and those this batch
    claimed): a line naming another customer, or none on a customer's invoice (or a customer on a
    guest invoice), is quarantined with the reason, never written, so it cannot change who may
    read the invoice. An invoice with no owner yet is claimed by its first line here (stream order:
    the first the API accepted). Returns the new claims, to be written."""
    claimed: dict[str, int | str] = {}
    kept: list[int] = []
    for position in range(start, len(batch.events)):
        event = batch.events[position]
        invoice_no, customer = event["InvoiceNo"], event["CustomerID"]
        claimant = GUEST if customer is None else customer
        if invoice_no not in owners:
            owners[invoice_no] = claimed[invoice_no] = claimant
        if owners[invoice_no] == claimant:
            kept.append(position)
            continue
        batch.dead_letters.append(
            DeadLetter(
                batch.records[position],
                FOREIGN_LINE,
                f"invoice {invoice_no} belongs to {'a guest' if owners[invoice_no] == GUEST else 'another customer'}; "
                f"this line names {'no customer' if customer is None else f'customer {customer}'}",
            )
        )
    if len(kept) < len(batch.events) - start:
        for name in ("events", "items", "lines", "records"):
            values = getattr(batch, name)
            values[start:] = [values[position] for position in kept]
    return claimed


def customer_entries(
    events: list[OrderLine], dynamodb: aws.Client | None = None, *, workers: int = 8
) -> list[dict[str, Any]]:
    """The customer entries of every (customer, invoice) this batch touched, each with the line count
    and total of ALL that customer's lines of the invoice. Call after the lines are written.

    An invoice whole in this batch (`whole_in_batch`) is totalled from the batch itself when its
    stored entry is absent or was computed from exactly these lines (same count and line digest):
    the common case, at one BatchGetItem per 100 invoices. Every other invoice (cut by the batch's
    edges, or with lines from elsewhere) is recomputed from all its stored lines, one strongly
    consistent Query each.

    Exactly once under redelivery: the values are derived from the invoice lines (idempotent items
    keyed by event id), never incremented, so reprocessing a batch rewrites the same entries. All
    lines of an invoice share a shard and a shard's batches run in order, so two batches never
    recompute one invoice concurrently.
    """
    with_customer = [e for e in events if e["CustomerID"] is not None]
    if not with_customer:
        return []
    dynamodb = dynamodb or wire_client()
    whole = whole_in_batch(events)
    from_batch = customer_totals(invoice_item(e) for e in with_customer if e["InvoiceNo"] in whole)
    stored = stored_entries([(e["CustomerID"], e["InvoiceNo"]) for e in from_batch], dynamodb)
    # An invoice is settled from the batch only if every customer entry of it is.
    unsettled = {
        e["InvoiceNo"]
        for e in from_batch
        if stored.get((e["CustomerID"], e["InvoiceNo"]), (e["LineCount"], e["LineDigest"]))
        != (e["LineCount"], e["LineDigest"])
    }
    settled = [e for e in from_batch if e["InvoiceNo"] not in unsettled]
    recompute = sorted({e["InvoiceNo"] for e in with_customer} - {e["InvoiceNo"] for e in settled})
    if not recompute:
        return settled
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(recompute)))) as pool:
        all_lines = pool.map(lambda invoice_no: stored_invoice_lines(invoice_no, dynamodb), recompute)
        return settled + customer_totals(line for lines in all_lines for line in lines)


def attribute_value(value: Any) -> Mapping[str, Any]:
    """One Python value in DynamoDB's wire format (strings, the common case, without the type dispatch)."""
    if type(value) is str:
        return {"S": value}
    return _serializer.serialize(value)


def serialize_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: attribute_value(value) for name, value in item.items()}


def _write_chunk(
    table: str, chunk: list[dict[str, Any]], dynamodb: aws.Client, attempts: int, sleep: Callable[[float], None]
) -> list[int]:
    """Write wire-format items; returns the positions DynamoDB refused as invalid (nothing else is
    refused: throttling is retried here, other errors raise and the batch is redelivered)."""
    requests = {table: [{"PutRequest": {"Item": item}} for item in chunk]}
    try:
        for attempt in range(attempts):
            result = dynamodb.batch_write_item(RequestItems=requests)
            requests = result.get("UnprocessedItems") or {}
            if not requests:
                return []
            sleep(min(0.05 * 2**attempt, 2.0))
    except ClientError as exc:
        if aws.error_code(exc) != "ValidationException":
            raise
        # One item spoils the whole request: put them one by one to find it.
        return [position for position, item in enumerate(chunk) if not _put_valid(table, item, dynamodb)]
    raise RuntimeError(f"DynamoDB left {sum(len(v) for v in requests.values())} items unprocessed in {table}")


def _put_valid(table: str, item: dict[str, Any], dynamodb: aws.Client) -> bool:
    try:
        dynamodb.put_item(TableName=table, Item=item)
        return True
    except ClientError as exc:
        if aws.error_code(exc) != "ValidationException":
            raise
        return False


def _pool() -> ThreadPoolExecutor:
    global _write_pool
    if _write_pool is None:
        _write_pool = ThreadPoolExecutor(max_workers=WRITE_THREADS, thread_name_prefix="batch-write")
    return _write_pool


def batch_write(
    table: str,
    items: list[dict[str, Any]],
    dynamodb: aws.Client | None = None,
    *,
    attempts: int = 10,
    sleep: Callable[[float], None] = time.sleep,
) -> list[int]:
    """Python-valued items: serialise, then `write_items`."""
    return write_items(table, [serialize_item(item) for item in items], dynamodb, attempts=attempts, sleep=sleep)


def write_items(
    table: str,
    items: list[dict[str, Any]],
    dynamodb: aws.Client | None = None,
    *,
    attempts: int = 10,
    sleep: Callable[[float], None] = time.sleep,
) -> list[int]:
    """BatchWriteItem of wire-format items in chunks of 25 (a few in parallel), retrying
    UnprocessedItems with backoff. Returns the positions of items DynamoDB refused as invalid.

    Plain puts keyed by event id: no read before write, and a redelivered batch rewrites the same
    items. Raises if any chunk still has unprocessed items after `attempts` (the batch is retried).
    """
    dynamodb = dynamodb or wire_client()
    starts = list(range(0, len(items), BATCH_WRITE_LIMIT))
    # Fault injection point "mid_dynamodb": the first half of the chunks written, the rest not.
    halves = [starts[: len(starts) // 2], starts[len(starts) // 2 :]] if len(starts) > 1 else [starts]
    refused: list[int] = []
    for number, half in enumerate(halves):
        if number:
            maybe_fail("trigger.mid_dynamodb")
        if len(half) <= 1 or WRITE_THREADS <= 1:
            outcomes = [
                _write_chunk(table, items[start : start + BATCH_WRITE_LIMIT], dynamodb, attempts, sleep)
                for start in half
            ]
        else:
            futures = [
                _pool().submit(_write_chunk, table, items[start : start + BATCH_WRITE_LIMIT], dynamodb, attempts, sleep)
                for start in half
            ]
            outcomes = [future.result() for future in futures]  # every chunk waited for; first failure raised
        refused.extend(start + position for start, outcome in zip(half, outcomes, strict=True) for position in outcome)
    return refused


def wire_client(cfg: config.Stack | None = None) -> aws.Client:
    """The trigger's DynamoDB client, wire form in and out: low-level, items serialised by us. The
    resource layer's parameter transformation and botocore's parameter validation were ~40% of the
    trigger's CPU in profiles, and the items are built by this module in a fixed shape. BatchWriteItem, and the
    strongly consistent reads of customer totals (Query, BatchGetItem), go out as signed POSTs
    first (aws.SignedPostFirst: botocore's per-call machinery was ~40% of what remained of the
    writes, and ~9% of a trigger worker's CPU went to the reads through the document client).
    The bench writes through the same."""
    settings: dict[str, Any] = {"parameter_validation": False, "max_pool_connections": max(10, WRITE_THREADS * 2)}
    if cfg:
        return _wire_client(cfg, settings)
    return _shared_wire_client(**settings)


def _wire_client(cfg: config.Stack, settings: dict[str, Any]) -> aws.Client:
    client = aws.wire_json(aws.client("dynamodb", cfg, **settings), "PutItem")
    return aws.signed_post_first(client, "BatchWriteItem", "Query", "BatchGetItem", cfg=cfg)


@functools.cache
def _shared_wire_client(**settings: Any) -> aws.Client:
    # Its own client (not aws.shared_client's): this one sends BatchWriteItem, Query and BatchGetItem
    # bodies as they are.
    return _wire_client(config.stack(), settings)


def write_jsonl(events: list[OrderLine]) -> bytes:
    return b"".join(event_json(e) + b"\n" for e in events)


# Records decoded before their lines go to the writer threads. Small enough that the writes start
# early, large enough that a slice fills many chunks of 25.
DECODE_SLICE = 500


def decode_and_write_lines(records: list[StreamRecord], dynamodb: aws.Client | None = None) -> tuple[Batch, set[int]]:
    """`decode_batch` and `write_items` of the invoice lines, overlapped: each slice's lines go to
    the writer threads while the next slice is decoded. Decoding is this process's CPU and the
    writes are DynamoDB's, so on one machine (the emulator) they use different cores, and on AWS
    the round trips hide the decoding. Returns the batch and the positions DynamoDB refused."""
    dynamodb = dynamodb or wire_client()
    batch = Batch(
        shard_id=records[0].shard_id,
        first_sequence=records[0].sequence_number,
        last_sequence=records[-1].sequence_number,
    )
    seen: set[str] = set()
    futures: list[tuple[int, Any]] = []
    claims: list[Any] = []
    submitted = 0
    # The owners of the batch's invoices, read while the first slice is decoded: data-ingestion
    # keys every record by its InvoiceNo, so the partition keys name them (other producers' records
    # are looked up by their events' InvoiceNo below).
    looked_up = {record.partition_key for record in records}
    prefetch = _pool().submit(stored_owners, looked_up, dynamodb)
    owners: dict[str, int | str] | None = None
    # Fault point "mid_dynamodb": some lines written, the rest not (a barrier only while it is armed).
    barrier_at = len(records) // 2 if armed("trigger.mid_dynamodb") else None

    def submit(upto: int) -> None:
        nonlocal submitted
        while submitted < upto:
            end = min(submitted + BATCH_WRITE_LIMIT, upto)
            futures.append(
                (
                    submitted,
                    _pool().submit(
                        _write_chunk, RESOURCES.invoice_table, batch.items[submitted:end], dynamodb, 10, time.sleep
                    ),
                )
            )
            submitted = end

    # While the fault is armed the halfway point must fall on a slice boundary (small batches too).
    step = DECODE_SLICE if barrier_at is None else max(1, min(DECODE_SLICE, barrier_at))
    for start in range(0, len(records), step):
        if barrier_at is not None and start >= barrier_at and futures:
            for _, future in futures:
                future.result()
            maybe_fail("trigger.mid_dynamodb")
            barrier_at = None
        first = len(batch.events)
        decode_into(batch, records[start : start + step], seen)
        if owners is None:
            owners = prefetch.result()
        unknown = {event["InvoiceNo"] for event in batch.events[first:]} - looked_up
        if unknown:
            owners.update(stored_owners(unknown, dynamodb))
            looked_up |= unknown
        claimed = [
            owner_item(invoice_no, owner) for invoice_no, owner in keep_owned_lines(batch, first, owners).items()
        ]
        for at in range(0, len(claimed), BATCH_WRITE_LIMIT):
            claims.append(
                _pool().submit(
                    _write_chunk,
                    RESOURCES.invoice_owner_table,
                    claimed[at : at + BATCH_WRITE_LIMIT],
                    dynamodb,
                    10,
                    time.sleep,
                )
            )
        submit(len(batch.items) - len(batch.items) % BATCH_WRITE_LIMIT)  # whole chunks now, the tail at the end
    submit(len(batch.items))
    refused = {start + position for start, future in futures for position in future.result()}
    for claim in claims:
        if claim.result():
            raise RuntimeError("DynamoDB refused an invoice owner item")  # a valid key: cannot happen
    return batch, refused


def process_batch(records: list[StreamRecord]) -> dict[str, Any]:
    s3 = aws.shared_client("s3")
    # Order matters for observers: the raw object is written last, so once it exists every
    # DynamoDB write and dead letter of its batch exists too.
    maybe_fail("trigger.before_dynamodb")
    batch, refused = decode_and_write_lines(records)
    if refused:
        for position in sorted(refused):
            batch.dead_letters.append(
                DeadLetter(
                    batch.records[position],
                    "refused by DynamoDB",
                    "refused by DynamoDB: ValidationException on PutItem",
                )
            )
        batch.events = [e for position, e in enumerate(batch.events) if position not in refused]
        batch.lines = [line for position, line in enumerate(batch.lines) if position not in refused]
    entries = customer_entries(batch.events)
    for position in batch_write(RESOURCES.customer_table, entries):
        # Cannot happen for validated lines (totals stay far inside DynamoDB's number range); said
        # loudly rather than retried forever: the lines themselves are stored.
        print(
            json.dumps(
                {
                    "fn": "kinesis-trigger",
                    "customer_entry_refused": {
                        "CustomerID": entries[position]["CustomerID"],
                        "InvoiceNo": entries[position]["InvoiceNo"],
                    },
                }
            )
        )
    maybe_fail("trigger.after_dynamodb")
    for dead in batch.dead_letters:
        s3.put_object(
            Bucket=RESOURCES.dead_letter_bucket, Key=dead.key(), Body=dead.body(), ContentType="application/json"
        )
    if batch.events:
        s3.put_object(
            Bucket=RESOURCES.raw_bucket,
            Key=batch.raw_key(),
            Body=b"\n".join(batch.lines) + b"\n",
            ContentType="application/x-ndjson",
        )
    return {
        "shard": batch.shard_id,
        "records": len(records),
        "written": len(batch.events),
        "quarantined": len(batch.dead_letters),
        "duplicates": batch.duplicates,
        "raw_key": batch.raw_key() if batch.events else None,
    }


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    started = time.perf_counter()
    # A warm worker keeps its clients (botocore's service models) for every batch, and each batch's
    # items outlive the young collections: full collections walked that heap again and again (14 %
    # of the worker's CPU; ecom_core.heap). Here, not on import: only the Lambda's process.
    heap.freeze_survivors_of_full_collections()
    records = [StreamRecord.from_lambda(r) for r in event.get("Records", [])]
    if not records:
        print(json.dumps({"fn": "kinesis-trigger", "records": 0}))
        return {"records": 0}
    summary = process_batch(records)
    summary["ms"] = round((time.perf_counter() - started) * 1000, 1)
    print(json.dumps({"fn": "kinesis-trigger", **summary}))
    return summary
