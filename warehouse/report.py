"""`ecom report`: the analytics views as one self-contained HTML page (inline SVG charts, no
scripts, no external references: it opens offline) plus every view as CSV.

The charts are drawn here with the standard library: a bar chart is a few rectangles, and a
charting dependency (or a CDN) would be the only thing in the report that needs the network.
"""

from __future__ import annotations

import csv
import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from ecom_core import config
from warehouse import redshift_data, schema

# Every view in the report, in page order: title, what it answers, rows shown in the page
# (the CSV always has them all).
VIEWS: list[tuple[str, str, str, int]] = [
    (
        "top_products",
        "Top products",
        "Real products (service codes excluded) by net quantity, "
        "net of cancellations and write-offs; revenue = quantity x unit price over all their lines.",
        25,
    ),
    (
        "top_products_all_codes",
        "Top codes, all of them",
        "Every stock code, service codes (postage, fees, vouchers, manual lines) included, by revenue.",
        25,
    ),
    (
        "revenue_by_month",
        "Revenue by month",
        "All lines, cancellations and adjustments included; revenue = sales + cancelled + adjustment.",
        100,
    ),
    ("revenue_by_country", "Revenue by country", "All lines, by the country on the line.", 50),
    (
        "cancellation_rate_by_month",
        "Cancellation rate by month",
        "Cancellation invoices per sales "
        "invoice, and cancelled revenue per sold revenue, in the month the cancellation happened.",
        100,
    ),
    (
        "cancellation_rate_by_product",
        "Cancellation rate by product",
        "Real products with the most "
        "cancelled units; a rate above 1 means goods sold before the data starts were cancelled in it.",
        25,
    ),
    (
        "customer_rfm",
        "Customers by revenue, with RFM scores",
        "Recency in days before the reference date "
        "(the latest day with a normal volume of lines, never a stray or future-dated line), frequency = sales "
        "invoices, monetary = net revenue; scores 1-5, 5 = best.",
        25,
    ),
    ("rfm_segments", "RFM segments", "Customers and their net revenue per segment.", 50),
    ("invoice_size_distribution", "Invoice size distribution", "Sales invoices by number of lines.", 50),
    ("data_quality", "Data quality", "How many lines each trap in the source covers.", 50),
]


# Row order in the page and the CSV: the same as the views' ORDER BY.
VIEW_ORDER = {
    "top_products": '"quantity_rank"',
    "top_products_all_codes": '"revenue_rank"',
    "revenue_by_month": '"month"',
    "revenue_by_country": '"revenue" DESC, "country"',
    "cancellation_rate_by_month": '"month"',
    "cancellation_rate_by_product": '"cancelled_quantity" DESC, "stock_code"',
    "customer_rfm": '"monetary_rank"',
    "rfm_segments": '"monetary" DESC, "segment"',
    "invoice_size_distribution": '"bucket_order"',
    "data_quality": '"measure_order"',
}


@dataclass(frozen=True)
class Chart:
    chart_id: str
    view: str
    title: str
    label_column: str
    value_column: str
    order_by: str
    limit: int
    horizontal: bool
    where: str = ""
    # Labels are months (YYYY-MM): drawn on a time axis, one slot per calendar month, gaps kept.
    time_axis: bool = False


