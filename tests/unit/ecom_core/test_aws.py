"""Unit tests of the ground package's AWS helpers (local stand-in servers; on the running emulator:
tests/stack/ecom_core/test_aws.py)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from ecom_core import aws, config


def test_pages_follow_last_evaluated_key():
    calls = []
    answers = [
        {"Items": [1, 2], "LastEvaluatedKey": {"k": 2}},
        {"Items": [3], "LastEvaluatedKey": {"k": 3}},
        {"Items": []},
    ]

    def query(**kwargs):
        calls.append(dict(kwargs))
        return answers[len(calls) - 1]

    assert list(aws.items(query, TableName="t")) == [1, 2, 3]
    assert calls == [
        {"TableName": "t"},
        {"TableName": "t", "ExclusiveStartKey": {"k": 2}},
        {"TableName": "t", "ExclusiveStartKey": {"k": 3}},
    ]


def test_service_missing_and_error_code():
    missing = ClientError(
        {"Error": {"Code": "InternalFailure"}, "ResponseMetadata": {"HTTPStatusCode": 501}}, "GetTable"
    )
    absent = ClientError(
        {"Error": {"Code": "EntityNotFoundException"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetTable"
    )
    assert aws.service_missing(missing) and not aws.service_missing(absent)
    assert aws.error_code(absent) == "EntityNotFoundException"


def test_one_retry_policy_and_endpoint_per_target(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    monkeypatch.setenv("ECOM_TARGET", "embedded")
    monkeypatch.setenv("ECOM_AWS_PORT", "4599")
    client = aws.client("s3")
    assert client.meta.endpoint_url == "http://127.0.0.1:4599"
    assert client.meta.config.retries == aws.RETRIES
    monkeypatch.setenv("ECOM_TARGET", "aws")
    assert config.stack().endpoint_url is None
    # Inside a Lambda the runtime decides (real AWS, or the emulator's injected AWS_ENDPOINT_URL).
    monkeypatch.setenv("ECOM_TARGET", "embedded")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "kinesis-trigger")
    assert config.stack().endpoint_url is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    assert config.stack().endpoint_url == "http://127.0.0.1:4566"


def test_wire_json_sends_what_the_model_serializer_would():
    """The trigger's writer sends wire-form BatchWriteItem bodies with json.dumps: same request as
    botocore's serializer builds (headers, target, body once parsed), other operations untouched."""
    import json

    import boto3
    from botocore.config import Config

    from ecom_core import aws

    def new_client():
        return boto3.session.Session(region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y").client(
            "dynamodb", endpoint_url="http://127.0.0.1:9", config=Config(parameter_validation=False)
        )

    params = {
        "RequestItems": {
            "invoice": [
                {
                    "PutRequest": {
                        "Item": {
                            "InvoiceNo": {"S": "536365"},
                            "LineId": {"S": "e-1"},
                            "Quantity": {"N": "6"},
                            "UnitPrice": {"N": "2.55"},
                            "Description": {"S": "CAFÉ “CRÈME” ☕"},
                        }
                    }
                }
            ]
        }
    }
    plain, wired = new_client(), aws.wire_json(new_client(), "BatchWriteItem")
    model = plain.meta.service_model.operation_model("BatchWriteItem")
    expected = plain._serializer.serialize_to_request(params, model)
    got = wired._serializer.serialize_to_request(params, model)
    assert json.loads(got["body"]) == json.loads(expected["body"]) == params
    assert {k: v for k, v in got.items() if k != "body"} == {k: v for k, v in expected.items() if k != "body"}
    query = plain.meta.service_model.operation_model("Query")
    query_params = {
        "TableName": "invoice",
        "KeyConditionExpression": "InvoiceNo = :n",
        "ExpressionAttributeValues": {":n": {"S": "536365"}},
    }
    assert wired._serializer.serialize_to_request(query_params, query) == plain._serializer.serialize_to_request(
        query_params, query
    )


