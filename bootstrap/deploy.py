"""Deploy the platform: one CloudFormation stack, on every target (MiniStack, LocalStack, AWS).

What a template cannot do is done here: build the Lambda zips, upload them to an artifact bucket
under content-addressed keys, pass the target's parameters, and wait. The stack is created or
updated through a change set (CREATE or UPDATE): the change set says what will change, is executed,
and the deployment waits for *_COMPLETE. A change set without changes is deleted and nothing runs,
so a second deployment of unchanged code changes nothing; a code change is a new S3 key for
exactly the functions whose zip changed.

The result is a Report: (resource, created/updated/deleted/unchanged) for every resource of the
stack, and the outputs the CLI and tests use (api_id, api_url, api_key, stream_arn).
"""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from bootstrap import spec
from bootstrap.spec import Platform, platform
from bootstrap.template import Artifact, artifacts, build, upload
from ecom_core import aws, config
from ecom_core.faults import FaultInjectionRefused, refuse_on_aws

CAPABILITIES = ["CAPABILITY_NAMED_IAM"]
# CloudFormation's limit for a template sent inline; a larger one goes through the artifact bucket.
TEMPLATE_BODY_LIMIT = 51_200
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
ACTIONS = {"Add": "created", "Modify": "updated", "Remove": "deleted", "Import": "created", "Dynamic": "updated"}


def only_dynamic(change: dict[str, Any]) -> bool:
    """A Modify listed only because it refers to an attribute of a resource being modified (a route
    naming a function's ARN when the function's code changes): CloudFormation decides at execution
    whether it changes (it does not when the ARN stays), so it is no change of ours."""
    details = change.get("Details") or []
    return (
        change.get("Action") == "Modify"
        and bool(details)
        and all(
            d.get("Evaluation") == "Dynamic" and d.get("ChangeSource") in ("ResourceAttribute", "ResourceReference")
            for d in details
        )
    )


@dataclass
class Report:
    actions: list[tuple[str, str]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    def add(self, resource: str, action: str) -> None:
        self.actions.append((resource, action))

    @property
    def changed(self) -> list[tuple[str, str]]:
        return [(r, a) for r, a in self.actions if a not in ("unchanged", "skipped")]


class DeployFailed(RuntimeError):
    """The stack did not reach *_COMPLETE; the message holds the failed resources' reasons."""


class RefusedForAws(RuntimeError):
    """A setting that is fine on an emulator and unsafe on a real account."""


# A secret given on AWS (any setting of config.DEV_DEFAULTS) is at least this long and not trivially weak.
MIN_SECRET_BYTES = 32
MIN_SECRET_DISTINCT_CHARACTERS = 8


def secret_weakness(value: str) -> str | None:
    """Why `value` is too weak to be a secret on AWS, None when it is not. Never names the value."""
    if len(value.encode()) < MIN_SECRET_BYTES:
        return f"is shorter than {MIN_SECRET_BYTES} bytes"
    if len(set(value)) < MIN_SECRET_DISTINCT_CHARACTERS:
        return f"has fewer than {MIN_SECRET_DISTINCT_CHARACTERS} distinct characters"
    if value in (value + value)[1:-1]:
        return "is a repetition of a shorter string"
    if len({ord(b) - ord(a) for a, b in itertools.pairwise(value)}) == 1:
        return "is a run of consecutive characters"
    return None


def refuse_local_defaults(environ: dict[str, str] | None = None) -> None:
    """Real AWS gets no local-development default (their values are printed in the README), no
    weak secret (secret_weakness) and no fault injection. Unset, secrets and the API key are
    generated on AWS instead."""
    environ = os.environ if environ is None else environ
    problems = []
    for name, default in config.DEV_DEFAULTS.items():
        value = environ.get(name)
        if not value:  # unset (or empty, which config reads as unset): generated on AWS
            continue
        if value == default:
            problems.append(f"{name} is set to the local-development default")
        elif (weakness := secret_weakness(value)) is not None:
            problems.append(
                f"{name} {weakness} (a secret on AWS needs at least {MIN_SECRET_BYTES} bytes, "
                f"{MIN_SECRET_DISTINCT_CHARACTERS} distinct characters, no repeated pattern)"
            )
    if environ.get("WAREHOUSE_DSN") and config.DEV_PG_PASSWORD in environ["WAREHOUSE_DSN"]:
        problems.append("WAREHOUSE_DSN holds the local-development password")
    try:
        refuse_on_aws(environ.get("ECOM_FAULTS", ""), config.Stack(target="aws", aws_endpoint_url=None))
    except FaultInjectionRefused as exc:
        problems.append(str(exc))
    if problems:
        raise RefusedForAws(
            "refusing to deploy to AWS: "
            + "; ".join(problems)
            + ". Unset them: the stack generates secrets in Secrets Manager (or give random values, "
            + "e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')."
        )


def stack_name() -> str:
    return config.stack().stack_name


def artifact_bucket_name(cfg: config.Stack, account: str, explicit: str | None = None) -> str:
    """`--artifact-bucket`, else ECOM_ARTIFACT_BUCKET, else ecom-artifacts-<account> (and the region
    on AWS, where bucket names are global)."""
    name = explicit or cfg.artifact_bucket
    if name:
        return name
    return f"ecom-artifacts-{account}" if cfg.endpoint_url else f"ecom-artifacts-{account}-{cfg.region}"


def ensure_bucket(s3, bucket: str, cfg: config.Stack) -> bool:
    """The artifact bucket, created when missing: on AWS private (public access blocked, owner
    enforced), encrypted (SSE-S3) and TLS-only. Returns True when it was created."""
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if aws.error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if cfg.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": cfg.region}
    s3.create_bucket(**kwargs)
    if cfg.endpoint_url is None:
        from bootstrap.policies import tls_only_policy

        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        s3.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(tls_only_policy(bucket)))
    return True


