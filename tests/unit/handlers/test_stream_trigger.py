"""Unit tests of the stream trigger's pure logic: batch decoding, DynamoDB items, customer totals."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from itertools import islice

from ecom_core.config import SAMPLE_FILE
from handlers.stream_trigger import (
    StreamRecord,
    customer_entries,
    customer_totals,
    decode_batch,
    invoice_item,
    invoice_wire_item,
    line_digest,
    serialize_item,
    whole_in_batch,
)
from replay.source import read_rows


def _sample_events(n: int) -> list[dict]:
    return [row.event for row in islice(read_rows(SAMPLE_FILE), n)]


def _record(seq: int, data: bytes) -> StreamRecord:
    return StreamRecord(shard_id="shardId-000000000000", sequence_number=str(seq), data=data, arrival=None)


def test_decode_batch_splits_events_duplicates_and_dead_letters():
    events = _sample_events(3)
    records = [
        _record(1, json.dumps(events[0]).encode()),
        _record(2, b"\xff\xfe not utf-8"),
        _record(3, b"{not json"),
        _record(4, json.dumps(events[1]).encode()),
        _record(5, json.dumps(events[0]).encode()),  # a producer retry: same event id
        _record(6, json.dumps({**events[2], "Quantity": "six"}).encode()),
    ]
    batch = decode_batch(records)
    assert [e["event_id"] for e in batch.events] == [events[0]["event_id"], events[1]["event_id"]]
    assert batch.duplicates == 1
    assert [(d.record.sequence_number, d.kind) for d in batch.dead_letters] == [
        ("2", "not UTF-8"),
        ("3", "not JSON"),
        ("6", "invalid event (Quantity)"),
    ]
    assert batch.raw_key() == "raw/shardId-000000000000/1-6.jsonl"
    body = json.loads(batch.dead_letters[0].body())
    assert body["data"] is None and base64.b64decode(body["data_base64"]) == b"\xff\xfe not utf-8"


def test_decode_batch_requires_event_ids_on_the_stream():
    event = {k: v for k, v in _sample_events(1)[0].items() if k != "event_id"}
    batch = decode_batch([_record(1, json.dumps(event).encode())])
    assert batch.events == [] and batch.dead_letters[0].kind == "invalid event (event_id)"


def test_invoice_item_keeps_exact_numbers_and_omits_nulls():
    event = {
        "event_id": "e1",
        "InvoiceNo": "536365",
        "StockCode": "85123A",
        "Description": None,
        "Quantity": 6,
        "InvoiceDate": "2010-12-01T08:26:00",
        "UnitPrice": 2.55,
        "CustomerID": None,
        "Country": "United Kingdom",
    }
    item = invoice_item(event)
    assert item["UnitPrice"] == Decimal("2.55") and item["Quantity"] == Decimal(6)
    assert "Description" not in item and "CustomerID" not in item and item["LineId"] == "e1"
    assert serialize_item(item)["UnitPrice"] == {"N": "2.55"}


def test_customer_totals_of_the_sample_match_the_file():
    """The 417-row sample: per (customer, invoice) line count and exact total, recomputed with csv."""
    import csv

    events = _sample_events(417)
    entries = customer_totals(invoice_item(e) for e in events)
    expected: dict[tuple[int, str], list] = {}
    with open(SAMPLE_FILE, encoding="iso-8859-1", newline="") as f:
        for row in csv.DictReader(f):
            if row["CustomerID"]:
                key = (int(float(row["CustomerID"])), row["InvoiceNo"])
                acc = expected.setdefault(key, [0, Decimal(0)])
                acc[0] += 1
                acc[1] += Decimal(row["Quantity"]) * Decimal(row["UnitPrice"])
    assert {(e["CustomerID"], e["InvoiceNo"]): [e["LineCount"], e["Total"]] for e in entries} == expected
    assert [(e["InvoiceNo"], e["CustomerID"]) for e in entries] == sorted((i, c) for c, i in expected)


def test_customer_totals_take_the_earliest_minute_and_skip_guests():
    base = {
        "InvoiceNo": "536591",
        "CustomerID": Decimal(14606),
        "Country": "United Kingdom",
        "Quantity": Decimal(2),
        "UnitPrice": Decimal("1.25"),
    }
    lines = [
        {**base, "LineId": "b", "InvoiceDate": "2010-12-01T16:58:00"},
        {**base, "LineId": "a", "InvoiceDate": "2010-12-01T16:57:00", "Country": "EIRE"},
        {**base, "LineId": "c", "InvoiceDate": "2010-12-01T16:57:00", "CustomerID": None},
    ]
    [entry] = customer_totals(lines)
    assert entry == {
        "CustomerID": 14606,
        "InvoiceNo": "536591",
        "InvoiceDate": "2010-12-01T16:57:00",
        "Country": "EIRE",
        "LineCount": 2,
        "Total": Decimal("5.00"),
        "LineDigest": line_digest(["a", "b"]),
    }
    assert customer_totals([lines[2]]) == []
    assert line_digest(["a", "b"]) == line_digest(["b", "a"]) != line_digest(["a"])


def test_whole_in_batch_is_an_unbroken_run_inside_the_batch():
    def events(*invoices):
        return [{"InvoiceNo": i} for i in invoices]

    assert whole_in_batch(events("A", "A", "B", "B", "C", "D", "D")) == {"B", "C"}
    assert whole_in_batch(events("A", "B", "A", "C")) == {"B"}  # A is cut in two, and opens the batch
    assert whole_in_batch(events("A", "B", "C", "B", "D")) == {"C"}  # B comes twice
    assert whole_in_batch(events("A", "B")) == set() == whole_in_batch(events("A", "A", "A"))


class _Dynamo:
    """Stands in for the document client: stored lines and entries; records what was asked."""

    def __init__(self, lines, entries=()):
        self.lines, self.entries = lines, {(int(e["CustomerID"]), e["InvoiceNo"]): e for e in entries}
        self.queried: list[str] = []
        self.batch_gets = 0

    # Wire form in and out, as the trigger's low-level client speaks.
    def query(self, **kwargs):
        invoice = kwargs["ExpressionAttributeValues"][":n"]["S"]
        self.queried.append(invoice)
        return {"Items": [serialize_item(line) for line in self.lines if line["InvoiceNo"] == invoice]}

    def batch_get_item(self, RequestItems):
        self.batch_gets += 1
        [(table, request)] = RequestItems.items()
        keys = [(int(k["CustomerID"]["N"]), k["InvoiceNo"]["S"]) for k in request["Keys"]]
        return {"Responses": {table: [serialize_item(self.entries[key]) for key in keys if key in self.entries]}}


def test_customer_entries_total_whole_invoices_from_the_batch_and_query_only_the_rest():
    events = _sample_events(417)
    lines = [invoice_item(e) for e in events]
    expected = {(e["CustomerID"], e["InvoiceNo"]): e for e in customer_totals(lines)}
    invoices = list(dict.fromkeys(e["InvoiceNo"] for e in events))
    customer_invoices = {e["InvoiceNo"] for e in events if e["CustomerID"] is not None}

    fresh = _Dynamo(lines)
    entries = customer_entries(events, fresh)
    assert {(e["CustomerID"], e["InvoiceNo"]): e for e in entries} == expected
    # Only the invoices at the batch's two edges (when they have a customer) were read line by line.
    assert sorted(fresh.queried) == sorted({invoices[0], invoices[-1]} & customer_invoices)
    assert fresh.batch_gets == 1

    # A redelivered batch: the stored entries were computed from these very lines: still no Query.
    again = _Dynamo(lines, entries)
    assert {(e["CustomerID"], e["InvoiceNo"]): e for e in customer_entries(events, again)} == expected
    assert sorted(again.queried) == sorted(fresh.queried)

    # Lines of an invoice that also came at another time: the stored entry counts them, so the batch
    # alone does not settle it; the invoice is recomputed from everything stored.
    middle = next(i for i in invoices[1:-1] if i in customer_invoices)
    earlier = {**next(line for line in lines if line["InvoiceNo"] == middle), "LineId": "an-earlier-line"}
    stored_entry = customer_totals([line for line in lines if line["InvoiceNo"] == middle] + [earlier])
    mixed = _Dynamo(lines + [earlier], stored_entry)
    recomputed = {(e["CustomerID"], e["InvoiceNo"]): e for e in customer_entries(events, mixed)}
    assert middle in mixed.queried
    key = (int(earlier["CustomerID"]), middle)
    assert recomputed[key]["LineCount"] == expected[key]["LineCount"] + 1
    assert recomputed[key] == stored_entry[0]


def test_the_wire_item_and_raw_line_are_what_the_generic_path_writes():
    from handlers.events import accept_event
    from handlers.ingestion import encode_record
    from handlers.stream_trigger import write_jsonl

    events = [accept_event(e) for e in _sample_events(417)]
    assert all(invoice_wire_item(e) == serialize_item(invoice_item(e)) for e in events)
    records = [_record(n, encode_record(e)["Data"]) for n, e in enumerate(events)]
    # Ingestion's bytes are the raw line; a producer's other spelling (here over several lines)
    # becomes the canonical line.
    respelled = json.dumps({**json.loads(records[0].data), "Quantity": float(events[0]["Quantity"])}, indent=2).encode()
    assert b"\n" in respelled
    batch = decode_batch([_record(999, respelled)] + records[1:])
    assert batch.lines[1:] == [r.data for r in records[1:]]
    assert batch.lines[0] == records[0].data
    assert b"\n".join(batch.lines) + b"\n" == write_jsonl(batch.events)


def test_price_text_is_the_exact_decimal_text_of_every_accepted_price():
    """The wire item's UnitPrice is repr() of the float, not str(Decimal(repr())): the same text for
    every price normalize_event accepts (<= 3 decimals, |p| <= 10^9), the file's and the extremes."""
    from ecom_core.config import PROJECT_ROOT
    from handlers.events import accept_event, exact_decimal
    from handlers.stream_trigger import _price_text

    prices = {
        accept_event(dict(row.event))["UnitPrice"]
        for row in islice(read_rows(PROJECT_ROOT / "data" / "ecommerce-data.csv.gz"), 60000)
    }
    prices |= {0.0, -0.0, 0.001, -0.001, 0.01, 0.1, 1e9, -1e9, 999999999.999, 123456.789, 2, -11062.06}
    assert len(prices) > 400
    for price in prices:
        assert _price_text(price) == str(exact_decimal(price)), price


