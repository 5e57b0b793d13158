"""The order-line event: the one shape every stage after ingestion speaks.

Ingestion validates and normalises what clients send (handlers/events.py) into an `OrderLine`;
the stream, the trigger, the raw JSON Lines objects and the CSV conversion all carry this shape.
A TypedDict, not a dataclass: the event is JSON on the wire and in S3, and the trigger's hot path
handles hundreds of thousands of them, so it stays a plain dict at run time while type checkers
and readers see its fields.
"""
from __future__ import annotations

from typing import TypedDict

# The Kaggle file's columns, in its order: the header of the source CSV and the event's fields.
SOURCE_FIELDS = ("InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                 "CustomerID", "Country")
EVENT_FIELDS = ("event_id",) + SOURCE_FIELDS


class OrderLine(TypedDict):
    event_id: str            # deterministic (replay: uuid5 of file + row) or assigned at ingestion
    InvoiceNo: str           # 6 digits, or C/A + 6 digits (cancellations, adjustments)
    StockCode: str           # text: 85123A, POST, BANK CHARGES
    Description: str | None  # kept byte for byte, trailing spaces included
    Quantity: int
    InvoiceDate: str         # "YYYY-MM-DDTHH:MM:SS", naive (UK local time, as in the source)
    UnitPrice: int | float
    CustomerID: int | None   # None for guest orders
    Country: str
