"""The star schema and the analytics views on a slice with every trap, against pandas, to the cent."""

from __future__ import annotations

import csv
import io
import os
import random
import re
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from bootstrap.reset import empty_stores
from ecom_core.config import FULL_FILE
from etl.run import run_once
from tests.support import warehouse_expectations as expect
from tests.support.helpers import load_staged, replay_file, warehouse_rows
from warehouse.star import ROW_FIELDS

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def trap_slice(tmp_path_factory):
    path = expect.write_windows(FULL_FILE, expect.WINDOWS, tmp_path_factory.mktemp("warehouse") / "trap-slice.csv")
    return path, expect.frame(path)


@pytest.fixture(scope="module")
def loaded(stack_env, trap_slice):
    """The slice replayed through the whole pipeline once for this module (API -> ... -> warehouse)."""
    path, df = trap_slice
    empty_stores(stack_env["cfg"])
    result = replay_file(stack_env, path, concurrency=3)
    assert result.accepted == len(df) and result.rejected == []
    run = run_once(stack_env["cfg"])
    assert run.transform.errors == [] and run.load.rows_inserted == len(df)
    return df


def rows_as_dicts(sql: str) -> list[dict]:
    from warehouse import db

    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def test_the_slice_holds_every_trap(trap_slice):
    _, df = trap_slice
    service = set(df.code[~df.is_product])
    assert {"POST", "DOT", "M", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "B"} <= service
    assert any(c.startswith("GIFT_") for c in service) and (df.Description.str.contains("£")).sum() >= 3
    assert df.cancel.sum() > 100 and df.adjust.sum() == 3 and df.guest.sum() > 500
    assert ((df.price_milli == 0) & ~df.guest).sum() > 0 and (~df.cancel & (df.q < 0)).sum() > 0
    assert df.repeat.sum() > 30
    lower = df[df.StockCode != df.code]
    assert len(lower) > 20 and lower.code.isin(set(df.StockCode)).any()  # same code in both cases
    assert "m" in set(df.StockCode) and "M" in set(df.StockCode)
    assert df.Description.str.endswith(" ").sum() > 1000 and (df.Description == "").sum() > 0
    assert {"Unspecified", "European Community", "EIRE"} <= set(df.Country)
    per_customer = df[~df.guest].groupby("customer").Country.nunique()
    assert (per_customer > 1).sum() >= 2  # customers in two countries
    assert df.month.nunique() == 13  # every month, Dec 2010 - Dec 2011
    assert {"581483", "C581484", "541431", "C541433", "578841", "C556445"} <= set(df.InvoiceNo)
    # Some product's latest description is a write-off note on an unpriced line ("?", "check"):
    # "most recent description" must skip it, or the slice could not tell the rules apart.
    described = df[df.Description.str.strip() != ""].sort_values("ts", kind="mergesort")
    naive_latest = described.groupby("code").Description.last().str.strip()
    chosen = expect.product_descriptions(df)
    assert any(chosen[code] != text for code, text in naive_latest.items())


