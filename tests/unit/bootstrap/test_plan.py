"""The AWS plan (bootstrap/plan.py): it calls nothing, needs no credentials, is complete (the batch
half included) and prints no secret. No stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bootstrap.plan import plan
from bootstrap.spec import platform
from ecom_core import config


def test_aws_plan_calls_nothing_and_is_complete(monkeypatch):
    import boto3.session

    def no_calls(*args, **kwargs):
        raise AssertionError("the plan must not create an AWS client")

    monkeypatch.setattr(boto3.session.Session, "client", no_calls)
    doc = plan("eu-west-1")
    p = platform()
    assert doc["account"] == "<account-id>" and doc["region"] == "eu-west-1"
    assert [b["name"] for b in doc["s3_buckets"]] == ["batch-process-ecom", "staging-bucket-ecom", "dead-letter-ecom"]
    assert doc["kinesis_stream"] == {"name": "event-ingest", "shards": 2, "retention_hours": 24}
    tables = {t["name"]: t for t in doc["dynamodb_tables"]}
    assert [(k["attribute"], k["role"]) for k in tables["invoice"]["key"]] == [
        ("InvoiceNo", "HASH"),
        ("LineId", "RANGE"),
    ]
    assert [(k["attribute"], k["role"]) for k in tables["customer"]["key"]] == [
        ("CustomerID", "HASH"),
        ("InvoiceNo", "RANGE"),
    ]
    mapping = doc["event_source_mapping"]
    assert (
        mapping["starting_position"],
        mapping["batch_size"],
        mapping["maximum_retry_attempts"],
        mapping["bisect_batch_on_function_error"],
        mapping["on_failure"],
    ) == ("TRIM_HORIZON", p.mapping.batch_size, 50, True, "kinesis-trigger-dlq")
    assert {f["name"] for f in doc["lambda_functions"]} >= {"data-ingestion", "kinesis-trigger"}
    assert all(f["runtime"].startswith("python3.") for f in doc["lambda_functions"])

    # Least privilege: a role per function with only what it uses; no wildcard actions; every
    # resource named, in the plan's region and account.
    roles = {role["function"]: role for role in doc["iam_roles"]}
    assert set(roles) == {f["name"] for f in doc["lambda_functions"]}
    actions_of = {}
    for name, role in roles.items():
        assert role["trust_policy"]["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
        actions_of[name] = set()
        for statement in role["inline_policies"]["ecom-pipeline"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all("*" not in action for action in actions), statement
            actions_of[name].update(actions)
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            assert all(r != "*" for r in resources), statement
            assert all(r.startswith("arn:aws:s3:::") or ":eu-west-1:<account-id>:" in r for r in resources), statement
    logs = {"logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"}
    assert actions_of["data-ingestion"] == {"kinesis:PutRecords"} | logs
    assert not any(
        a.startswith(("dynamodb:Batch", "dynamodb:Put", "s3:", "kinesis:Put")) for a in actions_of["customer-reads"]
    )
    # The two verifiers read the keys from Secrets Manager, exactly those two secrets.
    assert actions_of["api-authorizer"] == logs | {"secretsmanager:GetSecretValue"}
    assert "secretsmanager:GetSecretValue" in actions_of["customer-reads"]
    assert not any(
        a.startswith("secretsmanager:") for a in actions_of["data-ingestion"] | actions_of["kinesis-trigger"]
    )
    secret_statement = next(
        st
        for st in roles["api-authorizer"]["inline_policies"]["ecom-pipeline"]["Statement"]
        if st["Sid"] == "ReadAuthSecrets"
    )
    assert secret_statement["Resource"] == [
        "arn:aws:secretsmanager:eu-west-1:<account-id>:secret:ecom/jwt-signing-key-??????",
        "arn:aws:secretsmanager:eu-west-1:<account-id>:secret:ecom/operator-key-??????",
    ]
    assert [(s["name"], s["store"]) for s in doc["secrets"]] == [
        ("ecom/jwt-signing-key", "AWS Secrets Manager"),
        ("ecom/operator-key", "AWS Secrets Manager"),
    ]
    assert {"dynamodb:BatchWriteItem", "s3:PutObject", "kinesis:GetRecords", "sqs:SendMessage"} <= actions_of[
        "kinesis-trigger"
    ]
    # It reads the customer entries it may settle from its batch and its invoices' owners, on those two
    # tables only; nobody else does.
    [entries] = [
        st
        for st in roles["kinesis-trigger"]["inline_policies"]["ecom-pipeline"]["Statement"]
        if "dynamodb:BatchGetItem" in st["Action"]
    ]
    assert entries["Resource"] == [
        "arn:aws:dynamodb:eu-west-1:<account-id>:table/customer",
        "arn:aws:dynamodb:eu-west-1:<account-id>:table/invoice-owner",
    ]
    assert all("dynamodb:BatchGetItem" not in actions_of[name] for name in actions_of if name != "kinesis-trigger")


def test_aws_plan_cli_needs_no_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "ECOM_DATA_DIR": str(tmp_path),
        }
    )
    out = subprocess.run(
        [sys.executable, "-m", "ecom", "bootstrap", "--target", "aws", "--plan", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["rest_api"]["routes"][0] == {
        "method": "POST",
        "path": "/events",
        "integration": "AWS_PROXY",
        "function": "data-ingestion",
        "api_key_required": True,
        "authorizer": None,
    }
    reads = [r for r in doc["rest_api"]["routes"] if r["method"] == "GET"]
    assert reads and all(r["authorizer"] and not r["api_key_required"] for r in reads)
    # Functions get the secrets' names only; no secret value (nor the local defaults) appears anywhere.
    envs = [f["environment"] for f in doc["lambda_functions"]]
    assert [e.get("ECOM_JWT_SECRET_ID") for e in envs if "ECOM_JWT_SECRET_ID" in e] == ["ecom/jwt-signing-key"] * 2
    assert not any(k in e for e in envs for k in ("ECOM_JWT_SECRET", "ECOM_OPERATOR_KEY", "ECOM_OPERATOR_KEY_SHA256"))
    assert not any(value in out.stdout for value in config.DEV_DEFAULTS.values()), "a plan must never print a secret"
    text = subprocess.run(
        [sys.executable, "-m", "ecom", "bootstrap", "--target", "aws", "--plan"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "nothing is created; no AWS call is made" in text and "kinesis stream       event-ingest: 2 shards" in text


def test_aws_plan_has_the_batch_half():
    """The scheduled job, its schedule and the schedule's role, the warehouse and Redshift's COPY role."""
    doc = plan(region="eu-west-1")
    job = next(f for f in doc["lambda_functions"] if f["name"] == "etl-job")
    assert (job["handler"], job["package"], job["timeout_s"]) == ("etl.job.handler", "etl", 900)
    assert {"ECOM_REDSHIFT_WORKGROUP", "ECOM_REDSHIFT_DATABASE"} <= set(job["environment"])
    # No DSN and no secret for one: the Data API authenticates with the job's role.
    assert not any("DSN" in name for name in job["environment"])
    [schedule] = doc["schedules"]
    assert (schedule["name"], schedule["expression"], schedule["target"], schedule["retry_attempts"]) == (
        "ecom-etl",
        "rate(1 minute)",
        "etl-job",
        0,
    )
    assert schedule["role_trust"]["Statement"][0]["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert schedule["role_policy"]["Statement"] == [
        {
            "Sid": "InvokeTarget",
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": "arn:aws:lambda:eu-west-1:<account-id>:function:etl-job",
        }
    ]
    warehouse = doc["warehouse"]
    assert warehouse["dialect"] == "redshift" and "Data API" in warehouse["access"]
    copy_role = warehouse["copy_role"]
    assert copy_role["trust"]["Statement"][0]["Principal"] == {"Service": "redshift.amazonaws.com"}
    actions = {a for st in copy_role["policy"]["Statement"] for a in st["Action"]}
    assert actions == {"s3:GetObject", "s3:ListBucket"}  # read-only on the staging bucket
    assert all(
        "staging-bucket-ecom" in r
        for st in copy_role["policy"]["Statement"]
        for r in ([st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"])
    )
    job_role = next(r for r in doc["iam_roles"] if r["function"] == "etl-job")
    sids = {st["Sid"] for st in job_role["inline_policies"]["ecom-pipeline"]["Statement"]}
    assert sids == {"EtlRawObjects", "EtlStagingObjects", "EtlListBuckets", "EtlCatalog", "RedshiftData", "Logs"}
