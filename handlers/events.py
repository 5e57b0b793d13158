"""The order-line event: validation and normalisation (pure functions, no AWS).

Accepts what clients really send: the Kaggle row as pandas serialises it (CustomerID as a float
like 17850.0 or null, InvoiceNo/StockCode as numbers when a slice happens to be all digits) and
ISO 8601 from newer producers. Emits one canonical shape on the stream: `ecom_core.events.OrderLine`.
"""

from __future__ import annotations

import functools
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ecom_core import contract
from ecom_core.events import EVENT_FIELDS, OrderLine, bound_event_id
from ecom_core.json_codec import InexactNumber

_EVENT_FIELD_SET = frozenset(EVENT_FIELDS)
REQUIRED = ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "Country")
NULLABLE = ("Description", "CustomerID")

KAGGLE_DATE_FORMAT = "%m/%d/%Y %H:%M"
_KAGGLE_DATE = re.compile(r"\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}")
# Its ASCII-digit form, read without strptime (a fifth of the ingestion Lambda's CPU went to it).
_KAGGLE_DATE_ASCII = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4}) ([0-9]{1,2}):([0-9]{2})")
_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
# What the read API's route accepts, so every stored invoice can be looked up again.
INVOICE_NO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
# The owner recorded for an invoice whose first line named no customer (table invoice-owner): the
# stream trigger writes it, the read API reads it.
GUEST = "guest"


@dataclass(frozen=True)
class FieldError:
    index: int | None  # position in the request body; None for a single-object body
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "error": self.message}

    def __str__(self) -> str:
        where = "event" if self.index is None else f"event {self.index}"
        return f"{where}: {self.field}: {self.message}"


class InvalidEvent(ValueError):
    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _inexact(value: Any, field: str, index: int | None, errors: list[FieldError]) -> bool:
    """True (and the field's error noted) for a number the request body held but a float cannot:
    1e-400 (read as 0.0), 1e400 (inf), NaN, 2.55000000000000001 (2.55). json_codec.loads_request
    marks them; taking the float would store something the client did not send."""
    if isinstance(value, InexactNumber):
        errors.append(FieldError(index, field, value.problem))
        return True
    return False


def _code(value: Any, field: str, index: int | None, errors: list[FieldError]) -> str | None:
    """InvoiceNo / StockCode: text, or a whole number that pandas turned into one."""
    if _inexact(value, field, index, errors):
        return None
    if isinstance(value, str):
        text = value.strip()
    elif _is_number(value) and math.isfinite(value) and float(value).is_integer():
        text = str(int(value))
    else:
        errors.append(FieldError(index, field, f"must be a non-empty string, got {type(value).__name__}"))
        return None
    if not text:
        errors.append(FieldError(index, field, "must not be empty"))
        return None
    return _text(text, field, index, errors)


def _text(value: str, field: str, index: int | None, errors: list[FieldError]) -> str | None:
    problem = contract.text_problem(value, contract.TEXT_BYTES[field])
    if problem is None and field == "InvoiceNo" and not INVOICE_NO.fullmatch(value):
        problem = "must be 1-32 letters, digits and ._- starting with a letter or digit (e.g. 536365, C536379)"
    if problem:
        errors.append(FieldError(index, field, problem))
        return None
    return value


def parse_invoice_date(value: str) -> datetime:
    """Kaggle `M/D/YYYY H:MM` (month first, no padding) or ISO 8601 (naive or with an offset)."""
    ascii_form = _KAGGLE_DATE_ASCII.fullmatch(value)
    if ascii_form:
        # The same ranges strptime enforces: datetime() refuses month 13, day 32, 24:00, 8:60, year 0.
        month, day, year, hour, minute = map(int, ascii_form.groups())
        return datetime(year, month, day, hour, minute)
    if _KAGGLE_DATE.fullmatch(value):
        return datetime.strptime(value, KAGGLE_DATE_FORMAT)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        # Stored naive like the source (UK local time); an offset is converted to UTC first.
        # Near year 1 or 9999 that conversion leaves the calendar: OverflowError, a client error.
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


