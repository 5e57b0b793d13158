"""Property tests: random bodies, headers, ids and credentials against the deployed API.

Properties: never a 5xx; every error is JSON with an `error`; nothing is written for a rejected
request (the stream and the tables hold exactly the events of the accepted ones); a customer
credential never returns another customer's data.
"""

from __future__ import annotations

import json
import urllib.parse

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecom_core import config
from handlers.auth import mint
from handlers.stream_trigger import FOREIGN_LINE
from replay import deadletters
from tests.support.helpers import counts
from tests.support.hostile import GOOD
from warehouse.status import wait_for_drain

pytestmark = pytest.mark.stack

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)
# Event-shaped objects with some fields replaced or dropped: close enough to pass some checks.
event_like = st.builds(
    lambda replaced, dropped: {k: v for k, v in {**GOOD, **replaced}.items() if k not in dropped},
    st.dictionaries(st.sampled_from(sorted(GOOD)), scalars, max_size=3),
    st.sets(st.sampled_from(sorted(GOOD)), max_size=2),
)
bodies = st.one_of(
    st.binary(max_size=300).map(lambda b: ("raw", b)),
    json_values.map(lambda v: ("json", v)),
    event_like.map(lambda v: ("json", v)),
    st.lists(event_like, min_size=1, max_size=5).map(lambda v: ("json", v)),
)
# requests itself refuses header values with leading/trailing whitespace: strip them client-side.
header_values = printable.map(str.strip)
extra_headers = st.dictionaries(st.from_regex(r"X-[A-Za-z0-9-]{1,16}", fullmatch=True), header_values, max_size=3)


def _json_error(response: requests.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert isinstance(response.json().get("error"), str), response.text[:300]


def test_random_posts_never_5xx_and_rejected_write_nothing(stack_env, clean_stores):
    url = stack_env["api_url"] + "/events"
    accepted = {"events": 0, "requests": 0, "rejected": 0}
    accepted_ids: set[str] = set()
    high_water: dict[str, str] = {}

    @FUZZ
    @given(
        body=bodies,
        key=st.sampled_from(["valid", "missing", "wrong"]),
        headers=extra_headers,
        content_type=st.sampled_from([None, "application/json", "text/plain", "application/x-www-form-urlencoded"]),
    )
    def post(body, key, headers, content_type):
        kind, value = body
        h = dict(headers)
        if content_type:
            h["Content-Type"] = content_type
        if key == "valid":
            h["x-api-key"] = stack_env["api_key"]
        elif key == "wrong":
            h["x-api-key"] = "not-the-key"
        data = value if kind == "raw" else json.dumps(value).encode()
        response = requests.post(url, data=data, headers=h, timeout=60)
        _json_error(response)
        if response.status_code == 200:
            assert key == "valid"
            payload = response.json()
            accepted["events"] += payload["accepted"]
            accepted["requests"] += 1
            accepted_ids.update(payload["event_ids"])
            for shard, seq in payload["shards"].items():
                high_water[shard] = max(high_water.get(shard, "0"), seq, key=int)
        else:
            accepted["rejected"] += 1

    post()
    assert accepted["rejected"] > 0
    if high_water:
        assert wait_for_drain(high_water, stack_env["cfg"], timeout=120)
    c = counts(stack_env["cfg"])
    # Exactly the accepted events reached the stream; rejected requests nothing.
    assert c["stream_records"] - clean_stores["stream_records"] == accepted["events"]
    assert len(accepted_ids) == accepted["events"]
    # Most bodies keep GOOD's invoice number: a line naming another customer than the invoice's first
    # one is quarantined, not stored. Every accepted event is one or the other, nothing else failed.
    letters = list(deadletters.letters(stack_env["cfg"]))
    assert {letter.kind for letter in letters} <= {FOREIGN_LINE}
    foreign_ids = {json.loads(letter.data)["event_id"] for letter in letters}
    assert len(foreign_ids) == len(letters) and foreign_ids <= accepted_ids
    assert c["invoice_lines"] == accepted["events"] - len(foreign_ids)


def test_random_reads_never_5xx_and_never_leak(stack_env, clean_stores):
    # Two customers with one invoice each, and a guest invoice.
    seed = [
        dict(GOOD, InvoiceNo="F111", CustomerID=111, event_id="fuzz-111"),
        dict(GOOD, InvoiceNo="F222", CustomerID=222, event_id="fuzz-222"),
        dict(GOOD, InvoiceNo="F000", CustomerID=None, event_id="fuzz-000"),
    ]
    r = requests.post(
        stack_env["api_url"] + "/events", json=seed, headers={"x-api-key": stack_env["api_key"]}, timeout=60
    )
    assert r.status_code == 200
    assert wait_for_drain(r.json()["shards"], stack_env["cfg"], timeout=60)
    owner = {"F111": 111, "F222": 222, "111": 111, "222": 222}
    operator_key = config.auth().operator_key
    ids = st.one_of(
        st.sampled_from(["F111", "F222", "F000", "111", "222", "0", "..", "%2e%2e"]), st.text(min_size=1, max_size=40)
    )
    credentials = st.one_of(
        st.none(),
        header_values.map(lambda t: ("raw", t)),
        st.sampled_from([111, 222, 333]).map(lambda c: ("customer", c)),
        st.just(("operator", None)),
    )

    @FUZZ
    @given(
        route=st.sampled_from(["list", "invoice"]),
        ident=ids,
        credential=credentials,
        limit=st.one_of(st.none(), printable, st.integers(-5, 200).map(str)),
        next_token=st.one_of(st.none(), printable),
        headers=extra_headers,
    )
    def read(route, ident, credential, limit, next_token, headers):
        segment = urllib.parse.quote(ident, safe="")
        path = f"/customers/{segment}/invoices" if route == "list" else f"/invoices/{segment}"
        h = dict(headers)
        who = None
        if credential is not None:
            kind, value = credential
            if kind == "raw":
                h["Authorization"] = value
            elif kind == "customer":
                h["Authorization"] = f"Bearer {mint(value)}"
                who = value
            else:
                h["Authorization"] = f"Operator {operator_key}"
        params = {k: v for k, v in (("limit", limit), ("next", next_token)) if v is not None}
        response = requests.get(stack_env["api_url"] + path, headers=h, params=params, timeout=60)
        _json_error(response)
        if response.status_code == 200:
            assert credential is not None and credential[0] in ("customer", "operator")
            payload = response.json()
            if who is not None:
                # A customer sees only its own list and its own invoices.
                assert payload["customerId"] == who
                assert owner.get(ident, who) == who
                if route == "invoice":
                    assert ident in owner and owner[ident] == who

    read()
