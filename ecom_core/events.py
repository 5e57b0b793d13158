"""The order-line event: the one shape every stage after ingestion speaks.

Ingestion validates and normalises what clients send (handlers/events.py) into an `OrderLine`;
the stream, the trigger, the raw JSON Lines objects and the CSV conversion all carry this shape.
A TypedDict, not a dataclass: the event is JSON on the wire and in S3, and the trigger's hot path
handles hundreds of thousands of them, so it stays a plain dict at run time while type checkers
and readers see its fields.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from typing import TypedDict

from ecom_core import json_codec

# The Kaggle file's columns, in its order: the header of the source CSV and the event's fields.
SOURCE_FIELDS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
EVENT_FIELDS = ("event_id",) + SOURCE_FIELDS


class OrderLine(TypedDict):
    event_id: str  # deterministic (replay: uuid5 of file + row) or assigned at ingestion
    InvoiceNo: str  # 6 digits, or C/A + 6 digits (cancellations, adjustments)
    StockCode: str  # text: 85123A, POST, BANK CHARGES
    Description: str | None  # kept byte for byte, trailing spaces included
    Quantity: int
    InvoiceDate: str  # "YYYY-MM-DDTHH:MM:SS", naive (UK local time, as in the source)
    UnitPrice: int | float
    CustomerID: int | None  # None for guest orders
    Country: str


def event_json(line: OrderLine) -> bytes:
    """The event's canonical JSON (compact, UTF-8, fields in order): the stream record's data and
    a line of the raw JSON Lines objects. (json_codec: the same bytes with or without orjson.)"""
    return json_codec.dumps(line)


# Fixed forever: stored event ids are a pure function of (client's id, content).
BOUND_ID_NAMESPACE = uuid.UUID("3c0f5a7e-8d4b-4f63-a1d2-9b7e6c5d4f10")


def canonical_content(line: OrderLine) -> str:
    """The event's content as one string: equal values give equal text (UnitPrice 2, 2.0 and
    2.000 are one price: at most 3 decimals and |p| <= 10^9, so equal prices are equal floats;
    CustomerID 17850.0 was already normalised to 17850). Fields are joined by U+001F and a null
    is U+0000: neither can occur in validated text, so two different events never share a text."""
    values = (
        line["InvoiceNo"],
        line["StockCode"],
        line["Description"],
        line["Quantity"],
        line["InvoiceDate"],
        repr(float(line["UnitPrice"])),
        line["CustomerID"],
        line["Country"],
    )
    return "\x1f".join("\x00" if v is None else str(v) for v in values)


def uuid5_text(namespace: uuid.UUID, name: str) -> str:
    """`str(uuid.uuid5(namespace, name))` without building a UUID object (two thirds of its cost;
    ingestion computes one per accepted event and the replay one per row)."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def bound_event_id(line: OrderLine) -> str:
    """The id an accepted event is stored under: UUID5 of the client's id and the content.

    Ids are guessable (the replay's come from the public file), and every store is keyed by event
    id. Binding the id to the content means a POST can never change or remove a line another POST
    created: the same id with the same content is the same event (idempotent, a replayed file stays
    exactly-once); the same id with other content is another event, stored beside the first.
    """
    return uuid5_text(BOUND_ID_NAMESPACE, line["event_id"] + "\x1f" + canonical_content(line))


# Order-free fingerprint of a set of event ids: the sum of each id's first 60 md5 bits, modulo 2^63
# (Postgres computes the same number in SQL, so the bench can compare a table with the file).
DIGEST_MODULUS = 2**63


def id_hash(event_id: str) -> int:
    return int(hashlib.md5(event_id.encode()).hexdigest()[:15], 16)


def id_digest(event_ids: Iterable[str]) -> int:
    total = 0
    for event_id in event_ids:
        total = (total + id_hash(event_id)) % DIGEST_MODULUS
    return total


def record_field(data: bytes | str, name: str) -> object | None:
    """A top-level field of a raw stream record, or None when the record is not a JSON object
    holding it: not UTF-8, not JSON, or nested too deep to parse. A hostile record is quarantined
    by the trigger, and the operator's tools that read it later (reconcile, dead-letter redrive)
    must go on past it: Python's parser raises RecursionError for deep nesting, not ValueError."""
    try:
        payload = json_codec.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return payload.get(name) if isinstance(payload, dict) else None
