"""The one deployment path: the platform is one CloudFormation stack, deployed through a change set.

Against the session's stack (tests/conftest.py), which `bootstrap.deploy.deploy` created: the stack
owns every resource the spec names, a second deployment changes nothing, and a changed function's
code updates that function and nothing else, and the deployed resources are as designed. Without a
stack, what a deployment to real AWS refuses before its first call: tests/unit/bootstrap/test_deploy.py.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
import zipfile

import pytest

from bootstrap import template
from bootstrap.deploy import Deployment, deploy, stack_name
from bootstrap.spec import function_environment, platform
from ecom_core import aws, config


def _stack_resources(cfg) -> dict[str, list[dict]]:
    """The stack's resources by type."""
    cfn = aws.client("cloudformation", cfg)
    out: dict[str, list[dict]] = {}
    for page in cfn.get_paginator("list_stack_resources").paginate(StackName=stack_name()):
        for res in page["StackResourceSummaries"]:
            out.setdefault(res["ResourceType"], []).append(res)
    return out


@pytest.mark.stack
def test_one_stack_owns_every_resource_the_platform_uses(stack_env):
    cfg = stack_env["cfg"]
    p = platform()
    r = p.resources
    owned = _stack_resources(cfg)
    assert all(res["ResourceStatus"].endswith("_COMPLETE") for kind in owned.values() for res in kind)

    def physical(kind: str) -> set[str]:
        return {res["PhysicalResourceId"] for res in owned.get(kind, [])}

    assert physical("AWS::Lambda::Function") == {fn.name for fn in p.functions}
    assert physical("AWS::DynamoDB::Table") == {t.name for t in p.tables}
    assert physical("AWS::Kinesis::Stream") == {r.stream}
    assert physical("AWS::S3::Bucket") == set(p.buckets)
    assert physical("AWS::Scheduler::Schedule") == {s.name for s in p.schedules}
    assert [url.rsplit("/", 1)[1] for url in physical("AWS::SQS::Queue")] == [r.dead_letter_queue]
    secrets = physical("AWS::SecretsManager::Secret")
    for name, _ in p.secrets:  # AWS names a secret by its ARN here, MiniStack by its name
        assert any(ident == name or f":secret:{name}-" in ident for ident in secrets), (name, secrets)
    assert physical("AWS::Glue::Database") == {r.glue_database}
    assert {res["LogicalResourceId"] for res in owned["AWS::Lambda::EventSourceMapping"]} == {
        template.logical_id("EventSourceMapping", r.trigger_function)
    }
    assert physical("AWS::IAM::Role") >= {fn.role_name for fn in p.functions} | {s.role_name for s in p.schedules} | {
        config.etl().redshift_copy_role_name
    }
    assert len(owned["AWS::CloudWatch::Alarm"]) == 4 and len(owned["AWS::Logs::MetricFilter"]) == 1

    # Each function as the spec says, with this target's environment, logging to a group the stack
    # owns with a retention; the secrets hold the emulator's configured values (NoEcho parameters).
    lam = aws.client("lambda", cfg)
    for fn in p.functions:
        conf = lam.get_function_configuration(FunctionName=fn.name)
        assert (conf["Handler"], conf["MemorySize"], conf["Timeout"]) == (fn.handler, fn.memory, fn.timeout)
        assert conf["Environment"]["Variables"] == function_environment(r, fn, target=cfg.target)
    groups = {
        g["logGroupName"]: g
        for g in aws.client("logs", cfg).describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"]
    }
    assert physical("AWS::Logs::LogGroup") == {f"/aws/lambda/{fn.name}" for fn in p.functions}
    assert all(
        groups[f"/aws/lambda/{fn.name}"].get("retentionInDays") == template.LOG_RETENTION_DAYS for fn in p.functions
    )
    sm = aws.client("secretsmanager", cfg)
    assert sm.get_secret_value(SecretId=r.operator_secret_name)["SecretString"] == config.auth().operator_key
    assert stack_env["api_key"] == r.api_key_value
    # No value in the stack's template or its parameters as described: NoEcho.
    cfn = aws.client("cloudformation", cfg)
    body = cfn.get_template(StackName=stack_name())["TemplateBody"]
    text = body if isinstance(body, str) else repr(body)
    assert not any(value in text for value in config.DEV_DEFAULTS.values())
    described = cfn.describe_stacks(StackName=stack_name())["Stacks"][0]
    assert not any(value in str(described["Parameters"]) for value in config.DEV_DEFAULTS.values())