def test_facts_flags_and_dimensions(loaded):
    df = loaded
    fact = rows_as_dicts(
        'SELECT count(*) AS lines, sum("amount") AS revenue, '
        'sum(CASE WHEN "is_duplicate_row" THEN 1 ELSE 0 END) AS repeats, '
        'sum(CASE WHEN "is_cancellation" THEN 1 ELSE 0 END) AS cancellations, '
        'sum(CASE WHEN "is_adjustment" THEN 1 ELSE 0 END) AS adjustments, '
        'sum(CASE WHEN "is_guest" THEN 1 ELSE 0 END) AS guests, '
        'sum(CASE WHEN "is_zero_price" THEN 1 ELSE 0 END) AS zero_price '
        "FROM dw.fact_sales_line"
    )[0]
    assert fact == {
        "lines": len(df),
        "revenue": expect.money(df.amount_milli.sum()),
        "repeats": df.repeat.sum(),
        "cancellations": df.cancel.sum(),
        "adjustments": df.adjust.sum(),
        "guests": df.guest.sum(),
        "zero_price": (df.price_milli == 0).sum(),
    }
    # Within every group of identical source rows exactly one event is left unflagged.
    bad_groups = warehouse_rows(
        'SELECT count(*) FROM (SELECT count(*) AS n, sum(CASE WHEN "is_duplicate_row" THEN 1 ELSE 0 END) AS flagged '
        'FROM dw.fact_sales_line GROUP BY "invoice_no", "stock_code", "description", "quantity", "invoice_ts", '
        '"unit_price", "customer_id", "country") AS g WHERE g.flagged <> g.n - 1'
    )
    assert bad_groups == [(0,)]
    # Revenue excluding repeated rows, as an analyst would filter it.
    assert warehouse_rows('SELECT sum("amount") FROM dw.fact_sales_line WHERE NOT "is_duplicate_row"')[0][
        0
    ] == expect.money(df.amount_milli[~df.repeat].sum())

    products = {r["product_code"]: r for r in rows_as_dicts("SELECT * FROM dw.dim_product")}
    descriptions = expect.product_descriptions(df)
    assert set(products) == set(df.code)
    assert {c: p["description"] for c, p in products.items()} == descriptions
    types = df.groupby("code").product_type.first().to_dict()
    assert {c: p["product_type"] for c, p in products.items()} == types
    assert {c: p["is_product"] for c, p in products.items()} == {c: t == "product" for c, t in types.items()}
    first_last = df.groupby("code").ts.agg(["min", "max"])
    assert {c: (p["first_seen_ts"], p["last_seen_ts"]) for c, p in products.items()} == {
        c: (r["min"].to_pydatetime(), r["max"].to_pydatetime()) for c, r in first_last.iterrows()
    }

    customers = {r["customer_id"]: r for r in rows_as_dicts("SELECT * FROM dw.dim_customer")}
    expected_customers = {r["customer_id"]: r for r in expect.customer_rfm(df)}
    assert set(customers) == set(expected_customers)
    assert {c: r["country"] for c, r in customers.items()} == {c: r["country"] for c, r in expected_customers.items()}
    assert sum(1 for c in customers.values() if c["country"] != df[df.customer == c["customer_id"]].Country.iloc[0]) > 0

    countries = rows_as_dicts("SELECT * FROM dw.dim_country")
    assert {r["country"]: (r["country_name"], r["is_specific"]) for r in countries} == {
        c: (expect.COUNTRY_NAMES.get(c, c), c not in expect.NOT_A_COUNTRY) for c in set(df.Country)
    }
    dates = rows_as_dicts(
        'SELECT "date_key", "calendar_date", "month_label", "day_name", "is_weekend" FROM dw.dim_date'
    )
    days = sorted(set(df.ts.dt.date))
    assert sorted(
        (r["date_key"], r["calendar_date"], r["month_label"], r["day_name"], r["is_weekend"]) for r in dates
    ) == [(int(d.strftime("%Y%m%d")), d, d.strftime("%Y-%m"), d.strftime("%a"), d.weekday() >= 5) for d in days]
    # The star joins lose nothing: every line finds its dimension rows.
    assert warehouse_rows("SELECT count(*) FROM analytics.sales_line") == [(len(df),)]


def _product_rows(products, with_type: bool) -> dict:
    return {
        r.stock_code: {
            "stock_code": r.stock_code,
            "description": r.description,
            **({"product_type": r.product_type} if with_type else {}),
            "net_quantity": r.net_quantity,
            "revenue": expect.money(r.revenue_milli),
            "sold_quantity": r.sold_quantity,
            "cancelled_quantity": r.cancelled_quantity,
            "written_off_quantity": r.written_off_quantity,
            "lines": r.lines,
            "invoices": r.invoices,
            "quantity_rank": r.quantity_rank,
            "revenue_rank": r.revenue_rank,
        }
        for r in products.itertuples()
    }


