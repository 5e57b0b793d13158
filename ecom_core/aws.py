"""The one AWS client factory: boto3 pointed at the configured target (emulator endpoint, or real
AWS when unset), one retry policy, plus the error and pagination helpers every layer shares.

Handlers, ETL, bootstrap, bench and CLI all build their clients here. Inside a Lambda the
runtime's own environment decides the endpoint (the emulators inject AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import json
import os
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Iterator
from functools import cache
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import boto3
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.httpsession import get_cert_path

from ecom_core import config, json_codec

if TYPE_CHECKING:
    from botocore.config import _RetryDict  # the stubs' type of Config(retries=...)

# The emulators accept any credentials; these are local-development placeholders, not secrets.
LOCAL_ACCESS_KEY = LOCAL_SECRET_KEY = "test"
# One retry policy for every client: botocore's "standard" mode (exponential backoff with jitter,
# retries throttling and transient 5xx) with a few more attempts than its default 3, because the
# emulator answers 5xx while it restarts.
RETRIES: _RetryDict = {"max_attempts": 8, "mode": "standard"}
# A boto3 client. boto3-stubs types one per service only with its per-service packages
# (mypy-boto3-s3, ...), which are not installed: our clients are made from a service name.
Client: TypeAlias = Any


@cache
def session(endpoint: str | None, region: str) -> boto3.session.Session:
    if endpoint and not os.environ.get("AWS_ACCESS_KEY_ID"):
        return boto3.session.Session(
            region_name=region, aws_access_key_id=LOCAL_ACCESS_KEY, aws_secret_access_key=LOCAL_SECRET_KEY
        )
    return boto3.session.Session(region_name=region)


def botocore_config(
    *, read_timeout: int = 120, max_pool_connections: int = 32, parameter_validation: bool = True
) -> Config:
    return Config(
        retries=RETRIES,
        max_pool_connections=max_pool_connections,
        connect_timeout=5,
        read_timeout=read_timeout,
        parameter_validation=parameter_validation,
    )


def client(
    service: str,
    cfg: config.Stack | None = None,
    *,
    read_timeout: int = 120,
    max_pool_connections: int = 32,
    parameter_validation: bool = True,
    **kwargs: Any,
) -> Client:
    """A new client. `parameter_validation=False` is for hot paths whose requests we build ourselves
    (botocore's validation was a large share of the stream trigger's CPU)."""
    cfg = cfg or config.stack()
    settings = botocore_config(
        read_timeout=read_timeout, max_pool_connections=max_pool_connections, parameter_validation=parameter_validation
    )
    # The name is not a literal, which the stubs' per-service overloads need.
    return session(cfg.endpoint_url, cfg.region).client(
        service,
        endpoint_url=cfg.endpoint_for(service),  # type: ignore[call-overload]
        config=settings,
        **kwargs,
    )


def document_client(service: str = "dynamodb", cfg: config.Stack | None = None, **kwargs: Any) -> Client:
    """A client that speaks plain Python values (DynamoDB: str/Decimal/dict, no {"S": ...} wire form)."""
    cfg = cfg or config.stack()
    settings = botocore_config(**kwargs)
    resource = session(cfg.endpoint_url, cfg.region).resource(  # type: ignore[call-overload]  # (as in client())
        service, endpoint_url=cfg.endpoint_url, config=settings
    )
    return resource.meta.client


def wire_json_body(parameters: dict[str, Any]) -> bytes:
    """A JSON-protocol request body as both wire paths send it (compact, UTF-8): the fallback
    through botocore must send the very bytes the signed POST sent."""
    return json_codec.dumps(parameters)


class _WireJsonSerializer:
    """For the named operations of a JSON-protocol client (DynamoDB), the parameters arrive in
    wire form already (`{"S": ...}` items built by the caller) and are written as JSON as they are,
    not walked through botocore's model-driven serializer (a quarter of the stream trigger's
    per-call CPU). Headers, signing, retries and response parsing stay botocore's."""

    def __init__(self, inner: Any, operations: frozenset[str]) -> None:
        self._inner = inner
        self._operations = operations

    def serialize_to_request(self, parameters: dict[str, Any], operation_model: Any) -> dict[str, Any]:
        if operation_model.name not in self._operations:
            return self._inner.serialize_to_request(parameters, operation_model)
        request = self._inner.serialize_to_request({}, operation_model)
        request["body"] = wire_json_body(parameters)
        return request


