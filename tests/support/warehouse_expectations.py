"""Independent expectations for the warehouse views, computed with pandas straight from the source CSV.

Nothing here reads the warehouse or imports its SQL: the definitions are re-stated from the view
comments (warehouse/analytics.sql) and PROFILE.md. Money is kept in integer thousandths (unit prices
have at most 3 decimals), so every sum is exact.
"""

from __future__ import annotations

import csv
import gzip
import math
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd

from ecom_core.events import SOURCE_FIELDS

FIELDS = list(SOURCE_FIELDS)
# PROFILE.md's non-product codes, by type (upper-cased code).
SERVICE_TYPES = {
    "POST": "postage",
    "DOT": "postage",
    "C2": "postage",
    "M": "manual",
    "D": "discount",
    "S": "samples",
    "BANK CHARGES": "fee",
    "AMAZONFEE": "fee",
    "CRUK": "fee",
    "B": "adjustment",
}
COUNTRY_NAMES = {"EIRE": "Ireland", "RSA": "South Africa", "USA": "United States"}
NOT_A_COUNTRY = {"Unspecified", "European Community"}

# Windows of the full file (1-based data rows, inclusive) chosen so the slice holds every trap:
# first rows of the file; BANK CHARGES + AMAZONFEE + S + D; customers in two countries (12370,
# 12417, 12431, 12394); the one lower-case "m" and gift vouchers with £; 541431/C541433 (74,215
# units); DCGSSGIRL; Unspecified; PADS; European Community; C556445 (-1 at 38,970); the A
# adjustments; CRUK + more vouchers; 578841 (12,540 at price 0); 581483/C581484 (80,995 units);
# the last rows. Plus a window in every month.
WINDOWS = [
    (1, 700),
    (14401, 14800),
    (29701, 29800),
    (34251, 34500),
    (40301, 40450),
    (42001, 42100),
    (44701, 44800),
    (61551, 61700),
    (84001, 84300),
    (92401, 92600),
    (98101, 98300),
    (124001, 124100),
    (124701, 124800),
    (152651, 153000),
    (157101, 157300),
    (168101, 168200),
    (171151, 171300),
    (177851, 177950),
    (191301, 191450),
    (222601, 222750),
    (262351, 262450),
    (299901, 300050),
    (317401, 317550),
    (340001, 340300),
    (383051, 383150),
    (388951, 389100),
    (389951, 390100),
    (407601, 407700),
    (429201, 429300),
    (480001, 480400),
    (502051, 502200),
    (534001, 534300),
    (540351, 540500),
    (541751, 541909),
]


def write_windows(full_file: Path, windows: list[tuple[int, int]], dest: Path) -> Path:
    """The rows of `windows`, in file order, in the source's own format (ISO-8859-1, CRLF)."""
    with (
        gzip.open(full_file, "rt", encoding="iso-8859-1", newline="") as src,
        open(dest, "w", encoding="iso-8859-1", newline="") as out,
    ):
        reader = csv.reader(src)
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(next(reader))
        last = max(b for _, b in windows)
        for number, row in enumerate(reader, start=1):
            if number > last:
                break
            if any(a <= number <= b for a, b in windows):
                writer.writerow(row)
    return dest


def frame(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, encoding="iso-8859-1", dtype=str, keep_default_na=False)
    df["q"] = df.Quantity.astype(int)
    df["price_milli"] = [int(Decimal(p) * 1000) for p in df.UnitPrice]
    assert all(Decimal(p) * 1000 == int(Decimal(p) * 1000) for p in df.UnitPrice)
    df["amount_milli"] = df.q * df.price_milli
    df["ts"] = pd.to_datetime(df.InvoiceDate, format="%m/%d/%Y %H:%M")
    df["month"] = df.ts.dt.strftime("%Y-%m")
    df["code"] = df.StockCode.str.upper()
    df["product_type"] = [SERVICE_TYPES.get(c, "gift_voucher" if c.startswith("GIFT_") else "product") for c in df.code]
    df["is_product"] = df.product_type == "product"
    df["cancel"] = df.InvoiceNo.str.startswith("C")
    df["adjust"] = df.InvoiceNo.str.startswith("A")
    df["sale"] = ~df.cancel & ~df.adjust
    df["guest"] = df.CustomerID == ""
    df["customer"] = [None if c == "" else int(c) for c in df.CustomerID]
    df["repeat"] = df.duplicated(FIELDS, keep="first")
    return df