def test_an_invoice_belongs_to_the_customer_its_first_line_names():
    """A later line of the invoice naming another customer, or none, is quarantined with the
    reason and not written; the first line claims the invoice (handlers/stream_trigger.keep_owned_lines)."""
    from handlers.stream_trigger import FOREIGN_LINE, GUEST, keep_owned_lines

    first, second, third = _sample_events(3)
    invoice, owner = first["InvoiceNo"], first["CustomerID"]
    assert owner is not None
    lines = [
        first,
        {**second, "InvoiceNo": invoice, "CustomerID": owner + 1},
        {**third, "InvoiceNo": invoice, "CustomerID": None},
    ]
    batch = decode_batch([_record(n, json.dumps(line).encode()) for n, line in enumerate(lines, start=1)])
    owners: dict = {}
    assert keep_owned_lines(batch, 0, owners) == {invoice: owner}
    assert [e["event_id"] for e in batch.events] == [first["event_id"]]
    assert len(batch.items) == len(batch.lines) == len(batch.records) == 1
    assert [(d.record.sequence_number, d.kind) for d in batch.dead_letters] == [
        ("2", FOREIGN_LINE),
        ("3", FOREIGN_LINE),
    ]
    assert "belongs to another customer" in batch.dead_letters[0].reason
    assert "names no customer" in batch.dead_letters[1].reason

    # Stored as a guest invoice: even the line that came first in this batch is not the owner's.
    batch = decode_batch([_record(1, json.dumps(first).encode())])
    assert keep_owned_lines(batch, 0, {invoice: GUEST}) == {}
    assert batch.events == [] and "belongs to a guest" in batch.dead_letters[0].reason
