"""GET /customers/{id}/invoices and GET /invoices/{no} through the real API on the embedded stack."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from decimal import Decimal

import jwt as pyjwt
import pytest
import requests

from bench.readapi_data import (
    ADJUSTMENTS,
    BIG_CUSTOMER,
    BIG_CUSTOMER_INVOICES,
    BIG_INVOICE,
    BIG_INVOICE_LINES,
    OTHER_CUSTOMER,
    expectations,
    write_filtered,
)
from bootstrap.reset import empty_stores
from ecom_core import aws, config
from handlers.auth import mint
from tests.support import helpers

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def data(stack_env, tmp_path_factory):
    """All rows of 14911 and 12626, invoice 573585 and the adjustments, replayed twice (the second
    replay redelivers every event id: counts and totals must not move)."""
    path = write_filtered(
        tmp_path_factory.mktemp("readapi") / "readapi.csv",
        customers=(BIG_CUSTOMER, OTHER_CUSTOMER),
        invoices=(BIG_INVOICE, *ADJUSTMENTS),
    )
    empty_stores(stack_env["cfg"])
    first = helpers.replay_file(stack_env, path)
    entries_once = sorted(
        (int(i["CustomerID"]), i["InvoiceNo"], int(i["LineCount"]), i["Total"])
        for i in helpers.dynamo_items(stack_env["cfg"], config.resources().customer_table)
    )
    second = helpers.replay_file(stack_env, path)
    assert first.accepted == second.accepted == first.rows_read and not first.rejected
    return {"path": path, "expect": expectations(path), "entries_once": entries_once, "rows": first.rows_read}


def operator() -> dict[str, str]:
    return {"Authorization": f"Operator {config.auth().operator_key}"}


def bearer(customer: int | str, **kwargs) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint(customer, **kwargs)}"}


def get(stack_env, path: str, headers: dict | None = None, params: dict | None = None) -> requests.Response:
    return requests.get(stack_env["api_url"] + path, headers=headers or {}, params=params, timeout=60)


def body(response: requests.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    return json.loads(response.text, parse_float=Decimal)


def all_pages(stack_env, path: str, headers: dict, limit: int | None, key: str) -> tuple[list[dict], list[int]]:
    items, sizes, params = [], [], {"limit": limit} if limit else {}
    while True:
        response = get(stack_env, path, headers, params)
        assert response.status_code == 200, response.text[:300]
        page = body(response)
        items.extend(page[key])
        sizes.append(len(page[key]))
        assert page["count"] == len(page[key])
        if not page["next"]:
            return items, sizes
        params = {**params, "next": page["next"]}


# ------------------------------------------------------------------ the routes work
def test_redelivery_left_customer_entries_unchanged(stack_env, data):
    again = sorted(
        (int(i["CustomerID"]), i["InvoiceNo"], int(i["LineCount"]), i["Total"])
        for i in helpers.dynamo_items(stack_env["cfg"], config.resources().customer_table)
    )
    assert again == data["entries_once"]
    assert len(again) == len(data["expect"]["by_customer"][BIG_CUSTOMER]) + len(
        data["expect"]["by_customer"][OTHER_CUSTOMER]
    )


@pytest.mark.parametrize("limit,sizes", [(None, [20] * 12 + [8]), (7, [7] * 35 + [3]), (100, [100, 100, 48])])
def test_customer_pages_add_up_to_248(stack_env, data, limit, sizes):
    invoices, seen_sizes = all_pages(
        stack_env, f"/customers/{BIG_CUSTOMER}/invoices", bearer(BIG_CUSTOMER), limit, "invoices"
    )
    assert seen_sizes == sizes
    numbers = [i["invoiceNo"] for i in invoices]
    assert len(numbers) == len(set(numbers)) == BIG_CUSTOMER_INVOICES
    assert set(numbers) == data["expect"]["by_customer"][BIG_CUSTOMER]
    dates = [i["invoiceDate"] for i in invoices]
    assert dates == sorted(dates, reverse=True)  # newest first
    expected = data["expect"]["invoices"]
    for invoice in invoices:  # exact line counts and totals, every invoice
        e = expected[invoice["invoiceNo"]]
        assert (invoice["lineCount"], Decimal(invoice["total"])) == (e["lines"], e["total"]), invoice
        assert invoice["kind"] == ("cancellation" if invoice["invoiceNo"].startswith("C") else "sale")
    assert sum(i["kind"] == "cancellation" for i in invoices) == 47


def test_largest_invoice_pages_and_total(stack_env, data):
    lines, sizes = all_pages(stack_env, f"/invoices/{BIG_INVOICE}", operator(), 100, "lines")
    assert sizes == [100] * 11 + [14]
    assert len({line["lineId"] for line in lines}) == BIG_INVOICE_LINES
    e = data["expect"]["invoices"][BIG_INVOICE]
    assert sorted((line["stockCode"], line["quantity"], Decimal(line["unitPrice"])) for line in lines) == sorted(
        e["rows"]
    )
    assert all(Decimal(line["amount"]) == line["quantity"] * Decimal(line["unitPrice"]) for line in lines)
    head = body(get(stack_env, f"/invoices/{BIG_INVOICE}", operator()))
    assert (head["lineCount"], Decimal(head["total"]), head["customerId"], head["kind"]) == (
        BIG_INVOICE_LINES,
        e["total"],
        None,
        "sale",
    )
    assert head["count"] == len(head["lines"]) == 20 and head["next"]


def test_cancellations_and_adjustments_are_found(stack_env, data):
    cancel = sorted(n for n in data["expect"]["by_customer"][BIG_CUSTOMER] if n.startswith("C"))[0]
    page = body(get(stack_env, f"/invoices/{cancel}", bearer(BIG_CUSTOMER), {"limit": 100}))
    e = data["expect"]["invoices"][cancel]
    assert (page["kind"], page["cancelled"], page["customerId"], page["lineCount"], Decimal(page["total"])) == (
        "cancellation",
        True,
        BIG_CUSTOMER,
        e["lines"],
        e["total"],
    )
    assert all(line["quantity"] < 0 for line in page["lines"])
    for number in ADJUSTMENTS:
        page = body(get(stack_env, f"/invoices/{number}", operator()))
        e = data["expect"]["invoices"][number]
        assert (page["kind"], page["cancelled"], page["lineCount"], Decimal(page["total"])) == (
            "adjustment",
            False,
            1,
            e["total"],
        )


# ------------------------------------------------------------------ access rules
def test_customer_reads_only_own_data(stack_env, data):
    mine = bearer(BIG_CUSTOMER)
    other_invoice = sorted(data["expect"]["by_customer"][OTHER_CUSTOMER])[0]
    # Another customer's list: denied by the authorizer's policy (403), JSON body.
    r = get(stack_env, f"/customers/{OTHER_CUSTOMER}/invoices", mine)
    assert r.status_code == 403 and set(body(r)) == {"error", "type"} and body(r)["type"] == "ACCESS_DENIED"
    # Another customer's invoice, a guest invoice and an unknown invoice answer the same 404.
    for number in (other_invoice, BIG_INVOICE, ADJUSTMENTS[0], "999999"):
        r = get(stack_env, f"/invoices/{number}", mine)
        assert (r.status_code, body(r)) == (404, {"error": f"invoice {number} not found", "status": 404})
    # The other customer reads its own; the operator reads everything.
    assert get(stack_env, f"/invoices/{other_invoice}", bearer(OTHER_CUSTOMER)).status_code == 200
    assert body(get(stack_env, f"/customers/{OTHER_CUSTOMER}/invoices", operator()))["count"] == len(
        data["expect"]["by_customer"][OTHER_CUSTOMER]
    )
    assert body(get(stack_env, f"/invoices/{other_invoice}", operator()))["customerId"] == OTHER_CUSTOMER
    # Unknown customer for the operator: an empty list, not an error.
    assert body(get(stack_env, "/customers/99999/invoices", operator())) == {
        "customerId": 99999,
        "count": 0,
        "invoices": [],
        "next": None,
    }


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def bad_credentials() -> dict[str, str | None]:
    auth = config.auth()
    good = mint(BIG_CUSTOMER)
    head, payload, sig = good.split(".")
    now = int(time.time())
    claims = {"iss": auth.jwt_issuer, "aud": auth.jwt_audience, "sub": str(BIG_CUSTOMER), "exp": now + 600}
    other_payload = _b64({**json.loads(base64.urlsafe_b64decode(payload + "==")), "sub": str(OTHER_CUSTOMER)})
    return {
        "missing": None,
        "empty": "",
        "scheme only": "Bearer",
        "basic": "Basic dXNlcjpwYXNz",
        "garbage": "Bearer not.a.jwt",
        "two parts": f"Bearer {head}.{payload}",
        "expired": f"Bearer {mint(BIG_CUSTOMER, now=now - 7200, ttl_seconds=60)}",
        "not yet valid": "Bearer " + pyjwt.encode({**claims, "nbf": now + 3600}, auth.jwt_secret, algorithm="HS256"),
        "tampered signature": f"Bearer {head}.{payload}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}",
        "payload swapped to another customer": f"Bearer {head}.{other_payload}.{sig}",
        "alg none": f"Bearer {_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "alg none (pyjwt)": "Bearer " + pyjwt.encode(claims, None, algorithm="none"),
        "HS512": "Bearer " + pyjwt.encode(claims, auth.jwt_secret, algorithm="HS512"),
        "wrong secret": "Bearer " + pyjwt.encode(claims, "guessed-secret-guessed-secret-32b", algorithm="HS256"),
        "wrong audience": "Bearer "
        + pyjwt.encode({**claims, "aud": "someone-else"}, auth.jwt_secret, algorithm="HS256"),
        "wrong issuer": "Bearer " + pyjwt.encode({**claims, "iss": "evil"}, auth.jwt_secret, algorithm="HS256"),
        "no exp": "Bearer "
        + pyjwt.encode({k: v for k, v in claims.items() if k != "exp"}, auth.jwt_secret, algorithm="HS256"),
        "sub not a customer": "Bearer "
        + pyjwt.encode({**claims, "sub": "../admin"}, auth.jwt_secret, algorithm="HS256"),
        "self-promoted operator": "Bearer "
        + pyjwt.encode({**claims, "role": "operator"}, auth.jwt_secret, algorithm="HS256"),
        "wrong operator key": "Operator not-the-operator-key",
        "operator key as bearer": f"Bearer {auth.operator_key}",
    }


@pytest.mark.parametrize("case", list(bad_credentials()))
@pytest.mark.parametrize("route", ["list", "invoice"])
def test_bad_credentials_get_4xx_json_and_no_data(stack_env, data, case, route):
    value = bad_credentials()[case]
    headers = {} if value is None else {"Authorization": value}
    path = (
        f"/customers/{BIG_CUSTOMER}/invoices"
        if route == "list"
        else f"/invoices/{sorted(data['expect']['by_customer'][BIG_CUSTOMER])[0]}"
    )
    r = get(stack_env, path, headers)
    assert r.status_code in (401, 403), (case, r.status_code, r.text[:200])
    payload = body(r)
    assert isinstance(payload.get("error"), str) and payload["error"]
    assert not {"invoices", "lines", "customerId"} & set(payload)


def invoke_reads(
    stack_env, resource: str, params: dict, authorization: str | None, authorizer_context=None
) -> tuple[int, dict]:
    """Call the read Lambda directly, bypassing API Gateway and its authorizer."""
    path = resource.replace("{customerId}", str(params.get("customerId"))).replace(
        "{invoiceNo}", str(params.get("invoiceNo"))
    )
    event = {
        "resource": resource,
        "path": path,
        "httpMethod": "GET",
        "pathParameters": params,
        "headers": {} if authorization is None else {"Authorization": authorization},
        "queryStringParameters": None,
        "body": None,
        "isBase64Encoded": False,
        "requestContext": {"requestId": "direct", **({"authorizer": authorizer_context} if authorizer_context else {})},
    }
    lam = aws.client("lambda", stack_env["cfg"])
    out = json.loads(
        lam.invoke(FunctionName=config.resources().reads_function, Payload=json.dumps(event))["Payload"].read()
    )
    return out["statusCode"], json.loads(out["body"])


def test_handler_enforces_without_the_gateway(stack_env, data):
    """The authorizer is not the only check: the handler refuses the same things on its own."""
    list_route, invoice_route = "/customers/{customerId}/invoices", "/invoices/{invoiceNo}"
    own = {"customerId": str(BIG_CUSTOMER)}
    assert invoke_reads(stack_env, list_route, own, None)[0] == 401
    status, payload = invoke_reads(stack_env, list_route, own, bad_credentials()["alg none"])
    assert status == 401 and "algorithm" in payload["error"]
    status, payload = invoke_reads(
        stack_env,
        list_route,
        own,
        bad_credentials()["expired"],
        authorizer_context={"sub": str(BIG_CUSTOMER), "role": "customer"},
    )
    assert (status, payload["error"]) == (401, "token has expired")
    status, payload = invoke_reads(
        stack_env, list_route, {"customerId": str(OTHER_CUSTOMER)}, f"Bearer {mint(BIG_CUSTOMER)}"
    )
    assert status == 403 and "invoices" not in payload
    # A forged gateway context that disagrees with the credential is refused.
    status, _ = invoke_reads(
        stack_env,
        list_route,
        own,
        f"Bearer {mint(BIG_CUSTOMER)}",
        authorizer_context={"sub": "operator", "role": "operator"},
    )
    assert status == 403
    status, payload = invoke_reads(stack_env, invoice_route, {"invoiceNo": BIG_INVOICE}, f"Bearer {mint(BIG_CUSTOMER)}")
    assert (status, payload["error"]) == (404, f"invoice {BIG_INVOICE} not found")
    status, payload = invoke_reads(stack_env, list_route, own, f"Bearer {mint(BIG_CUSTOMER)}")
    assert status == 200 and payload["customerId"] == BIG_CUSTOMER and payload["count"] == 20


MALFORMED = [
    "..",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2f",
    "..%5C..%5Cwindows",
    "x" * 3000,
    "9" * 40,
    "%C3%BC%C3%B1%C3%AEc%C3%B8d%C3%A9",
    "%F0%9F%92%A9",
    "%00",
    "1%20OR%201%3D1",
    "%27%20OR%20%271%27%3D%271",
    "%7B%22%24ne%22%3Anull%7D",
    "14911%3B%20DROP%20TABLE%20invoice",
    "-1",
    "0",
    "014911",
    "1e5",
    "14911.0",
    "%24%7Bjndi%3Aldap%3A%2F%2Fx%7D",
    "%3Cscript%3E",
]


@pytest.mark.parametrize("segment", MALFORMED)
def test_malformed_ids_get_4xx_never_5xx(stack_env, data, segment):
    for headers in (operator(), bearer(BIG_CUSTOMER)):
        for path in (f"/customers/{segment}/invoices", f"/invoices/{segment}"):
            r = get(stack_env, path, headers)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:200])
            payload = body(r)
            assert isinstance(payload.get("error"), str)
            assert not {"invoices", "lines"} & set(payload)


@pytest.mark.parametrize(
    "params,message",
    [
        ({"limit": "0"}, "limit must be"),
        ({"limit": "101"}, "limit must be"),
        ({"limit": "ten"}, "limit must be"),
        ({"limit": "-5"}, "limit must be"),
        ({"next": "garbage!"}, "next token is not valid"),
        ({"next": "x" * 600}, "next token is too long"),
    ],
)
def test_bad_paging_parameters(stack_env, data, params, message):
    r = get(stack_env, f"/customers/{BIG_CUSTOMER}/invoices", bearer(BIG_CUSTOMER), params)
    assert r.status_code == 400 and message in body(r)["error"]


def test_next_token_is_bound_to_its_listing(stack_env, data):
    first = body(get(stack_env, f"/customers/{BIG_CUSTOMER}/invoices", operator()))
    r = get(stack_env, f"/customers/{OTHER_CUSTOMER}/invoices", operator(), {"next": first["next"]})
    assert r.status_code == 400 and "does not belong" in body(r)["error"]
    r = get(stack_env, f"/invoices/{BIG_INVOICE}", operator(), {"next": first["next"]})
    assert r.status_code == 400


def test_cli_token_and_query(stack_env, data):
    env = {**os.environ, **stack_env["env"]}
    ecom = [sys.executable, "-m", "ecom"]
    token = subprocess.run(
        ecom + ["token", str(BIG_CUSTOMER), "--ttl", "120"], env=env, capture_output=True, text=True, timeout=60
    ).stdout.strip()
    claims = pyjwt.decode(token, config.auth().jwt_secret, algorithms=["HS256"], audience=config.auth().jwt_audience)
    assert claims["sub"] == str(BIG_CUSTOMER) and claims["exp"] - claims["iat"] == 120
    out = subprocess.run(
        ecom + ["query", "customer", str(BIG_CUSTOMER), "--as-customer", "--limit", "100"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(f"{BIG_CUSTOMER_INVOICES} invoices for customer {BIG_CUSTOMER}")
    assert len(out.stdout.strip().splitlines()) == 2 + BIG_CUSTOMER_INVOICES + 1
    total = data["expect"]["invoices"][BIG_INVOICE]["total"]
    out = subprocess.run(
        ecom + ["query", "invoice", BIG_INVOICE, "--limit", "100"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith(f"{BIG_INVOICE_LINES} lines, total {total:.2f}")
    out = subprocess.run(
        ecom + ["query", "invoice", BIG_INVOICE, "--as-customer", str(BIG_CUSTOMER)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1 and f"404: invoice {BIG_INVOICE} not found" in out.stderr


def test_second_bootstrap_changes_nothing(stack_env):
    from bootstrap.deploy import deploy

    report = deploy(stack_env["cfg"])
    assert report.changed == []
    assert ("authorizer ecom-jwt-authorizer", "unchanged") in report.actions
