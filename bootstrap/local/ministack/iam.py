"""Patches to MiniStack's IAM checks (`ministack.core.iam_actions`, `ministack.core.iam_evaluator`),
for parity with AWS under `AUTH=true` (the embedded stack's setting, bootstrap/stack.py): the
resource a request is checked against, and the message of a denial.

- `resource_arn_as_aws` wraps `iam_actions.extract_resource_arn`:
  * Kinesis GetRecords names only its ShardIterator (MiniStack checked it against "*"): the
    iterator is MiniStack's own token, whose state holds the stream's ARN, so the check is on the
    stream, as on AWS.
  * Glue: GetDatabase (and the other database calls naming `Name`) is checked on
    `database/<db>`, not `table/<db>`; a table call (GetTable, CreateTable, UpdateTable,
    DeleteTable, GetTables...) on `table/<db>/<table>` (`table/<db>/*` for GetTables).
    `glue_checks_catalog_database_and_table` wraps `iam_evaluator.enforce` so that, as AWS does, a
    table call is also allowed on the catalog and the database, a database call on the catalog.
  * CloudWatch Logs: a call on one stream (CreateLogStream, PutLogEvents, GetLogEvents,
    DeleteLogStream) on `log-group:<g>:log-stream:<s>`; another call naming a group on
    `log-group:<g>:log-stream:` (what AWS's denials name, e.g. for CreateLogGroup, and what the
    documented `log-group:<g>:*` policy form matches); the tagging calls keep the bare group ARN
    (AWS's documented exception). The Logs tag conditions still read the group's tags
    (`logs_service_context` is given the group's own ARN).
- `loopback_as_tls` wraps `app.pin_request_origin`: the emulator serves plain HTTP on 127.0.0.1
  only (bootstrap/stack.py), standing in for the HTTPS endpoints every SDK uses on AWS, so a
  request from the loopback counts as `aws:SecureTransport` true. Without it the buckets'
  TLS-only policy (bootstrap/policies.tls_only_policy, set by the template) denied every
  function's S3 call. A request from another address keeps MiniStack's answer (false unless
  X-Forwarded-Proto says https).
- `denial_naming_the_resource` wraps `iam_actions.access_denied_response`: the message names the
  resource as AWS's does (`User: <arn> is not authorized to perform: <action> on resource:
  <resource> because no identity-based policy allows the <action> action`, and the explicit-deny
  variant; S3 quotes the resource). Status codes, error codes and envelopes stay MiniStack's.
  Each denial is also appended, as one JSON line (time, service, action, principal, resource), to
  the file ECOM_IAM_DENIALS_LOG names (bootstrap/stack.py: logs/iam-denials.jsonl): the one record
  of a refusal the function caught and did not log; the test suite asserts it stays empty outside
  the tests that deny on purpose (tests/conftest.py).

No upstream proposal yet. Checked in tests/stack/test_iam_policies.py (on the running stack) and
tests/unit/bootstrap/local/test_ministack.py (the declared names).
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import os
import time

from bootstrap.local.ministack._patching import check as _check
from bootstrap.local.ministack._patching import targets

ACTIONS = "ministack.core.iam_actions"
EVALUATOR = "ministack.core.iam_evaluator"
PATCHED = (
    targets(ACTIONS, "extract_resource_arn", "access_denied_response", "logs_service_context")
    + targets(EVALUATOR, "enforce")
    + targets("ministack.app", "pin_request_origin")
)
USED = targets(ACTIONS, "identity_denial_message") + targets(
    "ministack.services.kinesis", "_shard_iterators", kind="value"
)

# Logs calls on one stream: checked on the stream's ARN.
LOGS_STREAM_ACTIONS = frozenset({"CreateLogStream", "DeleteLogStream", "PutLogEvents", "GetLogEvents"})
# Logs calls AWS documents on the bare group ARN (no ":*").
LOGS_BARE_GROUP_ACTIONS = frozenset(
    {"TagLogGroup", "UntagLogGroup", "ListTagsLogGroup", "TagResource", "UntagResource", "ListTagsForResource"}
)
# Glue calls whose `Name` is a database's (the others' `Name` is a table's, next to DatabaseName).
GLUE_DATABASE_ACTIONS = frozenset({"GetDatabase", "CreateDatabase", "UpdateDatabase", "DeleteDatabase"})

# The resource a Glue check denied (the catalog or the database, not always the table the request
# named): the denial's message names it, as AWS's does. Per request (asyncio task).
_denied_glue_resource: contextvars.ContextVar[str | None] = contextvars.ContextVar("denied_glue_resource", default=None)


def _json(body) -> dict:
    try:
        data = json.loads(body or b"{}")
    except (ValueError, TypeError):
        return {}
    return data if isinstance(data, dict) else {}


def _operation(headers: dict) -> str:
    return headers.get("x-amz-target", "").rsplit(".", 1)[-1]


def kinesis_resource(body, region: str, account_id: str) -> str | None:
    """The stream a GetRecords' iterator reads (MiniStack's iterator state names it), else None."""
    from ministack.services import kinesis

    token = _json(body).get("ShardIterator")
    state = kinesis._shard_iterators.get(token) if isinstance(token, str) else None
    if not state:
        return None  # an unknown or expired iterator: MiniStack answers ExpiredIteratorException
    return state.get("stream_arn") or f"arn:aws:kinesis:{region}:{account_id}:stream/{state['stream']}"


def glue_resource(operation: str, body, region: str, account_id: str) -> str | None:
    data = _json(body)
    prefix = f"arn:aws:glue:{region}:{account_id}"
    database = data.get("DatabaseName")
    if operation in GLUE_DATABASE_ACTIONS:
        name = data.get("Name") or (data.get("DatabaseInput") or {}).get("Name")
        return f"{prefix}:database/{name}" if isinstance(name, str) and name else None
    if not isinstance(database, str) or not database:
        return None
    table = data.get("Name") or data.get("TableName") or (data.get("TableInput") or {}).get("Name")
    if operation == "GetTables" or not isinstance(table, str) or not table:
        return f"{prefix}:table/{database}/*" if operation.endswith("Tables") else None
    return f"{prefix}:table/{database}/{table}"


def logs_resource(operation: str, body, region: str, account_id: str) -> str | None:
    data = _json(body)
    group = data.get("logGroupName")
    if operation in LOGS_BARE_GROUP_ACTIONS or not isinstance(group, str) or not group:
        return None
    stream = data.get("logStreamName")
    if operation in LOGS_STREAM_ACTIONS and isinstance(stream, str) and stream:
        return f"arn:aws:logs:{region}:{account_id}:log-group:{group}:log-stream:{stream}"
    return f"arn:aws:logs:{region}:{account_id}:log-group:{group}:log-stream:"


def resource_arn_as_aws(original):
    def extract_resource_arn(service, method, path, headers, body, query_params, region, account_id):
        found = None
        if service == "kinesis" and _operation(headers) == "GetRecords":
            found = kinesis_resource(body, region, account_id)
        elif service == "glue":
            found = glue_resource(_operation(headers), body, region, account_id)
        elif service == "logs":
            found = logs_resource(_operation(headers), body, region, account_id)
        return found or original(service, method, path, headers, body, query_params, region, account_id)

    extract_resource_arn.__wrapped__ = original
    return extract_resource_arn


def glue_parents(resource_arn: str) -> list[str]:
    """The catalog (and database) AWS also checks for a Glue database (table) ARN, in that order."""
    head, sep, rest = (
        resource_arn.partition(":database/") if ":database/" in resource_arn else resource_arn.partition(":table/")
    )
    if not sep or not head.startswith("arn:aws:glue:"):
        return []
    parents = [f"{head}:catalog"]
    if sep == ":table/":
        parents.append(f"{head}:database/{rest.split('/', 1)[0]}")
    return parents


def glue_checks_catalog_database_and_table(original):
    def enforce(access_key_id, iam_action, service, region, resource_arn="*", service_context=None):
        if service == "glue":
            _denied_glue_resource.set(None)
            for checked in glue_parents(resource_arn) + [resource_arn]:
                denied = original(
                    access_key_id, iam_action, service, region, resource_arn=checked, service_context=service_context
                )
                if denied:
                    _denied_glue_resource.set(checked)
                    return denied
            return None
        return original(
            access_key_id, iam_action, service, region, resource_arn=resource_arn, service_context=service_context
        )

    enforce.__wrapped__ = original
    return enforce


def logs_context_on_the_group(original):
    """MiniStack reads a log group's tags by its own ARN: give it the group's, not the stream's."""

    def logs_service_context(action, body, resource_arn, region, account_id):
        if isinstance(resource_arn, str) and ":log-stream:" in resource_arn:
            resource_arn = resource_arn.split(":log-stream:", 1)[0]
        return original(action, body, resource_arn, region, account_id)

    logs_service_context.__wrapped__ = original
    return logs_service_context


