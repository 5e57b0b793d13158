"""Reading the Kaggle file as it comes: gzip or plain, ISO-8859-1, CRLF, quoted fields. Streaming."""

from __future__ import annotations

import csv
import gzip
import io
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecom_core.events import SOURCE_FIELDS, uuid5_text

# Fixed namespace: event ids are a pure function of (file name, row number), forever.
EVENT_NAMESPACE = uuid.UUID("6f1c9a52-2f4e-4b0b-9d59-0c7b5e2a8e31")
HEADER = list(SOURCE_FIELDS)
ENCODING = "iso-8859-1"


class SourceError(ValueError):
    """A file that cannot be read as the Kaggle layout; the message names the file and row."""


@dataclass(frozen=True)
class Row:
    number: int  # 1-based data row number (the header is row 0)
    event: dict[str, Any]


def source_id(path: Path) -> str:
    """The file's identity for event ids: its name without a compression suffix."""
    name = path.name
    return name[:-3] if name.endswith(".gz") else name


def event_id(source: str, row_number: int) -> str:
    return uuid5_text(EVENT_NAMESPACE, f"{source}:{row_number}")


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as probe:
        magic = probe.read(2)
    # Returned open: the caller closes it (a `with` here would close it too early).
    raw = gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115
    # newline="" lets the csv module see CRLF and quoted newlines as they are.
    return io.TextIOWrapper(raw, encoding=ENCODING, newline="")


def _number(text: str) -> Any:
    """Parse what parses to a JSON number; anything else goes to the API as text, which names it
    in its 400. (nan, inf and 1e999 parse as floats JSON cannot carry: they stay text too.)"""
    text = text.strip()
    if text == "":
        return None
    # int() refuses any text with a point, so a price goes straight to float(): the raised and
    # caught ValueError was two thirds of this function's time (one per row, for UnitPrice).
    if "." not in text:
        try:
            return int(text)
        except ValueError:
            pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def to_event(source: str, number: int, record: dict[str, str]) -> dict[str, Any]:
    description = record["Description"]
    return {
        "event_id": event_id(source, number),
        "InvoiceNo": record["InvoiceNo"],
        "StockCode": record["StockCode"],
        "Description": description if description != "" else None,
        "Quantity": _number(record["Quantity"]),
        "InvoiceDate": record["InvoiceDate"],
        "UnitPrice": _number(record["UnitPrice"]),
        "CustomerID": _number(record["CustomerID"]),
        "Country": record["Country"] if record["Country"] != "" else None,
    }


def read_rows(path: Path, limit: int | None = None) -> Iterator[Row]:
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    source = source_id(path)
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise SourceError(f"{path}: the file is empty")
        header = [h.strip().lstrip("\ufeff") for h in header]
        if header != HEADER:
            raise SourceError(f"{path}: row 0 (header): expected columns {','.join(HEADER)}, got {','.join(header)}")
        for number, values in enumerate(reader, start=1):
            if limit is not None and number > limit:
                return
            if len(values) != len(HEADER):
                raise SourceError(f"{path}: row {number}: expected {len(HEADER)} fields, got {len(values)}")
            yield Row(number, to_event(source, number, dict(zip(HEADER, values, strict=True))))
