"""What a hostile client sends, shared by the hostile-input tests with and without a stack
(tests/unit/test_hostile_input.py, tests/stack/test_hostile_input.py): an ordinary event, Hypothesis
strategies of the values an attacker would try, and JWTs signed with the right key around hostile
headers and claims."""

from __future__ import annotations

import json
import time

from hypothesis import settings
from hypothesis import strategies as st

from ecom_core import config
from handlers.auth import _hs256, b64url_encode

GOOD = {
    "InvoiceNo": "536365",
    "StockCode": "85123A",
    "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
    "Quantity": 6,
    "InvoiceDate": "12/1/2010 8:26",
    "UnitPrice": 2.55,
    "CustomerID": 17850.0,
    "Country": "United Kingdom",
}
PROPERTY = settings(max_examples=400, deadline=None, database=None)

# Values an attacker would try, beside ordinary ones.
hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "a\x00b",
            "\u202eevil",
            "zero\u200bwidth",
            "\ud800",
            "\udfff lone",
            "tab\there",
            "x" * 1001,
            "\u00a3" * 501,
            "line\u2028sep",
            "\ue000private",
            "WHITE HANGING HEART ",
            "BANK CHARGES",
        ]
    ),
)
hostile_number = st.one_of(
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-200, 5e-324, 1e-5, 0.001, 0.0001, 2.55, 1e9, 1e9 + 0.5, 999_999_999.999, 10**15, -(10**9)]),
)
hostile_date = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:00-01:00",
            "1969-12-31T23:59:59",
            "2100-01-01T00:00:00",
            "2099-12-31T23:59:59",
            "12/1/2010 8:26",
            "13/45/2010 8:26",
            "2010-12-01T08:26:00Z",
            "2010-12-01 08:26:00.123456+05:30",
        ]
    ),
    st.datetimes().map(lambda d: d.isoformat()),
    st.text(max_size=20),
)
hostile_event = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(st.just("client-1"), st.text(max_size=130), st.just("ok-id\n")),
        "InvoiceNo": st.one_of(st.just("536365"), st.just("C536379"), hostile_text, hostile_number),
        "StockCode": st.one_of(st.just("85123A"), hostile_text, hostile_number),
        "Description": st.one_of(st.none(), hostile_text),
        "Quantity": st.one_of(st.just(6), hostile_number),
        "InvoiceDate": st.one_of(st.just("12/1/2010 8:26"), hostile_date),
        "UnitPrice": st.one_of(st.just(2.55), hostile_number),
        "CustomerID": st.one_of(st.none(), st.just(17850.0), hostile_number),
        "Country": st.one_of(st.just("United Kingdom"), hostile_text),
    },
)


# ---------------------------------------------------------------- tokens
def signed_token(header: object, claims: object, auth: config.Auth) -> str:
    """A token signed with the right key; a str header is used as its raw JSON text."""
    header_text = header if isinstance(header, str) else json.dumps(header)
    # A raw header may hold a lone surrogate: sent as the (invalid UTF-8) bytes a hostile client could send.
    signing_input = (
        b64url_encode(header_text.encode("utf-8", "surrogatepass")) + "." + b64url_encode(json.dumps(claims).encode())
    )
    return signing_input + "." + b64url_encode(_hs256(auth.jwt_secret.encode(), signing_input.encode()))


def token_claims(auth: config.Auth, **overrides) -> dict:
    now = int(time.time())
    return {"iss": auth.jwt_issuer, "aud": auth.jwt_audience, "sub": "14911", "iat": now, "exp": now + 300, **overrides}
