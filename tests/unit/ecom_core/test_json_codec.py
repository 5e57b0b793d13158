"""ecom_core.json_codec: orjson's speed, the standard library's answers (pure; no stack).

Every answer is compared with json's own: the same bytes from `dumps`, the same value (types and
float bits included) or the same exception from `loads`, on the file's events, a sweep of every
price form ingestion accepts, generated values and texts, and hostile corner cases.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecom_core import json_codec
from ecom_core.config import FULL_FILE, PROJECT_ROOT
from ecom_core.events import event_json
from handlers.events import InvalidEvent, accept_event
from replay.source import read_rows

PROPERTY = settings(max_examples=600, deadline=None, database=None)


def stdlib_dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def same(a, b) -> bool:
    """Equal with the same types all the way down, floats to the bit (-0.0 is not 0.0), keys in
    order. (A loop, not recursion: the texts nest up to the parsers' own limits.)"""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, dict):
            if list(x) != list(y):
                return False
            pending.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y, strict=True))
        elif isinstance(x, float):
            if repr(x) != repr(y):
                return False
        elif x != y:
            return False
    return True


def outcome(function, argument):
    try:
        return "value", function(argument)
    except Exception as exc:  # noqa: BLE001 - the exception is the answer being compared
        return "error", (type(exc), str(exc))


def assert_loads_like_json(text) -> None:
    ours, theirs = outcome(json_codec.loads, text), outcome(json.loads, text)
    assert ours[0] == theirs[0], (text, ours, theirs)
    if ours[0] == "value":
        assert same(ours[1], theirs[1]), (text, ours, theirs)
    else:
        assert ours[1] == theirs[1], (text, ours, theirs)


def test_the_fast_path_is_in_use_here():
    # The embedded stack installs orjson (pyproject); without it every test below compares json with itself.
    assert json_codec.orjson is not None


def test_the_files_events_encode_to_the_same_bytes():
    checked = 0
    for row in read_rows(FULL_FILE, limit=60_000):
        try:
            event = accept_event(row.event)
        except InvalidEvent:
            continue
        assert event_json(event) == stdlib_dumps(event), event
        assert same(json_codec.loads(event_json(event)), event)
        checked += 1
    assert checked == 60_000


def test_every_price_form_ingestion_accepts_encodes_as_repr():
    """Prices have at most 3 decimals and |price| <= 10^9: every multiple of 0.001 up to 1,000,
    both signs, and random ones up to 10^9 (the stream records and raw lines carry them)."""
    prices = [k / 1000 for k in range(1_000_001)]
    generator = random.Random(15)
    prices += [generator.randrange(10**12 + 1) / 1000 for _ in range(300_000)]
    prices += [1e9, 999_999_999.999, 0.001, 2.55, 0.1 + 0.2]
    for price in prices:
        for value in (price, -price):
            assert json_codec.dumps(value) == repr(value).encode(), value


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f == 0 or abs(f) >= 1e-4),
    st.text(),
    st.sampled_from(['\x00\x1f\x7f\u2028\u2029"\\/\b\f\n\r\t', "\ud800", "a\udfffb", "😀é£"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=25,
)


@PROPERTY
@given(value=json_values)
def test_dumps_writes_what_json_writes(value):
    ours, theirs = outcome(json_codec.dumps, value), outcome(stdlib_dumps, value)
    assert ours == theirs, (value, ours, theirs)


@PROPERTY
@given(value=st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: 0 < abs(f) < 1e-4))
def test_dumps_tiny_floats_differ_in_form_only(value):
    assert json.loads(json_codec.dumps(value)) == value


texts_from_values = st.builds(
    lambda value, ascii_only, spaced: json.dumps(
        value, ensure_ascii=ascii_only, separators=(", ", ": ") if spaced else (",", ":")
    ),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(-(2**80), 2**80), st.floats(), st.text()),
        lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
        max_leaves=25,
    ),
    st.booleans(),
    st.booleans(),
)
damaged_texts = st.builds(
    lambda text, cut, junk: text[:cut] + junk + text[cut:],
    texts_from_values,
    st.integers(0, 60),
    st.sampled_from(["", ",", "]", "}", '"', "\\", "0", " ", "\x00", "\ud800", "x"]),
)


@PROPERTY
@given(text=st.one_of(texts_from_values, damaged_texts, st.text(max_size=30)))
def test_loads_answers_what_json_answers(text):
    assert_loads_like_json(text)
    try:
        as_bytes = text.encode("utf-8")
    except UnicodeEncodeError:
        return
    assert_loads_like_json(as_bytes)


