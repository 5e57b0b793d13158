"""The platform as a CloudFormation template: lint-clean, no secret, no wildcard grant, the same
resources as the plan. Deployed to the emulator beside the running stack:
tests/stack/bootstrap/test_template.py; the deployment path itself: tests/stack/bootstrap/test_deploy.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from bootstrap import spec
from bootstrap.plan import plan
from bootstrap.spec import function_environment, platform
from bootstrap.template import NONCURRENT_VERSION_DAYS, artifacts, build, render, template, write
from ecom_core import config

ROOT = Path(__file__).resolve().parents[3]
REGION = "eu-west-1"


def _cfn_lint(path: Path) -> subprocess.CompletedProcess:
    # Informational checks included: explicit deletion policies, no hard-coded partition.
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from cfnlint.runner import main; sys.exit(main())",
            "--include-checks",
            "I",
            "--",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("create_redshift", ["0", "1"])
def test_template_passes_cfn_lint(tmp_path, monkeypatch, create_redshift):
    monkeypatch.setenv("ECOM_CREATE_REDSHIFT", create_redshift)
    path = tmp_path / "ecom.yaml"
    doc, zips = write(path)
    out = _cfn_lint(path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == ""
    # The zips sit beside it under the keys the functions name.
    keys = {f["Properties"]["Code"]["S3Key"] for f in doc["Resources"].values() if f["Type"] == "AWS::Lambda::Function"}
    assert {z.relative_to(tmp_path).as_posix() for z in zips} == keys and len(keys) == len(platform().functions)
    assert ("AWS::RedshiftServerless::Workgroup" in {r["Type"] for r in doc["Resources"].values()}) == (
        create_redshift == "1"
    )
    # JSON too, same content.
    assert json.loads(render(doc, tmp_path / "ecom.json")) == yaml.safe_load(path.read_text())


def _statements(doc: dict) -> list[dict]:
    found = []

    def walk(value):
        if isinstance(value, dict):
            if "Statement" in value and "Version" in value:
                found.extend(value["Statement"])
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(doc)
    return found


def test_template_holds_no_secret_and_grants_no_wildcard_action(tmp_path, monkeypatch):
    # Values a user might have configured must not leak into the template either.
    monkeypatch.setenv("ECOM_JWT_SECRET", "configured-jwt-secret-" + uuid.uuid4().hex)
    monkeypatch.setenv("ECOM_OPERATOR_KEY", "configured-operator-key-" + uuid.uuid4().hex)
    monkeypatch.setenv("ECOM_API_KEY", "configured-api-key-" + uuid.uuid4().hex)
    doc, _ = write(tmp_path / "ecom.yaml")
    text = (tmp_path / "ecom.yaml").read_text()
    for value in [
        *config.DEV_DEFAULTS.values(),
        os.environ["ECOM_JWT_SECRET"],
        os.environ["ECOM_OPERATOR_KEY"],
        os.environ["ECOM_API_KEY"],
        config.DEV_PG_PASSWORD,
    ]:
        assert value not in text
    # Values come only from NoEcho parameters (the emulators'); left empty (AWS), they are generated.
    no_value = {"Ref": "AWS::NoValue"}
    secrets = {
        r["Properties"]["Name"]: r["Properties"]
        for r in doc["Resources"].values()
        if r["Type"] == "AWS::SecretsManager::Secret"
    }
    for name, parameter in (("ecom/jwt-signing-key", "JwtSecret"), ("ecom/operator-key", "OperatorKey")):
        condition = "Has" + parameter
        assert secrets[name]["SecretString"] == {"Fn::If": [condition, {"Ref": parameter}, no_value]}
        generated = secrets[name]["GenerateSecretString"]["Fn::If"]
        assert generated[:2] == [condition, no_value] and generated[2]["PasswordLength"] >= 64
        assert doc["Parameters"][parameter]["NoEcho"] and doc["Parameters"][parameter]["Default"] == ""
        assert doc["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}
    [key] = [r["Properties"] for r in doc["Resources"].values() if r["Type"] == "AWS::ApiGateway::ApiKey"]
    assert key["Value"] == {"Fn::If": ["HasApiKeyValue", {"Ref": "ApiKeyValue"}, no_value]}
    assert doc["Parameters"]["ApiKeyValue"]["NoEcho"]
    statements = _statements(doc)
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert len(allows) >= 15
    for statement in allows:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), statement
        resources = statement.get("Resource", [])  # none in a trust policy
        assert "*" not in (resources if isinstance(resources, list) else [resources]), statement
    # The only Deny is each bucket's TLS-only policy: it must cover every action to mean anything.
    denies = [s for s in statements if s["Effect"] == "Deny"]
    assert [(s["Sid"], s["Action"], s["Condition"]) for s in denies] == [
        ("TlsOnly", "s3:*", {"Bool": {"aws:SecureTransport": "false"}})
    ] * 3


# ------------------------------------------------------------------ the AWS form's hardening
def _of_type(doc: dict, rtype: str) -> dict[str, dict]:
    return {lid: r for lid, r in doc["Resources"].items() if r["Type"] == rtype}


def test_aws_template_is_hardened():
    doc, p = template(), platform(target="aws")
    r = p.resources
    [stream] = _of_type(doc, "AWS::Kinesis::Stream").values()
    assert stream["Properties"]["StreamEncryption"] == {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}
    # Versioned buckets whose replaced and deleted versions expire.
    buckets = _of_type(doc, "AWS::S3::Bucket")
    assert len(buckets) == 3
    for bucket in buckets.values():
        props = bucket["Properties"]
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        [rule] = props["LifecycleConfiguration"]["Rules"]
        assert rule["Status"] == "Enabled" and "Prefix" not in rule and "Filter" not in rule  # the whole bucket
        assert (
            rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": NONCURRENT_VERSION_DAYS}
            and rule["ExpiredObjectDeleteMarker"] is True
        )
    # Access logs: one JSON object per request, into a log group of the stack with a retention, written
    # with the account's API Gateway logs role, which the stage waits for.
    [(stage_id, stage)] = _of_type(doc, "AWS::ApiGateway::Stage").items()
    setting = stage["Properties"]["AccessLogSetting"]
    group = doc["Resources"][setting["DestinationArn"]["Fn::GetAtt"][0]]
    assert setting["DestinationArn"]["Fn::GetAtt"][1] == "Arn" and group["Type"] == "AWS::Logs::LogGroup"
    assert group["Properties"]["RetentionInDays"] == 30 and group["DeletionPolicy"] == "Delete"
    fields = json.loads(setting["Format"])
    assert fields["requestId"] == "$context.requestId" and fields["status"] == "$context.status"
    assert "$context.identity.apiKey" not in fields.values()  # the key's id, never the key
    [(account_id, account)] = _of_type(doc, "AWS::ApiGateway::Account").items()
    assert stage["DependsOn"] == [account_id]
    logs_role = doc["Resources"][account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]]
    assert logs_role["DeletionPolicy"] == "Retain" and "RoleName" not in logs_role["Properties"]
    assert logs_role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "apigateway.amazonaws.com"
    }
    # Reserved concurrency for the functions behind the public API, none for the others.
    public = {rt.function for rt in p.routes} | {a.function for a in p.authorizers}
    assert public == {r.ingestion_function, r.reads_function, r.authorizer_function}
    functions = {
        f["Properties"]["FunctionName"]: f["Properties"] for f in _of_type(doc, "AWS::Lambda::Function").values()
    }
    reserved = {name: f.get("ReservedConcurrentExecutions") for name, f in functions.items()}
    assert reserved == {fn.name: fn.reserved_concurrency for fn in p.functions}
    assert {name for name, value in reserved.items() if value} == public
    # Together they leave the default account quota (1,000) well over the 100 AWS keeps unreserved.
    assert sum(v for v in reserved.values() if v) <= 1000 - 100 - 200
    # Production names: no development stage, key name or token issuer on a real account.
    assert (stage["Properties"]["StageName"], stage_id) == ("v1", "StageV1")
    [key] = _of_type(doc, "AWS::ApiGateway::ApiKey").values()
    assert key["Properties"]["Name"] == "ecom-pipeline-key"
    assert doc["Outputs"]["ApiUrl"]["Value"]["Fn::Sub"].endswith("/v1") and doc["Outputs"]["ApiStage"]
    for name in (r.reads_function, r.authorizer_function):
        assert functions[name]["Environment"]["Variables"]["ECOM_JWT_ISSUER"] == "ecom-pipeline"
    text = json.dumps(doc)
    assert "ecom-local" not in text and '"test"' not in text and "/test" not in text


def test_emulator_template_keeps_the_development_names_and_leaves_out_what_the_emulators_ignore():
    """The emulators' form: the names the README, the CLI and the tests use, and none of the AWS-only
    hardening (docs/emulator-notes.md says why)."""
    doc, _ = build(target="embedded")
    r = config.resources()
    [stage] = _of_type(doc, "AWS::ApiGateway::Stage").values()
    assert stage["Properties"]["StageName"] == r.api_stage == "test" and "AccessLogSetting" not in stage["Properties"]
    [key] = _of_type(doc, "AWS::ApiGateway::ApiKey").values()
    assert key["Properties"]["Name"] == r.api_key_name == "ecom-local-key"
    functions = {
        f["Properties"]["FunctionName"]: f["Properties"] for f in _of_type(doc, "AWS::Lambda::Function").values()
    }
    assert functions[r.reads_function]["Environment"]["Variables"]["ECOM_JWT_ISSUER"] == config.auth().jwt_issuer
    assert not any("ReservedConcurrentExecutions" in f for f in functions.values())
    [stream] = _of_type(doc, "AWS::Kinesis::Stream").values()
    assert "StreamEncryption" not in stream["Properties"]
    assert not any("VersioningConfiguration" in b["Properties"] for b in _of_type(doc, "AWS::S3::Bucket").values())
    assert not _of_type(doc, "AWS::ApiGateway::Account")
    assert all("RoleName" in res["Properties"] for res in _of_type(doc, "AWS::IAM::Role").values())
    # Same resources otherwise, with the same logical ids but the stage's and the key's (named after them).
    aws_ids = set(template()["Resources"]) - {"RoleApiGatewayCloudWatch", "ApiGatewayAccount", "LogGroupEcomApiAccess"}
    assert set(doc["Resources"]) ^ aws_ids == {"StageTest", "StageV1", "ApiKeyEcomLocalKey", "ApiKeyEcomPipelineKey"}


def test_a_configured_token_issuer_is_kept_on_aws(monkeypatch):
    monkeypatch.setenv("ECOM_JWT_ISSUER", "https://auth.example.com")
    reads = next(fn for fn in platform().functions if fn.auth_env)
    assert (
        function_environment(config.resources(), reads, target="aws")["ECOM_JWT_ISSUER"] == "https://auth.example.com"
    )


def test_every_checkov_skip_says_why():
    for doc in (template(), build(target="embedded")[0]):
        for lid, res in doc["Resources"].items():
            for skip in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
                assert set(skip) == {"id", "comment"} and skip["id"].startswith(("CKV_AWS_", "CKV2_AWS_")), lid
                assert 20 <= len(skip["comment"]) <= 100, (lid, skip)


def _checkov() -> str | None:
    """checkov pins boto3 1.35 (the project pins 1.43), so it lives in a virtualenv of its own: $CHECKOV,
    else on PATH. CI installs it (.github/workflows/ci.yml)."""
    return os.environ.get("CHECKOV") or shutil.which("checkov")


@pytest.mark.parametrize("create_redshift", ["0", "1"])
def test_aws_template_passes_checkov(tmp_path, monkeypatch, create_redshift):
    checkov = _checkov()
    if not checkov:
        pytest.skip("checkov is not installed here (set CHECKOV=<path> or put it on PATH; CI runs it)")
    monkeypatch.setenv("ECOM_CREATE_REDSHIFT", create_redshift)
    path = tmp_path / "ecom.json"
    path.write_text(render(template(), path))
    out = subprocess.run(
        [checkov, "-f", str(path), "--framework", "cloudformation", "--output", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = json.loads(out.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert (out.returncode, failed) == (0, [])
    passed = {c["check_id"] for c in report["results"]["passed_checks"]}
    # The hardening is what passes these (not a skip): stream encryption, access logs, versioning,
    # reserved concurrency.
    assert {"CKV_AWS_43", "CKV_AWS_76", "CKV_AWS_21", "CKV_AWS_115"} <= passed
    skipped = {(c["check_id"], c["resource"]) for c in report["results"]["skipped_checks"]}
    assert not {check for check, _ in skipped} & {"CKV_AWS_43", "CKV_AWS_76", "CKV_AWS_21"}


# ------------------------------------------------------------------ plan <-> template parity
def _plan_inventory(doc: dict) -> set[tuple[str, str]]:
    api = doc["rest_api"]
    out = {("AWS::S3::Bucket", b["name"]) for b in doc["s3_buckets"]}
    out |= {("AWS::S3::BucketPolicy", b["name"]) for b in doc["s3_buckets"]}
    out.add(("AWS::Kinesis::Stream", doc["kinesis_stream"]["name"]))
    out |= {("AWS::DynamoDB::Table", t["name"]) for t in doc["dynamodb_tables"]}
    out |= {("AWS::SQS::Queue", q["name"]) for q in doc["sqs_queues"]}
    out.add(("AWS::Glue::Database", doc["glue_database"]))
    out |= {("AWS::SecretsManager::Secret", s["name"]) for s in doc["secrets"]}
    out |= {("AWS::IAM::Role", r["name"]) for r in doc["iam_roles"]}
    out |= {("AWS::IAM::Role", s["role"]) for s in doc["schedules"]}
    out.add(("AWS::IAM::Role", doc["warehouse"]["copy_role"]["name"]))
    if doc["warehouse"]["created_by_bootstrap"]:
        out |= {
            ("AWS::RedshiftServerless::Namespace", doc["warehouse"]["workgroup"]),
            ("AWS::RedshiftServerless::Workgroup", doc["warehouse"]["workgroup"]),
        }
    out |= {("AWS::Lambda::Function", f["name"]) for f in doc["lambda_functions"]}
    out |= {("AWS::Scheduler::Schedule", s["name"]) for s in doc["schedules"]}
    m = doc["event_source_mapping"]
    out.add(("AWS::Lambda::EventSourceMapping", f"{m['stream']} -> {m['function']}"))
    out |= {("AWS::Logs::LogGroup", g["name"]) for g in doc["log_groups"]}
    out |= {("AWS::CloudWatch::Alarm", a["name"]) for a in doc["alarms"]}
    out |= {("AWS::Logs::MetricFilter", a["name"]) for a in doc["alarms"] if a["metric_filter"]}
    out.add(("AWS::ApiGateway::RestApi", api["name"]))
    for route in api["routes"]:
        out.add(("AWS::ApiGateway::Method", f"{route['method']} {route['path']}"))
        parts = route["path"].strip("/").split("/")
        out |= {("AWS::ApiGateway::Resource", "/" + "/".join(parts[:i])) for i in range(1, len(parts) + 1)}
    out |= {("AWS::ApiGateway::Authorizer", a["name"]) for a in api["authorizers"]}
    out |= {("AWS::ApiGateway::GatewayResponse", g["type"]) for g in api["gateway_responses"]}
    out |= {("AWS::Lambda::Permission", f"{p['function']} ({p['source']})") for p in api["invoke_permissions"]}
    out |= {
        ("AWS::ApiGateway::Deployment", api["stage"]),
        ("AWS::ApiGateway::Stage", api["stage"]),
        ("AWS::ApiGateway::ApiKey", api["api_key"]["name"]),
        ("AWS::ApiGateway::UsagePlan", api["usage_plan"]["name"]),
        ("AWS::ApiGateway::UsagePlanKey", api["usage_plan"]["name"]),
    }
    return out


def _template_inventory(doc: dict) -> set[tuple[str, str]]:
    res = doc["Resources"]

    def ref(value) -> dict:
        return res[value["Ref"]]["Properties"]

    def path_of(lid: str) -> str:
        props = res[lid]["Properties"]
        parent = props["ParentId"]
        prefix = path_of(parent["Ref"]) if "Ref" in parent else ""
        return f"{prefix}/{props['PathPart']}"

    stage_name = next(r["Properties"]["StageName"] for r in res.values() if r["Type"] == "AWS::ApiGateway::Stage")
    authorizer_of = {
        lid: r["Properties"]["Name"] for lid, r in res.items() if r["Type"] == "AWS::ApiGateway::Authorizer"
    }

    def name_of(lid: str, t: str, p: dict) -> str:
        """The resource's name as the plan gives it (only the lambda of its own type runs)."""
        return {
            "AWS::S3::Bucket": lambda: p["BucketName"],
            "AWS::S3::BucketPolicy": lambda: ref(p["Bucket"])["BucketName"],
            "AWS::Kinesis::Stream": lambda: p["Name"],
            "AWS::DynamoDB::Table": lambda: p["TableName"],
            "AWS::SQS::Queue": lambda: p["QueueName"],
            "AWS::Glue::Database": lambda: p["DatabaseInput"]["Name"],
            "AWS::SecretsManager::Secret": lambda: p["Name"],
            "AWS::IAM::Role": lambda: p.get("RoleName", lid),  # API Gateway's logs role: a generated name
            "AWS::RedshiftServerless::Namespace": lambda: p["NamespaceName"],
            "AWS::RedshiftServerless::Workgroup": lambda: p["WorkgroupName"],
            "AWS::Lambda::Function": lambda: p["FunctionName"],
            "AWS::Scheduler::Schedule": lambda: p["Name"],
            "AWS::Lambda::EventSourceMapping": lambda: (
                f"{res[p['EventSourceArn']['Fn::GetAtt'][0]]['Properties']['Name']}"
                f" -> {ref(p['FunctionName'])['FunctionName']}"
            ),
            "AWS::Logs::LogGroup": lambda: p["LogGroupName"],
            "AWS::CloudWatch::Alarm": lambda: p["AlarmName"],
            "AWS::Logs::MetricFilter": lambda: p["FilterName"],
            "AWS::ApiGateway::RestApi": lambda: p["Name"],
            "AWS::ApiGateway::Resource": lambda: path_of(lid),
            "AWS::ApiGateway::Method": lambda: f"{p['HttpMethod']} {path_of(p['ResourceId']['Ref'])}",
            "AWS::ApiGateway::Authorizer": lambda: p["Name"],
            "AWS::ApiGateway::GatewayResponse": lambda: p["ResponseType"],
            "AWS::Lambda::Permission": lambda: (
                f"{ref(p['FunctionName'])['FunctionName']} ("
                + (
                    "routes"
                    if p["SourceArn"]["Fn::Sub"].endswith("/*/*/*")
                    else "authorizer " + authorizer_of[p["SourceArn"]["Fn::Sub"].rsplit("${", 1)[1].rstrip("}")]
                )
                + ")"
            ),
            "AWS::ApiGateway::Deployment": lambda: stage_name,
            "AWS::ApiGateway::Stage": lambda: p["StageName"],
            "AWS::ApiGateway::ApiKey": lambda: p["Name"],
            "AWS::ApiGateway::UsagePlan": lambda: p["UsagePlanName"],
            "AWS::ApiGateway::UsagePlanKey": lambda: ref(p["UsagePlanId"])["UsagePlanName"],
            "AWS::ApiGateway::Account": lambda: lid,
        }[t]()

    out = set()
    for lid, r in res.items():
        out.add((r["Type"], name_of(lid, r["Type"], r["Properties"])))
    return out