# The per-value checks below are pure functions of one value and an order file repeats few values
# (541,909 lines: 23,260 distinct dates, 1,630 prices), so each is worked out once per process
# (warm Lambda workers keep them): dates and prices were a third of normalize_event's time.
_REMEMBERED = 1 << 16


@functools.lru_cache(maxsize=_REMEMBERED)
def canonical_invoice_date(value: str) -> tuple[str | None, str | None]:
    """(the date as stored, "YYYY-MM-DDTHH:MM:SS"; None) or (None, why it is refused)."""
    try:
        moment = parse_invoice_date(value.strip())
    except (ValueError, OverflowError):
        return None, f"{ascii(value[:40])} is not M/D/YYYY H:MM or ISO 8601"
    problem = contract.date_problem(moment)
    return (None, problem) if problem else (moment.isoformat(timespec="seconds"), None)


def exact_decimal(number: int | float) -> Decimal:
    """The number as the client wrote it: repr() of a float is its shortest round-tripping text, so
    2.55 stays 2.55, not 2.54999... (the price check and the stream trigger's DynamoDB items)."""
    return Decimal(repr(number)) if isinstance(number, float) else Decimal(number)


@functools.lru_cache(maxsize=_REMEMBERED)
def exact_price(price: int | float) -> tuple[Decimal | None, str | None]:
    """(the price as an exact decimal; None) or (None, why it is refused), for a finite number.
    (2 and 2.0 share an entry: equal numbers, the same answer.)"""
    exact = exact_decimal(price)
    problem = contract.price_problem(exact)
    return (None, problem) if problem else (exact, None)


def normalize_event(raw: Any, index: int | None = None, *, assign_id: bool = True) -> OrderLine:
    """Validate one event and return it in canonical form; raise InvalidEvent naming every bad field.

    Every limit is the tightest type downstream (ecom_core/contract.py): an event this accepts can
    be stored by DynamoDB, the raw and staging files and the warehouse, on Postgres and Redshift.
    The stream trigger applies the same function to what it reads, so a record from another
    producer that breaks a limit is quarantined there instead of failing a later stage.
    """
    if not isinstance(raw, dict):
        raise InvalidEvent([FieldError(index, "(event)", f"must be a JSON object, got {type(raw).__name__}")])
    errors: list[FieldError] = []
    unknown = [] if raw.keys() <= _EVENT_FIELD_SET else sorted(set(raw) - _EVENT_FIELD_SET, key=str)
    for name in unknown:
        shown = name if name.isascii() and name.isprintable() else ascii(name)
        errors.append(FieldError(index, shown[:64], "unknown field"))
    for name in REQUIRED:
        if raw.get(name) is None:
            errors.append(FieldError(index, name, "is required"))

    out: dict[str, Any] = {}

    event_id = raw.get("event_id")
    if event_id is None:
        if not assign_id:
            errors.append(FieldError(index, "event_id", "is required"))
        else:
            out["event_id"] = str(uuid.uuid4())
    elif isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id):
        out["event_id"] = event_id
    else:
        errors.append(FieldError(index, "event_id", "must be 1-128 characters of letters, digits and _.:-"))

    for name in ("InvoiceNo", "StockCode"):
        if raw.get(name) is not None:
            out[name] = _code(raw[name], name, index, errors)

    description = raw.get("Description")
    if description is None:
        out["Description"] = None
    elif not isinstance(description, str):
        errors.append(FieldError(index, "Description", f"must be a string or null, got {type(description).__name__}"))
    else:
        # Kept byte for byte (trailing spaces included): the warehouse decides how to clean it.
        out["Description"] = _text(description, "Description", index, errors)

    quantity = raw.get("Quantity")
    if quantity is not None and not _inexact(quantity, "Quantity", index, errors):
        if isinstance(quantity, int) and not isinstance(quantity, bool):
            value = quantity
        elif isinstance(quantity, float) and math.isfinite(quantity) and quantity.is_integer():
            value = int(quantity)
        else:
            errors.append(FieldError(index, "Quantity", f"must be an integer, got {_short(quantity)}"))
            value = None
        problem = contract.quantity_problem(value) if value is not None else None
        if problem:
            errors.append(FieldError(index, "Quantity", problem))
        elif value is not None:
            out["Quantity"] = value

    invoice_date = raw.get("InvoiceDate")
    if invoice_date is not None:
        if not isinstance(invoice_date, str):
            errors.append(FieldError(index, "InvoiceDate", "must be a string (M/D/YYYY H:MM or ISO 8601)"))
        else:
            stored, problem = canonical_invoice_date(invoice_date)
            if problem:
                errors.append(FieldError(index, "InvoiceDate", problem))
            else:
                out["InvoiceDate"] = stored

    price = raw.get("UnitPrice")
    if price is not None and not _inexact(price, "UnitPrice", index, errors):
        if not _is_number(price) or not math.isfinite(price):
            errors.append(FieldError(index, "UnitPrice", f"must be a number, got {_short(price)}"))
        else:
            exact, problem = exact_price(price)
            if exact is not None and "Quantity" in out:
                problem = contract.amount_problem(out["Quantity"], exact)
            if problem:
                errors.append(FieldError(index, "UnitPrice", problem))
            else:
                out["UnitPrice"] = price

    customer = raw.get("CustomerID")
    if customer is None:
        out["CustomerID"] = None
    elif _inexact(customer, "CustomerID", index, errors):
        pass
    elif (
        _is_number(customer)
        and math.isfinite(customer)
        and float(customer).is_integer()
        and contract.customer_problem(int(customer)) is None
    ):
        out["CustomerID"] = int(customer)
    else:
        errors.append(
            FieldError(
                index,
                "CustomerID",
                f"must be a positive integer below {contract.MAX_CUSTOMER_ID} or null, got {_short(customer)}",
            )
        )

    country = raw.get("Country")
    if country is not None:
        if not isinstance(country, str) or not country.strip():
            errors.append(FieldError(index, "Country", "must be a non-empty string"))
        else:
            out["Country"] = _text(country, "Country", index, errors)

    if errors:
        raise InvalidEvent(errors)
    # Without errors every field was set, in EVENT_FIELDS order (the order above): the canonical event.
    return out  # type: ignore[return-value]


