"""JSON on the hot paths: orjson where it is installed, the standard library where it is not, with
the same bytes and the same values either way.

The replay, ingestion and the stream trigger encode or decode every event at least once (request
bodies, stream records, BatchWriteItem and PutRecords bodies): the standard library's encoder and
decoder were a fifth to a third of each process's CPU in profiles. orjson does the same work in a
fraction of the time. It is optional: the handlers' zip holds our code only, and AWS's Python
runtime has boto3 but not orjson, so there the standard library answers (slower, identical).

Where the two differ, the standard library's answer is the one given:
- `dumps`: orjson refuses integers beyond 64 bits and types it does not know (Decimal...), and
  the standard library then writes (or refuses) them as always. Floats are written as repr() writes
  them, except between 0 and 1e-4 in magnitude (orjson 0.00001, json 1e-05: the same number).
  Non-finite floats: orjson writes null, json NaN/Infinity; callers send neither (validated events,
  wire-form parameters, the replay's finite numbers).
- `loads`: orjson refuses NaN, Infinity, out-of-range floats and lone surrogates, and reads an
  integer beyond 64 bits as a float, a different value. Such texts go to json.loads, which gives
  the value or raises the error it always did: what orjson refuses is retried, and a text with a
  run of 19 or more digits (the only way to write such an integer) never reaches orjson.

Where it pays: values with many small members (events, DynamoDB items: orjson reads them in a
third to half of json's time). A text that is mostly long strings (base64 records) reads about as
fast with json, and the digit check would eat the difference: such texts are left to json.

`loads_request` is for a client's request body, where "read" must mean "read as sent": UTF-8 only
(bytes that are not are an error naming the byte, never a U+FFFD or a UTF-16 guess), and a number
the float cannot hold as written (1e-400 read as 0.0, 1e400 as inf, 2.55000000000000001 as 2.55)
comes back as an `InexactNumber` that remembers its text, for validation to refuse by field.
"""

from __future__ import annotations

import json
import math
import sys
from decimal import Decimal
from typing import Any

try:
    import orjson
except ImportError:  # AWS's Lambda runtime: the standard library does it all
    orjson = None  # type: ignore[assignment]

_STDLIB_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# An integer orjson would read as a float has at least 19 digits (-9223372036854775809). Looked for
# by mapping every digit to "0" and searching for 19 of them: a regular expression took ten times
# as long as parsing the text.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGIT_RUN = b"0" * 19


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII as is): json.dumps(value, separators=(",", ":"),
    ensure_ascii=False).encode("utf-8"), byte for byte for the values this project encodes."""
    if orjson is not None:
        try:
            return orjson.dumps(value)
        except TypeError:  # orjson.JSONEncodeError included: the standard library decides
            pass
    return _STDLIB_ENCODE(value).encode("utf-8")


def loads(text: str | bytes) -> Any:
    """json.loads(text): the same value, or the same exception (ValueError, RecursionError...)."""
    if orjson is not None and isinstance(text, (str, bytes, bytearray)):
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        if _LONG_DIGIT_RUN not in raw.translate(_DIGITS_AS_ZERO):
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
    return json.loads(text)


# ---------------------------------------------------------------- a client's request body
_SMALLEST_NORMAL = sys.float_info.min


class NotUTF8(ValueError):
    """Request bytes that are not UTF-8 (RFC 8259 section 8.1: JSON between systems is UTF-8)."""

    def __init__(self, error: UnicodeDecodeError):
        self.position = error.start
        bad = error.object[error.start : error.start + 1].hex()
        super().__init__(f"is not valid UTF-8 at byte {error.start} (0x{bad}: {error.reason})")


class InexactNumber(float):
    """A JSON number whose float is not the number written: the float json.loads gives, and the
    literal text. Returned by `loads_request` only; validation refuses it naming the field."""

    literal: str

    def __new__(cls, value: float, literal: str) -> InexactNumber:
        number = super().__new__(cls, value)
        number.literal = literal
        return number

    @property
    def problem(self) -> str:
        """Why the number cannot be taken as sent, e.g. "1e-400 is out of range"."""
        shown = self.literal if len(self.literal) <= 40 else self.literal[:32] + "..." + self.literal[-5:]
        if math.isnan(self):
            return f"{shown} is not a number"
        if math.isinf(self) or abs(self) < _SMALLEST_NORMAL:
            # Overflow to infinity, underflow to 0 or to a subnormal that lost digits.
            return f"{shown} is out of range"
        return f"{shown} has more digits than can be stored exactly (it would be read as {float(self)!r})"


def _exact_float(text: str) -> float:
    """json's parse_float, but a literal the float does not hold exactly becomes an InexactNumber.
    "Exactly" as ingestion reads numbers: the float's shortest text (repr) has the literal's value."""
    value = float(text)
    if len(text) <= 16 and "e" not in text and "E" not in text:
        # A decimal point and at most 15 digits, no exponent: a normal float that repr gives back.
        return value
    if value == 0:
        # Zero from a zero literal (0.000, -0e-400) is exact; from anything else it underflowed.
        mantissa = text.lower().partition("e")[0]
        return value if not mantissa.strip("+-0.") else InexactNumber(value, text)
    if not math.isfinite(value) or Decimal(repr(value)) != Decimal(text):
        return InexactNumber(value, text)
    return value


def _constant(text: str) -> float:
    """NaN, Infinity, -Infinity: not JSON (json.loads reads them); kept with their text to be refused."""
    return InexactNumber(float(text), text)


def loads_request(body: bytes | str) -> Any:
    """A client's JSON body: json.loads's value, except that bytes must be UTF-8 (else NotUTF8, a
    ValueError naming the byte; a leading UTF-8 byte order mark is ignored, as json does) and every
    number that is not exactly the float read (out of range, too many digits, NaN, Infinity) is an
    InexactNumber carrying its text. Other errors are json.loads's (ValueError, RecursionError)."""
    if isinstance(body, (bytes, bytearray)):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NotUTF8(exc) from None
        if text.startswith("\ufeff"):
            text = text[1:]
    else:
        text = body
    return json.loads(text, parse_float=_exact_float, parse_constant=_constant)
