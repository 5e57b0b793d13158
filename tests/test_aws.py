"""Unit tests of the ground package's AWS helpers (no AWS call)."""
from __future__ import annotations

from botocore.exceptions import ClientError

from ecom_core import aws, config


def test_pages_follow_last_evaluated_key():
    calls = []
    answers = [{"Items": [1, 2], "LastEvaluatedKey": {"k": 2}}, {"Items": [3], "LastEvaluatedKey": {"k": 3}},
               {"Items": []}]

    def query(**kwargs):
        calls.append(dict(kwargs))
        return answers[len(calls) - 1]

    assert list(aws.items(query, TableName="t")) == [1, 2, 3]
    assert calls == [{"TableName": "t"}, {"TableName": "t", "ExclusiveStartKey": {"k": 2}},
                     {"TableName": "t", "ExclusiveStartKey": {"k": 3}}]


def test_service_missing_and_error_code():
    missing = ClientError({"Error": {"Code": "InternalFailure"}, "ResponseMetadata": {"HTTPStatusCode": 501}}, "GetTable")
    absent = ClientError({"Error": {"Code": "EntityNotFoundException"}, "ResponseMetadata": {"HTTPStatusCode": 400}},
                         "GetTable")
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
            "dynamodb", endpoint_url="http://127.0.0.1:9", config=Config(parameter_validation=False))

    params = {"RequestItems": {"invoice": [{"PutRequest": {"Item": {
        "InvoiceNo": {"S": "536365"}, "LineId": {"S": "e-1"}, "Quantity": {"N": "6"},
        "UnitPrice": {"N": "2.55"}, "Description": {"S": "CAFÉ “CRÈME” ☕"}}}}]}}
    plain, wired = new_client(), aws.wire_json(new_client(), "BatchWriteItem")
    model = plain.meta.service_model.operation_model("BatchWriteItem")
    expected = plain._serializer.serialize_to_request(params, model)
    got = wired._serializer.serialize_to_request(params, model)
    assert json.loads(got["body"]) == json.loads(expected["body"]) == params
    assert {k: v for k, v in got.items() if k != "body"} == {k: v for k, v in expected.items() if k != "body"}
    query = plain.meta.service_model.operation_model("Query")
    query_params = {"TableName": "invoice", "KeyConditionExpression": "InvoiceNo = :n",
                    "ExpressionAttributeValues": {":n": {"S": "536365"}}}
    assert wired._serializer.serialize_to_request(query_params, query) == \
        plain._serializer.serialize_to_request(query_params, query)
