"""The staging CSV contract shared by transform (writer), catalog (crawler) and load (reader)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation

# (CSV column, event field, warehouse column). Snake case, lower: what Glue and Redshift expect.
COLUMNS: list[tuple[str, str, str]] = [
    ("event_id", "event_id", "event_id"),
    ("invoice_no", "InvoiceNo", "invoice_no"),
    ("stock_code", "StockCode", "stock_code"),
    ("description", "Description", "description"),
    ("quantity", "Quantity", "quantity"),
    ("invoice_date", "InvoiceDate", "invoice_ts"),
    ("unit_price", "UnitPrice", "unit_price"),
    ("customer_id", "CustomerID", "customer_id"),
    ("country", "Country", "country"),
]
CSV_HEADER = [c for c, _, _ in COLUMNS]
WAREHOUSE_COLUMNS = [w for _, _, w in COLUMNS]

# Codes that look numeric in a slice but are not numbers (StockCode 85123A, InvoiceNo C536379):
# the crawler never narrows them to a numeric type, whatever the sample shows.
ALWAYS_STRING = {"event_id", "invoice_no", "stock_code", "description", "country"}


class SchemaDrift(RuntimeError):
    """A staging file whose columns differ from the warehouse's. Never loaded misaligned."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key


# ---------------------------------------------------------------- what every stage can store
# One rule: what ingestion accepts, every later stage can store. Each limit is the tightest type
# downstream of the API (DynamoDB numbers, the warehouse columns on Postgres *and* Redshift, where
# varchar(n) counts bytes). Ingestion (handlers/events.py) and the load's row check (etl/load.py)
# both ask these functions, so the two cannot drift apart.
REPLACEMENT_CHARACTER = "\ufffd"  # what a lenient decoder puts where bytes were not UTF-8
TEXT_BYTES = {"event_id": 128, "InvoiceNo": 32, "StockCode": 32, "Description": 1000, "Country": 64}
MAX_ABS_QUANTITY = 10**9  # warehouse integer (int4)
PRICE_DECIMALS = 3  # numeric(14,3) would round a 4th decimal away silently
MAX_ABS_UNIT_PRICE = 10**9  # numeric(14,3) holds < 10^11; DynamoDB any
_PRICE_STEP = Decimal(1).scaleb(-PRICE_DECIMALS)
MAX_ABS_AMOUNT = 10**15  # amount = quantity * unit_price, numeric(18,3)
MAX_CUSTOMER_ID = 10**12  # bigint; the read API serves ids of 1-12 digits
EARLIEST_INVOICE_DATE = datetime(1970, 1, 1)
LATEST_INVOICE_DATE = datetime(2100, 1, 1)  # exclusive


def text_problem(value: str, max_bytes: int) -> str | None:
    """None if `value` can be stored and served back as it is; else why not.

    Refused: control characters (NUL breaks Postgres text), format characters (bidi overrides,
    zero-width joiners: text that displays unlike its bytes), lone surrogates (not Unicode; they
    cannot be encoded as UTF-8), private-use and unassigned code points, line and paragraph
    separators. `str.isprintable()` is exactly that set (plus ordinary spaces allowed), at C speed.
    Also refused: U+FFFD, the replacement character. It is what bytes that were not UTF-8 become
    when a decoder replaces them (API Gateway does, for a text body): text holding one is not the
    text that was sent, and no stage could give the original back.
    """
    if not value.isprintable():
        bad = next(ch for ch in value if not ch.isprintable())
        return f"contains the character U+{ord(bad):04X}, which is not accepted (control, format or invalid)"
    if REPLACEMENT_CHARACTER in value:
        return (
            f"contains U+FFFD at character {value.index(REPLACEMENT_CHARACTER)}: the replacement for bytes "
            f"that were not valid UTF-8; send the text as UTF-8"
        )
    size = len(value.encode("utf-8"))
    if size > max_bytes:
        return f"longer than {max_bytes} bytes (UTF-8)"
    return None


def price_problem(price: Decimal) -> str | None:
    if not price.is_finite():
        return "must be a finite number"
    if abs(price) > MAX_ABS_UNIT_PRICE:
        return f"out of range (|UnitPrice| <= {MAX_ABS_UNIT_PRICE})"
    # Exact comparison after rounding to the warehouse's scale (2.550 passes, 1E-200 does not: it
    # would underflow DynamoDB's number type and be rounded to 0 by the warehouse).
    if price != price.quantize(_PRICE_STEP):
        return f"has more than {PRICE_DECIMALS} decimal places"
    return None


def quantity_problem(quantity: int) -> str | None:
    return None if abs(quantity) <= MAX_ABS_QUANTITY else f"out of range (|Quantity| <= {MAX_ABS_QUANTITY})"


def amount_problem(quantity: int, price: Decimal) -> str | None:
    if abs(quantity * price) >= MAX_ABS_AMOUNT:
        return f"Quantity x UnitPrice out of range (|amount| < {MAX_ABS_AMOUNT})"
    return None


def date_problem(moment: datetime) -> str | None:
    if not EARLIEST_INVOICE_DATE <= moment < LATEST_INVOICE_DATE:
        return f"out of range ({EARLIEST_INVOICE_DATE:%Y-%m-%d} to before {LATEST_INVOICE_DATE:%Y-%m-%d})"
    return None


def customer_problem(customer_id: int) -> str | None:
    return None if 0 < customer_id < MAX_CUSTOMER_ID else f"must be a positive integer below {MAX_CUSTOMER_ID}"


def csv_row_problem(row: dict[str, str]) -> str | None:
    """The warehouse's check of one staging CSV row (strings, as COPY reads them): None if the
    row can be loaded, else "column: reason". A second line of defence: rows that never passed
    ingestion (another producer, an old version) are set aside instead of failing the load."""
    for column in ("event_id", "invoice_no", "stock_code", "country"):
        if not row.get(column):
            return f"{column}: is required"
    for column, field in (
        ("event_id", "event_id"),
        ("invoice_no", "InvoiceNo"),
        ("stock_code", "StockCode"),
        ("description", "Description"),
        ("country", "Country"),
    ):
        problem = text_problem(row.get(column) or "", TEXT_BYTES[field])
        if problem:
            return f"{column}: {problem}"
    try:
        quantity = int(row.get("quantity") or "")
    except ValueError:
        return "quantity: is not an integer"
    try:
        price = Decimal(row.get("unit_price") or "")
    except InvalidOperation:
        return "unit_price: is not a number"
    try:
        moment = datetime.fromisoformat(row.get("invoice_date") or "")
    except ValueError:
        return "invoice_date: is not an ISO 8601 timestamp"
    if moment.tzinfo is not None:
        return "invoice_date: must be a local timestamp without an offset"
    customer = row.get("customer_id") or ""
    if customer and not (customer.isdigit() and customer.isascii() and len(customer) <= 18):
        return "customer_id: is not an integer"
    for column, problem in (
        ("quantity", quantity_problem(quantity)),
        ("unit_price", price_problem(price)),
        ("invoice_date", date_problem(moment)),
        ("customer_id", customer_problem(int(customer)) if customer else None),
    ):
        if problem:
            return f"{column}: {problem}"
    amount = amount_problem(quantity, price)
    return f"unit_price: {amount}" if amount else None