def test_top_products(loaded):
    df = loaded
    products = expect.product_sales(df)
    real = expect.ranked(products[products.product_type == "product"])
    got = rows_as_dicts("SELECT * FROM analytics.top_products")
    assert {r["stock_code"]: r for r in got} == _product_rows(real, with_type=False)
    assert [r["quantity_rank"] for r in got] == list(range(1, len(got) + 1))  # the view is ordered
    assert not set(got[i]["stock_code"] for i in range(len(got))) & set(expect.SERVICE_TYPES)

    everything = expect.ranked(products)
    got_all = rows_as_dicts("SELECT * FROM analytics.top_products_all_codes")
    assert {r["stock_code"]: r for r in got_all} == _product_rows(everything, with_type=True)
    # The answer to "which items had the most purchases", spelled out.
    top5 = real.sort_values("quantity_rank").head(5)
    assert [(r["stock_code"], r["net_quantity"]) for r in got[:5]] == list(
        zip(top5.stock_code, top5.net_quantity, strict=True)
    )


def test_revenue_by_month_and_country(loaded):
    df = loaded
    got = rows_as_dicts("SELECT * FROM analytics.revenue_by_month")
    expected = []
    for month, m in df.groupby("month"):
        expected.append(
            {
                "month": month,
                "revenue": expect.money(m.amount_milli.sum()),
                "product_revenue": expect.money(m.amount_milli[m.is_product].sum()),
                "sales_revenue": expect.money(m.amount_milli[m.sale].sum()),
                "cancelled_revenue": expect.money(m.amount_milli[m.cancel].sum()),
                "adjustment_revenue": expect.money(m.amount_milli[m.adjust].sum()),
                "revenue_excluding_repeated_rows": expect.money(m.amount_milli[~m.repeat].sum()),
                "sales_invoices": m.InvoiceNo[m.sale].nunique(),
                "customers": m.customer.dropna().nunique(),
                "lines": len(m),
            }
        )
    assert got == expected
    assert sum(r["revenue"] for r in got) == expect.money(df.amount_milli.sum())

    got = rows_as_dicts("SELECT * FROM analytics.revenue_by_country")
    expected = []
    for country, c in df.groupby("Country"):
        expected.append(
            {
                "country": country,
                "country_name": expect.COUNTRY_NAMES.get(country, country),
                "revenue": expect.money(c.amount_milli.sum()),
                "guest_revenue": expect.money(c.amount_milli[c.guest].sum()),
                "customers": c.customer.dropna().nunique(),
                "sales_invoices": c.InvoiceNo[c.sale].nunique(),
                "lines": len(c),
            }
        )
    expected.sort(key=lambda r: (-r["revenue"], r["country"]))
    assert got == expected


def test_cancellation_rates(loaded):
    df = loaded
    expected = []
    for month, m in df.groupby("month"):
        sales, cancels = m.InvoiceNo[m.sale].nunique(), m.InvoiceNo[m.cancel].nunique()
        sold = m.amount_milli[m.sale & (m.q > 0)].sum()
        cancelled = -m.amount_milli[m.cancel].sum()
        expected.append(
            {
                "month": month,
                "sales_invoices": sales,
                "cancellation_invoices": cancels,
                "invoice_cancellation_rate": expect.rate(cancels, sales),
                "sold_revenue": expect.money(sold),
                "cancelled_revenue": expect.money(cancelled),
                "revenue_cancellation_rate": expect.rate(cancelled, sold),
            }
        )
    assert rows_as_dicts("SELECT * FROM analytics.cancellation_rate_by_month") == expected

    products = expect.product_sales(df)
    real = products[products.product_type == "product"]
    expected = {
        r.stock_code: {
            "stock_code": r.stock_code,
            "description": r.description,
            "sold_quantity": r.sold_quantity,
            "cancelled_quantity": r.cancelled_quantity,
            "cancellation_rate": expect.rate(r.cancelled_quantity, r.sold_quantity),
            "lines": r.lines,
        }
        for r in real.itertuples()
    }
    got = rows_as_dicts("SELECT * FROM analytics.cancellation_rate_by_product")
    assert {r["stock_code"]: r for r in got} == expected
    assert got[0]["cancelled_quantity"] == real.cancelled_quantity.max() == 80995  # C581484