def _as_planned(value, region: str):
    """A template value with its pseudo parameters written the way the plan writes them."""
    if isinstance(value, dict):
        if list(value) == ["Fn::Sub"]:
            return _as_planned(value["Fn::Sub"], region)
        return {k: _as_planned(v, region) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_planned(v, region) for v in value]
    if isinstance(value, str):
        return (
            value.replace("${AWS::Partition}", "aws")
            .replace("${AWS::AccountId}", "<account-id>")
            .replace("${AWS::Region}", region)
        )
    return value


# In the AWS template but not in bootstrap/plan.py's listing yet: the API's access log group, and API
# Gateway's account-wide logs role and the account setting naming it.
NOT_PLANNED = {
    ("AWS::Logs::LogGroup", f"/aws/apigateway/ecom-api/{spec.AWS_NAMES['api_stage']}"),
    ("AWS::IAM::Role", "RoleApiGatewayCloudWatch"),
    ("AWS::ApiGateway::Account", "ApiGatewayAccount"),
}


@pytest.mark.parametrize("create_redshift", ["0", "1"])
def test_plan_and_template_list_the_same_resources(monkeypatch, create_redshift):
    monkeypatch.setenv("ECOM_CREATE_REDSHIFT", create_redshift)
    # The plan of a real account, under the names a real account gets (spec.for_target).
    planned, tpl = plan(REGION, platform(target="aws")), template()
    planned_set, template_set = _plan_inventory(planned), _template_inventory(tpl)
    assert planned_set - template_set == set(), "planned but not in the template"
    assert template_set - planned_set == NOT_PLANNED, "in the template but not planned"
    assert len(template_set) == len(tpl["Resources"])  # one thing per template resource
    # ... and the same settings: every function's code package, handler, size and environment, and
    # every role's policy, statement for statement.
    functions = {
        r["Properties"]["FunctionName"]: r["Properties"]
        for r in tpl["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
    }
    code = artifacts(platform())
    for f in planned["lambda_functions"]:
        t = functions[f["name"]]
        assert (t["Handler"], t["Runtime"], t["MemorySize"], t["Timeout"], t["Code"]["S3Key"]) == (
            f["handler"],
            f["runtime"],
            f["memory_mb"],
            f["timeout_s"],
            code[f["name"]].key,
        )
        assert t["Environment"]["Variables"] == f["environment"]
    roles = {
        r["Properties"]["RoleName"]: r["Properties"]
        for r in tpl["Resources"].values()
        if r["Type"] == "AWS::IAM::Role" and "RoleName" in r["Properties"]
    }
    planned_policies = {r["name"]: r["inline_policies"]["ecom-pipeline"] for r in planned["iam_roles"]}
    planned_policies.update({s["role"]: s["role_policy"] for s in planned["schedules"]})
    planned_policies[planned["warehouse"]["copy_role"]["name"]] = planned["warehouse"]["copy_role"]["policy"]
    for name, policy in planned_policies.items():
        assert _as_planned(roles[name]["Policies"][0]["PolicyDocument"], REGION) == policy, name
    [schedule] = [r["Properties"] for r in tpl["Resources"].values() if r["Type"] == "AWS::Scheduler::Schedule"]
    [sched] = planned["schedules"]
    assert (
        schedule["ScheduleExpression"],
        schedule["State"],
        schedule["Target"]["Input"],
        schedule["Target"]["RetryPolicy"]["MaximumRetryAttempts"],
    ) == (sched["expression"], sched["state"], sched["input"], sched["retry_attempts"])


def test_template_cli_writes_template_and_zips(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "ECOM_DATA_DIR": str(tmp_path),
        }
    )
    path = tmp_path / "out" / "ecom.yaml"
    out = subprocess.run(
        [sys.executable, "-m", "ecom", "bootstrap", "--target", "aws", "--template", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(path.read_text())
    assert "aws cloudformation deploy" in out.stdout and f"{len(doc['Resources'])} resources" in out.stdout
    assert sorted(p.name.rsplit("-", 1)[0] for p in (path.parent / "lambda").iterdir()) == sorted(
        f.name for f in platform().functions
    )  # one zip per function
    refused = subprocess.run(
        [sys.executable, "-m", "ecom", "bootstrap", "--target", "embedded", "--template", str(tmp_path / "x.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert refused.returncode != 0 and "--target aws" in refused.stdout + refused.stderr
    assert not (tmp_path / "x.yaml").exists()