CHARTS: list[Chart] = [
    Chart(
        "top-products-quantity",
        "top_products",
        "Top 15 products by net quantity",
        "description",
        "net_quantity",
        '"quantity_rank"',
        15,
        True,
    ),
    Chart(
        "top-products-revenue",
        "top_products",
        "Top 15 products by revenue",
        "description",
        "revenue",
        '"revenue_rank"',
        15,
        True,
    ),
    Chart(
        "top-codes-revenue",
        "top_products_all_codes",
        "Top 15 codes (all) by revenue",
        "stock_code",
        "revenue",
        '"revenue_rank"',
        15,
        True,
    ),
    Chart(
        "revenue-by-month",
        "revenue_by_month",
        "Revenue by month",
        "month",
        "revenue",
        '"month"',
        100,
        False,
        time_axis=True,
    ),
    Chart(
        "revenue-by-country",
        "revenue_by_country",
        "Top 15 countries by revenue",
        "country_name",
        "revenue",
        '"revenue" DESC, "country"',
        15,
        True,
    ),
    Chart(
        "cancellation-rate-by-month",
        "cancellation_rate_by_month",
        "Cancellation invoices per sales invoice, by month",
        "month",
        "invoice_cancellation_rate",
        '"month"',
        100,
        False,
        time_axis=True,
    ),
    Chart(
        "cancellations-by-product",
        "cancellation_rate_by_product",
        "Top 15 products by cancelled units",
        "description",
        "cancelled_quantity",
        '"cancelled_quantity" DESC, "stock_code"',
        15,
        True,
    ),
    Chart(
        "customers-by-revenue",
        "customer_rfm",
        "Top 15 customers by net revenue",
        "customer_id",
        "monetary",
        '"monetary_rank"',
        15,
        True,
    ),
    Chart(
        "rfm-segments",
        "rfm_segments",
        "Customers per RFM segment",
        "segment",
        "customers",
        '"monetary" DESC, "segment"',
        20,
        True,
    ),
    Chart(
        "invoice-size",
        "invoice_size_distribution",
        "Sales invoices by number of lines",
        "size_bucket",
        "invoices",
        '"bucket_order"',
        20,
        False,
    ),
    Chart(
        "data-quality",
        "data_quality",
        "Lines per data-quality measure",
        "measure",
        "lines",
        '"measure_order"',
        20,
        True,
        'WHERE "measure_order" > 1',
    ),
]


@dataclass
class ReportResult:
    html_path: Path
    csv_paths: dict[str, Path] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    charts: list[str] = field(default_factory=list)


def is_money(column: str) -> bool:
    """Columns that hold an amount of money (shown to the cent; the CSV keeps the exact value)."""
    return column in ("monetary", "amount", "unit_price") or (
        "revenue" in column and not column.endswith(("_rate", "_rank"))
    )


def money(value: Decimal | float) -> str:
    """1234.5 -> 1,234.50 (half up, as an invoice rounds)."""
    return f"{Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP):,}"


CENT = Decimal("0.01")


def _fmt(value: Any, column: str = "") -> str:
    if value is None:
        return ""
    if is_money(column) and isinstance(value, (Decimal, float, int)) and not isinstance(value, bool):
        return money(value)
    if isinstance(value, Decimal):
        return f"{value:,}"  # keeps the column's scale
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


# A cell a spreadsheet (Excel, LibreOffice, Google Sheets) reads as a formula when its text starts
# with one of these (OWASP "CSV Injection"; ASVS 1.2.10 adds NUL; a leading LF is kept out for the same
# reason as CR).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\0")
# Text that is a plain decimal number: a spreadsheet reads it as that number and nothing else.
PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)