def money(milli: int) -> Decimal:
    return Decimal(int(milli)) / 1000


def rate(numerator, denominator) -> Decimal | None:
    if denominator == 0:
        return None
    return (Decimal(int(numerator)) / Decimal(int(denominator))).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


def product_descriptions(df: pd.DataFrame) -> dict[str, str | None]:
    """Per code: the latest non-empty (trimmed) description, priced lines before unpriced ones,
    ties by the greater text; None when the code never had one."""
    best: dict[str, tuple] = {}
    for code, desc, price, ts in zip(df.code, df.Description, df.price_milli, df.ts, strict=True):
        text = desc.strip(" ")
        key = (0 if text == "" else 2 if price > 0 else 1, ts, text)
        if code not in best or key > best[code]:
            best[code] = key
    return {code: (key[2] or None) for code, key in best.items()}


def product_sales(df: pd.DataFrame) -> pd.DataFrame:
    desc = product_descriptions(df)
    g = df.assign(
        sold=df.q.where(~df.cancel & (df.q > 0), 0),
        cancelled=-df.q.where(df.cancel, 0),
        written_off=df.q.where(~df.cancel & (df.q < 0), 0),
    ).groupby("code")
    out = (
        pd.DataFrame(
            {
                "net_quantity": g.q.sum(),
                "revenue_milli": g.amount_milli.sum(),
                "sold_quantity": g.sold.sum(),
                "cancelled_quantity": g.cancelled.sum(),
                "written_off_quantity": g.written_off.sum(),
                "lines": g.size(),
                "invoices": g.InvoiceNo.nunique(),
                "product_type": g.product_type.first(),
            }
        )
        .reset_index()
        .rename(columns={"code": "stock_code"})
    )
    out["description"] = [desc[code] for code in out.stock_code]
    return out


def ranked(products: pd.DataFrame) -> pd.DataFrame:
    products = products.copy()
    by_quantity = products.sort_values(["net_quantity", "stock_code"], ascending=[False, True], kind="mergesort")
    products.loc[by_quantity.index, "quantity_rank"] = range(1, len(products) + 1)
    by_revenue = products.sort_values(["revenue_milli", "stock_code"], ascending=[False, True], kind="mergesort")
    products.loc[by_revenue.index, "revenue_rank"] = range(1, len(products) + 1)
    return products.astype({"quantity_rank": int, "revenue_rank": int})


def reference_date(df: pd.DataFrame):
    """RFM's reference date: the latest day with at least 1% as many lines as the busiest day. (The
    view also leaves out days after the load, which no line of the source file is.) On the slice it
    is its last day, 2011-12-09 (309 lines; busiest 700)."""
    per_day = df.groupby(df.ts.dt.date).size()
    return max(day for day, lines in per_day.items() if 100 * lines >= per_day.max())