class _Recorder:
    """A local HTTP endpoint answering each POST with the next (status, body, crc32 header) in
    `answers`, recording the requests; stands in for DynamoDB to test the fast path's fallbacks."""

    def __init__(self, answers, *, host: str = "127.0.0.1", tls=None):
        import http.server
        import socket
        import threading

        recorder = self
        self.answers, self.requests = list(answers), []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.requests.append((self.headers, body))  # names case-insensitive
                status, answer, checksum = recorder.answers.pop(0)
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                if checksum is not None:
                    self.send_header("x-amz-crc32", str(checksum))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self.server = Server((host, 0), Handler)
        if tls is not None:  # an ssl.SSLContext for the server side: HTTPS
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        bracketed = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if tls else 'http'}://{bracketed}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def _signature_checks(credentials, url: str, headers, body: bytes) -> bool:
    """Whether the request's SigV4 signature is the one botocore computes for the same request."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    again = AWSRequest(
        "POST",
        url + "/",
        data=body,
        headers={name: headers[name] for name in ("Content-Type", "X-Amz-Target", "X-Amz-Date")},
    )
    signer = SigV4Auth(credentials, "dynamodb", "eu-west-1")
    again.context["timestamp"] = headers["X-Amz-Date"]
    return (
        signer.signature(signer.string_to_sign(again, signer.canonical_request(again)), again)
        == headers["Authorization"].rsplit("Signature=", 1)[1]
    )


class _FallbackClient:
    """The botocore client's place: records what reached it."""

    def __init__(self, real):
        self.meta, self.calls = real.meta, []

    def batch_write_item(self, **parameters):
        self.calls.append(parameters)
        return {"UnprocessedItems": {}, "from": "botocore"}

    def describe_table(self, **parameters):
        return {"Table": parameters["TableName"]}


def test_signed_post_first_sends_one_signed_post_and_leaves_everything_else_to_botocore():
    """aws.SignedPostFirst: a clean 200 is the answer; an error status, a body failing its crc32,
    or no server at all send the same parameters through the client (botocore's retries and
    errors); other operations go straight to the client. The request is SigV4-signed for the
    client's service and region over exactly the body sent, with the operation's target header."""
    import json
    import zlib

    from botocore.credentials import Credentials

    ok = b'{"UnprocessedItems":{}}'
    server = _Recorder(
        [
            (200, ok, zlib.crc32(ok)),
            (200, ok, None),
            (500, b'{"__type":"InternalFailure"}', None),
            (200, ok, zlib.crc32(ok) ^ 1),
        ]
    )
    fallback = _FallbackClient(_dynamodb_client(server.url))
    credentials = Credentials("AKIDEXAMPLE", "secret")
    fast = aws.SignedPostFirst(fallback, frozenset({"BatchWriteItem"}), credentials, read_timeout=5)
    params = {
        "RequestItems": {
            "invoice": [
                {
                    "PutRequest": {
                        "Item": {
                            "InvoiceNo": {"S": "536365"},
                            "LineId": {"S": "e-1"},
                            "Description": {"S": "CAFÉ “CRÈME” ☕"},
                        }
                    }
                }
            ]
        }
    }

    assert fast.batch_write_item(**params) == {"UnprocessedItems": {}}  # checksum right
    assert fast.batch_write_item(**params) == {"UnprocessedItems": {}}  # no checksum sent
    assert fallback.calls == []
    assert fast.batch_write_item(**params)["from"] == "botocore"  # 500
    assert fast.batch_write_item(**params)["from"] == "botocore"  # checksum wrong
    assert fallback.calls == [params, params]
    assert fast.describe_table(TableName="invoice") == {"Table": "invoice"}
    assert len(server.requests) == 4

    headers, body = server.requests[0]
    assert json.loads(body) == params and "CAFÉ “CRÈME” ☕".encode() in body
    assert headers["X-Amz-Target"] == "DynamoDB_20120810.BatchWriteItem"
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    scope = f"AKIDEXAMPLE/{headers['X-Amz-Date'][:8]}/eu-west-1/dynamodb/aws4_request"
    assert headers["Authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
    )
    assert _signature_checks(credentials, server.url, headers, body)

    server.close()
    assert fast.batch_write_item(**params)["from"] == "botocore"  # nobody listening


def _dynamodb_client(url: str):
    import boto3

    return boto3.session.Session(
        region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret"
    ).client("dynamodb", endpoint_url=url)