def test_customer_rfm_and_segments(loaded):
    df = loaded
    expected = expect.customer_rfm(df)
    got = rows_as_dicts("SELECT * FROM analytics.customer_rfm")
    want = [
        {
            "customer_id": r["customer_id"],
            "recency_days": r["recency_days"],
            "frequency": r["frequency"],
            "monetary": expect.money(r["monetary_milli"]),
            "r_score": r["r_score"],
            "f_score": r["f_score"],
            "m_score": r["m_score"],
            "rfm_cell": r["rfm_cell"],
            "segment": r["segment"],
            "monetary_rank": r["monetary_rank"],
            "country": r["country"],
            "first_purchase_ts": r["first_purchase_ts"],
            "last_purchase_ts": r["last_purchase_ts"],
            "cancellation_invoices": r["cancellation_invoices"],
        }
        for r in sorted(expected, key=lambda r: r["monetary_rank"])
    ]
    assert got == want
    assert any(r["recency_days"] is None for r in got)  # customers with only cancellations
    assert len({r["segment"] for r in got}) >= 4

    segments = {}
    for r in expected:
        s = segments.setdefault(r["segment"], {"customers": 0, "monetary": 0, "recency": [], "frequency": []})
        s["customers"] += 1
        s["monetary"] += r["monetary_milli"]
        if r["recency_days"] is not None:
            s["recency"].append(r["recency_days"])
        s["frequency"].append(r["frequency"])
    got = {r["segment"]: r for r in rows_as_dicts("SELECT * FROM analytics.rfm_segments")}

    def avg(values, places):
        if not values:
            return None
        return (Decimal(sum(values)) / len(values)).quantize(Decimal(places), rounding=ROUND_HALF_UP)

    assert got == {
        name: {
            "segment": name,
            "customers": s["customers"],
            "monetary": expect.money(s["monetary"]),
            "avg_recency_days": avg(s["recency"], "0.1"),
            "avg_frequency": avg(s["frequency"], "0.01"),
        }
        for name, s in segments.items()
    }


def _guest_lines(prefix: str, invoice_no: str, moment: str, count: int) -> bytes:
    """`count` guest lines (no customer id) of one new invoice at `moment`, as a staging CSV."""
    from ecom_core import contract

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(contract.CSV_HEADER)
    for n in range(count):
        writer.writerow(
            [
                f"{prefix}-{n:03d}",
                invoice_no,
                "85123A",
                "WHITE HANGING HEART T-LIGHT HOLDER",
                n + 1,
                moment,
                "2.55",
                "",
                "United Kingdom",
            ]
        )
    return out.getvalue().encode("utf-8")