def customer_rfm(df: pd.DataFrame) -> list[dict]:
    snapshot = reference_date(df)
    rows = []
    known = df[~df.guest]
    for customer, lines in known.groupby("customer"):
        purchases = lines[~lines.cancel]
        last = purchases.ts.max() if len(purchases) else None
        latest = lines[lines.ts == lines.ts.max()]
        rows.append(
            {
                "customer_id": int(customer),
                "recency_days": None if last is None else (snapshot - last.date()).days,
                "frequency": purchases.InvoiceNo.nunique(),
                "monetary_milli": int(lines.amount_milli.sum()),
                "country": max(latest.Country),
                "first_purchase_ts": None if last is None else purchases.ts.min().to_pydatetime(),
                "last_purchase_ts": None if last is None else last.to_pydatetime(),
                "cancellation_invoices": lines[lines.cancel].InvoiceNo.nunique(),
            }
        )
    n = len(rows)

    def score(at_or_worse: int) -> int:
        # ceil(5 x cumulative share), in the same float arithmetic as SQL's CUME_DIST.
        return math.ceil(5 * (at_or_worse / n))

    never = float("inf")
    for r in rows:
        recency = never if r["recency_days"] is None else r["recency_days"]
        r["r_score"] = score(
            sum(1 for o in rows if (never if o["recency_days"] is None else o["recency_days"]) >= recency)
        )
        r["f_score"] = score(sum(1 for o in rows if o["frequency"] <= r["frequency"]))
        r["m_score"] = score(sum(1 for o in rows if o["monetary_milli"] <= r["monetary_milli"]))
        rs, fs, ms = r["r_score"], r["f_score"], r["m_score"]
        r["rfm_cell"] = f"{rs}{fs}{ms}"
        r["segment"] = (
            "champions"
            if rs >= 4 and fs >= 4 and ms >= 4
            else "loyal"
            if rs >= 3 and fs >= 4
            else "new or promising"
            if rs >= 4 and fs <= 2
            else "at risk"
            if rs <= 2 and fs >= 3
            else "hibernating"
            if rs <= 2
            else "needs attention"
        )
    for rank, r in enumerate(sorted(rows, key=lambda r: (-r["monetary_milli"], r["customer_id"])), start=1):
        r["monetary_rank"] = rank
    return rows


BUCKETS = [
    ("1", 1, 1),
    ("2-5", 2, 5),
    ("6-10", 6, 10),
    ("11-20", 11, 20),
    ("21-50", 21, 50),
    ("51-100", 51, 100),
    ("101-200", 101, 200),
    ("201-500", 201, 500),
    ("501+", 501, None),
]


def invoice_size_distribution(df: pd.DataFrame) -> list[tuple]:
    invoices = df[df.sale].groupby("InvoiceNo").agg(lines=("q", "size"), revenue=("amount_milli", "sum"))
    total = len(invoices)
    out = []
    for order, (label, low, high) in enumerate(BUCKETS, start=1):
        inside = invoices[(invoices.lines >= low) & ((invoices.lines <= high) if high else True)]
        out.append((order, label, low, high, len(inside), money(inside.revenue.sum()), rate(len(inside), total)))
    return out


def data_quality(df: pd.DataFrame) -> list[tuple]:
    trimmed = df.Description.str.strip(" ")
    measures = [
        ("all lines", df.index == df.index),
        ("cancellation lines (C invoices)", df.cancel),
        ("adjustment lines (A invoices)", df.adjust),
        ("guest lines (no customer id)", df.guest),
        ("zero-price lines", df.price_milli == 0),
        ("zero-price lines with a customer", (df.price_milli == 0) & ~df.guest),
        ("negative quantity outside cancellations (write-offs)", ~df.cancel & (df.q < 0)),
        ("repeated source rows (is_duplicate_row)", df.repeat),
        ("service-code lines (not a real product)", ~df.is_product),
        ("lower-case stock codes", df.StockCode != df.code),
        ("missing description", df.Description == ""),
        ("description with leading or trailing spaces", (df.Description != "") & (trimmed != df.Description)),
        ("country Unspecified or European Community", df.Country.isin(NOT_A_COUNTRY)),
    ]
    return [
        (order, name, int(mask.sum()), money(df.amount_milli[mask].sum()))
        for order, (name, mask) in enumerate(measures, start=1)
    ]


def as_datetime(value) -> datetime | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).to_pydatetime()
