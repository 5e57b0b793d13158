"""The staging CSV contract shared by transform (writer), catalog (crawler) and load (reader)."""
from __future__ import annotations

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