def csv_cell(value: Any) -> Any:
    """One value as the report's CSV writes it: NULL empty, timestamps ISO, numbers (Decimal, int,
    float) exactly as stored (-27.5 stays -27.5), and text that a spreadsheet would run as a formula
    neutralised the way OWASP recommends: a single quote in front ("=cmd" -> "'=cmd"), which the
    spreadsheet shows as text. Leading whitespace counts as nothing (" =cmd" is caught too): a
    spreadsheet, or the warehouse's trimming, may drop it.

    Text that is a plain number ("-5", "+3.5", "1e3") is left alone: opened in a spreadsheet it is
    that number and cannot call anything (OWASP's rule is about cells that are not numbers), while a
    quote in front would change the value every other CSV reader sees. Anything more than a plain
    number ("-5+1", "-1)*A1", " -5") is neutralised."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if (
        isinstance(value, str)
        and value
        and not PLAIN_NUMBER.fullmatch(value)
        and (value.startswith(FORMULA_START) or value.lstrip().startswith(FORMULA_START))
    ):
        return "'" + value
    return value


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A view's rows as CSV (UTF-8, RFC 4180 quoting), every cell through csv_cell."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([csv_cell(v) for v in row] for row in rows)


def _query(cur: redshift_data.Cursor, sql: str) -> tuple[list[str], list[tuple]]:
    cur.execute(sql)
    return [d[0] for d in cur.description or []], cur.fetchall()


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _number(value: float) -> str:
    """Chart text: whole numbers with separators, small ratios with their significant digits."""
    return f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:,.4g}"


def bar_chart_svg(chart: Chart, labels: Sequence[str], values: Sequence[float]) -> str:
    """Bars from a zero line that sits between the smallest and largest value (negatives go left/down)."""
    if chart.time_axis:
        return month_chart_svg(chart, labels, values)
    low, high = min(0.0, *values), max(0.0, *values)
    span = (high - low) or 1.0
    esc = html.escape
    number = money if is_money(chart.value_column) else _number
    parts: list[str] = []
    if chart.horizontal:
        label_w, plot_w, value_w, row_h, top = 250, 400, 110, 20, 8
        width, height = label_w + plot_w + value_w, top * 2 + row_h * len(values)
        zero = label_w + plot_w * (-low) / span
        for i, (label, value) in enumerate(zip(labels, values, strict=True)):
            y: float = top + i * row_h
            length = plot_w * abs(value) / span
            x = zero - length if value < 0 else zero
            parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{esc(_short(label, 38))}</text>')
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 3}" width="{max(length, 0.5):.1f}" height="{row_h - 6}" '
                f'class="{"neg" if value < 0 else "pos"}"><title>{esc(label)}: {number(value)}</title></rect>'
            )
            parts.append(f'<text x="{label_w + plot_w + 6}" y="{y + 14}">{number(value)}</text>')
        parts.append(f'<line x1="{zero:.1f}" y1="{top}" x2="{zero:.1f}" y2="{height - top}" class="axis"/>')
    else:
        left, plot_h, bottom, top = 80, 220, 70, 10
        bar_w = max(8, min(48, 640 // max(len(values), 1)))
        width, height = left + bar_w * len(values) + 20, top + plot_h + bottom
        zero = top + plot_h * high / span
        for i, (label, value) in enumerate(zip(labels, values, strict=True)):
            x = left + i * bar_w
            length = plot_h * abs(value) / span
            y = zero if value < 0 else zero - length
            parts.append(
                f'<rect x="{x + 2}" y="{y:.1f}" width="{bar_w - 4}" height="{max(length, 0.5):.1f}" '
                f'class="{"neg" if value < 0 else "pos"}"><title>{esc(label)}: {number(value)}</title></rect>'
            )
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 14}" text-anchor="end" '
                f'transform="rotate(-45 {x + bar_w / 2:.1f} {top + plot_h + 14})">'
                f"{esc(_short(label, 12))}</text>"
            )
        parts += _value_axis(left, zero, plot_h, span, high, low, number)
        parts.append(f'<line x1="{left}" y1="{zero:.1f}" x2="{width - 10}" y2="{zero:.1f}" class="axis"/>')
    return (
        f'<svg class="chart" id="{chart.chart_id}" data-view="{chart.view}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(chart.title)}">' + "".join(parts) + "</svg>"
    )


def _value_axis(
    left: float, zero: float, plot_h: float, span: float, high: float, low: float, number: Callable[[float], str]
) -> list[str]:
    return [
        f'<text x="{left - 6}" y="{zero - plot_h * value / span + 4:.1f}" text-anchor="end">{number(value)}</text>'
        for value in ((high, low) if low < 0 else (high,))
    ]


MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def month_chart_svg(chart: Chart, labels: Sequence[str], values: Sequence[float]) -> str:
    """Months on a time axis: one slot per calendar month from the first to the last (a month
    without data is a gap, not a missing category), month names under the slots and the year
    under each January and under the first slot."""

    def index(label: str) -> int:
        year, month = label.split("-")[:2]
        return int(year) * 12 + int(month) - 1

    positions = [index(label) for label in labels]
    first, last = min(positions), max(positions)
    slots = last - first + 1
    low, high = min(0.0, *values), max(0.0, *values)
    span = (high - low) or 1.0
    number = money if is_money(chart.value_column) else _number
    left, plot_h, top, bottom = 90, 220, 10, 44
    slot_w = max(6, min(56, 900 // slots))
    every = max(1, -(-34 // slot_w))  # label every n-th month so names never overlap (~34 px each)
    width, height = left + slot_w * slots + 20, top + plot_h + bottom
    zero = top + plot_h * high / span
    esc = html.escape
    parts: list[str] = []
    for label, position, value in zip(labels, positions, values, strict=True):
        x = left + (position - first) * slot_w
        length = plot_h * abs(value) / span
        y = zero if value < 0 else zero - length
        parts.append(
            f'<rect x="{x + 2}" y="{y:.1f}" width="{slot_w - 4}" height="{max(length, 0.5):.1f}" '
            f'data-month="{esc(label[:7])}" class="{"neg" if value < 0 else "pos"}">'
            f"<title>{esc(label)}: {number(value)}</title></rect>"
        )
    base = top + plot_h
    for slot in range(slots):
        month = (first + slot) % 12
        x = left + slot * slot_w
        parts.append(f'<line x1="{x}" y1="{base}" x2="{x}" y2="{base + 4}" class="tick"/>')
        if slot % every == 0:
            parts.append(
                f'<text x="{x + slot_w / 2:.1f}" y="{base + 16}" text-anchor="middle" class="month">'
                f"{MONTHS[month]}</text>"
            )
        if month == 0 or slot == 0:
            parts.append(
                f'<text x="{x + slot_w / 2:.1f}" y="{base + 32}" text-anchor="middle" class="year">'
                f"{(first + slot) // 12}</text>"
            )
    parts += _value_axis(left, zero, plot_h, span, high, low, number)
    parts.append(f'<line x1="{left}" y1="{zero:.1f}" x2="{width - 10}" y2="{zero:.1f}" class="axis"/>')
    return (
        f'<svg class="chart" id="{chart.chart_id}" data-view="{chart.view}" data-axis="time" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{esc(chart.title)}">'
        + "".join(parts)
        + "</svg>"
    )


def _table_html(view: str, columns: list[str], rows: list[tuple]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    # Identifiers print as they are (customer 17850, not 17,850).
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"num" if isinstance(v, (int, float, Decimal)) and not isinstance(v, bool) else ""}">'
            f"{html.escape(str(v) if c.endswith('_id') and v is not None else _fmt(v, c))}</td>"
            for c, v in zip(columns, row, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    # A wide table scrolls in its own box, so the page itself never scrolls sideways.
    return (
        f'<div class="scroll"><table id="table-{view}" data-view="{view}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
.summary td { padding: 2px 12px 2px 0; } .note { color: #555; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 6px; } th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
svg.chart { display: block; margin: 0.8em 0; font-size: 11px; }
svg .pos { fill: #4878a8; } svg .neg { fill: #c0504d; } svg .axis { stroke: #333; stroke-width: 1; }
svg .tick { stroke: #999; stroke-width: 1; } svg .year { font-weight: 600; }
.scroll { max-width: 100%; overflow-x: auto; }
"""


