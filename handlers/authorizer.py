"""Lambda `api-authorizer`: the API Gateway TOKEN authorizer of the read routes.

Input: {"type": "TOKEN", "authorizationToken": "Bearer <jwt>" | "Operator <key>", "methodArn": ...}.
A credential that does not verify -> raise "Unauthorized" (API Gateway answers 401).
A verified one -> an IAM policy. API Gateway caches it per token and evaluates the cached policy
against later requests' method ARNs, so the policy names every route the principal may call, not
just the one in this request:
- operator: GET on every path of this stage;
- customer: GET /customers/<own id>/invoices and GET /invoices/* (whose invoice it is, only the
  data can tell: the handler decides that); another customer's list is denied here (403).
"""

from __future__ import annotations

import json
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ecom_core import config
from handlers.auth import OPERATOR, AuthError, Principal, authenticate

RESOURCES = config.resources()


def stage_arn(method_arn: str) -> str:
    """arn:aws:execute-api:<region>:<account>:<api>/<stage>/<METHOD>/<path> -> .../<api>/<stage>"""
    prefix, _, rest = method_arn.partition("/")
    stage = rest.split("/", 1)[0]
    if not prefix.startswith("arn:") or not stage:
        raise ValueError(f"unexpected methodArn {method_arn[:200]!r}")
    return f"{prefix}/{stage}"


def policy_for(principal: Principal, method_arn: str) -> dict[str, Any]:
    base = stage_arn(method_arn)
    if principal.role == OPERATOR:
        resources = [f"{base}/GET/*"]
    else:
        resources = [f"{base}/GET/customers/{principal.customer_id}/invoices", f"{base}/GET/invoices/*"]
    return {
        "principalId": principal.subject,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": resources}],
        },
        "context": principal.as_context(),
    }


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    started = time.perf_counter()
    outcome: dict[str, Any] = {"fn": RESOURCES.authorizer_function}
    try:
        principal = authenticate(str(event.get("authorizationToken") or ""))
        result = policy_for(principal, str(event.get("methodArn") or ""))
        outcome.update(allowed=True, role=principal.role)
        return result
    except (BotoCoreError, ClientError):
        outcome.update(allowed=False, reason="secret store unavailable")
        raise  # our failure, not the client's: API Gateway answers 500 and the client may retry
    except Exception as exc:  # noqa: BLE001 - whatever the credential does to us, the answer is a 401
        # The reason is logged (never the token); the caller gets API Gateway's plain 401.
        reason = (
            str(exc) if isinstance(exc, (AuthError, ValueError)) else f"unreadable credential ({type(exc).__name__})"
        )
        outcome.update(allowed=False, reason=ascii(reason)[:200])
        raise Exception("Unauthorized") from None  # the exact message API Gateway maps to 401
    finally:
        outcome["ms"] = round((time.perf_counter() - started) * 1000, 1)
        print(json.dumps(outcome))
