"""API Gateway request/response adapters (payload format 1.0 proxy, and the original passthrough)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    body: bytes | None  # raw body for proxy events
    parsed_body: Any = None  # already-parsed body for the passthrough shape
    passthrough: bool = False
    headers: dict[str, str] | None = None
    path_parameters: dict[str, str] | None = None
    query: dict[str, str] | None = None
    request_id: str = ""


def parse_request(event: dict[str, Any]) -> Request:
    """Accept the proxy event and the original project's `{"body-json": ..., "context": {...}}` shape."""
    if "body-json" in event:
        context = event.get("context") or {}
        return Request(
            method=str(context.get("http-method", "POST")).upper(),
            body=None,
            parsed_body=event.get("body-json"),
            passthrough=True,
            request_id=str(context.get("request-id", "")),
        )
    body = event.get("body")
    raw: bytes | None
    if body is None:
        raw = None
    elif event.get("isBase64Encoded"):
        raw = base64.b64decode(body)
    else:
        raw = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    context = event.get("requestContext") or {}
    return Request(
        method=str(event.get("httpMethod", "POST")).upper(),
        body=raw,
        headers=headers,
        path_parameters=event.get("pathParameters") or {},
        query=event.get("queryStringParameters") or {},
        request_id=str(context.get("requestId", "")),
    )


def response(status: int, payload: Any) -> dict[str, Any]:
    """The one JSON response shape of every route. Answers carry customer data or event ids:
    no shared cache may keep them."""
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", "Cache-Control": "no-store"},
        "body": json.dumps(payload, separators=(",", ":"), ensure_ascii=False),
    }


def error(status: int, message: str, **details: Any) -> dict[str, Any]:
    return response(status, {"error": message, **details})
