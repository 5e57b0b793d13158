"""replay.source: how the file's number columns are read (pure; no stack)."""
from __future__ import annotations

from replay.source import _number


def _reference(text: str):
    """The rule as first written: int if it parses, else float if it parses, else the text."""
    text = text.strip()
    if text == "":
        return None
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def test_numbers_parse_as_int_then_float_then_text():
    texts = ["6", "-12", " 2.55 ", "2.", ".5", "17850", "17850.0", "1_000", "1_000.5", "", "  ", "abc", "1e3",
             "1E-2", "nan", "inf", "-0", "0.0", "1.5.5", "١٢", "١٢.٥", "12\u00a0", "+7", "0x10", "9" * 40]
    for text in texts:
        got, expected = _number(text), _reference(text)
        assert type(got) is type(expected) and (got == expected or got != got), (text, got, expected)