@pytest.mark.stack
def test_a_second_deployment_changes_nothing(stack_env):
    cfg = stack_env["cfg"]
    report = deploy(cfg)
    assert report.changed == []
    assert ("lambda kinesis-trigger", "unchanged") in report.actions
    assert len(report.actions) == sum(len(v) for v in _stack_resources(cfg).values())
    assert report.outputs == {k: stack_env[k] for k in ("api_id", "api_url", "api_key", "stream_arn")}
    assert _pending_change_sets(cfg) == []  # the empty one was deleted


def _pending_change_sets(cfg) -> list[dict]:
    """Change sets left behind unexecuted (AWS removes executed ones; MiniStack lists them as
    EXECUTE_COMPLETE)."""
    summaries = aws.client("cloudformation", cfg).list_change_sets(StackName=stack_name())["Summaries"]
    return [s for s in summaries if s.get("ExecutionStatus") != "EXECUTE_COMPLETE"]


def _with_comment(blob: bytes, member: str) -> bytes:
    """The same zip with a comment appended to one of its files (same order and timestamps)."""
    source = zipfile.ZipFile(io.BytesIO(blob))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == member:
                data += b"\n# changed by tests/stack/bootstrap/test_deploy.py\n"
            archive.writestr(info, data)
    return out.getvalue()


@pytest.mark.stack
def test_a_changed_handler_updates_that_function_only(stack_env, monkeypatch):
    cfg = stack_env["cfg"]
    r = config.resources()
    lam = aws.client("lambda", cfg)
    before = {
        fn.name: lam.get_function_configuration(FunctionName=fn.name)["CodeSha256"] for fn in platform().functions
    }
    original = template.function_code

    def changed(fn):
        blob = original(fn)
        return _with_comment(blob, "handlers/reads.py") if fn.name == r.reads_function else blob

    monkeypatch.setattr(template, "function_code", changed)
    # What a deployment would do, asked first: the change set is shown, then deleted.
    planned = Deployment(cfg).plan()
    assert [(res, action) for res, action, _ in planned if action != "may update"] == [
        (f"lambda {r.reads_function}", "updated")
    ]
    # Routes that name the function's ARN are evaluated at execution (as on AWS); it does not change.
    assert {res for res, action, _ in planned if action == "may update"} <= {
        f"route {rt.method} {rt.path}" for rt in platform().routes if rt.function == r.reads_function
    }
    assert _pending_change_sets(cfg) == []
    try:
        report = deploy(cfg)
        assert report.changed == [(f"lambda {r.reads_function}", "updated")]
        after = {name: lam.get_function_configuration(FunctionName=name)["CodeSha256"] for name in before}
        assert {name for name in before if before[name] != after[name]} == {r.reads_function}
    finally:
        monkeypatch.setattr(template, "function_code", original)
        restored = deploy(cfg)
    assert restored.changed == [(f"lambda {r.reads_function}", "updated")]
    assert lam.get_function_configuration(FunctionName=r.reads_function)["CodeSha256"] == before[r.reads_function]