def test_rfm_reference_date_ignores_outlying_lines(stack_env, loaded):
    """RFM's reference date cannot be moved by outlying lines: a batch dated 2099-12-31 (after its
    own load: impossible, however many) and one line the day after the data's last day (plausible
    but alone: under 1% of the busiest day's lines) leave every recency, score and segment as it
    was. Under the old rule (the last day in the data) both moved every customer. A real new day,
    with a normal number of lines, still moves the date: then every recency grows by one day."""
    from datetime import date

    from ecom_core import aws, config
    from warehouse import db

    def rfm():
        return (
            rows_as_dicts("SELECT * FROM analytics.customer_rfm"),
            rows_as_dicts("SELECT * FROM analytics.rfm_segments"),
        )

    before, segments_before = rfm()
    assert max(r["last_purchase_ts"] for r in before if r["last_purchase_ts"]).date() == date(2011, 12, 9)
    tables = ("dim_product", "dim_customer", "dim_country", "dim_date", "load_manifest")
    saved = {t: warehouse_rows(f"SELECT * FROM dw.{t}") for t in tables}
    busiest = warehouse_rows(
        'SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM dw.fact_sales_line GROUP BY CAST("invoice_ts" AS DATE)) AS d'
    )[0][0]
    future_lines = busiest // 100 + 5  # above 1% of the busiest day: only "not after the load" stops them
    files = [
        ("rfm-outliers/future.csv", _guest_lines("rfm-outlier-future", "990001", "2099-12-31T12:00:00", future_lines)),
        ("rfm-outliers/next-day.csv", _guest_lines("rfm-outlier-next", "990002", "2011-12-10T09:00:00", 1)),
    ]
    more = (
        "rfm-outliers/next-day-more.csv",
        _guest_lines("rfm-outlier-more", "990003", "2011-12-10T10:00:00", future_lines),
    )
    try:
        outcomes = load_staged(stack_env["cfg"], files)
        assert all(outcome is not None for _, outcome in outcomes), outcomes
        # The plain last day in the data is now 2099-12-31: the old reference date.
        assert warehouse_rows('SELECT CAST(MAX("invoice_ts") AS DATE) FROM dw.fact_sales_line') == [
            (date(2099, 12, 31),)
        ]
        assert warehouse_rows(
            'SELECT COUNT(*) FROM dw.fact_sales_line WHERE CAST("invoice_ts" AS DATE) = %s', (date(2011, 12, 10),)
        ) == [(1,)]
        after, segments_after = rfm()
        assert after == before
        assert segments_after == segments_before

        # A real new day (more than 1% of the busiest day's lines) moves the reference date by one day.
        assert load_staged(stack_env["cfg"], [more])[0][1] is not None
        moved, _ = rfm()
        assert [(r["customer_id"], r["recency_days"]) for r in moved] == [
            (r["customer_id"], None if r["recency_days"] is None else r["recency_days"] + 1) for r in before
        ]
        assert [(r["customer_id"], r["rfm_cell"], r["segment"]) for r in moved] == [
            (r["customer_id"], r["rfm_cell"], r["segment"]) for r in before
        ]
    finally:
        # Leave the warehouse as the pipeline wrote it, for the tests that follow.
        with db.connection() as conn:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM dw.fact_sales_line WHERE event_id LIKE %s", ("rfm-outlier-%",))
                for table, rows in saved.items():
                    cur.execute(f"DELETE FROM dw.{table}")
                    for row in rows:
                        cur.execute(f"INSERT INTO dw.{table} VALUES ({', '.join(['%s'] * len(row))})", row)
            conn.commit()
        s3 = aws.client("s3", stack_env["cfg"])
        for key, _ in files + [more]:
            s3.delete_object(Bucket=config.resources().staging_bucket, Key=key)
    assert rfm() == (before, segments_before)
    assert warehouse_rows("SELECT count(*) FROM analytics.sales_line") == [(len(loaded),)]


def test_invoice_sizes_and_data_quality(loaded):
    df = loaded
    got = warehouse_rows("SELECT * FROM analytics.invoice_size_distribution")
    assert got == expect.invoice_size_distribution(df)
    assert sum(r[4] for r in got) == df.InvoiceNo[df.sale].nunique()
    assert warehouse_rows("SELECT * FROM analytics.data_quality") == expect.data_quality(df)


