"""Data for the read-API tests and benchmark: filtered copies of the Kaggle file, with expectations."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path

from ecom_core.config import FULL_FILE

# 14911 has the most invoices (248, 47 of them cancellations); 573585 the most lines (1,114, a guest
# invoice); A563185..7 are the file's only adjustments (guests); 12626 is a second, small customer.
BIG_CUSTOMER = 14911
BIG_CUSTOMER_INVOICES = 248
BIG_INVOICE = "573585"
BIG_INVOICE_LINES = 1114
OTHER_CUSTOMER = 12626
ADJUSTMENTS = ("A563185", "A563186", "A563187")


def write_filtered(
    dest: Path, *, customers: Iterable[int] = (), invoices: Iterable[str] = (), first_rows: int = 0
) -> Path:
    """The first `first_rows` data rows plus every later row of the given customers or invoices,
    in the file's own format (ISO-8859-1, CRLF). Event ids derive from this file's name + row."""
    customers = {str(c) for c in customers}
    invoices = set(invoices)
    with (
        gzip.open(FULL_FILE, "rt", encoding="iso-8859-1", newline="") as src,
        open(dest, "w", encoding="iso-8859-1", newline="") as out,
    ):
        reader = csv.reader(src)
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(next(reader))
        for number, row in enumerate(reader, start=1):
            if number <= first_rows or row[0] in invoices or row[6] in customers:
                writer.writerow(row)
    return dest


def expectations(path: Path) -> dict:
    """Per invoice: customer, line count, exact total, earliest date; per customer: its invoices."""
    invoices: dict[str, dict] = {}
    with open(path, encoding="iso-8859-1", newline="") as f:
        for row in csv.DictReader(f):
            inv = invoices.setdefault(
                row["InvoiceNo"], {"customer": row["CustomerID"] or None, "lines": 0, "total": Decimal(0), "rows": []}
            )
            inv["lines"] += 1
            inv["total"] += Decimal(row["Quantity"]) * Decimal(row["UnitPrice"])
            inv["rows"].append((row["StockCode"], int(row["Quantity"]), Decimal(row["UnitPrice"])))
    by_customer: dict[int, set[str]] = {}
    for number, inv in invoices.items():
        if inv["customer"]:
            by_customer.setdefault(int(inv["customer"]), set()).add(number)
    return {"invoices": invoices, "by_customer": by_customer}