def is_loopback(address) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except (ValueError, TypeError):
        return False


def loopback_as_tls(original):
    def pin_request_origin(source_ip, secure_transport):
        return original(source_ip, secure_transport or is_loopback(source_ip))

    pin_request_origin.__wrapped__ = original
    return pin_request_origin


def denial_naming_the_resource(original, identity_denial_message):
    def access_denied_response(
        service,
        action,
        principal_arn,
        request_id,
        *,
        error_code="",
        message="",
        headers=None,
        resource_arn="*",
        explicit_deny=False,
        resource_policy_arn="",
    ):
        if service == "glue":
            resource_arn = _denied_glue_resource.get() or resource_arn
            _denied_glue_resource.set(None)
        if not message and not error_code and not (explicit_deny and resource_policy_arn):
            named = f'"{resource_arn}"' if service == "s3" else resource_arn
            message = identity_denial_message(action, principal_arn, named, explicit_deny)
        record_denial(service, action, principal_arn, resource_arn)
        return original(
            service,
            action,
            principal_arn,
            request_id,
            error_code=error_code,
            message=message,
            headers=headers,
            resource_arn=resource_arn,
            explicit_deny=explicit_deny,
            resource_policy_arn=resource_policy_arn,
        )

    access_denied_response.__wrapped__ = original
    return access_denied_response


def record_denial(service: str, action: str, principal_arn: str, resource_arn: str) -> None:
    path = os.environ.get("ECOM_IAM_DENIALS_LOG")
    if path:
        line = json.dumps(
            {
                "at": round(time.time(), 3),
                "service": service,
                "action": action,
                "principal": principal_arn,
                "resource": resource_arn,
            }
        )
        with open(path, "a", encoding="utf-8") as log:  # one short write: whole lines under O_APPEND
            log.write(line + "\n")


def check() -> None:
    _check(__name__, PATCHED, USED)


def apply() -> None:
    """Refuse (PatchTargetMissing) before changing anything unless every name is there, then patch."""
    check()
    from ministack import app
    from ministack.core import iam_actions, iam_evaluator

    iam_actions.extract_resource_arn = resource_arn_as_aws(iam_actions.extract_resource_arn)
    iam_actions.logs_service_context = logs_context_on_the_group(iam_actions.logs_service_context)
    iam_actions.access_denied_response = denial_naming_the_resource(
        iam_actions.access_denied_response, iam_actions.identity_denial_message
    )
    iam_evaluator.enforce = glue_checks_catalog_database_and_table(iam_evaluator.enforce)
    app.pin_request_origin = loopback_as_tls(app.pin_request_origin)
