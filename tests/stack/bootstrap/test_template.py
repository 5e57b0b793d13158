"""The platform's CloudFormation template (bootstrap/template.py) deployed to the emulator's
CloudFormation beside the running stack, and used end to end. The template's own checks (lint,
no secret, no wildcard grant, the same resources as the plan) need no stack:
tests/unit/bootstrap/test_template.py; the deployment path itself: tests/stack/bootstrap/test_deploy.py."""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import pytest
import requests

from bootstrap.spec import function_environment, platform
from bootstrap.template import render, template, upload
from ecom_core import aws, config

# The template's own names get a prefix so the stack stands beside the one bootstrap deployed.
PREFIX = "cfn-"


def _prefixed(resources: config.Resources) -> config.Resources:
    names = {
        f.name: PREFIX + getattr(resources, f.name)
        for f in dataclasses.fields(resources)
        if isinstance(getattr(resources, f.name), str)
        and not f.name.endswith("_prefix")
        and f.name not in ("api_key_value", "api_stage")
    }
    return dataclasses.replace(resources, **names)


def _wait_stack(cfn, name: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
        except Exception as exc:  # noqa: BLE001 - a deleted stack is "does not exist"
            if "does not exist" in str(exc):
                return {"StackStatus": "DELETE_COMPLETE"}
            raise
        if not stack["StackStatus"].endswith("IN_PROGRESS"):
            return stack
        assert time.monotonic() < deadline, f"stack {name} still {stack['StackStatus']}"
        time.sleep(1)


@pytest.mark.stack
def test_template_deploys_to_the_emulators_cloudformation(stack_env):
    """Every resource of the AWS template is created by MiniStack's CloudFormation (no type skipped),
    the functions carry the spec's settings, an event POSTed to the stack's own API reaches the stack's
    own table through its own stream and mapping, and delete-stack removes all but the retained data."""
    cfg = stack_env["cfg"]
    p = platform(_prefixed(config.resources()), target="aws")
    r = p.resources
    s3 = aws.client("s3", cfg)
    artifact_bucket = f"{PREFIX}artifacts-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(
        Bucket=artifact_bucket,
        **({} if cfg.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": cfg.region}}),
    )
    keys = upload(s3, artifact_bucket, p)
    assert upload(s3, artifact_bucket, p) == keys  # content-addressed: a second upload is a no-op
    doc = template(p, artifact_bucket=artifact_bucket)
    cfn = aws.client("cloudformation", cfg)
    stack_name = f"ecom-pipeline-{uuid.uuid4().hex[:6]}"
    cfn.create_stack(
        StackName=stack_name, TemplateBody=render(doc, Path("t.yaml")), Capabilities=["CAPABILITY_NAMED_IAM"]
    )
    try:
        stack = _wait_stack(cfn, stack_name)
        events = [
            e
            for e in cfn.describe_stack_events(StackName=stack_name)["StackEvents"]
            if e.get("ResourceStatus", "").endswith("FAILED")
        ]
        assert stack["StackStatus"] == "CREATE_COMPLETE", events[:5]
        created = {
            x["LogicalResourceId"]: x for x in cfn.describe_stack_resources(StackName=stack_name)["StackResources"]
        }
        # Everything but what a condition leaves out on AWS (the emulators' warehouse DSN secret).
        assert set(created) == {
            lid for lid, res in doc["Resources"].items() if res.get("Condition") != "HasWarehouseDsn"
        }
        assert all(x["ResourceStatus"] == "CREATE_COMPLETE" for x in created.values())
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}

        # The resources are what the spec says, asked of each service.
        lam = aws.client("lambda", cfg)
        for fn in p.functions:
            conf = lam.get_function_configuration(FunctionName=fn.name)
            assert (conf["Handler"], conf["Runtime"], conf["MemorySize"], conf["Timeout"]) == (
                fn.handler,
                p.runtime,
                fn.memory,
                fn.timeout,
            )
            assert conf["Environment"]["Variables"] == function_environment(r, fn, target="aws")
            assert conf["Role"].endswith(f":role/{fn.role_name}")
        assert (
            aws.client("kinesis", cfg).describe_stream_summary(StreamName=r.stream)["StreamDescriptionSummary"][
                "OpenShardCount"
            ]
            == r.stream_shards
        )
        ddb = aws.client("dynamodb", cfg)
        for table in p.tables:
            described = ddb.describe_table(TableName=table.name)["Table"]
            assert [(k["AttributeName"], k["KeyType"]) for k in described["KeySchema"]] == [
                (a, k) for a, _, k in table.key
            ]
        schedule = aws.client("scheduler", cfg).get_schedule(Name=r.etl_schedule_name)
        assert (schedule["ScheduleExpression"], schedule["State"]) == (p.schedules[0].expression, p.schedules[0].state)
        assert schedule["Target"]["Arn"].endswith(f":function:{r.etl_function}")
        sm = aws.client("secretsmanager", cfg)
        jwt_key = sm.get_secret_value(SecretId=r.jwt_secret_name)["SecretString"]
        assert len(jwt_key) == 64 and jwt_key.isalnum() and jwt_key != config.DEV_JWT_SECRET
        assert aws.client("glue", cfg).get_database(Name=r.glue_database)["Database"]["Name"] == r.glue_database
        # The AWS form's hardening, where MiniStack keeps it: versioned buckets, the access log group.
        # (It accepts and drops the stream's encryption, the stage's access log setting and reserved
        # concurrency: docs/emulator-notes.md.)
        assert all(s3.get_bucket_versioning(Bucket=b).get("Status") == "Enabled" for b in p.buckets)
        access_logs = f"/aws/apigateway/{r.api_name}/{r.api_stage}"
        assert [
            g["logGroupName"]
            for g in aws.client("logs", cfg).describe_log_groups(logGroupNamePrefix=access_logs)["logGroups"]
        ] == [access_logs]
        mappings = lam.list_event_source_mappings(FunctionName=r.trigger_function)["EventSourceMappings"]
        assert [(m["BatchSize"], m["EventSourceArn"].endswith(f"/{r.stream}")) for m in mappings] == [
            (p.mapping.batch_size, True)
        ]

        # It works: one sample event through the stack's API, stream, mapping and trigger.
        apigw = aws.client("apigateway", cfg)
        key = apigw.get_api_key(apiKey=outputs["ApiKeyId"], includeValue=True)["value"]
        assert key and key != config.DEV_API_KEY
        event = {
            "InvoiceNo": "536365",
            "StockCode": "85123A",
            "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
            "Quantity": 6,
            "InvoiceDate": "12/1/2010 8:26",
            "UnitPrice": 2.55,
            "CustomerID": 17850,
            "Country": "United Kingdom",
            "event_id": f"cfn-smoke-{uuid.uuid4().hex}",
        }
        assert outputs["ApiStage"] == r.api_stage == "v1"
        url = aws.api_url(outputs["ApiId"], cfg, stage=outputs["ApiStage"]) + "/events"
        assert requests.post(url, json=event, timeout=30).status_code == 403  # no key: refused by the gateway
        answer = requests.post(url, json=event, headers={"x-api-key": key}, timeout=30)
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 120
        items: list = []
        while not items and time.monotonic() < deadline:
            items = ddb.query(
                TableName=r.invoice_table,
                KeyConditionExpression="InvoiceNo = :i",
                ExpressionAttributeValues={":i": {"S": "536365"}},
            )["Items"]
            time.sleep(1)
        assert [(i["StockCode"]["S"], i["Quantity"]["N"]) for i in items] == [("85123A", "6")]
    finally:
        retained_roles = [
            x["PhysicalResourceId"]
            for x in cfn.describe_stack_resources(StackName=stack_name)["StackResources"]
            if x["ResourceType"] == "AWS::IAM::Role"
            and doc["Resources"][x["LogicalResourceId"]].get("DeletionPolicy") == "Retain"
        ]
        cfn.delete_stack(StackName=stack_name)
        assert _wait_stack(cfn, stack_name)["StackStatus"] == "DELETE_COMPLETE"
        # Kept on AWS (API Gateway's account setting names it); here the test's own leftover.
        iam = aws.client("iam", cfg)
        for role in retained_roles:
            for attached in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
                iam.detach_role_policy(RoleName=role, PolicyArn=attached["PolicyArn"])
            iam.delete_role(RoleName=role)
    # Gone with the stack: functions, roles, stream, API. Kept (DeletionPolicy Retain): the data.
    lam = aws.client("lambda", cfg)
    names = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert not names & {fn.name for fn in p.functions}
    assert r.stream not in aws.client("kinesis", cfg).list_streams()["StreamNames"]
    buckets = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert set(p.buckets) <= buckets
    assert {t.name for t in p.tables} <= set(ddb.list_tables()["TableNames"])
    for bucket in p.buckets + [artifact_bucket]:  # every version: the data buckets are versioned
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for version in page.get("Versions", []) + page.get("DeleteMarkers", []):
                s3.delete_object(Bucket=bucket, Key=version["Key"], VersionId=version["VersionId"])
        s3.delete_bucket(Bucket=bucket)
    for table in p.tables:
        ddb.delete_table(TableName=table.name)
