"""Hostile input without a stack: what ingestion accepts, every later stage can store
(ecom_core/contract.py), as a property on generated events; each limit names its field; the event
id is bound to its content; hostile tokens get 401; fault injection and local defaults are refused
on real AWS. The same attacks against the running stack: tests/stack/test_hostile_input.py."""

from __future__ import annotations

import csv
import io
import time

import pytest
from hypothesis import given

from ecom_core import aws, config, contract
from ecom_core.events import bound_event_id
from etl.transform import jsonl_to_csv
from handlers.auth import AuthError, verify_jwt
from handlers.events import InvalidEvent, accept_event, normalize_event
from handlers.stream_trigger import invoice_item, invoice_wire_item, serialize_item, write_jsonl
from tests.support.hostile import GOOD, PROPERTY, hostile_event, signed_token, token_claims


# ---------------------------------------------------------------- the rule, as a property (unit)
@PROPERTY
@given(raw=hostile_event)
def test_what_ingestion_accepts_every_stage_can_store(raw):
    """Accepted -> the trigger serialises its DynamoDB item, the raw object and the staging CSV are
    written, and the load's own row check passes (the warehouse types, Postgres and Redshift)."""
    event = dict(GOOD, **raw)
    try:
        accepted = accept_event(event)
    except InvalidEvent as exc:
        assert all(e.field for e in exc.errors)  # refused, naming the field: a 400
        return
    assert normalize_event(accepted, assign_id=False) == accepted  # the trigger accepts it as it is
    # The trigger's direct wire form is the generic serializer's, value for value.
    assert invoice_wire_item(accepted) == serialize_item(invoice_item(accepted))
    body = write_jsonl([accepted])
    data, rows = jsonl_to_csv(body)
    assert rows == 1
    [row] = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
    assert contract.csv_row_problem(row) is None, (row, contract.csv_row_problem(row))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("UnitPrice", 1e-200, "more than 3 decimal places"),  # would underflow DynamoDB's number type
        ("UnitPrice", 0.0001, "more than 3 decimal places"),  # the warehouse would round it away
        ("Quantity", 10**9 + 1, "out of range"),
        ("UnitPrice", 10**9 + 1, "out of range"),
        ("Description", "nul\x00byte", "U+0000"),
        ("Description", "\u202eevil", "U+202E"),  # bidi override
        ("StockCode", "zero\u200bwidth", "U+200B"),
        ("Description", "\ud800", "U+D800"),  # lone surrogate
        ("Country", "\u00a3" * 33, "longer than 64 bytes"),
        ("InvoiceNo", "5363\u200d65", "U+200D"),
        ("InvoiceNo", "536 365", "letters, digits"),  # the read API could never serve it
        ("InvoiceDate", "0001-01-01T00:00:00+01:00", "is not M/D/YYYY H:MM or ISO 8601"),
        ("InvoiceDate", "9999-12-31T23:59:00-01:00", "is not M/D/YYYY H:MM or ISO 8601"),
        ("InvoiceDate", "1900-01-01T00:00:00", "out of range"),
        ("CustomerID", 10**12, "positive integer below"),
        ("event_id", "ok-id\n", "event_id"),  # `$` would have matched before "\n"
    ],
)
def test_each_limit_names_its_field(field, value, message):
    with pytest.raises(InvalidEvent) as info:
        accept_event(dict(GOOD, **{field: value}))
    assert [(e.field, message in e.message or message == field) for e in info.value.errors] == [(field, True)], (
        info.value.errors
    )


def test_the_id_is_bound_to_the_content():
    first = accept_event(dict(GOOD, event_id="known-1"))
    assert first == accept_event(dict(GOOD, event_id="known-1", CustomerID=17850, UnitPrice=2.550))  # same event
    other = accept_event(dict(GOOD, event_id="known-1", CustomerID=12346))
    assert other["event_id"] != first["event_id"] and first["event_id"] == bound_event_id(
        normalize_event(dict(GOOD, event_id="known-1"))
    )


@pytest.mark.parametrize(
    "case",
    [
        "alg list",
        "alg object",
        "deep header",
        "exp year 5000",
        "no iat",
        "sub with newline",
        "sub with zero-width",
        "iat in the future",
    ],
)
def test_hostile_tokens_are_refused_as_401(case):
    auth = config.auth()
    header, claims = {"alg": "HS256", "typ": "JWT"}, token_claims(auth)
    if case == "alg list":
        header["alg"] = ["HS256"]
    elif case == "alg object":
        header["alg"] = {"HS256": True}
    elif case == "deep header":
        header = "[" * 5000 + "]" * 5000
    elif case == "exp year 5000":
        claims["exp"] = 95_617_584_000
    elif case == "no iat":
        del claims["iat"]
    elif case == "sub with newline":
        claims["sub"] = "14911\n"
    elif case == "sub with zero-width":
        claims["sub"] = "149\u200b11"
    else:
        claims["iat"] = claims["exp"] = int(time.time()) + 3600
    with pytest.raises(AuthError) as info:
        verify_jwt(signed_token(header, claims, auth), auth=auth)
    assert info.value.status == 401
    verify_jwt(signed_token({"alg": "HS256", "typ": "JWT"}, token_claims(auth), auth), auth=auth)  # the control passes


# ---------------------------------------------------------------- faults and secrets on AWS (unit)
def test_fault_injection_refuses_real_aws(monkeypatch):
    from ecom_core import faults

    monkeypatch.setenv("ECOM_FAULTS", "load.after_copy=1")
    monkeypatch.setenv("ECOM_TARGET", "aws")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    faults._parsed.clear()
    faults.maybe_fail("load.after_copy")  # would raise FaultInjected anywhere else
    monkeypatch.setenv("ECOM_TARGET", "embedded")
    faults._parsed.clear()
    with pytest.raises(faults.FaultInjected):
        faults.maybe_fail("load.after_copy")
    faults._parsed.clear()


def test_aws_deploy_refuses_local_defaults_before_any_call(monkeypatch):
    from bootstrap import deploy

    def no_aws(*args, **kwargs):
        raise AssertionError("no AWS call may happen before the refusal")

    monkeypatch.setattr(aws, "client", no_aws)
    aws_cfg = config.Stack(target="aws", aws_endpoint_url=None)
    for variable, default in config.DEV_DEFAULTS.items():
        monkeypatch.setenv(variable, default)
        with pytest.raises(deploy.RefusedForAws, match=variable):
            deploy.deploy(aws_cfg)
        monkeypatch.delenv(variable)
    monkeypatch.setenv("ECOM_FAULTS", "trigger.before_dynamodb=0.1")
    with pytest.raises(deploy.RefusedForAws, match="fault injection"):
        deploy.deploy(aws_cfg)