def parameters(cfg: config.Stack, doc: dict[str, Any], bucket: str) -> dict[str, str]:
    """The stack's parameters on this target. Emulators: the local-development values (NoEcho).
    AWS: none of them, so API Gateway and Secrets Manager generate the values."""
    values = {
        "ArtifactBucket": bucket,
        # LocalStack community has no Glue: its database stays out of the stack there.
        "GlueDatabase": "false" if cfg.target == "compose" else "true",
        "AlarmTopicArn": cfg.alarm_topic_arn,
    }
    if cfg.endpoint_url is not None:
        auth = config.auth()
        values.update(
            {
                "ApiKeyValue": config.resources().api_key_value,
                "JwtSecret": auth.jwt_secret,
                "OperatorKey": auth.operator_key,
            }
        )
    return {k: v for k, v in values.items() if k in doc["Parameters"]}


class Deployment:
    """One deployment of the platform's stack to `cfg`'s target."""

    def __init__(
        self,
        cfg: config.Stack | None = None,
        *,
        name: str | None = None,
        artifact_bucket: str | None = None,
        p: Platform | None = None,
    ):
        self.cfg = cfg or config.stack()
        self.local = self.cfg.endpoint_url is not None
        self.name = name or stack_name()
        self.explicit_bucket = artifact_bucket
        self.p = p or platform()
        self.cfn = aws.client("cloudformation", self.cfg)
        # MiniStack and LocalStack answer in milliseconds; AWS in seconds to minutes.
        self.poll = 0.1 if self.local else 5.0
        self.timeout = 600 if self.local else 3600

    # ------------------------------------------------------------------ inputs
    def prepare(self, upload_code: bool) -> tuple[dict[str, Any], dict[str, str], dict[str, str], dict[str, Artifact]]:
        account = aws.client("sts", self.cfg).get_caller_identity()["Account"]
        bucket = artifact_bucket_name(self.cfg, account, self.explicit_bucket)
        code = artifacts(self.p)
        if upload_code:
            s3 = aws.client("s3", self.cfg)
            ensure_bucket(s3, bucket, self.cfg)
            upload(s3, bucket, self.p, code)
        doc, labels = build(self.p, code, target=self.cfg.target)
        return doc, labels, parameters(self.cfg, doc, bucket), code

    def _template_argument(self, doc: dict[str, Any], bucket: str) -> dict[str, str]:
        body = json.dumps(doc, separators=(",", ":"), sort_keys=False)
        if len(body.encode()) <= TEMPLATE_BODY_LIMIT:
            return {"TemplateBody": body}
        import hashlib

        s3 = aws.client("s3", self.cfg)
        key = f"templates/{self.name}-{hashlib.sha256(body.encode()).hexdigest()[:32]}.json"
        s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
        base = self.cfg.endpoint_url or f"https://s3.{self.cfg.region}.amazonaws.com"
        return {"TemplateURL": f"{base}/{bucket}/{key}"}

    # ------------------------------------------------------------------ the stack
    def current_status(self) -> str | None:
        """The stack's status, None when there is none; waits out an operation in progress."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                status = self.cfn.describe_stacks(StackName=self.name)["Stacks"][0]["StackStatus"]
            except ClientError as exc:
                if "does not exist" in str(exc):
                    return None
                raise
            if not status.endswith("_IN_PROGRESS") or status == "REVIEW_IN_PROGRESS":
                return status
            if time.monotonic() > deadline:
                raise DeployFailed(f"stack {self.name} is still {status}")
            time.sleep(self.poll)

    def create_change_set(self, doc: dict[str, Any], params: dict[str, str]) -> tuple[str, str]:
        """(change set id, CREATE|UPDATE), the change set created and described (or FAILED)."""
        status = self.current_status()
        if status == "ROLLBACK_COMPLETE":
            # A first creation that failed leaves a stack that can only be deleted.
            self.cfn.delete_stack(StackName=self.name)
            self._wait_deleted()
            status = None
        kind = "CREATE" if status in (None, "REVIEW_IN_PROGRESS", "DELETE_COMPLETE") else "UPDATE"
        answer = self.cfn.create_change_set(
            StackName=self.name,
            ChangeSetName=f"ecom-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}",
            ChangeSetType=kind,
            Capabilities=CAPABILITIES,
            Description="ecom bootstrap",
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
            **self._template_argument(doc, params["ArtifactBucket"]),
        )
        return answer["Id"], kind

    def describe_change_set(self, change_set: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            described = self.cfn.describe_change_set(ChangeSetName=change_set, StackName=self.name)
            if described["Status"] in ("CREATE_COMPLETE", "FAILED"):
                break
            if time.monotonic() > deadline:
                raise DeployFailed(f"change set {change_set} still {described['Status']}")
            time.sleep(self.poll)
        changes = list(described.get("Changes", []))
        token = described.get("NextToken")
        while token:
            page = self.cfn.describe_change_set(ChangeSetName=change_set, StackName=self.name, NextToken=token)
            changes += page.get("Changes", [])
            token = page.get("NextToken")
        described["Changes"] = changes
        return described

    def _stack(self) -> dict[str, Any]:
        return self.cfn.describe_stacks(StackName=self.name)["Stacks"][0]

    def execute(self, change_set: str, started: float) -> None:
        """Execute and wait for the stack to settle. The status before the execution may already be
        terminal (UPDATE_COMPLETE of the last deployment): only a new status or update time counts."""
        before = self._stack()
        self.cfn.execute_change_set(ChangeSetName=change_set, StackName=self.name)
        deadline = time.monotonic() + self.timeout
        while True:
            stack = self._stack()
            status = stack["StackStatus"]
            moved = (status, stack.get("LastUpdatedTime")) != (before["StackStatus"], before.get("LastUpdatedTime"))
            if moved and not status.endswith("_IN_PROGRESS"):
                break
            if time.monotonic() > deadline:
                raise DeployFailed(f"stack {self.name} still {status} after {self.timeout} s")
            time.sleep(self.poll)
        if not status.endswith("_COMPLETE") or "ROLLBACK" in status:
            raise DeployFailed(f"stack {self.name} ended {status}: {self.failures(started)}")

    def failures(self, since: float) -> str:
        """The failed resources' status reasons of this deployment, oldest first."""
        try:
            events = self.cfn.describe_stack_events(StackName=self.name)["StackEvents"]
        except ClientError:
            return "(no events)"
        failed = [
            e
            for e in events
            if e.get("ResourceStatus", "").endswith("FAILED") and e["Timestamp"].timestamp() >= since - 5
        ]
        return (
            "; ".join(
                f"{e['LogicalResourceId']} ({e['ResourceType']}) {e['ResourceStatus']}: "
                f"{e.get('ResourceStatusReason', '')}"
                for e in reversed(failed)
            )
            or "(no failed resource)"
        )

    def physical_ids(self) -> dict[str, str]:
        pages = self.cfn.get_paginator("list_stack_resources").paginate(StackName=self.name)
        return {
            s["LogicalResourceId"]: s.get("PhysicalResourceId", "")
            for page in pages
            for s in page["StackResourceSummaries"]
        }

    def _wait_deleted(self) -> None:
        deadline = time.monotonic() + self.timeout
        while self.current_status() not in (None, "DELETE_COMPLETE"):
            if time.monotonic() > deadline:
                raise DeployFailed(f"stack {self.name} was not deleted")
            time.sleep(self.poll)

    # ------------------------------------------------------------------ all
    def run(self) -> Report:
        started = time.time()
        doc, labels, params, _ = self.prepare(upload_code=True)
        change_set, kind = self.create_change_set(doc, params)
        described = self.describe_change_set(change_set)
        changes = {c["ResourceChange"]["LogicalResourceId"]: c["ResourceChange"] for c in described["Changes"]}
        if described["Status"] == "FAILED":
            if not any(text in described.get("StatusReason", "") for text in NO_CHANGES):
                raise DeployFailed(f"change set of stack {self.name} failed: {described.get('StatusReason')}")
            self.cfn.delete_change_set(ChangeSetName=change_set, StackName=self.name)
            changes = {}
        else:
            before = self.physical_ids() if kind == "UPDATE" else {}
            self.execute(change_set, started)
            after = self.physical_ids()
            # A dependent change is real only when what it refers to was replaced (a new physical id,
            # so a new ARN). MiniStack re-applies such a resource anyway; AWS leaves it alone.
            replaced = {lid for lid in before if before[lid] != after.get(lid)}
            changes = {
                lid: c
                for lid, c in changes.items()
                if not only_dynamic(c) or {d.get("CausingEntity", "").split(".")[0] for d in c["Details"]} & replaced
            }
        report = Report()
        for lid in doc["Resources"]:
            if lid in changes:
                report.add(labels[lid], ACTIONS.get(changes[lid]["Action"], "updated"))
            elif kind == "UPDATE" and lid in self.present:
                report.add(labels[lid], "unchanged")
        for lid, change in changes.items():
            if lid not in doc["Resources"]:
                report.add(labels.get(lid, f"{change.get('ResourceType', '')} {lid}"), "deleted")
        report.outputs = self.outputs()
        return report

    @property
    def present(self) -> set[str]:
        if not hasattr(self, "_present"):
            self._present = set(self.physical_ids())
        return self._present

    def outputs(self) -> dict[str, str]:
        stack = self.cfn.describe_stacks(StackName=self.name)["Stacks"][0]
        out = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        key = aws.client("apigateway", self.cfg).get_api_key(apiKey=out["ApiKeyId"], includeValue=True)["value"]
        return {
            "api_id": out["ApiId"],
            "api_url": aws.api_url(out["ApiId"], self.cfg, stage=out.get("ApiStage")),
            "api_key": key,
            "stream_arn": out["StreamArn"],
        }

    def plan(self) -> list[tuple[str, str, str]]:
        """What a deployment would do, without doing it: (resource, action, detail) from a change set
        that is then deleted (with the empty stack a first change set leaves behind)."""
        doc, labels, params, _ = self.prepare(upload_code=False)
        change_set, kind = self.create_change_set(doc, params)
        try:
            described = self.describe_change_set(change_set)
        finally:
            self.cfn.delete_change_set(ChangeSetName=change_set, StackName=self.name)
            if kind == "CREATE" and self.current_status() == "REVIEW_IN_PROGRESS":
                self.cfn.delete_stack(StackName=self.name)
        if described["Status"] == "FAILED" and not any(t in described.get("StatusReason", "") for t in NO_CHANGES):
            raise DeployFailed(f"change set of stack {self.name} failed: {described.get('StatusReason')}")
        out = []
        for change in described["Changes"]:
            rc = change["ResourceChange"]
            lid = rc["LogicalResourceId"]
            detail = rc.get("ResourceType", "")
            if rc.get("Replacement") in ("True", "Conditional"):
                detail += f", replacement {rc['Replacement'].lower()}"
            if rc.get("Scope"):
                detail += f", changes {', '.join(rc['Scope'])}"
            if only_dynamic(rc):
                causes = sorted({d.get("CausingEntity", "") for d in rc["Details"]})
                out.append(
                    (
                        labels.get(lid, lid),
                        "may update",
                        f"{detail}, decided at execution: refers to {', '.join(causes)}",
                    )
                )
                continue
            out.append((labels.get(lid, lid), ACTIONS.get(rc["Action"], "updated"), detail))
        return out


