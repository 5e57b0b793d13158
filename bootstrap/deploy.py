"""Create or update every resource idempotently. A second run creates nothing and changes nothing.

Every step looks first and acts only on a difference, and reports what it did, so the result of
a run is a list of (resource, action) with action in created / updated / unchanged.
"""
from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from bootstrap.package import build_zip, code_sha256
from bootstrap.spec import (GATEWAY_ERROR_TEMPLATE, Function, Platform, Schedule, function_environment,
                            invoke_permissions, platform)
from ecom_core import aws, config
from ecom_core.faults import FaultInjectionRefused, refuse_on_aws
from ecom_core.secrets import new_secret_value


@dataclass
class Report:
    actions: list[tuple[str, str]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)

    def add(self, resource: str, action: str) -> None:
        self.actions.append((resource, action))

    @property
    def changed(self) -> list[tuple[str, str]]:
        return [(r, a) for r, a in self.actions if a not in ("unchanged", "skipped")]


SCHEDULER_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


def scheduler_policy(p: Platform, account: str, region: str, sched: Schedule) -> dict[str, Any]:
    """The schedule may invoke its one function, nothing else."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "InvokeTarget", "Effect": "Allow", "Action": ["lambda:InvokeFunction"],
         "Resource": f"arn:aws:lambda:{region}:{account}:function:{sched.function}"}]}


REDSHIFT_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "redshift.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


def redshift_copy_policy(p: Platform) -> dict[str, Any]:
    """The role Redshift assumes for COPY: read the staging CSV and the load manifests, nothing else."""
    r = p.resources
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadStaging", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{r.staging_bucket}/{r.staging_prefix}*", f"arn:aws:s3:::{r.staging_bucket}/_etl/*"]},
        {"Sid": "ListStaging", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": f"arn:aws:s3:::{r.staging_bucket}"}]}


def tls_only_policy(bucket: str) -> dict[str, Any]:
    """Refuse any request to the bucket that is not over TLS. The Deny must name every action
    (`s3:*`) to mean anything; it is the one wildcard action in the platform, and it grants nothing."""
    return {"Version": "2012-10-17", "Statement": [
        {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}


LAMBDA_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


def lambda_policy(p: Platform, account: str, region: str, function: Function | None = None) -> dict[str, Any]:
    """Least privilege: for `function`, exactly the statements its spec names (each a named action
    on a named resource); without one, every statement the platform uses."""
    r = p.resources

    def arn(service: str, resource: str) -> str:
        return f"arn:aws:{service}:{region}:{account}:{resource}"

    statements = [
            {"Sid": "PutToStream", "Effect": "Allow", "Action": ["kinesis:PutRecords", "kinesis:PutRecord"],
             "Resource": arn("kinesis", f"stream/{r.stream}")},
            {"Sid": "ReadStream", "Effect": "Allow",
             "Action": ["kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:DescribeStream",
                        "kinesis:DescribeStreamSummary", "kinesis:ListShards", "kinesis:ListStreams"],
             "Resource": arn("kinesis", f"stream/{r.stream}")},
            {"Sid": "WriteOltp", "Effect": "Allow", "Action": ["dynamodb:BatchWriteItem", "dynamodb:PutItem"],
             "Resource": [arn("dynamodb", f"table/{r.invoice_table}"),
                          arn("dynamodb", f"table/{r.customer_table}")]},
            # The stream trigger recomputes a customer entry's line count and total from the invoice's
            # lines; the read API queries both tables and the customer table's ByDate index.
            {"Sid": "ReadOltp", "Effect": "Allow", "Action": ["dynamodb:Query"],
             "Resource": [arn("dynamodb", f"table/{r.invoice_table}"),
                          arn("dynamodb", f"table/{r.customer_table}"),
                          arn("dynamodb", f"table/{r.customer_table}/index/*")]},
            # The stream trigger checks the stored customer entries of the invoices its batch holds
            # whole (handlers/stream_trigger.customer_entries) in one BatchGetItem per 100.
            {"Sid": "ReadCustomerEntries", "Effect": "Allow", "Action": ["dynamodb:BatchGetItem"],
             "Resource": arn("dynamodb", f"table/{r.customer_table}")},
            {"Sid": "WriteRawAndDeadLetters", "Effect": "Allow", "Action": ["s3:PutObject"],
             "Resource": [f"arn:aws:s3:::{r.raw_bucket}/{r.raw_prefix}*",
                          f"arn:aws:s3:::{r.dead_letter_bucket}/{r.dead_letter_prefix}*"]},
            {"Sid": "OnFailureDestination", "Effect": "Allow", "Action": ["sqs:SendMessage"],
             "Resource": arn("sqs", r.dead_letter_queue)},
            # The ETL job: raw -> processed (copy + delete), staging CSV written and read, its state object.
            {"Sid": "EtlRawObjects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
             "Resource": [f"arn:aws:s3:::{r.raw_bucket}/{r.raw_prefix}*",
                          f"arn:aws:s3:::{r.raw_bucket}/{r.processed_prefix}*"]},
            {"Sid": "EtlStagingObjects", "Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
             "Resource": [f"arn:aws:s3:::{r.staging_bucket}/{r.staging_prefix}*",
                          f"arn:aws:s3:::{r.staging_bucket}/_etl/*"]},
            {"Sid": "EtlListBuckets", "Effect": "Allow", "Action": ["s3:ListBucket"],
             "Resource": [f"arn:aws:s3:::{r.raw_bucket}", f"arn:aws:s3:::{r.staging_bucket}"]},
            {"Sid": "EtlCatalog", "Effect": "Allow",
             "Action": ["glue:GetTable", "glue:CreateTable", "glue:UpdateTable", "glue:GetDatabase"],
             "Resource": [arn("glue", "catalog"), arn("glue", f"database/{r.glue_database}"),
                          arn("glue", f"table/{r.glue_database}/{r.glue_table}")]},
            {"Sid": "ReadWarehouseSecret", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
             "Resource": arn("secretsmanager", f"secret:{r.warehouse_secret_name}-??????")},
            # Redshift Data API: statements run as the job's role (no password, no VPC attachment).
            {"Sid": "RedshiftData", "Effect": "Allow",
             "Action": ["redshift-data:ExecuteStatement", "redshift-data:BatchExecuteStatement",
                        "redshift-data:DescribeStatement", "redshift-data:GetStatementResult",
                        "redshift-serverless:GetCredentials"],
             "Resource": [arn("redshift-serverless", f"workgroup/{config.etl().redshift_workgroup}"),
                          arn("redshift-data", "statement:*")] if not config.etl().redshift_cluster else
                         [arn("redshift", f"cluster:{config.etl().redshift_cluster}"),
                          arn("redshift", f"dbname:{config.etl().redshift_cluster}/{config.etl().redshift_database}"),
                          arn("redshift-data", "statement:*")]},
            {"Sid": "ReadAuthSecrets", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
             # Secrets Manager appends a random 6-character suffix to a secret's ARN.
             "Resource": [arn("secretsmanager", f"secret:{r.jwt_secret_name}-??????"),
                          arn("secretsmanager", f"secret:{r.operator_secret_name}-??????")]},
            {"Sid": "Logs", "Effect": "Allow",
             "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": arn("logs", f"log-group:/aws/lambda/{function.name if function else '*'}:*")},
    ]
    if function is not None:
        unknown = set(function.permissions) - {s["Sid"] for s in statements}
        if unknown:
            raise ValueError(f"{function.name}: unknown permissions {sorted(unknown)}")
        statements = [s for s in statements if s["Sid"] in function.permissions]
    return {"Version": "2012-10-17", "Statement": statements}


class Deployer:
    def __init__(self, cfg: config.Stack | None = None, p: Platform | None = None):
        self.cfg = cfg or config.stack()
        self.p = p or platform()
        self.r = self.p.resources
        self.report = Report()
        self.local = self.cfg.endpoint_url is not None
        self._clients: dict[str, Any] = {}

    def c(self, service: str):
        if service not in self._clients:
            self._clients[service] = aws.client(service, self.cfg)
        return self._clients[service]

    # ------------------------------------------------------------------ steps
    @functools.cached_property
    def account(self) -> str:
        """Asked once per deployment: every role policy needs it (one per function and schedule)."""
        return self.c("sts").get_caller_identity()["Account"]

    def role(self, fn: Function) -> str:
        return self._role(fn.role_name, LAMBDA_TRUST_POLICY,
                          lambda_policy(self.p, self.account, self.cfg.region, fn))

    def _role(self, name: str, trust: dict[str, Any], policy_document: dict[str, Any]) -> str:
        """An IAM role with one inline policy, created or brought up to date. Returns its ARN."""
        iam = self.c("iam")
        policy = json.dumps(policy_document, sort_keys=True)
        try:
            arn = iam.get_role(RoleName=name)["Role"]["Arn"]
            action = "unchanged"
        except ClientError as exc:
            if aws.error_code(exc) != "NoSuchEntity":
                raise
            arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
            action = "created"
        try:
            current = iam.get_role_policy(RoleName=name, PolicyName="ecom-pipeline")["PolicyDocument"]
            if isinstance(current, str):
                current = json.loads(current)
            same = json.dumps(current, sort_keys=True) == policy
        except ClientError:
            same = False
        if not same:
            iam.put_role_policy(RoleName=name, PolicyName="ecom-pipeline", PolicyDocument=policy)
            action = "updated" if action == "unchanged" else action
        self.report.add(f"iam role {name}", action)
        return arn

    def buckets(self) -> None:
        s3 = self.c("s3")
        for bucket in self.p.buckets:
            try:
                s3.head_bucket(Bucket=bucket)
                self.report.add(f"s3 bucket {bucket}", "unchanged")
            except ClientError:
                kwargs: dict[str, Any] = {"Bucket": bucket}
                if self.cfg.region != "us-east-1":
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.cfg.region}
                s3.create_bucket(**kwargs)
                self.report.add(f"s3 bucket {bucket}", "created")
            if not self.local:
                # New buckets on AWS block public access and encrypt (SSE-S3) by default; TLS-only is ours.
                self._bucket_policy(bucket)

    def _bucket_policy(self, bucket: str) -> None:
        s3 = self.c("s3")
        wanted = tls_only_policy(bucket)
        try:
            current = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        except ClientError:
            current = None
        if current == wanted:
            self.report.add(f"s3 bucket policy {bucket} (TLS only)", "unchanged")
            return
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(wanted))
        self.report.add(f"s3 bucket policy {bucket} (TLS only)", "created" if current is None else "updated")

    def stream(self) -> str:
        kinesis = self.c("kinesis")
        try:
            summary = kinesis.describe_stream_summary(StreamName=self.r.stream)["StreamDescriptionSummary"]
            self.report.add(f"kinesis stream {self.r.stream}", "unchanged")
        except ClientError as exc:
            if aws.error_code(exc) != "ResourceNotFoundException":
                raise
            kinesis.create_stream(StreamName=self.r.stream, ShardCount=self.r.stream_shards)
            self.report.add(f"kinesis stream {self.r.stream} ({self.r.stream_shards} shards)", "created")
            summary = None
        deadline = time.monotonic() + 120
        while summary is None or summary["StreamStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise RuntimeError(f"stream {self.r.stream} did not become ACTIVE")
            time.sleep(0.2)
            summary = kinesis.describe_stream_summary(StreamName=self.r.stream)["StreamDescriptionSummary"]
        return summary["StreamARN"]

    def tables(self) -> None:
        dynamodb = self.c("dynamodb")
        for table in self.p.tables:
            try:
                dynamodb.describe_table(TableName=table.name)
                self.report.add(f"dynamodb table {table.name}", "unchanged")
                continue
            except ClientError as exc:
                if aws.error_code(exc) != "ResourceNotFoundException":
                    raise
            attributes = {name: typ for name, typ, _ in table.key}
            kwargs: dict[str, Any] = {
                "TableName": table.name, "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [{"AttributeName": n, "KeyType": k} for n, _, k in table.key],
            }
            if table.local_indexes:
                hash_key = next(n for n, _, k in table.key if k == "HASH")
                kwargs["LocalSecondaryIndexes"] = [
                    {"IndexName": index, "Projection": {"ProjectionType": "ALL"},
                     "KeySchema": [{"AttributeName": hash_key, "KeyType": "HASH"},
                                   {"AttributeName": attr, "KeyType": "RANGE"}]}
                    for index, attr, _ in table.local_indexes]
                attributes.update({attr: typ for _, attr, typ in table.local_indexes})
            kwargs["AttributeDefinitions"] = [{"AttributeName": n, "AttributeType": t} for n, t in attributes.items()]
            dynamodb.create_table(**kwargs)
            dynamodb.get_waiter("table_exists").wait(TableName=table.name, WaiterConfig={"Delay": 1})
            self.report.add(f"dynamodb table {table.name}", "created")

    def glue_database(self) -> None:
        glue = self.c("glue")
        try:
            glue.get_database(Name=self.r.glue_database)
            self.report.add(f"glue database {self.r.glue_database}", "unchanged")
        except ClientError as exc:
            if aws.service_missing(exc):
                # The ETL's catalog step says the same and carries on: the load does not need Glue.
                self.report.add(f"glue database {self.r.glue_database} (Glue not offered by this target)", "skipped")
                return
            if aws.error_code(exc) != "EntityNotFoundException":
                raise
            glue.create_database(DatabaseInput={"Name": self.r.glue_database,
                                                "Description": "ecom-pipeline staging CSV schemas"})
            self.report.add(f"glue database {self.r.glue_database}", "created")

    def dead_letter_queue(self) -> str:
        sqs = self.c("sqs")
        try:
            url = sqs.get_queue_url(QueueName=self.r.dead_letter_queue)["QueueUrl"]
            self.report.add(f"sqs queue {self.r.dead_letter_queue}", "unchanged")
        except ClientError:
            url = sqs.create_queue(QueueName=self.r.dead_letter_queue,
                                   Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
            self.report.add(f"sqs queue {self.r.dead_letter_queue}", "created")
        return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def functions(self) -> dict[str, str]:
        lam = self.c("lambda")
        blobs = {package: build_zip(package=package) for package in {fn.package for fn in self.p.functions}}
        arns: dict[str, str] = {}
        for fn in self.p.functions:
            blob = blobs[fn.package]
            digest = code_sha256(blob)
            role_arn = self.role(fn)
            environment = {"Variables": function_environment(self.r, fn, target=self.cfg.target)}
            wanted = {"Runtime": self.p.runtime, "Handler": fn.handler, "Timeout": fn.timeout, "Role": role_arn,
                      "MemorySize": fn.memory, "Description": fn.description, "Environment": environment}
            try:
                current = lam.get_function_configuration(FunctionName=fn.name)
            except ClientError as exc:
                if aws.error_code(exc) != "ResourceNotFoundException":
                    raise
                current = None
            if current is None:
                created = lam.create_function(FunctionName=fn.name, Code={"ZipFile": blob}, Publish=False, **wanted)
                arns[fn.name] = created["FunctionArn"]
                self.report.add(f"lambda {fn.name}", "created")
                self._wait_function(fn.name)
                continue
            arns[fn.name] = current["FunctionArn"]
            action = "unchanged"
            if current.get("CodeSha256") != digest:
                lam.update_function_code(FunctionName=fn.name, ZipFile=blob)
                self._wait_function(fn.name)
                action = "updated"
            drift = {k: v for k, v in wanted.items()
                     if (current.get(k) if k != "Environment" else {"Variables": (current.get("Environment") or {}).get("Variables", {})}) != v}
            if drift:
                lam.update_function_configuration(FunctionName=fn.name, **drift)
                self._wait_function(fn.name)
                action = "updated"
            self.report.add(f"lambda {fn.name}", action)
        return arns

    def _wait_function(self, name: str) -> None:
        lam = self.c("lambda")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            conf = lam.get_function_configuration(FunctionName=name)
            if conf.get("State", "Active") == "Active" and conf.get("LastUpdateStatus", "Successful") != "InProgress":
                return
            time.sleep(0.5)
        raise RuntimeError(f"lambda {name} did not become Active")

    def rest_api(self, function_arns: dict[str, str]) -> str:
        apigw = self.c("apigateway")
        lam = self.c("lambda")
        api = next((a for a in apigw.get_rest_apis(limit=500)["items"] if a["name"] == self.r.api_name), None)
        changed = False
        if api is None:
            api = apigw.create_rest_api(name=self.r.api_name, description="ecom-pipeline API",
                                        apiKeySource="HEADER", endpointConfiguration={"types": ["REGIONAL"]})
            self.report.add(f"rest api {self.r.api_name}", "created")
            changed = True
        api_id = api["id"]
        authorizer_ids, authorizers_changed = self.authorizers(api_id, function_arns)
        changed = self.gateway_responses(api_id) or authorizers_changed or changed
        resources = {res["path"]: res for res in apigw.get_resources(restApiId=api_id, limit=500)["items"]}
        for route in self.p.routes:
            route_changed = False
            parent = resources["/"]
            path_so_far = ""
            for part in route.path.strip("/").split("/"):
                path_so_far += "/" + part
                if path_so_far not in resources:
                    resources[path_so_far] = apigw.create_resource(restApiId=api_id, parentId=parent["id"], pathPart=part)
                    route_changed = True
                parent = resources[path_so_far]
            resource = resources[route.path]
            uri = (f"arn:aws:apigateway:{self.cfg.region}:lambda:path/2015-03-31/functions/"
                   f"{function_arns[route.function]}/invocations")
            try:
                method = apigw.get_method(restApiId=api_id, resourceId=resource["id"], httpMethod=route.method)
            except ClientError as exc:
                if aws.error_code(exc) != "NotFoundException":
                    raise
                method = None
            wanted: dict[str, Any] = {
                "authorizationType": "CUSTOM" if route.authorizer else "NONE",
                "apiKeyRequired": route.api_key_required,
                # Path parameters ({customerId}) are declared required, as an OpenAPI import would.
                "requestParameters": {f"method.request.path.{part[1:-1]}": True
                                      for part in route.path.split("/") if part.startswith("{")},
            }
            if route.authorizer:
                wanted["authorizerId"] = authorizer_ids[route.authorizer]
            if method is None or any(
                    (bool(method.get(k)) if k == "apiKeyRequired" else (method.get(k) or ({} if k == "requestParameters" else None))) != v
                    for k, v in wanted.items()) or (not route.authorizer and method.get("authorizerId")):
                if method is not None:
                    apigw.delete_method(restApiId=api_id, resourceId=resource["id"], httpMethod=route.method)
                apigw.put_method(restApiId=api_id, resourceId=resource["id"], httpMethod=route.method, **wanted)
                method = {}
                route_changed = True
            integration = method.get("methodIntegration") or {}
            if integration.get("type") != "AWS_PROXY" or integration.get("uri") != uri:
                apigw.put_integration(restApiId=api_id, resourceId=resource["id"], httpMethod=route.method,
                                      type="AWS_PROXY", integrationHttpMethod="POST", uri=uri)
                route_changed = True
            changed = changed or route_changed
            self.report.add(f"route {route.method} {route.path}", "updated" if route_changed else "unchanged")
        self.allow_api_invokes(lam, api_id, authorizer_ids)
        stages = {s["stageName"] for s in apigw.get_stages(restApiId=api_id)["item"]}
        if changed or self.r.api_stage not in stages:
            apigw.create_deployment(restApiId=api_id, stageName=self.r.api_stage)
            self.report.add(f"stage {self.r.api_stage}", "updated" if self.r.api_stage in stages else "created")
        else:
            self.report.add(f"stage {self.r.api_stage}", "unchanged")
        return api_id

    def authorizers(self, api_id: str, function_arns: dict[str, str]) -> tuple[dict[str, str], bool]:
        """Create or update the Lambda authorizers; returns their ids by name and whether any changed."""
        apigw = self.c("apigateway")
        existing = {a["name"]: a for a in apigw.get_authorizers(restApiId=api_id, limit=500).get("items", [])}
        ids: dict[str, str] = {}
        changed = False
        for spec in self.p.authorizers:
            uri = (f"arn:aws:apigateway:{self.cfg.region}:lambda:path/2015-03-31/functions/"
                   f"{function_arns[spec.function]}/invocations")
            wanted = {"type": "TOKEN", "authorizerUri": uri, "identitySource": spec.identity_source,
                      "identityValidationExpression": spec.validation_expression,
                      "authorizerResultTtlInSeconds": spec.ttl_seconds}
            current = existing.get(spec.name)
            if current is None:
                current = apigw.create_authorizer(restApiId=api_id, name=spec.name, **wanted)
                self.report.add(f"authorizer {spec.name}", "created")
                changed = True
            else:
                # Compared as text: a PATCH stores values as strings.
                drift = [k for k, v in wanted.items() if str(current.get(k)) != str(v)]
                if drift:
                    apigw.update_authorizer(restApiId=api_id, authorizerId=current["id"], patchOperations=[
                        {"op": "replace", "path": f"/{k}", "value": str(wanted[k])} for k in drift])
                    changed = True
                self.report.add(f"authorizer {spec.name}", "updated" if drift else "unchanged")
            ids[spec.name] = current["id"]
        return ids, changed

    def gateway_responses(self, api_id: str) -> bool:
        apigw = self.c("apigateway")
        changed = False
        for response_type in self.p.gateway_responses:
            try:
                current = apigw.get_gateway_response(restApiId=api_id, responseType=response_type)
            except ClientError as exc:
                if aws.error_code(exc) != "NotFoundException":
                    raise
                current = {}
            if (current.get("responseTemplates") or {}).get("application/json") == GATEWAY_ERROR_TEMPLATE:
                self.report.add(f"gateway response {response_type}", "unchanged")
                continue
            apigw.put_gateway_response(restApiId=api_id, responseType=response_type,
                                       responseTemplates={"application/json": GATEWAY_ERROR_TEMPLATE})
            self.report.add(f"gateway response {response_type}", "updated")
            changed = True
        return changed

    def allow_api_invokes(self, lam, api_id: str, authorizer_ids: dict[str, str]) -> None:
        """API Gateway may invoke what `spec.invoke_permissions` lists (as the plan and the template
        grant it): each route's function from any stage and method of this API, each authorizer's
        function as that authorizer."""
        api_arn = f"arn:aws:execute-api:{self.cfg.region}:{self.account}:{api_id}"
        for function, source in invoke_permissions(self.p):
            if source == "routes":
                self._allow_invoke(lam, function, f"apigateway-{api_id}", f"{api_arn}/*/*/*")
            else:
                name = source.removeprefix("authorizer ")
                self._allow_invoke(lam, function, f"apigateway-{api_id}-authorizer",
                                   f"{api_arn}/authorizers/{authorizer_ids[name]}")

    def _allow_invoke(self, lam, function: str, statement_id: str, source_arn: str) -> None:
        try:
            policy = json.loads(lam.get_policy(FunctionName=function)["Policy"])
            if any(s.get("Sid") == statement_id for s in policy.get("Statement", [])):
                return
        except ClientError:
            pass
        lam.add_permission(FunctionName=function, StatementId=statement_id, Action="lambda:InvokeFunction",
                           Principal="apigateway.amazonaws.com", SourceArn=source_arn)

    def api_key(self, api_id: str) -> str:
        apigw = self.c("apigateway")
        key = next((k for k in apigw.get_api_keys(nameQuery=self.r.api_key_name, includeValues=True)["items"]
                    if k["name"] == self.r.api_key_name), None)
        if key is None:
            kwargs: dict[str, Any] = {"name": self.r.api_key_name, "enabled": True}
            if self.local:
                kwargs["value"] = self.r.api_key_value  # fixed local default so tests and docs know it
            key = apigw.create_api_key(**kwargs)
            self.report.add(f"api key {self.r.api_key_name}", "created")
        else:
            self.report.add(f"api key {self.r.api_key_name}", "unchanged")
        plan = next((u for u in apigw.get_usage_plans(limit=500)["items"] if u["name"] == self.r.usage_plan_name), None)
        stage = {"apiId": api_id, "stage": self.r.api_stage}
        if plan is None:
            plan = apigw.create_usage_plan(name=self.r.usage_plan_name, apiStages=[stage],
                                           throttle={"rateLimit": self.p.throttle.rate,
                                                     "burstLimit": self.p.throttle.burst})
            self.report.add(f"usage plan {self.r.usage_plan_name}", "created")
        elif not any(s.get("apiId") == api_id and s.get("stage") == self.r.api_stage for s in plan.get("apiStages", [])):
            apigw.update_usage_plan(usagePlanId=plan["id"], patchOperations=[
                {"op": "add", "path": "/apiStages", "value": f"{api_id}:{self.r.api_stage}"}])
            self.report.add(f"usage plan {self.r.usage_plan_name}", "updated")
        else:
            self.report.add(f"usage plan {self.r.usage_plan_name}", "unchanged")
        linked = {k["id"] for k in apigw.get_usage_plan_keys(usagePlanId=plan["id"])["items"]}
        if key["id"] not in linked:
            apigw.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
            self.report.add("usage plan key", "created")
        return key.get("value") or apigw.get_api_key(apiKey=key["id"], includeValue=True)["value"]

    def event_source_mapping(self, stream_arn: str, dlq_arn: str) -> None:
        lam = self.c("lambda")
        existing = lam.list_event_source_mappings(FunctionName=self.r.trigger_function,
                                                  EventSourceArn=stream_arn)["EventSourceMappings"]
        if existing:
            mapping = existing[0]
            if mapping.get("BatchSize") != self.p.mapping.batch_size:
                lam.update_event_source_mapping(UUID=mapping["UUID"], BatchSize=self.p.mapping.batch_size)
                self.report.add(f"event source mapping {self.r.stream} -> {self.r.trigger_function} "
                                f"(batch size {self.p.mapping.batch_size})", "updated")
            else:
                self.report.add(f"event source mapping {self.r.stream} -> {self.r.trigger_function}", "unchanged")
            return
        # On AWS the retry bound, bisection and the OnFailure destination hold. MiniStack ignores
        # them (it retries forever), which is why the handler quarantines bad records itself and
        # only raises for transient errors; see docs/emulator-notes.md.
        m = self.p.mapping
        lam.create_event_source_mapping(
            EventSourceArn=stream_arn, FunctionName=self.r.trigger_function, StartingPosition=m.starting_position,
            BatchSize=m.batch_size, MaximumBatchingWindowInSeconds=m.batching_window_s,
            MaximumRetryAttempts=m.max_retry_attempts, BisectBatchOnFunctionError=m.bisect_on_error,
            DestinationConfig={"OnFailure": {"Destination": dlq_arn}}, Enabled=True)
        self.report.add(f"event source mapping {self.r.stream} -> {self.r.trigger_function}", "created")

    def secrets(self) -> None:
        """The token key and the operator key in Secrets Manager, on every target (one code path).

        Emulators: the configured values (local-development defaults unless set), so the CLI and
        tests can mint tokens. AWS: a secret that exists is left alone (rotate with `ecom secrets
        rotate`); a new one gets the value the user configured, or a random one. Never a default.
        """
        sm = self.c("secretsmanager")
        auth = config.auth()
        configured = {self.r.jwt_secret_name: ("ECOM_JWT_SECRET", auth.jwt_secret),
                      self.r.operator_secret_name: ("ECOM_OPERATOR_KEY", auth.operator_key)}
        for name, _ in self.p.secrets:
            variable, value = configured[name]
            try:
                current = sm.get_secret_value(SecretId=name)["SecretString"]
            except ClientError as exc:
                if aws.error_code(exc) != "ResourceNotFoundException":
                    raise
                current = None
            if not self.local:
                explicit = os.environ.get(variable)
                value = explicit if explicit else new_secret_value()
                if current is not None:
                    self.report.add(f"secret {name}", "unchanged")
                    continue
            if current is None:
                sm.create_secret(Name=name, SecretString=value, Description=f"ecom-pipeline: {variable}")
                self.report.add(f"secret {name}", "created")
            elif current != value:
                sm.put_secret_value(SecretId=name, SecretString=value)
                self.report.add(f"secret {name}", "updated")
            else:
                self.report.add(f"secret {name}", "unchanged")

    def warehouse_secret(self) -> None:
        """The deployed ETL job's warehouse DSN, in Secrets Manager. Emulators: the private cluster
        (a local-development password). AWS: only when the user points WAREHOUSE_DSN at a Postgres;
        the Redshift dialect needs none (the Data API authenticates with the job's role)."""
        if not self.local and not self.cfg.warehouse_dsn_override:
            self.report.add(f"secret {self.r.warehouse_secret_name} (Redshift Data API: no DSN)", "skipped")
            return
        sm = self.c("secretsmanager")
        value = self.cfg.warehouse_dsn
        try:
            current = sm.get_secret_value(SecretId=self.r.warehouse_secret_name)["SecretString"]
        except ClientError as exc:
            if aws.error_code(exc) != "ResourceNotFoundException":
                raise
            sm.create_secret(Name=self.r.warehouse_secret_name, SecretString=value,
                             Description="ecom-pipeline: warehouse DSN of the ETL job")
            self.report.add(f"secret {self.r.warehouse_secret_name}", "created")
            return
        if current != value:
            sm.put_secret_value(SecretId=self.r.warehouse_secret_name, SecretString=value)
        self.report.add(f"secret {self.r.warehouse_secret_name}", "updated" if current != value else "unchanged")

    def redshift(self) -> None:
        """AWS with the Redshift dialect: the role Redshift assumes for COPY (read-only on the staging
        bucket) and, when asked (ECOM_CREATE_REDSHIFT=1), a Serverless namespace + workgroup that
        carries it. Otherwise the workgroup or cluster named in configuration is used as it is."""
        etl = config.etl()
        if self.local or etl.warehouse_for(self.cfg.target) != "redshift":
            return
        role_arn = self._role(etl.redshift_copy_role_name, REDSHIFT_TRUST_POLICY, redshift_copy_policy(self.p))
        if not etl.create_redshift:
            self.report.add(f"redshift {etl.redshift_cluster or etl.redshift_workgroup} (existing, from configuration)",
                            "unchanged")
            return
        rs = self.c("redshift-serverless")
        try:
            rs.get_namespace(namespaceName=etl.redshift_workgroup)
            self.report.add(f"redshift serverless namespace {etl.redshift_workgroup}", "unchanged")
        except ClientError as exc:
            if aws.error_code(exc) != "ResourceNotFoundException":
                raise
            rs.create_namespace(namespaceName=etl.redshift_workgroup, dbName=etl.redshift_database,
                                iamRoles=[role_arn], defaultIamRoleArn=role_arn)
            self.report.add(f"redshift serverless namespace {etl.redshift_workgroup}", "created")
        try:
            rs.get_workgroup(workgroupName=etl.redshift_workgroup)
            self.report.add(f"redshift serverless workgroup {etl.redshift_workgroup}", "unchanged")
        except ClientError as exc:
            if aws.error_code(exc) != "ResourceNotFoundException":
                raise
            # 8 RPUs is the smallest base capacity; it scales up under load and costs nothing idle.
            rs.create_workgroup(workgroupName=etl.redshift_workgroup, namespaceName=etl.redshift_workgroup,
                                baseCapacity=8, publiclyAccessible=False)
            self.report.add(f"redshift serverless workgroup {etl.redshift_workgroup}", "created")

    def schedules(self, function_arns: dict[str, str]) -> None:
        """EventBridge Scheduler schedules, each invoking a function through its own role."""
        scheduler = self.c("scheduler")
        for sched in self.p.schedules:
            role_arn = self._role(sched.role_name, SCHEDULER_TRUST_POLICY,
                                  scheduler_policy(self.p, self.account, self.cfg.region, sched))
            wanted = {"ScheduleExpression": sched.expression, "State": sched.state,
                      "FlexibleTimeWindow": {"Mode": "OFF"},
                      "Target": {"Arn": function_arns[sched.function], "RoleArn": role_arn, "Input": sched.input,
                                 # A missed tick is not retried: the next one does the same work.
                                 "RetryPolicy": {"MaximumRetryAttempts": 0}},
                      "Description": sched.description}
            try:
                current = scheduler.get_schedule(Name=sched.name)
            except ClientError as exc:
                if aws.error_code(exc) != "ResourceNotFoundException":
                    raise
                scheduler.create_schedule(Name=sched.name, **wanted)
                self.report.add(f"schedule {sched.name} ({sched.expression}, {sched.state})", "created")
                continue
            same = all(current.get(k) == v for k, v in wanted.items() if k != "Target") and \
                all(current.get("Target", {}).get(k) == v for k, v in wanted["Target"].items() if k != "RetryPolicy")
            if not same:
                scheduler.update_schedule(Name=sched.name, **wanted)
            self.report.add(f"schedule {sched.name} ({sched.expression}, {sched.state})",
                            "unchanged" if same else "updated")

    # ------------------------------------------------------------------ all
    def run(self) -> Report:
        if not self.local:
            refuse_local_defaults()
        self.buckets()
        stream_arn = self.stream()
        self.tables()
        self.glue_database()
        dlq_arn = self.dead_letter_queue()
        self.secrets()
        self.warehouse_secret()
        self.redshift()
        arns = self.functions()
        self.schedules(arns)
        api_id = self.rest_api(arns)
        key = self.api_key(api_id)
        self.event_source_mapping(stream_arn, dlq_arn)
        self.report.outputs = {"api_id": api_id, "api_url": aws.api_url(api_id, self.cfg), "api_key": key,
                               "stream_arn": stream_arn}
        return self.report


class RefusedForAws(RuntimeError):
    """A setting that is fine on an emulator and unsafe on a real account."""


def refuse_local_defaults(environ: dict[str, str] | None = None) -> None:
    """Real AWS gets no local-development default (their values are printed in the README) and
    no fault injection. Unset secrets are generated in Secrets Manager instead."""
    environ = os.environ if environ is None else environ
    problems = [f"{name} is set to the local-development default" for name, default in config.DEV_DEFAULTS.items()
                if environ.get(name) == default]
    if environ.get("WAREHOUSE_DSN") and config.DEV_PG_PASSWORD in environ["WAREHOUSE_DSN"]:
        problems.append("WAREHOUSE_DSN holds the local-development password")
    try:
        refuse_on_aws(environ.get("ECOM_FAULTS", ""), config.Stack(target="aws", aws_endpoint_url=None))
    except FaultInjectionRefused as exc:
        problems.append(str(exc))
    if problems:
        raise RefusedForAws("refusing to deploy to AWS: " + "; ".join(problems)
                            + ". Unset them: bootstrap generates secrets in Secrets Manager.")


def deploy(cfg: config.Stack | None = None) -> Report:
    return Deployer(cfg).run()


def find_api(cfg: config.Stack | None = None) -> dict[str, str] | None:
    """The deployed API's id, URL and key, or None when bootstrap has not run."""
    cfg = cfg or config.stack()
    r = config.resources()
    apigw = aws.client("apigateway", cfg)
    api = next((a for a in apigw.get_rest_apis(limit=500)["items"] if a["name"] == r.api_name), None)
    if api is None:
        return None
    key = next((k for k in apigw.get_api_keys(nameQuery=r.api_key_name, includeValues=True)["items"]
                if k["name"] == r.api_key_name), None)
    return {"api_id": api["id"], "api_url": aws.api_url(api["id"], cfg), "api_key": (key or {}).get("value", "")}
