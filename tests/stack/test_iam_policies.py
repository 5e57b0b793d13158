"""Permissions checked on the embedded stack (MiniStack with AUTH=true, bootstrap/stack.py): every
function runs with its execution role's credentials and can do only what the role's inline policy
(bootstrap/policies.py, read live per request) allows. docs/reliability.md, "Permissions checked
locally", says what is and is not checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time

import boto3
import pytest
from botocore.exceptions import ClientError

from bootstrap import spec
from ecom_core import aws, config
from ecom_core.config import SAMPLE_FILE
from replay.client import Sender, replay
from replay.source import read_rows
from tests.support.helpers import counts, function_zip
from warehouse.reconcile import open_ledger, reconcile
from warehouse.status import wait_for_drain

POLICY_NAME = "ecom-pipeline"
DENIED = ("AccessDeniedException", "AccessDenied")


def _function(name: str) -> spec.Function:
    return next(f for f in spec.platform().functions if f.name == name)


def _iam(cfg):
    return aws.client("iam", cfg)


@contextlib.contextmanager
def policy_without(cfg, function: spec.Function, *sids: str):
    """The function's role without the named statements until the block ends; its policy as it was
    (read from the stack) put back in any case."""
    iam = _iam(cfg)
    original = iam.get_role_policy(RoleName=function.role_name, PolicyName=POLICY_NAME)["PolicyDocument"]
    assert {s["Sid"] for s in original["Statement"]} >= set(sids)
    reduced = {**original, "Statement": [s for s in original["Statement"] if s.get("Sid") not in sids]}
    iam.put_role_policy(RoleName=function.role_name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(reduced))
    try:
        yield
    finally:
        iam.put_role_policy(RoleName=function.role_name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(original))


def _function_log_text(cfg, function_name: str) -> str:
    """What the function wrote (MiniStack puts a function's output in CloudWatch Logs, as AWS does)."""
    logs = aws.client("logs", cfg)
    try:
        events = [
            e["message"]
            for page in aws.pages(logs.filter_log_events, logGroupName=f"/aws/lambda/{function_name}")
            for e in page.get("events", [])
        ]
    except ClientError:
        events = []
    with open(cfg.logs_dir / "ministack.log", encoding="utf-8", errors="replace") as handle:
        return "\n".join(events) + "\n" + handle.read()


@pytest.mark.stack
@pytest.mark.denies_permissions
def test_the_trigger_without_its_write_statement_retries_until_it_is_given_back(stack_env, clean_stores):
    """WriteOltp taken away on the running stack: the sample's events reach the stream but not
    DynamoDB, the trigger's log names the denial (role, action, table), nothing is quarantined (an
    access error is not the record's fault: the batch raises and is retried); the statement put back,
    every event arrives and the pipeline reconciles exactly."""
    from etl.run import run_once

    cfg, r = stack_env["cfg"], config.resources()
    trigger = _function(r.trigger_function)
    with policy_without(cfg, trigger, "WriteOltp"):
        with open_ledger(cfg, SAMPLE_FILE) as ledger:
            result = replay(read_rows(SAMPLE_FILE), Sender(stack_env["api_url"], stack_env["api_key"]), ledger=ledger)
        assert (result.accepted, result.rejected) == (417, [])
        denial = (
            f"assumed-role/{trigger.role_name}/{trigger.name} is not authorized to perform: "
            f"dynamodb:BatchWriteItem on resource: arn:aws:dynamodb:{cfg.region}:"
        )
        deadline = time.monotonic() + 60
        while denial not in (text := _function_log_text(cfg, trigger.name)) and time.monotonic() < deadline:
            time.sleep(1)
        assert "AccessDeniedException" in text and denial in text, text[-3000:]
        assert (
            f":table/{r.invoice_table} because no identity-based policy allows the dynamodb:BatchWriteItem action"
            in text
            or f":table/{r.customer_table} because no identity-based policy allows" in text
        )
        # The operator sees it: `ecom status` names the function, the action and the resource.
        status = json.loads(
            subprocess.run(
                [sys.executable, "-m", "ecom", "status", "--json", "--no-stream"],
                env={**os.environ, **stack_env["env"]},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        seen = status["permission_denials"][trigger.name]
        assert seen["action"] == "dynamodb:BatchWriteItem" and seen["times"] >= 1
        assert seen["resource"].split(":table/")[1] in (r.invoice_table, r.customer_table)
        time.sleep(5)  # a few more retries, still denied
        c = counts(cfg)
        assert (c["invoice_lines"], c["customer_invoices"], c["quarantined"]) == (0, 0, 0)
    assert wait_for_drain(result.high_water, cfg, timeout=300), "stream consumer did not catch up"
    c = counts(cfg)
    assert (c["invoice_lines"], c["quarantined"]) == (417, 0)
    run_once(cfg)
    assert reconcile(cfg).exact


_PROBE = """
import boto3
from botocore.exceptions import ClientError

def handler(event, context):
    dynamodb, s3 = boto3.client("dynamodb"), boto3.client("s3")
    no_invoice = {":i": {"S": "iam-probe"}}
    calls = {
        "query_own_table": lambda: dynamodb.query(TableName=event["invoice_table"],
            KeyConditionExpression="InvoiceNo = :i", ExpressionAttributeValues=no_invoice),
        "put_item_own_table": lambda: dynamodb.put_item(TableName=event["invoice_table"],
            Item={"InvoiceNo": {"S": "iam-probe"}, "LineId": {"S": "1"}}),
        "query_other_table": lambda: dynamodb.query(TableName=event["other_table"],
            KeyConditionExpression="InvoiceNo = :i", ExpressionAttributeValues=no_invoice),
        "get_object_other_bucket": lambda: s3.get_object(Bucket=event["bucket"], Key=event["key"]),
    }
    out = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = ["ok", ""]
        except ClientError as exc:
            out[name] = [exc.response["Error"]["Code"], exc.response["Error"].get("Message", "")]
    return out
"""


@pytest.mark.stack
@pytest.mark.denies_permissions
def test_a_function_is_denied_what_its_role_does_not_allow(stack_env):
    """A function on the customer-reads role may Query its tables, and nothing else: PutItem on the
    same table, a Query on another table, a GetObject from a bucket of the platform are denied,
    with AWS's message naming the role's session, the action and the resource."""
    cfg, r = stack_env["cfg"], config.resources()
    reads = _function(r.reads_function)
    lam, dynamodb, s3 = aws.client("lambda", cfg), aws.client("dynamodb", cfg), aws.client("s3", cfg)
    role_arn = _iam(cfg).get_role(RoleName=reads.role_name)["Role"]["Arn"]
    other_table, key = "iam-probe-other", f"{r.raw_prefix}iam-probe.txt"
    dynamodb.create_table(
        TableName=other_table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "InvoiceNo", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "InvoiceNo", "KeyType": "HASH"}],
    )
    s3.put_object(Bucket=r.raw_bucket, Key=key, Body=b"not for the read API")
    lam.create_function(
        FunctionName="iam-probe-reads-role",
        Runtime="python3.12",
        Role=role_arn,
        Handler="fn.handler",
        Code={"ZipFile": function_zip({"fn.py": _PROBE})},
        Timeout=30,
    )
    try:
        answer = lam.invoke(
            FunctionName="iam-probe-reads-role",
            Payload=json.dumps(
                {"invoice_table": r.invoice_table, "other_table": other_table, "bucket": r.raw_bucket, "key": key}
            ),
        )
        assert answer.get("FunctionError") is None
        out = json.loads(answer["Payload"].read())
    finally:
        lam.delete_function(FunctionName="iam-probe-reads-role")
        dynamodb.delete_table(TableName=other_table)
        s3.delete_object(Bucket=r.raw_bucket, Key=key)
    session = f"arn:aws:sts::{role_arn.split(':')[4]}:assumed-role/{reads.role_name}/iam-probe-reads-role"
    table_arn = f"arn:aws:dynamodb:{cfg.region}:{role_arn.split(':')[4]}:table"
    assert out["query_own_table"] == ["ok", ""]
    assert out["put_item_own_table"] == [
        "AccessDeniedException",
        f"User: {session} is not authorized to perform: dynamodb:PutItem on resource: "
        f"{table_arn}/{r.invoice_table} because no identity-based policy allows the dynamodb:PutItem action",
    ]
    assert out["query_other_table"] == [
        "AccessDeniedException",
        f"User: {session} is not authorized to perform: dynamodb:Query on resource: "
        f"{table_arn}/{other_table} because no identity-based policy allows the dynamodb:Query action",
    ]
    assert out["get_object_other_bucket"] == [
        "AccessDenied",
        f"User: {session} is not authorized to perform: s3:GetObject on resource: "
        f'"arn:aws:s3:::{r.raw_bucket}/{key}" because no identity-based policy allows the s3:GetObject action',
    ]


# ---------------------------------------------------------------- least privilege, statement by statement


def execution_session(cfg, function_name: str) -> boto3.session.Session:
    """The credentials MiniStack gives the function's workers (core/lambda_runtime.execution_credentials:
    derived from the function's and the role's ARNs, registered as an STS session of the role when a
    worker starts; the function is invoked once if none has started yet)."""
    lam = aws.client("lambda", cfg)
    fn = lam.get_function_configuration(FunctionName=function_name)
    digest = hashlib.sha256(f"{fn['FunctionArn']}:{fn['Role']}".encode()).hexdigest()
    session = boto3.session.Session(
        aws_access_key_id=f"ASIA{digest[:16].upper()}",
        region_name=cfg.region,
        aws_secret_access_key=hashlib.sha256(f"secret:{digest}".encode()).hexdigest(),
        aws_session_token=hashlib.sha256(f"token:{digest}".encode()).hexdigest(),
    )
    sts = session.client("sts", endpoint_url=cfg.endpoint_url)
    try:
        sts.get_caller_identity()
    except ClientError:
        lam.invoke(FunctionName=function_name, Payload=b'{"Records": []}')  # starts a worker: the session
        sts.get_caller_identity()
    return session


class Probe:
    """One call a function (or the Lambda service on its behalf) makes, signed with its credentials."""

    def __init__(self, cfg, session: boto3.session.Session):
        self.cfg, self.session, self.r = cfg, session, config.resources()

    def client(self, service: str):
        return self.session.client(
            service, endpoint_url=self.cfg.endpoint_for(service), config=aws.botocore_config(parameter_validation=False)
        )

    def root(self, service: str):
        return aws.client(service, self.cfg)

    def logs(self, function: str):
        # The Lambda service writes the function's log with its role on AWS (MiniStack writes it itself).
        logs, group = self.client("logs"), f"/aws/lambda/{function}"
        with contextlib.suppress(ClientError):
            self.root("logs").create_log_group(logGroupName=group)
        stream = f"iam-probe-{time.time_ns()}"
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        logs.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": int(time.time() * 1000), "message": "probe"}],
        )

    def put_to_stream(self):
        # handlers/ingestion.py: PutRecords (an empty one: checked, then refused, writes nothing).
        self.client("kinesis").put_records(StreamName=self.r.stream, Records=[])

    def read_stream(self):
        # The event source mapping (the Lambda service, with the function's role on AWS): shards,
        # iterator, records. GetRecords names only the iterator (checked on its stream).
        root = self.root("kinesis")
        shard = root.list_shards(StreamName=self.r.stream)["Shards"][0]["ShardId"]
        iterator = root.get_shard_iterator(StreamName=self.r.stream, ShardId=shard, ShardIteratorType="LATEST")[
            "ShardIterator"
        ]
        self.client("kinesis").get_records(ShardIterator=iterator, Limit=1)

    def write_oltp(self):
        # handlers/stream_trigger.py: BatchWriteItem to the three tables (a delete of no item: nothing written).
        self.client("dynamodb").batch_write_item(
            RequestItems={
                self.r.invoice_table: [
                    {"DeleteRequest": {"Key": {"InvoiceNo": {"S": "iam-probe"}, "LineId": {"S": "0"}}}}
                ],
                self.r.customer_table: [
                    {"DeleteRequest": {"Key": {"CustomerID": {"N": "0"}, "InvoiceNo": {"S": "iam-probe"}}}}
                ],
                self.r.invoice_owner_table: [{"DeleteRequest": {"Key": {"InvoiceNo": {"S": "iam-probe"}}}}],
            }
        )

    def read_oltp(self):
        # handlers/stream_trigger.stored_invoice_lines and handlers/reads.py: Query by invoice; the
        # read API also by customer on the ByDate index.
        dynamodb = self.client("dynamodb")
        dynamodb.query(
            TableName=self.r.invoice_table,
            KeyConditionExpression="InvoiceNo = :i",
            ExpressionAttributeValues={":i": {"S": "iam-probe"}},
        )
        dynamodb.query(
            TableName=self.r.customer_table,
            IndexName="ByDate",
            KeyConditionExpression="CustomerID = :c",
            ExpressionAttributeValues={":c": {"N": "0"}},
        )

    def read_customer_entries(self):
        # handlers/stream_trigger.stored_entries and stored_owners: BatchGetItem on the customer and
        # invoice-owner tables.
        self.client("dynamodb").batch_get_item(
            RequestItems={
                self.r.customer_table: {"Keys": [{"CustomerID": {"N": "0"}, "InvoiceNo": {"S": "iam-probe"}}]},
                self.r.invoice_owner_table: {"Keys": [{"InvoiceNo": {"S": "iam-probe"}}]},
            }
        )

    def read_invoice_owners(self):
        # handlers/reads.get_invoice: GetItem of the invoice's owner, then of its customer entry.
        dynamodb = self.client("dynamodb")
        dynamodb.get_item(TableName=self.r.invoice_owner_table, Key={"InvoiceNo": {"S": "iam-probe"}})
        dynamodb.get_item(
            TableName=self.r.customer_table, Key={"CustomerID": {"N": "0"}, "InvoiceNo": {"S": "iam-probe"}}
        )

    def write_raw_and_dead_letters(self):
        # handlers/stream_trigger.py: the raw JSON Lines object and a quarantined record (removed after).
        s3 = self.client("s3")
        for bucket, key in (
            (self.r.raw_bucket, f"{self.r.raw_prefix}iam-probe.jsonl"),
            (self.r.dead_letter_bucket, f"{self.r.dead_letter_prefix}iam-probe.json"),
        ):
            try:
                s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
            finally:
                self.root("s3").delete_object(Bucket=bucket, Key=key)

    def on_failure_destination(self):
        # The mapping's OnFailure destination (the Lambda service, with the function's role on AWS).
        url = self.root("sqs").get_queue_url(QueueName=self.r.dead_letter_queue)["QueueUrl"]
        self.client("sqs").send_message(QueueUrl=url, MessageBody="iam-probe")
        self.root("sqs").purge_queue(QueueUrl=url)

    def etl_raw_objects(self):
        # etl/transform.py: read a raw object, copy it to processed/, delete it.
        s3, root, bucket = self.client("s3"), self.root("s3"), self.r.raw_bucket
        raw, processed = f"{self.r.raw_prefix}iam-probe.jsonl", f"{self.r.processed_prefix}iam-probe.jsonl"
        root.put_object(Bucket=bucket, Key=raw, Body=b"{}")
        try:
            s3.get_object(Bucket=bucket, Key=raw)["Body"].read()
            s3.put_object(Bucket=bucket, Key=processed, Body=b"{}")
            s3.delete_object(Bucket=bucket, Key=raw)
        finally:
            root.delete_object(Bucket=bucket, Key=raw)
            root.delete_object(Bucket=bucket, Key=processed)

    def etl_staging_objects(self):
        # etl/transform.py and etl/job.py: the staging CSV and the job's state object, written and read.
        s3, key = self.client("s3"), f"{self.r.staging_prefix}iam-probe.csv"
        try:
            s3.put_object(Bucket=self.r.staging_bucket, Key=key, Body=b"x\n")
            s3.get_object(Bucket=self.r.staging_bucket, Key=key)["Body"].read()
        finally:
            self.root("s3").delete_object(Bucket=self.r.staging_bucket, Key=key)

    def etl_list_buckets(self):
        # etl/transform.py lists the raw prefix; etl/load.py the staging prefix.
        s3 = self.client("s3")
        s3.list_objects_v2(Bucket=self.r.raw_bucket, Prefix=self.r.raw_prefix)
        s3.list_objects_v2(Bucket=self.r.staging_bucket, Prefix=self.r.staging_prefix)

    def etl_catalog(self):
        # etl/catalog.py: GetTable (checked on the catalog, the database and the table); a missing
        # table (EntityNotFoundException) is not a denial.
        try:
            self.client("glue").get_table(DatabaseName=self.r.glue_database, Name=self.r.glue_table)
        except ClientError as exc:
            if aws.error_code(exc) != "EntityNotFoundException":
                raise

    def read_auth_secrets(self):
        # ecom_core/secrets.py: GetSecretValue of the token key and the operator key, by name.
        sm = self.client("secretsmanager")
        sm.get_secret_value(SecretId=self.r.jwt_secret_name)
        sm.get_secret_value(SecretId=self.r.operator_secret_name)