def _short(value: Any) -> str:
    """A client's value quoted in an error: ASCII only (no control or invalid characters echoed), short."""
    return ascii(value)[:80]


def accept_event(raw: Any, index: int | None = None) -> OrderLine:
    """What ingestion puts on the stream for one client event: validated, normalised, and stored
    under the id bound to its content (ecom_core.events.bound_event_id)."""
    event = normalize_event(raw, index)
    event["event_id"] = bound_event_id(event)
    return event


def normalize_batch(body: Any, max_events: int) -> list[OrderLine]:
    """One event object or a JSON array of up to `max_events`. All or nothing."""
    if isinstance(body, dict):
        return [accept_event(body, None)]
    if not isinstance(body, list):
        raise InvalidEvent([FieldError(None, "(body)", "must be an event object or an array of events")])
    if not body:
        raise InvalidEvent([FieldError(None, "(body)", "the array is empty")])
    if len(body) > max_events:
        raise InvalidEvent([FieldError(None, "(body)", f"{len(body)} events; at most {max_events} per request")])
    events: list[OrderLine] = []
    errors: list[FieldError] = []
    for index, raw in enumerate(body):
        try:
            events.append(normalize_event(raw, index))
        except InvalidEvent as exc:
            errors.extend(exc.errors)
    if errors:
        raise InvalidEvent(errors)
    seen: set[str] = set()
    for index, event in enumerate(events):
        if event["event_id"] in seen:
            errors.append(FieldError(index, "event_id", "appears twice in this request"))
        seen.add(event["event_id"])
    if errors:
        raise InvalidEvent(errors)
    for event in events:
        event["event_id"] = bound_event_id(event)
    return events
