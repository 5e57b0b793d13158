"""docs/openapi.yaml is a valid OpenAPI 3.1 document whose operations each answer a 2xx. No stack;
that it is the deployed API: tests/stack/test_openapi.py."""

from __future__ import annotations

import yaml
from jsonschema import Draft202012Validator

from ecom_core.config import PROJECT_ROOT as ROOT

DOC = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())


def test_document_is_valid_openapi_31_with_schemas():
    assert DOC["openapi"].startswith("3.1")
    for schema in DOC["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    for path, methods in DOC["paths"].items():
        for method, op in methods.items():
            assert op["responses"], (path, method)
            assert any(s.startswith("2") for s in op["responses"]), (path, method)