def test_signed_post_first_over_https_verifies_the_server(tmp_path, monkeypatch):
    """The path real AWS takes: HTTPS. With the server's CA in the bundle (AWS_CA_BUNDLE, as
    botocore reads it) the signed POST goes out over TLS, signed for the Host it connects to; with
    a bundle that does not vouch for the server, the fast path refuses the connection and the call
    goes to botocore (which verifies as it always does)."""
    import json
    import ssl
    import zlib

    import trustme
    from botocore.credentials import Credentials

    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_context)
    ok = b'{"UnprocessedItems":{}}'
    server = _Recorder([(200, ok, zlib.crc32(ok))] * 3, host="localhost", tls=server_context)
    credentials = Credentials("AKIDEXAMPLE", "secret")
    params = {"RequestItems": {"invoice": [{"PutRequest": {"Item": {"InvoiceNo": {"S": "536365"}}}}]}}
    try:
        bundle = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(bundle))
        monkeypatch.setenv("AWS_CA_BUNDLE", str(bundle))
        fallback = _FallbackClient(_dynamodb_client(server.url))
        fast = aws.SignedPostFirst(fallback, frozenset({"BatchWriteItem"}), credentials, read_timeout=5)
        assert fast.batch_write_item(**params) == {"UnprocessedItems": {}}
        assert fast.batch_write_item(**params) == {"UnprocessedItems": {}}  # the kept-alive TLS connection
        assert fallback.calls == [] and len(server.requests) == 2
        headers, body = server.requests[0]
        assert json.loads(body) == params and headers["Host"] == f"localhost:{server.server.server_address[1]}"
        assert _signature_checks(credentials, server.url, headers, body)

        stranger = trustme.CA()  # a bundle that does not vouch for this server
        stranger.cert_pem.write_to_path(str(bundle))
        fallback = _FallbackClient(_dynamodb_client(server.url))
        unverified = aws.SignedPostFirst(fallback, frozenset({"BatchWriteItem"}), credentials, read_timeout=5)
        assert unverified.batch_write_item(**params)["from"] == "botocore"
        assert fallback.calls == [params] and len(server.requests) == 2  # nothing reached the server
    finally:
        server.close()


def _ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_signed_post_first_signs_an_ipv6_host_as_botocore_does():
    """An endpoint given as an IPv6 address: the Host header (which is signed) carries the address
    in brackets, as botocore sends it, and the server accepts the signature botocore would compute."""
    import json
    import zlib

    from botocore.credentials import Credentials

    ok = b'{"UnprocessedItems":{}}'
    server = _Recorder([(200, ok, zlib.crc32(ok))], host="::1")
    credentials = Credentials("AKIDEXAMPLE", "secret")
    params = {"RequestItems": {"invoice": [{"PutRequest": {"Item": {"InvoiceNo": {"S": "536365"}}}}]}}
    try:
        fallback = _FallbackClient(_dynamodb_client(server.url))
        fast = aws.SignedPostFirst(fallback, frozenset({"BatchWriteItem"}), credentials, read_timeout=5)
        assert fast.batch_write_item(**params) == {"UnprocessedItems": {}}
        assert fallback.calls == []
        headers, body = server.requests[0]
        assert json.loads(body) == params and headers["Host"] == f"[::1]:{server.server.server_address[1]}"
        assert _signature_checks(credentials, server.url, headers, body)
    finally:
        server.close()


def test_sigv4_signer_signs_as_botocore_does():
    """aws.SigV4Signer (signing key cached per day) gives botocore's SigV4Auth headers exactly: with
    and without a session token, across a day boundary, for a non-ASCII body."""
    import datetime
    from unittest import mock

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = json_body = '{"Records":[{"Data":"eyJ","PartitionKey":"536365"}],"Description":"CAFÉ ☕"}'.encode()
    for credentials in (Credentials("AKIDEXAMPLE", "secret"), Credentials("ASIAEXAMPLE", "secret2", "token/+=")):
        signer = aws.SigV4Signer(credentials, "kinesis", "eu-west-1")
        for now in (datetime.datetime(2026, 12, 2, 23, 59, 59), datetime.datetime(2026, 12, 3, 0, 0, 1)):
            ours = signer.headers(
                "kinesis.eu-west-1.amazonaws.com",
                "/",
                json_body,
                {"content-type": "application/x-amz-json-1.1", "x-amz-target": "Kinesis_20131202.PutRecords"},
                now,
            )
            request = AWSRequest(
                "POST",
                "https://kinesis.eu-west-1.amazonaws.com/",
                data=body,
                headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Kinesis_20131202.PutRecords"},
            )
            with mock.patch("botocore.auth.get_current_datetime", return_value=now):
                SigV4Auth(credentials, "kinesis", "eu-west-1").add_auth(request)
            assert ours["authorization"] == request.headers["Authorization"]
            assert ours["x-amz-date"] == request.headers["X-Amz-Date"] == now.strftime("%Y%m%dT%H%M%SZ")
            assert ours.get("x-amz-security-token") == request.headers.get("X-Amz-Security-Token")
