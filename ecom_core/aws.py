"""The one AWS client factory: boto3 pointed at the configured target (emulator endpoint, or real
AWS when unset), one retry policy, plus the error and pagination helpers every layer shares.

Handlers, ETL, bootstrap, bench and CLI all build their clients here. Inside a Lambda the
runtime's own environment decides the endpoint (the emulators inject AWS_ENDPOINT_URL).
"""
from __future__ import annotations

import json

import os
from functools import lru_cache
from typing import Any, Callable, Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from ecom_core import config

# The emulators accept any credentials; these are local-development placeholders, not secrets.
LOCAL_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
# One retry policy for every client: botocore's "standard" mode (exponential backoff with jitter,
# retries throttling and transient 5xx) with a few more attempts than its default 3, because the
# emulator answers 5xx while it restarts.
RETRIES = {"max_attempts": 8, "mode": "standard"}


@lru_cache(maxsize=None)
def session(endpoint: str | None, region: str) -> boto3.session.Session:
    if endpoint and not os.environ.get("AWS_ACCESS_KEY_ID"):
        return boto3.session.Session(region_name=region, **LOCAL_CREDENTIALS)
    return boto3.session.Session(region_name=region)


def botocore_config(*, read_timeout: int = 120, max_pool_connections: int = 32,
                    parameter_validation: bool = True) -> Config:
    return Config(retries=RETRIES, max_pool_connections=max_pool_connections, connect_timeout=5,
                  read_timeout=read_timeout, parameter_validation=parameter_validation)


def client(service: str, cfg: config.Stack | None = None, *, read_timeout: int = 120,
           max_pool_connections: int = 32, parameter_validation: bool = True, **kwargs):
    """A new client. `parameter_validation=False` is for hot paths whose requests we build ourselves
    (botocore's validation was a large share of the stream trigger's CPU)."""
    cfg = cfg or config.stack()
    settings = botocore_config(read_timeout=read_timeout, max_pool_connections=max_pool_connections,
                               parameter_validation=parameter_validation)
    return session(cfg.endpoint_url, cfg.region).client(service, endpoint_url=cfg.endpoint_url,
                                                        config=settings, **kwargs)


def document_client(service: str = "dynamodb", cfg: config.Stack | None = None, **kwargs):
    """A client that speaks plain Python values (DynamoDB: str/Decimal/dict, no {"S": ...} wire form)."""
    cfg = cfg or config.stack()
    settings = botocore_config(**kwargs)
    return session(cfg.endpoint_url, cfg.region).resource(service, endpoint_url=cfg.endpoint_url,
                                                          config=settings).meta.client


class _WireJsonSerializer:
    """For the named operations of a JSON-protocol client (DynamoDB), the parameters arrive in
    wire form already (`{"S": ...}` items built by the caller) and are written with json.dumps,
    not walked through botocore's model-driven serializer (a quarter of the stream trigger's
    per-call CPU). Headers, signing, retries and response parsing stay botocore's."""

    def __init__(self, inner, operations: frozenset[str]):
        self._inner = inner
        self._operations = operations

    def serialize_to_request(self, parameters, operation_model):
        if operation_model.name not in self._operations:
            return self._inner.serialize_to_request(parameters, operation_model)
        request = self._inner.serialize_to_request({}, operation_model)
        request["body"] = json.dumps(parameters, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return request


def wire_json(client, *operations: str):
    """Make `client` send these operations' parameters as they are (see _WireJsonSerializer).
    Only for parameters in exact wire form, with validation off (they are not checked)."""
    client._serializer = _WireJsonSerializer(client._serializer, frozenset(operations))
    return client


@lru_cache(maxsize=None)
def shared_client(service: str, **kwargs):
    """One client per process and settings, reused across warm Lambda invocations (clients are
    thread-safe; building one costs ~50 ms)."""
    return client(service, **kwargs)


@lru_cache(maxsize=None)
def shared_document_client(service: str = "dynamodb"):
    return document_client(service)


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def service_missing(exc: ClientError) -> bool:
    """The target does not offer this service at all (LocalStack community has no Glue: HTTP 501)."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 501 or error_code(exc) in ("InternalFailure", "NotImplemented", "NotImplementedException")


def pages(call: Callable[..., dict[str, Any]], **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every page of a DynamoDB Query or Scan, following LastEvaluatedKey."""
    while True:
        page = call(**kwargs)
        yield page
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def items(call: Callable[..., dict[str, Any]], **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a DynamoDB Query or Scan, across pages."""
    for page in pages(call, **kwargs):
        yield from page.get("Items", [])


def api_url(api_id: str, cfg: config.Stack | None = None, stage: str | None = None) -> str:
    cfg = cfg or config.stack()
    stage = stage or config.resources().api_stage
    if cfg.endpoint_url:
        # LocalStack-compatible path form, served by both MiniStack and LocalStack.
        return f"{cfg.endpoint_url}/restapis/{api_id}/{stage}/_user_request_"
    return f"https://{api_id}.execute-api.{cfg.region}.amazonaws.com/{stage}"
