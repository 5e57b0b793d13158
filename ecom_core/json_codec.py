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
"""
from __future__ import annotations

import json
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
