"""replay.source: how the file's number columns are read (pure; no stack)."""

from __future__ import annotations

import math

from replay.source import _number


def _reference(text: str):
    """The rule as first written: int if it parses, else float if it parses (and JSON can carry
    it: finite), else the text."""
    text = text.strip()
    if text == "":
        return None
    for parse in (int, float):
        try:
            number = parse(text)
        except ValueError:
            continue
        return number if math.isfinite(number) else text
    return text


def test_numbers_parse_as_int_then_float_then_text():
    texts = [
        "6",
        "-12",
        " 2.55 ",
        "2.",
        ".5",
        "17850",
        "17850.0",
        "1_000",
        "1_000.5",
        "",
        "  ",
        "abc",
        "1e3",
        "1E-2",
        "nan",
        "inf",
        "-0",
        "0.0",
        "1.5.5",
        "١٢",
        "١٢.٥",
        "12\u00a0",
        "+7",
        "0x10",
        "9" * 40,
        "-inf",
        "Infinity",
        "NaN",
        "1e999",
        "-1e999",
        "1e308",
    ]
    for text in texts:
        got, expected = _number(text), _reference(text)
        assert type(got) is type(expected) and got == expected, (text, got, expected)


def test_numbers_json_cannot_carry_stay_text():
    """Sent as numbers they could not be written as JSON (the replay crashed on such a cell,
    retrying a request it could not build); as text the API names the field in its 400."""
    for text in ["nan", " NaN ", "inf", "-Infinity", "1e999"]:
        assert _number(text) == text.strip()