HOSTILE_TEXTS = [
    "123456789012345678901234567890",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "-9223372036854775809",
    '{"Quantity": 99999999999999999999}',
    "1e400",
    "-1e400",
    "1.7976931348623159e308",
    "NaN",
    "-Infinity",
    "[NaN]",
    '"\\ud800"',
    '{"\\udc00": 1}',
    "\ufeff{}",
    "-0",
    "-0.0",
    "0.1e-400",
    "5e-324",
    '{"a":1,"a":2}',
    '{"b":1,"a":2,"b":3}',
    "[" * 1100 + "]" * 1100,
    "[" * 600 + "]" * 600,
    '"\x1f"',
    "01",
    "1.",
    ".5",
    "+1",
    "'a'",
    "[1,]",
    "1 2",
    "",
    "  ",
    '"\\u0000"',
    '{"UnitPrice": 2.55, "event_id": "x"}',
    "3.141592653589793238462643383279",
]
HOSTILE_BYTES = [
    b'\xef\xbb\xbf{"a":1}',
    '{"a":"é"}'.encode("utf-16"),
    "[1]".encode("utf-32-le"),
    b"\xff\xfe[1]",
    b'{"a":"\xc3"}',
    b"\x00[1]",
    b"[1]\x00",
    b'"\xed\xa0\x80"',
]


@pytest.mark.parametrize("text", HOSTILE_TEXTS + HOSTILE_BYTES)
def test_loads_answers_what_json_answers_on_hostile_texts(text):
    assert_loads_like_json(text)


def test_without_orjson_the_standard_library_answers():
    """AWS's Lambda runtime has no orjson: the module imports and gives the same answers."""
    script = (
        "import sys; sys.modules['orjson'] = None\n"
        "import json\n"
        "from ecom_core import json_codec, events\n"
        "assert json_codec.orjson is None\n"
        "event = {'event_id': 'e', 'InvoiceNo': '536365', 'Description': 'caf\\u00e9', 'UnitPrice': 2.55}\n"
        "assert events.event_json(event) == json.dumps(event, separators=(',', ':'), ensure_ascii=False).encode()\n"
        "assert json_codec.loads(b'[1, 2.5, \"x\"]') == [1, 2.5, 'x']\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# ---------------------------------------------------------------- loads_request: a client's body, read as sent
def _as_sent(literal: str, value) -> bool:
    """A plain float holds the literal's value (as ingestion reads numbers: repr's decimal); an
    InexactNumber is json's float for a literal it does not hold, and keeps the literal."""
    from decimal import Decimal

    json_float = float(literal)
    held = math.isfinite(json_float) and (
        Decimal(repr(json_float)) == Decimal(literal) or (json_float == 0 and Decimal(literal) == 0)
    )
    if type(value) is float:
        return held and repr(value) == repr(json_float)
    return (
        not held
        and isinstance(value, json_codec.InexactNumber)
        and value.literal == literal
        and repr(float(value)) == repr(json_float)
    )


number_literals = st.builds(
    lambda sign, whole, fraction, exponent: sign + whole + (("." + fraction) if fraction else "") + exponent,
    st.sampled_from(["", "-"]),
    st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,20}", fullmatch=True)),
    st.from_regex(r"[0-9]{0,22}", fullmatch=True),
    st.one_of(st.just(""), st.from_regex(r"[eE][-+]?[0-9]{1,4}", fullmatch=True)),
)


@PROPERTY
@given(literal=number_literals)
def test_loads_request_reads_every_number_as_sent_or_marks_it(literal):
    value = json_codec.loads_request(literal.encode())
    if type(value) is int:
        assert value == int(literal)
    else:
        assert _as_sent(literal, value), (literal, value)


@PROPERTY
@given(text=texts_from_values)
def test_loads_request_answers_what_json_answers_on_what_json_writes(text):
    """json.dumps writes every finite float as repr: read back as the same plain float. NaN and
    Infinity (json writes them; they are not JSON) come back marked."""
    try:
        body = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in the text: read the str
        body = text
    ours, theirs = json_codec.loads_request(body), json.loads(text)
    pending = [(ours, theirs)]
    while pending:
        x, y = pending.pop()
        if isinstance(y, float) and not math.isfinite(y):
            assert isinstance(x, json_codec.InexactNumber) and repr(float(x)) == repr(y)
        elif isinstance(y, dict):
            assert list(x) == list(y)
            pending.extend((x[k], y[k]) for k in y)
        elif isinstance(y, list):
            assert len(x) == len(y)
            pending.extend(zip(x, y, strict=True))
        else:
            assert same(x, y), (text, x, y)


def test_loads_request_reads_every_price_and_the_files_events_as_json_does():
    prices = [k / 1000 for k in range(-1_000_000, 1_000_001)]
    generator = random.Random(16)
    prices += [generator.randrange(-(10**12), 10**12 + 1) / 1000 for _ in range(300_000)]
    text = json.dumps(prices)
    assert same(json_codec.loads_request(text.encode()), json.loads(text))
    rows = [row.event for row in read_rows(FULL_FILE, limit=60_000)]
    text = json.dumps(rows, ensure_ascii=False)
    assert same(json_codec.loads_request(text.encode()), json.loads(text))


@pytest.mark.parametrize("raw", HOSTILE_BYTES)
def test_loads_request_takes_utf8_only(raw):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        with pytest.raises(json_codec.NotUTF8, match=f"at byte {exc.start} "):
            json_codec.loads_request(raw)
        return
    ours = outcome(json_codec.loads_request, raw)
    theirs = outcome(json.loads, text.removeprefix("\ufeff"))
    assert ours[0] == theirs[0] and (same(ours[1], theirs[1]) if ours[0] == "value" else ours[1] == theirs[1])
