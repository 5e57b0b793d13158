"""docs/openapi.yaml is the deployed API: same routes, same security, and real responses fit its schemas."""

from __future__ import annotations

import pytest
import requests
import yaml
from jsonschema import Draft202012Validator

from bootstrap.spec import platform
from ecom_core import aws, config
from ecom_core.config import PROJECT_ROOT as ROOT
from handlers.auth import mint
from tests.support.hostile import GOOD

pytestmark = pytest.mark.stack
DOC = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())


def _validator(schema: dict) -> Draft202012Validator:
    # The document's components travel with the schema so `#/components/...` references resolve.
    return Draft202012Validator({**schema, "components": DOC["components"]})


def _response_schema(path: str, method: str, status: int) -> dict:
    response = DOC["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = DOC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response["content"]["application/json"]["schema"]


def test_document_matches_deployed_routes(stack_env):
    apigw = aws.client("apigateway", stack_env["cfg"])
    api_id = stack_env["api_id"]
    deployed = {}
    for resource in apigw.get_resources(restApiId=api_id, limit=500)["items"]:
        for method in resource.get("resourceMethods") or {}:
            deployed[(resource["path"], method.lower())] = apigw.get_method(
                restApiId=api_id, resourceId=resource["id"], httpMethod=method
            )
    documented = {(path, method) for path, methods in DOC["paths"].items() for method in methods}
    assert set(deployed) == documented
    assert documented == {(r.path, r.method.lower()) for r in platform().routes}
    for (path, method), live in deployed.items():
        op = DOC["paths"][path][method]
        schemes = {name for requirement in op.get("security", []) for name in requirement}
        assert bool(live.get("apiKeyRequired")) == ("apiKey" in schemes), path
        if live.get("authorizationType") == "CUSTOM":
            assert schemes == {"customerToken", "operatorKey"}, path
        else:
            assert not {"customerToken", "operatorKey"} & schemes, path
        documented_params = {p["name"] for p in op.get("parameters", []) if p.get("in") == "path"}
        live_params = {k.rsplit(".", 1)[1] for k in (live.get("requestParameters") or {}) if ".path." in k}
        assert documented_params == live_params == {p[1:-1] for p in path.split("/") if p.startswith("{")}, path


def test_real_responses_fit_the_schemas(stack_env, clean_stores):
    base = stack_env["api_url"]
    key = {"x-api-key": stack_env["api_key"]}
    operator = {"Authorization": f"Operator {config.auth().operator_key}"}
    customer = {"Authorization": f"Bearer {mint(17850)}"}
    samples = []

    def check(path, method, response):
        schema = _response_schema(path, method, response.status_code)
        errors = list(_validator(schema).iter_errors(response.json()))
        assert not errors, (path, method, response.status_code, [e.message for e in errors][:3])
        samples.append((path, response.status_code))

    events = [
        dict(GOOD, event_id="oa-1"),
        dict(GOOD, event_id="oa-2", StockCode="71053", Quantity=-2, InvoiceNo="C536366"),
    ]
    _validator(DOC["paths"]["/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]).validate(events)
    posted = requests.post(base + "/events", json=events, headers=key, timeout=60)
    check("/events", "post", posted)
    check("/events", "post", requests.post(base + "/events", json=[{"InvoiceNo": 1}], headers=key, timeout=60))
    check("/events", "post", requests.post(base + "/events", json=GOOD, timeout=60))
    from warehouse.status import wait_for_drain

    assert wait_for_drain(posted.json()["shards"], stack_env["cfg"], timeout=60)

    lists = "/customers/{customerId}/invoices"
    check(
        lists,
        "get",
        requests.get(base + "/customers/17850/invoices", headers=customer, params={"limit": 1}, timeout=60),
    )
    check(lists, "get", requests.get(base + "/customers/17850/invoices", headers=operator, timeout=60))
    check(lists, "get", requests.get(base + "/customers/17850/invoices", timeout=60))
    check(lists, "get", requests.get(base + "/customers/12346/invoices", headers=customer, timeout=60))
    check(
        lists,
        "get",
        requests.get(base + "/customers/17850/invoices", headers=customer, params={"limit": 0}, timeout=60),
    )
    invoice = "/invoices/{invoiceNo}"
    check(invoice, "get", requests.get(base + "/invoices/536365", headers=customer, params={"limit": 1}, timeout=60))
    check(invoice, "get", requests.get(base + "/invoices/C536366", headers=operator, timeout=60))
    check(invoice, "get", requests.get(base + "/invoices/999", headers=customer, timeout=60))
    check(invoice, "get", requests.get(base + "/invoices/%C3%BC", headers=operator, timeout=60))
    assert sorted(samples) == sorted(
        [
            ("/events", 200),
            ("/events", 400),
            ("/events", 403),
            (lists, 200),
            (lists, 200),
            (lists, 401),
            (lists, 403),
            (lists, 400),
            (invoice, 200),
            (invoice, 200),
            (invoice, 404),
            (invoice, 400),
        ]
    )
    # Both invoices have the same minute: two pages of one, nothing lost or repeated at the tie.
    first = requests.get(base + "/customers/17850/invoices", headers=customer, params={"limit": 1}, timeout=60).json()
    second = requests.get(
        base + "/customers/17850/invoices", headers=customer, params={"limit": 1, "next": first["next"]}, timeout=60
    ).json()
    assert first["next"] and second["next"] is None
    assert sorted((i["invoiceNo"], i["lineCount"], i["kind"]) for i in first["invoices"] + second["invoices"]) == [
        ("536365", 1, "sale"),
        ("C536366", 1, "cancellation"),
    ]