def test_any_file_order_gives_the_same_warehouse(stack_env, loaded):
    """Flags and dimensions must not depend on which file loads first: reload the same events cut
    into different files, in shuffled order, and compare with the pipeline's result."""
    from ecom_core import contract
    from warehouse import db

    def snapshot():
        return {
            "flags": sorted(
                warehouse_rows(
                    'SELECT "event_id", "is_duplicate_row", "amount", "product_code", '
                    '"date_key" FROM dw.fact_sales_line'
                )
            ),
            **{
                t: sorted(warehouse_rows(f"SELECT * FROM dw.{t}"), key=repr)
                for t in ("dim_product", "dim_customer", "dim_country", "dim_date")
            },
        }

    before = snapshot()
    manifest = warehouse_rows("SELECT * FROM dw.load_manifest")
    columns = ["event_id", *ROW_FIELDS]
    events = warehouse_rows(f"SELECT {', '.join(chr(34) + c + chr(34) for c in columns)} FROM dw.fact_sales_line")
    random.Random(4).shuffle(events)
    files = [events[i : i + 97] for i in range(0, len(events), 97)]
    # At least one group of identical rows is split across files (else this test could not fail).
    file_of = {e[0]: n for n, chunk in enumerate(files) for e in chunk}
    groups = {}
    for e in events:
        groups.setdefault(e[1:], set()).add(file_of[e[0]])
    assert sum(1 for g in groups.values() if len(g) > 1) > 10
    try:
        with db.connection() as conn:
            with conn.cursor() as cur:
                cur.execute(
                    "TRUNCATE dw.fact_sales_line, dw.load_manifest, dw.dim_product, dw.dim_customer, "
                    "dw.dim_country, dw.dim_date"
                )
            conn.commit()
            for n, chunk in enumerate(files):
                out = io.StringIO()
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(contract.CSV_HEADER)
                for e in chunk:
                    writer.writerow(["" if v is None else (v.isoformat() if hasattr(v, "isoformat") else v) for v in e])
                key = f"reorder/{n:04d}.csv"
                assert load_staged(stack_env["cfg"], [(key, out.getvalue().encode("utf-8"))])[0][1] is not None
        assert snapshot() == before
    finally:
        # Leave the manifest as the pipeline wrote it, for the tests that follow.
        with db.connection() as conn:
            with conn.cursor() as cur:
                cur.execute("DELETE FROM dw.load_manifest")
                for row in manifest:
                    cur.execute("INSERT INTO dw.load_manifest VALUES (%s, %s, %s, %s, %s, %s)", row)
            conn.commit()


class _ReportParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.charts: dict[str, dict] = {}
        self.tables: dict[str, int] = {}
        self.external: list[str] = []
        self._chart = None
        self._table = None
        self._in_tbody = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href"):
            if name in a and not (a[name].startswith("#") or a[name].endswith(".csv")):
                self.external.append(a[name])
        if tag in ("script", "link", "img", "iframe"):
            self.external.append(tag)
        if tag == "svg":
            self._chart = a["id"]
            self.charts[self._chart] = {"view": a.get("data-view"), "bars": 0}
        elif tag == "rect" and self._chart:
            if float(a["width"]) > 0 and float(a["height"]) > 0:
                self.charts[self._chart]["bars"] += 1
        elif tag == "table" and a.get("data-view"):
            self._table = a["data-view"]
            self.tables[self._table] = 0
        elif tag == "tbody":
            self._in_tbody = True
        elif tag == "tr" and self._table and self._in_tbody:
            self.tables[self._table] += 1

    def handle_endtag(self, tag):
        if tag == "svg":
            self._chart = None
        elif tag == "table":
            self._table = None
        elif tag == "tbody":
            self._in_tbody = False