def build_report(out_dir: Path, cfg: config.Stack | None = None) -> ReportResult:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ReportResult(html_path=out_dir / "index.html")
    sections: list[str] = []
    # Read through the Redshift Data API, in a session of its own (the temporary tables below live
    # in it), as on a real workgroup.
    with redshift_data.connect(cfg) as conn:
        schema.ensure_schema(conn.api)
        # One snapshot for the whole report: every table and chart agrees with every other.
        conn.begin()
        with conn.cursor() as cur:
            # Each view is computed once (into a temp table, dropped with the session); the charts
            # read the same rows as the tables.
            for view, *_ in VIEWS:
                cur.execute(f'CREATE TEMPORARY TABLE "report_{view}" AS SELECT * FROM analytics."{view}"')
            cur.execute(
                'SELECT count(*), COALESCE(sum("amount"), 0), count(DISTINCT "invoice_no"), '
                'count(DISTINCT "customer_id"), min("invoice_ts"), max("invoice_ts") FROM dw."fact_sales_line"'
            )
            lines, revenue, invoices, customers, first_ts, last_ts = cur.fetchall()[0]
            cur.execute('SELECT count(*) FROM dw."load_manifest"')
            files = cur.fetchall()[0][0]
            charts_by_view: dict[str, list[str]] = {}
            for chart in CHARTS:
                _, rows = _query(
                    cur,
                    f'SELECT "{chart.label_column}", "{chart.value_column}" '
                    f'FROM "report_{chart.view}" {chart.where} '
                    f"ORDER BY {chart.order_by} LIMIT {chart.limit}",
                )
                rows = [r for r in rows if r[1] is not None]
                if not rows:
                    continue
                svg = bar_chart_svg(chart, [str(r[0]) for r in rows], [float(r[1]) for r in rows])
                charts_by_view.setdefault(chart.view, []).append(f"<h3>{html.escape(chart.title)}</h3>{svg}")
                result.charts.append(chart.chart_id)
            for view, title, note, shown in VIEWS:
                # Views end in ORDER BY; a temp table does not keep it, so order by the view's own columns.
                columns, rows = _query(cur, f'SELECT * FROM "report_{view}" ORDER BY {VIEW_ORDER[view]}')
                csv_path = out_dir / f"{view}.csv"
                write_csv(csv_path, columns, rows)
                result.csv_paths[view] = csv_path
                result.rows[view] = len(rows)
                sections.append(
                    f'<section id="{view}"><h2>{html.escape(title)}</h2>'
                    f'<p class="note">{html.escape(note)} View <code>analytics.{view}</code>; '
                    f"{min(shown, len(rows)):,} of {len(rows):,} rows shown, all in "
                    f'<a href="{view}.csv">{view}.csv</a>.</p>'
                    + "".join(charts_by_view.get(view, []))
                    + _table_html(view, columns, rows[:shown])
                    + "</section>"
                )
        conn.rollback()
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    summary = (
        f'<table class="summary"><tr><td>lines</td><td>{lines:,}</td></tr>'
        f"<tr><td>revenue (all lines)</td><td>{money(revenue)}</td></tr>"
        f"<tr><td>invoices</td><td>{invoices:,}</td></tr><tr><td>customers</td><td>{customers:,}</td></tr>"
        f"<tr><td>first / last line</td><td>{_fmt(first_ts)} / {_fmt(last_ts)}</td></tr>"
        f"<tr><td>staging files loaded</td><td>{files:,}</td></tr></table>"
    )
    nav = " · ".join(f'<a href="#{v}">{html.escape(t)}</a>' for v, t, _, _ in VIEWS)
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>ecom-pipeline warehouse report</title>'
        f"<style>{STYLE}</style></head><body><h1>ecom-pipeline warehouse report</h1>"
        f'<p class="note">Generated {generated} from the warehouse views (schema <code>analytics</code>). '
        f"Source data: UCI Online Retail (Daqing Chen, 2015), CC BY 4.0.</p>{summary}<p>{nav}</p>"
        + "".join(sections)
        + "</body></html>"
    )
    result.html_path.write_text(page, encoding="utf-8")
    return result
