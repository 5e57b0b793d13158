"""The platform as one CloudFormation stack: the one deployment path, on every target.

`ecom up` / `ecom bootstrap` deploy it through a change set (bootstrap/deploy.py); `ecom bootstrap
--target aws --template FILE` writes it for review or `aws cloudformation deploy`. Generated from
the same spec (bootstrap/spec.py) and the same policies (bootstrap/policies.py) as the plan, so
they cannot drift apart; tests/unit/bootstrap/test_template.py checks that the plan and the template list the
same resources.

Lambda code goes by S3 key, one zip per function, content-addressed
(`lambda/<function>-<sha256>.zip`): a code change is a new key, so CloudFormation updates exactly
the functions whose zip changed, and unchanged code changes nothing.

No value is ever written in the template. The emulators pass their local-development values (API
key, token key, operator key) as NoEcho parameters; left empty (AWS), API Gateway generates the key
and Secrets Manager the secrets (GenerateSecretString), chosen by Conditions.

The AWS form (target "aws") is hardened beyond the emulators' (docs/aws.md): production names
(stage, API key, token issuer: spec.for_target), an encrypted stream, versioned buckets, API access
logs and reserved concurrency for the public functions. The emulators' form leaves the hardening
out: MiniStack's CloudFormation accepts and drops the encryption, the access log setting and the
concurrency, and would keep every object version in memory (docs/emulator-notes.md). What checkov
finds and does not apply here is skipped on the resource with its reason (NOT_APPLICABLE);
tests/unit/bootstrap/test_template.py runs checkov over the AWS form.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError

from bootstrap import package
from bootstrap.policies import (
    APIGATEWAY_LOGS_MANAGED_POLICY,
    APIGATEWAY_TRUST_POLICY,
    LAMBDA_TRUST_POLICY,
    REDSHIFT_TRUST_POLICY,
    SCHEDULER_TRUST_POLICY,
    lambda_policy,
    redshift_copy_policy,
    scheduler_policy,
    tls_only_policy,
)
from bootstrap.spec import (
    GATEWAY_ERROR_TEMPLATE,
    Function,
    Platform,
    for_target,
    function_environment,
    invoke_permissions,
    platform,
)
from ecom_core import config

ACCOUNT = "${AWS::AccountId}"
REGION = "${AWS::Region}"
# Data outlives the stack: `delete-stack` keeps the buckets and tables (docs/aws.md says how to
# remove them). Everything else goes with the stack.
RETAINED = {"AWS::S3::Bucket", "AWS::DynamoDB::Table"}
# State that may go with the stack (said explicitly, as cfn-lint asks): 24 h of stream, the dead
# letter queue's pointers, and the generated keys (Secrets Manager keeps them 7-30 days).
DELETED = {"AWS::Kinesis::Stream", "AWS::SQS::Queue", "AWS::SecretsManager::Secret", "AWS::Logs::LogGroup"}
# How long the functions' logs are kept (CloudWatch Logs keeps them forever by default, and bills for it).
LOG_RETENTION_DAYS = 30
# The custom metric the dead-letter alarm watches (a metric filter on the stream trigger's log group).
METRIC_NAMESPACE = "ecom-pipeline"
NO_VALUE = {"Ref": "AWS::NoValue"}
# Parameters that carry a local-development value on the emulators and are empty on AWS.
LOCAL_VALUES = {"ApiKeyValue": "HasApiKeyValue", "JwtSecret": "HasJwtSecret", "OperatorKey": "HasOperatorKey"}
# AWS: the buckets are versioned (an overwrite or a delete can be undone) and keep a replaced or
# deleted version this many days, so storage stays bounded (the ETL deletes every raw object it
# moves to processed/; at 1,000 events/s that is up to ~150 GB of noncurrent versions, ~$3.5 a month).
NONCURRENT_VERSION_DAYS = 7
# AWS: one JSON line per API request in the stage's access log group. Never the API key itself
# ($context.identity.apiKey), only its id.
ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "time": "$context.requestTime",
        "ip": "$context.identity.sourceIp",
        "userAgent": "$context.identity.userAgent",
        "method": "$context.httpMethod",
        "resource": "$context.resourcePath",
        "status": "$context.status",
        "bytes": "$context.responseLength",
        "latencyMs": "$context.responseLatency",
        "integrationLatencyMs": "$context.integrationLatency",
        "apiKeyId": "$context.identity.apiKeyId",
        "principal": "$context.authorizer.principalId",
        "error": "$context.error.responseType",
    },
    separators=(",", ":"),
)
# checkov findings that do not apply here, by check id, each with its reason in one line: written on
# every resource it is skipped for (Metadata.checkov.skip). docs/aws.md gives the longer story.
NOT_APPLICABLE = {
    "CKV_AWS_18": "Server access logs need another bucket; CloudTrail data events audit object access",
    "CKV_AWS_119": "Encrypted with DynamoDB's AWS owned key; a CMK adds cost, not protection, here",
    "CKV_AWS_27": "Encrypted at rest by SSE-SQS (SqsManagedSseEnabled); the check wants a KMS key",
    "CKV_AWS_149": "Encrypted with the AWS managed key; IAM lets only the two auth functions read it",
    "CKV2_AWS_57": "Rotation needs a rotation Lambda the project lacks: ecom secrets rotate (docs/aws.md)",
    "CKV_AWS_158": "CloudWatch Logs encrypts at rest anyway; the logs hold no secret value",
    "CKV_AWS_117": "Calls only AWS APIs; a VPC would add NAT or endpoints and ENI cold starts",
    "CKV_AWS_173": "Holds names and settings, no secret; encrypted at rest by Lambda's AWS managed key",
    "CKV_AWS_120": "Answers are per caller and must show the latest writes; authorizer answers are cached",
    "CKV_AWS_73": "Handlers are not instrumented for X-Ray; access logs and alarms cover requests",
}
# Per function, by what invokes it: a DLQ receives only failed asynchronous invocations, and reserved
# concurrency is for the public API's functions (spec.RESERVED_CONCURRENCY).
DLQ_NOT_APPLICABLE = {
    "api": "Invoked synchronously by API Gateway (the caller gets the error); a DLQ is for async",
    "stream": "Invoked synchronously by the stream mapping; its OnFailure queue takes failed batches",
    "schedule": "A failed tick is redone by the next one and raises the etl-job-errors alarm",
}
CONCURRENCY_NOT_APPLICABLE = {
    "stream": "The stream mapping bounds it: one batch per shard; a cap below the shards stalls them",
    "schedule": "One tick a minute, overlaps exit on the warehouse lease; a cap would throttle ticks",
}


def checkov_skips(*skips: str | tuple[str, str]) -> dict[str, Any]:
    """Metadata that makes checkov skip these checks on a resource: an id (reason NOT_APPLICABLE[id])
    or (id, reason)."""
    pairs = [(s, NOT_APPLICABLE[s]) if isinstance(s, str) else s for s in skips]
    return {"checkov": {"skip": [{"id": check, "comment": reason} for check, reason in pairs]}}


def logical_id(kind: str, name: str) -> str:
    """`Function` + `kinesis-trigger` -> `FunctionKinesisTrigger`: stable, readable, unique per name."""
    return kind + "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def _pseudo(value: Any) -> Any:
    """Policies and URIs are built as the plan shows them, with ${AWS::AccountId}/${AWS::Region} in
    place of the real values; here every such string becomes an Fn::Sub, and the partition of each
    ARN a pseudo parameter too (GovCloud and China are `aws-us-gov` / `aws-cn`)."""
    if isinstance(value, dict):
        if list(value) == ["Fn::Sub"] and isinstance(value["Fn::Sub"], str):
            return {"Fn::Sub": value["Fn::Sub"].replace("arn:aws:", "arn:${AWS::Partition}:")}
        return {k: _pseudo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pseudo(v) for v in value]
    if isinstance(value, str):
        text = value.replace("arn:aws:", "arn:${AWS::Partition}:") if value.startswith("arn:aws:") else value
        return {"Fn::Sub": text} if "${" in text else value
    return value


@dataclass(frozen=True)
class Artifact:
    function: str
    key: str
    blob: bytes


def function_code(fn: Function) -> bytes:
    """The zip of one function: only the modules its handler imports, and the bundled boto3."""
    return package.function_zip(fn)


def artifacts(p: Platform) -> dict[str, Artifact]:
    """The Lambda zips the template refers to, by function, under content-addressed keys."""
    out = {}
    for fn in p.functions:
        blob = function_code(fn)
        out[fn.name] = Artifact(fn.name, package.artifact_key(fn.name, blob), blob)
    return out


def template(
    p: Platform | None = None,
    code: dict[str, Artifact] | None = None,
    artifact_bucket: str | None = None,
    target: str = "aws",
) -> dict[str, Any]:
    return build(p, code, artifact_bucket, target)[0]


def build(
    p: Platform | None = None,
    code: dict[str, Artifact] | None = None,
    artifact_bucket: str | None = None,
    target: str = "aws",
) -> tuple[dict[str, Any], dict[str, str]]:
    """The template for `target` (function environments differ per target: bootstrap/spec.py) and
    a readable label per logical id ("lambda data-ingestion"), for deployment reports."""
    p = p or platform()
    code = code or artifacts(p)
    aws = target == "aws"
    p = dataclasses.replace(p, resources=for_target(p.resources, target))
    r = p.resources
    etl = config.etl()
    resources: dict[str, dict[str, Any]] = {}
    labels: dict[str, str] = {}

    def add(lid: str, rtype: str, properties: dict[str, Any], label: str = "", **extra: Any) -> str:
        if lid in resources:
            raise ValueError(f"duplicate logical id {lid}")
        resources[lid] = {"Type": rtype, **extra, "Properties": properties}
        labels[lid] = label or f"{rtype} {lid}"
        if rtype in RETAINED:
            # Kept by delete-stack, but not by the rollback of a failed first creation (the retry
            # would find them in its way).
            resources[lid].update({"DeletionPolicy": "RetainExceptOnCreate", "UpdateReplacePolicy": "Retain"})
        elif rtype in DELETED:
            resources[lid].update({"DeletionPolicy": "Delete", "UpdateReplacePolicy": "Delete"})
        return lid

    def if_given(parameter: str, value: Any, otherwise: Any = NO_VALUE) -> dict[str, Any]:
        return {"Fn::If": [LOCAL_VALUES[parameter], value, otherwise]}

    # ---------------------------------------------------------------- storage
    for bucket in p.buckets:
        properties = {
            "BucketName": bucket,
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        }
        if aws:
            properties.update(
                {
                    "VersioningConfiguration": {"Status": "Enabled"},
                    # Replaced and deleted versions expire, then the delete markers with no version left
                    # behind them; uploads never completed are aborted.
                    "LifecycleConfiguration": {
                        "Rules": [
                            {
                                "Id": "expire-noncurrent-versions",
                                "Status": "Enabled",
                                "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_VERSION_DAYS},
                                "ExpiredObjectDeleteMarker": True,
                                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
                            }
                        ]
                    },
                }
            )
        lid = add(
            logical_id("Bucket", bucket),
            "AWS::S3::Bucket",
            properties,
            f"s3 bucket {bucket}",
            Metadata=checkov_skips("CKV_AWS_18"),
        )
        add(
            logical_id("BucketPolicy", bucket),
            "AWS::S3::BucketPolicy",
            {"Bucket": {"Ref": lid}, "PolicyDocument": tls_only_policy(bucket)},
            f"s3 bucket policy {bucket} (TLS only)",
        )
    # AWS: encrypted at rest with the AWS managed key, which producers and consumers with Kinesis
    # permissions may use without a KMS grant (a customer managed key would need one in every role).
    stream = add(
        logical_id("Stream", r.stream),
        "AWS::Kinesis::Stream",
        {
            "Name": r.stream,
            "ShardCount": r.stream_shards,
            "RetentionPeriodHours": 24,
            **({"StreamEncryption": {"EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"}} if aws else {}),
        },
        f"kinesis stream {r.stream}",
    )
    for table in p.tables:
        properties = {**table.definition(), "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}}
        add(
            logical_id("Table", table.name),
            "AWS::DynamoDB::Table",
            properties,
            f"dynamodb table {table.name}",
            Metadata=checkov_skips("CKV_AWS_119"),
        )
    queue = add(
        logical_id("Queue", r.dead_letter_queue),
        "AWS::SQS::Queue",
        {"QueueName": r.dead_letter_queue, "MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True},
        f"sqs queue {r.dead_letter_queue}",
        Metadata=checkov_skips("CKV_AWS_27"),
    )
    # The database only: its table is the crawler's output, written by every ETL run from the
    # schema it infers (etl/catalog.py); a stack-owned table would drift with the first run.
    # Left out where there is no Glue (LocalStack community: parameter GlueDatabase=false).
    add(
        logical_id("GlueDatabase", r.glue_database),
        "AWS::Glue::Database",
        {
            "CatalogId": {"Ref": "AWS::AccountId"},
            "DatabaseInput": {"Name": r.glue_database, "Description": "ecom-pipeline staging CSV schemas"},
        },
        f"glue database {r.glue_database}",
        Condition="CreateGlueDatabase",
    )
    # Same strength as bootstrap's own (~380 bits): 64 characters of [A-Za-z0-9], which also pass
    # the authorizer's header check (`Operator <key>`). The punctuation is also listed in
    # ExcludeCharacters because MiniStack ignores ExcludePunctuation (emulator-notes).
    generated = {"PasswordLength": 64, "ExcludePunctuation": True, "ExcludeCharacters": string.punctuation}
    for (name, holds), parameter in zip(p.secrets, ("JwtSecret", "OperatorKey"), strict=True):
        add(
            logical_id("Secret", name),
            "AWS::SecretsManager::Secret",
            {
                "Name": name,
                "Description": f"ecom-pipeline: {holds}",
                # The emulators' development value when given, else generated by Secrets Manager.
                "SecretString": if_given(parameter, {"Ref": parameter}),
                "GenerateSecretString": if_given(parameter, NO_VALUE, generated),
            },
            f"secret {name}",
            Metadata=checkov_skips("CKV_AWS_149", "CKV2_AWS_57"),
        )

    # ---------------------------------------------------------------- functions
    functions: dict[str, str] = {}
    log_groups: dict[str, str] = {}
    api_functions = {rt.function for rt in p.routes} | {a.function for a in p.authorizers}
    invoked_by = {
        **{name: "api" for name in api_functions},
        r.trigger_function: "stream",
        **{sched.function: "schedule" for sched in p.schedules},
    }
    for fn in p.functions:
        role = add(
            logical_id("Role", fn.role_name),
            "AWS::IAM::Role",
            {
                "RoleName": fn.role_name,
                "AssumeRolePolicyDocument": LAMBDA_TRUST_POLICY,
                "Policies": [{"PolicyName": "ecom-pipeline", "PolicyDocument": lambda_policy(p, ACCOUNT, REGION, fn)}],
            },
            f"iam role {fn.role_name}",
        )
        # The log group Lambda would create on first use, here with a retention; the function
        # depends on it so nothing logs into a group the stack does not own.
        log_groups[fn.name] = add(
            logical_id("LogGroup", fn.name),
            "AWS::Logs::LogGroup",
            {"LogGroupName": f"/aws/lambda/{fn.name}", "RetentionInDays": LOG_RETENTION_DAYS},
            f"log group /aws/lambda/{fn.name}",
            Metadata=checkov_skips("CKV_AWS_158"),
        )
        properties = {
            "FunctionName": fn.name,
            "Description": fn.description,
            "Runtime": p.runtime,
            "Handler": fn.handler,
            "MemorySize": fn.memory,
            "Timeout": fn.timeout,
            "Role": {"Fn::GetAtt": [role, "Arn"]},
            "Code": {"S3Bucket": {"Ref": "ArtifactBucket"}, "S3Key": code[fn.name].key},
            "Environment": {"Variables": function_environment(r, fn, target=target)},
        }
        skips: list[str | tuple[str, str]] = [
            ("CKV_AWS_116", DLQ_NOT_APPLICABLE[invoked_by[fn.name]]),
            "CKV_AWS_117",
            "CKV_AWS_173",
        ]
        if fn.reserved_concurrency is None:
            skips.append(("CKV_AWS_115", CONCURRENCY_NOT_APPLICABLE[invoked_by[fn.name]]))
        elif aws:
            properties["ReservedConcurrentExecutions"] = fn.reserved_concurrency
        functions[fn.name] = add(
            logical_id("Function", fn.name),
            "AWS::Lambda::Function",
            properties,
            f"lambda {fn.name}",
            DependsOn=[log_groups[fn.name]],
            Metadata=checkov_skips(*skips),
        )
    m = p.mapping
    add(
        logical_id("EventSourceMapping", r.trigger_function),
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {"Fn::GetAtt": [stream, "Arn"]},
            "FunctionName": {"Ref": functions[r.trigger_function]},
            "StartingPosition": m.starting_position,
            "BatchSize": m.batch_size,
            "MaximumBatchingWindowInSeconds": m.batching_window_s,
            "MaximumRetryAttempts": m.max_retry_attempts,
            "BisectBatchOnFunctionError": m.bisect_on_error,
            "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": [queue, "Arn"]}}},
            "Enabled": True,
        },
        f"event source mapping {r.stream} -> {r.trigger_function}",
    )
    for sched in p.schedules:
        role = add(
            logical_id("Role", sched.role_name),
            "AWS::IAM::Role",
            {
                "RoleName": sched.role_name,
                "AssumeRolePolicyDocument": SCHEDULER_TRUST_POLICY,
                "Policies": [
                    {"PolicyName": "ecom-pipeline", "PolicyDocument": scheduler_policy(p, ACCOUNT, REGION, sched)}
                ],
            },
            f"iam role {sched.role_name}",
        )
        add(
            logical_id("Schedule", sched.name),
            "AWS::Scheduler::Schedule",
            {
                "Name": sched.name,
                "Description": sched.description,
                "ScheduleExpression": sched.expression,
                "State": sched.state,
                "FlexibleTimeWindow": {"Mode": "OFF"},
                "Target": {
                    "Arn": {"Fn::GetAtt": [functions[sched.function], "Arn"]},
                    "RoleArn": {"Fn::GetAtt": [role, "Arn"]},
                    "Input": sched.input,
                    # A missed tick is not retried: the next one does the same work.
                    "RetryPolicy": {"MaximumRetryAttempts": 0},
                },
            },
            f"schedule {sched.name}",
        )
    # The role Redshift assumes for COPY, on every target (harmless where nothing assumes it).
    copy_role = add(
        logical_id("Role", etl.redshift_copy_role_name),
        "AWS::IAM::Role",
        {
            "RoleName": etl.redshift_copy_role_name,
            "AssumeRolePolicyDocument": REDSHIFT_TRUST_POLICY,
            "Policies": [{"PolicyName": "ecom-pipeline", "PolicyDocument": redshift_copy_policy(p)}],
        },
        f"iam role {etl.redshift_copy_role_name}",
    )
    if etl.create_redshift:
        namespace = add(
            logical_id("RedshiftNamespace", etl.redshift_workgroup),
            "AWS::RedshiftServerless::Namespace",
            {
                "NamespaceName": etl.redshift_workgroup,
                "DbName": etl.redshift_database,
                "IamRoles": [{"Fn::GetAtt": [copy_role, "Arn"]}],
                "DefaultIamRoleArn": {"Fn::GetAtt": [copy_role, "Arn"]},
            },
            f"redshift serverless namespace {etl.redshift_workgroup}",
        )
        # 8 RPUs is the smallest base capacity; it scales up under load and costs nothing idle.
        add(
            logical_id("RedshiftWorkgroup", etl.redshift_workgroup),
            "AWS::RedshiftServerless::Workgroup",
            {
                "WorkgroupName": etl.redshift_workgroup,
                "NamespaceName": {"Ref": namespace},
                "BaseCapacity": 8,
                "PubliclyAccessible": False,
            },
            f"redshift serverless workgroup {etl.redshift_workgroup}",
        )

    # ---------------------------------------------------------------- alarms
    # What an operator is paged for; AlarmTopicArn (an SNS topic) receives them when given.
    for alarm in alarms(p):
        properties = {
            "AlarmName": alarm.name,
            "AlarmDescription": alarm.description,
            "Namespace": alarm.namespace,
            "MetricName": alarm.metric,
            "Dimensions": [{"Name": k, "Value": v} for k, v in alarm.dimensions],
            "Statistic": alarm.statistic,
            "Period": alarm.period,
            "EvaluationPeriods": alarm.evaluation_periods,
            "Threshold": alarm.threshold,
            "ComparisonOperator": alarm.comparison,
            "TreatMissingData": "notBreaching",
            "AlarmActions": {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], NO_VALUE]},
        }
        depends: list[str] = []
        if alarm.log_filter:
            # Dead letters: the stream trigger's summary line says how many records of the batch it
            # quarantined ({"fn": "kinesis-trigger", ..., "quarantined": N}); a metric filter counts them.
            depends = [
                add(
                    logical_id("MetricFilter", alarm.name),
                    "AWS::Logs::MetricFilter",
                    {
                        "FilterName": alarm.name,
                        "LogGroupName": {"Ref": log_groups[alarm.log_filter[0]]},
                        "FilterPattern": alarm.log_filter[1],
                        "MetricTransformations": [
                            {
                                "MetricNamespace": alarm.namespace,
                                "MetricName": alarm.metric,
                                "MetricValue": alarm.log_filter[2],
                            }
                        ],
                    },
                    f"metric filter {alarm.name}",
                )
            ]
        add(
            logical_id("Alarm", alarm.name),
            "AWS::CloudWatch::Alarm",
            properties,
            f"alarm {alarm.name}",
            **({"DependsOn": depends} if depends else {}),
        )

    # ---------------------------------------------------------------- the API
    api = add(
        logical_id("RestApi", r.api_name),
        "AWS::ApiGateway::RestApi",
        {
            "Name": r.api_name,
            "Description": "ecom-pipeline API",
            "ApiKeySourceType": "HEADER",
            "EndpointConfiguration": {"Types": ["REGIONAL"]},
        },
        f"rest api {r.api_name}",
    )
    authorizers: dict[str, str] = {}
    for a in p.authorizers:
        authorizers[a.name] = add(
            logical_id("Authorizer", a.name),
            "AWS::ApiGateway::Authorizer",
            {
                "Name": a.name,
                "RestApiId": {"Ref": api},
                "Type": "TOKEN",
                "IdentitySource": a.identity_source,
                "IdentityValidationExpression": a.validation_expression,
                "AuthorizerResultTtlInSeconds": a.ttl_seconds,
                "AuthorizerUri": _invocation_uri(functions[a.function]),
            },
            f"authorizer {a.name}",
        )
    paths: dict[str, str] = {}
    methods: list[str] = []
    for route in p.routes:
        parent: Any = {"Fn::GetAtt": [api, "RootResourceId"]}
        so_far = ""
        for part in route.path.strip("/").split("/"):
            so_far += "/" + part
            if so_far not in paths:
                paths[so_far] = add(
                    logical_id("ApiPath", so_far),
                    "AWS::ApiGateway::Resource",
                    {"RestApiId": {"Ref": api}, "ParentId": parent, "PathPart": part},
                    f"api resource {so_far}",
                )
            parent = {"Ref": paths[so_far]}
        method: dict[str, Any] = {
            "RestApiId": {"Ref": api},
            "ResourceId": {"Ref": paths[route.path]},
            "HttpMethod": route.method,
            "AuthorizationType": "CUSTOM" if route.authorizer else "NONE",
            "ApiKeyRequired": route.api_key_required,
            "RequestParameters": {
                f"method.request.path.{part[1:-1]}": True for part in route.path.split("/") if part.startswith("{")
            },
            "Integration": {
                "Type": "AWS_PROXY",
                "IntegrationHttpMethod": "POST",
                "Uri": _invocation_uri(functions[route.function]),
            },
        }
        if route.authorizer:
            method["AuthorizerId"] = {"Ref": authorizers[route.authorizer]}
        methods.append(
            add(
                logical_id("Method" + route.method.title(), route.path),
                "AWS::ApiGateway::Method",
                method,
                f"route {route.method} {route.path}",
            )
        )
    responses = [
        add(
            logical_id("GatewayResponse", t),
            "AWS::ApiGateway::GatewayResponse",
            {
                "RestApiId": {"Ref": api},
                "ResponseType": t,
                "ResponseTemplates": {"application/json": GATEWAY_ERROR_TEMPLATE},
            },
            f"gateway response {t}",
        )
        for t in p.gateway_responses
    ]
    for function, source in invoke_permissions(p):
        arn = (
            f"arn:aws:execute-api:{REGION}:{ACCOUNT}:${{{api}}}/*/*/*"
            if source == "routes"
            else f"arn:aws:execute-api:{REGION}:{ACCOUNT}:${{{api}}}/authorizers/"
            f"${{{authorizers[source.split(' ', 1)[1]]}}}"
        )
        add(
            logical_id("Permission", f"{function} {source}"),
            "AWS::Lambda::Permission",
            {
                "FunctionName": {"Ref": functions[function]},
                "Action": "lambda:InvokeFunction",
                "Principal": "apigateway.amazonaws.com",
                "SourceArn": {"Fn::Sub": arn},
            },
            f"lambda permission {function} ({source})",
        )
    # A deployment is immutable; a new logical id (hash of what it serves) makes CloudFormation
    # deploy again whenever a route, authorizer or gateway response changes.
    served = json.dumps(
        [resources[lid] for lid in sorted(methods + responses + list(authorizers.values()))], sort_keys=True
    )
    deployment = add(
        "ApiDeployment" + hashlib.sha256(served.encode()).hexdigest()[:10],
        "AWS::ApiGateway::Deployment",
        {"RestApiId": {"Ref": api}, "Description": "ecom-pipeline routes"},
        "api deployment",
        DependsOn=sorted(methods + responses),
    )
    stage_properties: dict[str, Any] = {
        "RestApiId": {"Ref": api},
        "StageName": r.api_stage,
        "DeploymentId": {"Ref": deployment},
    }
    stage_extra: dict[str, Any] = {}
    if aws:
        # Access logs: one JSON line per request. API Gateway writes them with the region's account
        # role (AWS::ApiGateway::Account, one per account and region, shared by every REST API there),
        # which this sets to a role with AWS's managed policy for it. The role is retained: the setting
        # outlives the stack, and must not point at a deleted role (docs/aws.md).
        access_logs = add(
            logical_id("LogGroup", f"{r.api_name} access"),
            "AWS::Logs::LogGroup",
            {"LogGroupName": f"/aws/apigateway/{r.api_name}/{r.api_stage}", "RetentionInDays": LOG_RETENTION_DAYS},
            f"log group /aws/apigateway/{r.api_name}/{r.api_stage}",
            Metadata=checkov_skips("CKV_AWS_158"),
        )
        logs_role = add(
            "RoleApiGatewayCloudWatch",
            "AWS::IAM::Role",
            {
                "Description": (
                    "API Gateway's account role for CloudWatch Logs (set by ecom-pipeline, kept when deleted)"
                ),
                "AssumeRolePolicyDocument": APIGATEWAY_TRUST_POLICY,
                "ManagedPolicyArns": [APIGATEWAY_LOGS_MANAGED_POLICY],
            },
            "iam role (API Gateway's CloudWatch Logs role)",
            DeletionPolicy="Retain",
            UpdateReplacePolicy="Retain",
        )
        account = add(
            "ApiGatewayAccount",
            "AWS::ApiGateway::Account",
            {"CloudWatchRoleArn": {"Fn::GetAtt": [logs_role, "Arn"]}},
            "api gateway account settings (logs role)",
        )
        stage_properties["AccessLogSetting"] = {
            "DestinationArn": {"Fn::GetAtt": [access_logs, "Arn"]},
            "Format": ACCESS_LOG_FORMAT,
        }
        stage_extra["DependsOn"] = [account]
    stage = add(
        logical_id("Stage", r.api_stage),
        "AWS::ApiGateway::Stage",
        stage_properties,
        f"stage {r.api_stage}",
        Metadata=checkov_skips("CKV_AWS_120", "CKV_AWS_73"),
        **stage_extra,
    )
    key = add(
        logical_id("ApiKey", r.api_key_name),
        "AWS::ApiGateway::ApiKey",
        {
            "Name": r.api_key_name,
            "Enabled": True,
            "Value": if_given("ApiKeyValue", {"Ref": "ApiKeyValue"}),
            "Description": "ecom-pipeline producer key (generated by API Gateway unless ApiKeyValue is given)",
        },
        f"api key {r.api_key_name}",
    )
    usage_plan = add(
        logical_id("UsagePlan", r.usage_plan_name),
        "AWS::ApiGateway::UsagePlan",
        {
            "UsagePlanName": r.usage_plan_name,
            "ApiStages": [{"ApiId": {"Ref": api}, "Stage": {"Ref": stage}}],
            "Throttle": {"RateLimit": p.throttle.rate, "BurstLimit": p.throttle.burst},
        },
        f"usage plan {r.usage_plan_name}",
    )
    add(
        logical_id("UsagePlanKey", r.usage_plan_name),
        "AWS::ApiGateway::UsagePlanKey",
        {"KeyId": {"Ref": key}, "KeyType": "API_KEY", "UsagePlanId": {"Ref": usage_plan}},
        "usage plan key",
    )

    def local_value(description: str) -> dict[str, Any]:
        return {"Type": "String", "NoEcho": True, "Default": "", "Description": description}

    parameters: dict[str, Any] = {
        "ArtifactBucket": {
            "Type": "String",
            "MinLength": 3,
            "Description": "S3 bucket holding the Lambda zips (`ecom bootstrap` uploads them)",
        },
        # Emulators only: their fixed development values (README). Empty on AWS, which generates them.
        "ApiKeyValue": local_value("Emulators only: the API key's fixed development value (empty: generated)"),
        "JwtSecret": local_value("Emulators only: the token signing key's development value (empty: generated)"),
        "OperatorKey": local_value("Emulators only: the operator key's development value (empty: generated)"),
        "GlueDatabase": {
            "Type": "String",
            "AllowedValues": ["true", "false"],
            "Default": "true",
            "Description": "false where the target has no Glue (LocalStack community)",
        },
        "AlarmTopicArn": {
            "Type": "String",
            "Default": "",
            "Description": "SNS topic ARN the alarms notify (empty: alarms without an action)",
        },
    }
    if artifact_bucket:
        parameters["ArtifactBucket"]["Default"] = artifact_bucket
    conditions: dict[str, Any] = {
        condition: {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}
        for parameter, condition in LOCAL_VALUES.items()
        if parameter in parameters
    }
    conditions["CreateGlueDatabase"] = {"Fn::Equals": [{"Ref": "GlueDatabase"}, "true"]}
    conditions["HasAlarmTopic"] = {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
    outputs = {
        "ApiUrl": {
            "Description": "POST /events here (header x-api-key)",
            "Value": {"Fn::Sub": f"https://${{{api}}}.execute-api.${{AWS::Region}}.${{AWS::URLSuffix}}/{r.api_stage}"},
        },
        "ApiId": {"Value": {"Ref": api}},
        "ApiStage": {"Value": {"Ref": stage}},
        "ApiKeyId": {"Description": "aws apigateway get-api-key --api-key <id> --include-value", "Value": {"Ref": key}},
        "StreamName": {"Value": {"Ref": stream}},
        "StreamArn": {"Value": {"Fn::GetAtt": [stream, "Arn"]}},
        "RawBucket": {"Value": r.raw_bucket},
        "StagingBucket": {"Value": r.staging_bucket},
        "DeadLetterBucket": {"Value": r.dead_letter_bucket},
        "DeadLetterQueueUrl": {"Value": {"Ref": queue}},
        "InvoiceTable": {"Value": r.invoice_table},
        "CustomerTable": {"Value": r.customer_table},
        "EtlFunction": {"Value": {"Ref": functions[r.etl_function]}},
    }
    outputs.update(
        {logical_id("", name) + "SecretArn": {"Value": {"Ref": logical_id("Secret", name)}} for name, _ in p.secrets}
    )
    doc = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "ecom-pipeline: e-commerce events -> API Gateway -> Kinesis -> DynamoDB + S3 -> scheduled ETL "
        "-> warehouse (generated from bootstrap/spec.py by `ecom bootstrap`; do not edit by hand)",
        "Parameters": parameters,
        "Conditions": conditions,
        "Resources": _pseudo(resources),
        "Outputs": outputs,
    }
    return doc, labels


@dataclass(frozen=True)
class Alarm:
    name: str
    description: str
    namespace: str
    metric: str
    dimensions: tuple[tuple[str, str], ...]
    statistic: str
    period: int
    evaluation_periods: int
    threshold: float
    comparison: str = "GreaterThanThreshold"
    # (function whose log group, filter pattern, metric value) for a metric computed from a log line.
    log_filter: tuple[str, str, str] | None = None


def alarms(p: Platform) -> list[Alarm]:
    """The alarms of the platform: the stream consumer falling behind, batches AWS gave up on,
    records quarantined as dead letters, and failed ETL ticks."""
    r = p.resources
    return [
        Alarm(
            f"{r.trigger_function}-iterator-age",
            "The stream consumer is more than 5 minutes behind the stream (3 minutes in a row)",
            "AWS/Lambda",
            "IteratorAge",
            (("FunctionName", r.trigger_function),),
            "Maximum",
            60,
            3,
            300_000.0,
        ),
        Alarm(
            f"{r.dead_letter_queue}-messages",
            "Batches the event source mapping gave up on wait in the OnFailure queue (ecom dlq batches)",
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            (("QueueName", r.dead_letter_queue),),
            "Maximum",
            300,
            1,
            0.0,
        ),
        Alarm(
            f"{r.trigger_function}-dead-letters",
            "Records quarantined in the dead-letter bucket (ecom dlq list)",
            METRIC_NAMESPACE,
            "DeadLetters",
            (),
            "Sum",
            300,
            1,
            0.0,
            log_filter=(r.trigger_function, "{ $.quarantined > 0 }", "$.quarantined"),
        ),
        Alarm(
            f"{r.etl_function}-errors",
            "ETL ticks that failed (the next tick redoes what was not committed)",
            "AWS/Lambda",
            "Errors",
            (("FunctionName", r.etl_function),),
            "Sum",
            300,
            1,
            0.0,
        ),
    ]


def _invocation_uri(function_lid: str) -> dict[str, str]:
    return {
        "Fn::Sub": "arn:aws:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/"
        f"${{{function_lid}.Arn}}/invocations"
    }


def render(doc: dict[str, Any], path: Path) -> str:
    """YAML (or JSON for a .json path), intrinsic functions in their long form."""
    if path.suffix == ".json":
        return json.dumps(doc, indent=2) + "\n"
    return yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False, width=120, allow_unicode=False)


class _PlainDumper(yaml.SafeDumper):
    """No anchors/aliases (&id001 / *id001): CloudFormation rejects them in a template."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write(
    path: Path, p: Platform | None = None, artifact_bucket: str | None = None
) -> tuple[dict[str, Any], list[Path]]:
    """Write the template and, beside it, the zips under the keys it names. Returns (template, zips)."""
    p = p or platform()
    code = artifacts(p)
    doc = template(p, code, artifact_bucket)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(doc, path))
    zips = []
    for artifact in code.values():
        target = path.parent / artifact.key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(artifact.blob)
        zips.append(target)
    return doc, zips


def upload(s3, bucket: str, p: Platform | None = None, code: dict[str, Artifact] | None = None) -> list[str]:
    """Put the zips in the artifact bucket (skipping keys already there: they are content-addressed)."""
    keys = []
    for artifact in {a.key: a for a in (code or artifacts(p or platform())).values()}.values():
        try:
            s3.head_object(Bucket=bucket, Key=artifact.key)
        except ClientError:  # absent (or not ours to read): put it; a real problem surfaces there
            s3.put_object(Bucket=bucket, Key=artifact.key, Body=artifact.blob)
        keys.append(artifact.key)
    return keys