def test_report_renders(stack_env, loaded, tmp_path):
    from warehouse.report import CHARTS, VIEWS

    out = tmp_path / "report"
    env = {**os.environ, **stack_env["env"]}
    done = subprocess.run(
        [sys.executable, "-m", "ecom", "report", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    parser = _ReportParser()
    parser.feed((out / "index.html").read_text(encoding="utf-8"))
    assert parser.external == []  # opens offline: nothing to fetch
    assert set(parser.charts) == {c.chart_id for c in CHARTS}
    assert all(c["bars"] > 0 for c in parser.charts.values()), parser.charts
    views = [v for v, *_ in VIEWS]
    assert set(parser.tables) == set(views) and all(n > 0 for n in parser.tables.values()), parser.tables
    assert parser.charts["revenue-by-month"]["bars"] == 13
    for view in views:
        with open(out / f"{view}.csv", encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        count = warehouse_rows(f"SELECT count(*) FROM analytics.{view}")[0][0]
        assert len(rows) - 1 == count > 0, view
        assert parser.tables[view] == min(count, next(shown for v, _, _, shown in VIEWS if v == view))
    # The CSV holds the same numbers as the view.
    with open(out / "revenue_by_month.csv", encoding="utf-8", newline="") as handle:
        months = list(csv.DictReader(handle))
    assert [(r["month"], r["revenue"]) for r in months] == [
        (m, str(v)) for m, v in warehouse_rows("SELECT month, revenue FROM analytics.revenue_by_month")
    ]


def test_report_in_a_real_browser(stack_env, loaded, tmp_path):
    """What an analyst sees in Chromium at 1280 px: every chart drawn with all its bars and every
    label inside it, months on a time axis, money to the cent, no sideways scrolling, and a
    screenshot that is not blank (kept in test-artifacts/ for a human to look at)."""
    from tests.support import browser
    from warehouse.report import CHARTS, build_report

    chromium = browser.find_browser()
    if chromium is None:
        pytest.skip(
            "no headless Chromium here (looked for " + ", ".join(browser.BROWSERS) + "): "
            "install Debian's `chromium` (apt-get install chromium), as .ci/run does"
        )
    out = build_report(tmp_path / "report")
    page = out.html_path
    expected = _ReportParser()
    expected.feed(page.read_text(encoding="utf-8"))

    seen = browser.measure(chromium, page, width=1280)
    assert seen["scroll_width"] <= seen["client_width"], seen  # nothing overflows sideways at 1280 px
    charts = {c["id"]: c for c in seen["charts"]}
    assert set(charts) == {c.chart_id for c in CHARTS} == set(out.charts)
    for chart_id, drawn in charts.items():
        assert drawn["bars"] == expected.charts[chart_id]["bars"] > 0, drawn  # every bar drawn, none clipped
        assert drawn["labels"] > 0 and drawn["labels_inside"] == drawn["labels"], drawn  # no label cut off
        assert drawn["width"] <= 1100, drawn
    # Months as a time axis: one slot per calendar month, left to right, names under the slots.
    for chart_id in ("revenue-by-month", "cancellation-rate-by-month"):
        drawn = charts[chart_id]
        assert drawn["axis"] == "time"
        months = [m for m, _ in drawn["months"]]
        lefts = [x for _, x in drawn["months"]]
        assert months == sorted(months) and months[0] == "2010-12" and months[-1] == "2011-12"
        steps = {round(b - a, 1) for a, b in zip(lefts, lefts[1:], strict=False)}
        assert len(steps) == 1 and steps.pop() > 0  # evenly spaced in time
        assert drawn["month_labels"] == [
            "Dec",
            "Jan",
            "Feb",
            "Mar",
            "Apr",
            "May",
            "Jun",
            "Jul",
            "Aug",
            "Sep",
            "Oct",
            "Nov",
            "Dec",
        ]
    # Money to two decimals in the page (the CSV keeps the exact values).
    html_text = page.read_text(encoding="utf-8")
    revenue_cells = re.findall(
        r'<td class="num">(-?[\d,]+\.\d+)</td>', html_text.split('id="table-revenue_by_month"')[1].split("</table>")[0]
    )
    assert revenue_cells and all(re.fullmatch(r"-?[\d,]+\.\d{2}", cell) for cell in revenue_cells), revenue_cells[:5]
    assert re.search(r"<td>revenue \(all lines\)</td><td>-?[\d,]+\.\d{2}</td>", html_text)

    shot = browser.screenshot(chromium, page, ROOT / "test-artifacts" / "report-1280.png", width=1280)
    pixels = browser.png_pixels(shot)
    assert pixels.shape[1] == 1280
    not_white = (pixels[:, :, :3] < 250).any(axis=2).mean()
    bar_blue = ((pixels[:, :, 0] == 0x48) & (pixels[:, :, 1] == 0x78) & (pixels[:, :, 2] == 0xA8)).sum()
    assert not_white > 0.02 and bar_blue > 2000, (not_white, bar_blue)