def wire_json(client: Client, *operations: str) -> Client:
    """Make `client` send these operations' parameters as they are (see _WireJsonSerializer).
    Only for parameters in exact wire form, with validation off (they are not checked)."""
    client._serializer = _WireJsonSerializer(client._serializer, frozenset(operations))
    return client


class SigV4Signer:
    """SigV4 headers for a POST of a body to a path with no query string, as botocore's
    SigV4Auth signs it (same canonical request, same signed headers), with the signing key
    derived once per day and secret instead of on every request. Pure apart from the clock and the
    credentials' refresh (`get_frozen_credentials`); tests compare it with botocore's signer."""

    def __init__(self, credentials: Any, service: str, region: str) -> None:
        self._credentials = credentials
        self._service, self._region = service, region
        self._key: tuple[str, str, bytes] | None = None

    def _signing_key(self, day: str, secret: str) -> bytes:
        if self._key is None or self._key[:2] != (day, secret):
            key = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
            for part in (self._region, self._service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key = (day, secret, key)
        return self._key[2]

    def headers(
        self, host: str, path: str, body: bytes, headers: dict[str, str], now: datetime.datetime | None = None
    ) -> dict[str, str]:
        """`headers` (lower-case names) plus host, x-amz-date, the session token if any, and the
        Authorization that signs them all over `body`."""
        credentials = self._credentials.get_frozen_credentials()
        stamp = (now or datetime.datetime.now(datetime.UTC)).strftime("%Y%m%dT%H%M%SZ")
        signed = {**headers, "host": host, "x-amz-date": stamp}
        if credentials.token:
            signed["x-amz-security-token"] = credentials.token
        names = sorted(signed)
        signed_names = ";".join(names)
        canonical = "\n".join(
            [
                "POST",
                path,
                "",
                *(f"{n}:{' '.join(signed[n].split())}" for n in names),
                "",
                signed_names,
                hashlib.sha256(body).hexdigest(),
            ]
        )
        scope = f"{stamp[:8]}/{self._region}/{self._service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(
            self._signing_key(stamp[:8], credentials.secret_key), to_sign.encode(), hashlib.sha256
        ).hexdigest()
        signed["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return signed


class _NoDelay(http.client.HTTPConnection):
    # Without TCP_NODELAY a request's body waits on the header segment's delayed ACK (botocore
    # sets it on its sockets too): four writer threads took 3x longer.
    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _NoDelayConnection(_NoDelay):
    pass


class _NoDelayTLSConnection(_NoDelay, http.client.HTTPSConnection):
    pass


class SignedPostFirst:
    """A JSON-protocol client (DynamoDB, Kinesis) whose named operations are first sent as one SigV4-signed
    POST of their parameters, as they are, on a kept-alive connection of the calling thread; every
    other operation, and every answer but a clean 200, goes through the client itself.

    botocore's per-call machinery (event hooks, user-agent string, endpoint rules, retry handler,
    model-driven response parsing) was ~40% of the stream trigger's CPU per BatchWriteItem, and
    of what remained its signer (a new signing key per request) and HTTP stack (AWSRequest,
    urllib3's pool) were ~40% again (docs/performance.md). Only the success path is shortened: an
    error status, a connection error or a body failing its x-amz-crc32 check sends the same
    request again through the client, so throttling, retries, error codes and exceptions stay
    botocore's. Only for operations whose repetition the caller already tolerates, as it tolerates
    botocore's own retries (a BatchWriteItem of puts writes the same items again; PutRecords puts
    records again, on an at-least-once stream keyed downstream by event id; a Query or BatchGetItem
    reads again), and whose parameters
    are in exact wire form. A fast answer is the service's JSON without botocore's ResponseMetadata."""

    def __init__(
        self,
        client: Client,
        operations: frozenset[str],
        credentials: Any,
        *,
        read_timeout: int,
        connect_timeout: float = 5,
    ) -> None:
        self._client = client
        model = client.meta.service_model
        url = urlsplit(client.meta.endpoint_url)
        self._tls = url.scheme == "https"
        # One TLS context (it loads the CA bundle) for every connection this client opens.
        self._tls_context = (
            ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True))
            if self._tls
            else None
        )
        self._address = (url.hostname, url.port or (443 if self._tls else 80))
        # The Host header as botocore sends it (and signs it): an IPv6 address in brackets, the
        # port only when it is not the scheme's default.
        host = f"[{url.hostname}]" if ":" in (url.hostname or "") else url.hostname
        self._host = host if url.port in (None, 443 if self._tls else 80) else f"{host}:{url.port}"
        self._path = url.path or "/"
        self._timeouts = (connect_timeout, read_timeout)
        self._signer = SigV4Signer(credentials, model.signing_name, client.meta.region_name)
        self._content_type = f"application/x-amz-json-{model.metadata['jsonVersion']}"
        self._targets = {xform_name(name): f"{model.metadata['targetPrefix']}.{name}" for name in operations}
        self._local = threading.local()

    def __getattr__(self, name: str) -> Any:
        if name in self._targets:
            return lambda **parameters: self._post(name, parameters)
        return getattr(self._client, name)

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            host, port = self._address
            if self._tls:
                connection = _NoDelayTLSConnection(host, port, timeout=self._timeouts[0], context=self._tls_context)
            else:
                connection = _NoDelayConnection(host, port, timeout=self._timeouts[0])
            connection.connect()
            connection.sock.settimeout(self._timeouts[1])
            self._local.connection = connection
        return connection

    def _post(self, method: str, parameters: dict[str, Any]) -> dict[str, Any]:
        body = wire_json_body(parameters)
        headers = self._signer.headers(
            self._host, self._path, body, {"content-type": self._content_type, "x-amz-target": self._targets[method]}
        )
        try:
            connection = self._connection()
            connection.request("POST", self._path, body=body, headers=headers)
            response = connection.getresponse()
            status, content, checksum = response.status, response.read(), response.getheader("x-amz-crc32")
        except (OSError, http.client.HTTPException):
            # A dropped keep-alive connection, a timeout, nobody listening: a new connection next
            # time, and this request through botocore now.
            broken = self._local.__dict__.pop("connection", None)
            if broken is not None:
                broken.close()
            status = None
        if status == 200 and (checksum is None or int(checksum) == zlib.crc32(content)):
            # json itself: the answers are small, and PutRecords' sequence numbers are digit runs that
            # json_codec would hand to json anyway.
            return json.loads(content)
        return getattr(self._client, method)(**parameters)