# How each statement is exercised (Probe's methods say which call of which module they make).
# RedshiftData is left out: the stack's own Redshift Data API (bootstrap/local/redshift_data) does
# not check IAM (docs/reliability.md).
PROBES = {
    "PutToStream": Probe.put_to_stream,
    "ReadStream": Probe.read_stream,
    "WriteOltp": Probe.write_oltp,
    "ReadOltp": Probe.read_oltp,
    "ReadCustomerEntries": Probe.read_customer_entries,
    "ReadInvoiceOwners": Probe.read_invoice_owners,
    "WriteRawAndDeadLetters": Probe.write_raw_and_dead_letters,
    "OnFailureDestination": Probe.on_failure_destination,
    "EtlRawObjects": Probe.etl_raw_objects,
    "EtlStagingObjects": Probe.etl_staging_objects,
    "EtlListBuckets": Probe.etl_list_buckets,
    "EtlCatalog": Probe.etl_catalog,
    "ReadAuthSecrets": Probe.read_auth_secrets,
}
NOT_CHECKED_LOCALLY = {"RedshiftData"}


@pytest.mark.stack
@pytest.mark.denies_permissions
def test_every_statement_of_every_role_is_needed(stack_env):
    """Least privilege, proven: for each function and each Allow statement of its role, the call the
    function (or the Lambda service for it: log writing, the stream's event source mapping, the
    OnFailure destination) makes with that statement's permission, signed with the function's own
    execution credentials, succeeds with the role's policy and is denied (AccessDenied naming the
    role's session and the action) once the statement alone is taken away, then succeeds again when
    it is put back:

    - PutToStream (ingestion): an empty PutRecords on the stream;
    - ReadStream (trigger): GetRecords with a LATEST iterator of the stream's first shard;
    - WriteOltp (trigger): a BatchWriteItem deleting a missing item of each table;
    - ReadOltp (trigger, reads): Query on the invoice table and on the customer table's ByDate index;
    - ReadCustomerEntries (trigger): BatchGetItem on the customer and invoice-owner tables;
    - ReadInvoiceOwners (reads): GetItem on the invoice-owner table and the customer table;
    - WriteRawAndDeadLetters (trigger): PutObject under raw/ and under the dead letters' prefix;
    - OnFailureDestination (trigger): SendMessage to the dead-letter queue;
    - EtlRawObjects (etl-job): GetObject, PutObject (processed/), DeleteObject of a raw object;
    - EtlStagingObjects (etl-job): PutObject and GetObject of a staging CSV;
    - EtlListBuckets (etl-job): ListObjectsV2 of raw/ and of the staging prefix;
    - EtlCatalog (etl-job): GetTable of the job's Glue table (catalog, database and table checked);
    - ReadAuthSecrets (reads, authorizer): GetSecretValue of both keys, by name;
    - Logs (every function): CreateLogStream and PutLogEvents in /aws/lambda/<function>.
    RedshiftData (etl-job) is not checked: the stack's own Redshift Data API ignores IAM.
    """
    cfg = stack_env["cfg"]
    seen = set()
    for function in spec.platform().functions:
        probe = Probe(cfg, execution_session(cfg, function.name))
        session_arn_part = f"assumed-role/{function.role_name}/{function.name} is not authorized to perform:"
        for sid in function.permissions:
            if sid in NOT_CHECKED_LOCALLY:
                continue

            def call(probe=probe, function=function, sid=sid):  # this iteration's probe, bound now
                return probe.logs(function.name) if sid == "Logs" else PROBES[sid](probe)

            call()  # allowed with the whole policy
            with policy_without(cfg, function, sid), pytest.raises(ClientError) as denied:
                call()
            assert aws.error_code(denied.value) in DENIED, (function.name, sid, denied.value)
            assert session_arn_part in str(denied.value), (function.name, sid, str(denied.value))
            call()  # and again once given back
            seen.add(sid)
    assert seen == set(PROBES) | {"Logs"}