def deploy(cfg: config.Stack | None = None, *, artifact_bucket: str | None = None, name: str | None = None) -> Report:
    """Create or update the platform's stack on `cfg`'s target; see the module's docstring."""
    cfg = cfg or config.stack()
    if cfg.endpoint_url is None:
        refuse_local_defaults()  # before any AWS call
    return Deployment(cfg, name=name, artifact_bucket=artifact_bucket).run()


def plan_changes(
    cfg: config.Stack | None = None, *, artifact_bucket: str | None = None, name: str | None = None
) -> list[tuple[str, str, str]]:
    cfg = cfg or config.stack()
    if cfg.endpoint_url is None:
        refuse_local_defaults()
    return Deployment(cfg, name=name, artifact_bucket=artifact_bucket).plan()


def find_api(cfg: config.Stack | None = None) -> dict[str, str] | None:
    """The deployed API's id, URL and key, or None when bootstrap has not run."""
    cfg = cfg or config.stack()
    r = spec.for_target(config.resources(), cfg.target)  # the stage and key names on this target
    apigw = aws.client("apigateway", cfg)
    api = next((a for a in apigw.get_rest_apis(limit=500)["items"] if a["name"] == r.api_name), None)
    if api is None:
        return None
    key = next(
        (
            k
            for k in apigw.get_api_keys(nameQuery=r.api_key_name, includeValues=True)["items"]
            if k["name"] == r.api_key_name
        ),
        None,
    )
    return {
        "api_id": api["id"],
        "api_url": aws.api_url(api["id"], cfg, stage=r.api_stage),
        "api_key": (key or {}).get("value", ""),
    }