def signed_post_first(
    client: Client, *operations: str, cfg: config.Stack | None = None, read_timeout: int = 120
) -> Client:
    """`client` (made by `client()` with the same cfg), its `operations` sent as SignedPostFirst and
    made `wire_json` here, so that a fallback through the client sends the same body. Through a
    proxy (HTTP(S)_PROXY) the client is returned as it is: SignedPostFirst connects directly."""
    cfg = cfg or config.stack()
    client = wire_json(client, *operations)
    credentials = session(cfg.endpoint_url, cfg.region).get_credentials()
    url = urlsplit(client.meta.endpoint_url)
    proxied = url.scheme in getproxies() and not proxy_bypass(url.hostname or "")
    if credentials is None or proxied:  # no credentials: botocore says so on the first call
        return client
    return SignedPostFirst(client, frozenset(operations), credentials, read_timeout=read_timeout)


@cache
def shared_client(service: str, **kwargs: Any) -> Client:
    """One client per process and settings, reused across warm Lambda invocations (clients are
    thread-safe; building one costs ~50 ms)."""
    return client(service, **kwargs)


@cache
def shared_document_client(service: str = "dynamodb") -> Client:
    return document_client(service)


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def service_missing(exc: ClientError) -> bool:
    """The target does not offer this service at all (LocalStack community has no Glue: HTTP 501)."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 501 or error_code(exc) in ("InternalFailure", "NotImplemented", "NotImplementedException")


def count_keys(s3: Client, bucket: str, prefix: str) -> int:
    """Objects under a prefix of an S3 bucket."""
    total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        total += page.get("KeyCount", len(page.get("Contents", [])))
    return total


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