@pytest.mark.stack
def test_cli_plan_on_the_running_stack_shows_no_changes(stack_env):
    env = {**__import__("os").environ, **stack_env["env"]}
    out = subprocess.run(
        [sys.executable, "-m", "ecom", "bootstrap", "--plan"], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "no changes" in out.stdout and "not executed" in out.stdout


@pytest.mark.stack
def test_a_failed_deployment_raises_with_the_failed_resources_reasons(stack_env, monkeypatch):
    """A stack beside the session's (its names prefixed) with one resource that cannot be created (a
    custom resource whose function does not exist): the creation rolls back, the error names it and
    why, and the rollback leaves none of its buckets behind (RetainExceptOnCreate)."""
    import dataclasses

    from bootstrap import deploy as deployment

    cfg = stack_env["cfg"]
    r = config.resources()
    names = {
        f.name: "fail-" + getattr(r, f.name)
        for f in dataclasses.fields(r)
        if isinstance(getattr(r, f.name), str)
        and not f.name.endswith("_prefix")
        and f.name not in ("api_key_value", "api_stage")
    }
    p = platform(dataclasses.replace(r, **names))
    original = deployment.build

    def broken(*args, **kwargs):
        doc, labels = original(*args, **kwargs)
        doc["Resources"]["Broken"] = {
            "Type": "Custom::Broken",
            "DependsOn": [template.logical_id("Bucket", p.buckets[0])],
            "Properties": {
                "ServiceToken": {
                    "Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:no-such-function"
                }
            },
        }
        return doc, labels

    monkeypatch.setattr(deployment, "build", broken)
    name = "ecom-fail-" + uuid.uuid4().hex[:6]
    cfn = aws.client("cloudformation", cfg)
    try:
        with pytest.raises(deployment.DeployFailed) as failed:
            Deployment(cfg, name=name, p=p).run()
    finally:
        cfn.delete_stack(StackName=name)
    message = str(failed.value)
    assert "ROLLBACK" in message and "Broken (Custom::Broken) CREATE_FAILED" in message, message
    s3 = aws.client("s3", cfg)
    assert not {b["Name"] for b in s3.list_buckets()["Buckets"]} & set(p.buckets)


@pytest.mark.stack
def test_second_bootstrap_changes_nothing(stack_env):
    report = deploy(stack_env["cfg"])
    assert report.changed == []
    assert report.outputs["api_url"] == stack_env["api_url"]
    names = {resource for resource, _ in report.actions}
    for expected in (
        "s3 bucket batch-process-ecom",
        "s3 bucket staging-bucket-ecom",
        "kinesis stream event-ingest",
        "dynamodb table invoice",
        "dynamodb table customer",
        "glue database ecom",
        "lambda data-ingestion",
        "lambda kinesis-trigger",
        "route POST /events",
        "stage test",
        "event source mapping event-ingest -> kinesis-trigger",
    ):
        assert expected in names


@pytest.mark.stack
def test_resources_are_as_designed(stack_env):
    cfg = stack_env["cfg"]
    dynamodb = aws.client("dynamodb", cfg)
    invoice = dynamodb.describe_table(TableName="invoice")["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in invoice["KeySchema"]] == [
        ("InvoiceNo", "HASH"),
        ("LineId", "RANGE"),
    ]
    customer = dynamodb.describe_table(TableName="customer")["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in customer["KeySchema"]] == [
        ("CustomerID", "HASH"),
        ("InvoiceNo", "RANGE"),
    ]
    assert (
        aws.client("kinesis", cfg).describe_stream_summary(StreamName="event-ingest")["StreamDescriptionSummary"][
            "OpenShardCount"
        ]
        == 2
    )
    mapping = aws.client("lambda", cfg).list_event_source_mappings(FunctionName="kinesis-trigger")[
        "EventSourceMappings"
    ]
    assert len(mapping) == 1 and mapping[0]["StartingPosition"] == "TRIM_HORIZON"
    # API Gateway may invoke exactly what the spec lists (the plan and the template read the same list).
    from botocore.exceptions import ClientError

    from bootstrap.spec import invoke_permissions, platform

    lam = aws.client("lambda", cfg)
    api_id = next(
        a["id"]
        for a in aws.client("apigateway", cfg).get_rest_apis()["items"]
        if a["name"] == config.resources().api_name
    )
    granted: dict[str, list[str]] = {}  # function -> what part of the API may invoke it
    for function in lam.list_functions()["Functions"]:
        try:
            statements = json.loads(lam.get_policy(FunctionName=function["FunctionName"])["Policy"])["Statement"]
        except ClientError:
            continue
        granted[function["FunctionName"]] = sorted(
            s["Condition"]["ArnLike"]["AWS:SourceArn"].split(f":{api_id}/", 1)[1].split("/")[0] for s in statements
        )
    expected: dict[str, list[str]] = {}
    for function, source in invoke_permissions(platform()):
        expected.setdefault(function, []).append("*" if source == "routes" else "authorizers")
    assert {f: sorted(v) for f, v in expected.items()} == {f: v for f, v in granted.items() if v}
