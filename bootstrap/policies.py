"""The IAM policies of the platform, named once: the template (bootstrap/template.py) grants them and
the plan (bootstrap/plan.py) prints them, so the two cannot drift apart.

Least privilege: each function's role gets exactly the statements its spec names (bootstrap/spec.py,
`Function.permissions`), each a named action on a named resource; the only wildcard action is the
TLS-only bucket policy's Deny, which grants nothing. The one managed policy is AWS's own for API
Gateway's account-wide CloudWatch Logs role (AWS form only): that role writes the logs of every REST
API of the account in the region, so it cannot be narrowed to ours.
"""

from __future__ import annotations

from typing import Any

from bootstrap.spec import Function, Platform, Schedule
from ecom_core import config

SCHEDULER_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def scheduler_policy(p: Platform, account: str, region: str, sched: Schedule) -> dict[str, Any]:
    """The schedule may invoke its one function, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "InvokeTarget",
                "Effect": "Allow",
                "Action": ["lambda:InvokeFunction"],
                "Resource": f"arn:aws:lambda:{region}:{account}:function:{sched.function}",
            }
        ],
    }


APIGATEWAY_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "apigateway.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}
# Named actions on every log group of the account: logs:CreateLogGroup, CreateLogStream, DescribeLogGroups,
# DescribeLogStreams, PutLogEvents, GetLogEvents, FilterLogEvents.
APIGATEWAY_LOGS_MANAGED_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"


REDSHIFT_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "redshift.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def redshift_copy_policy(p: Platform) -> dict[str, Any]:
    """The role Redshift assumes for COPY: read the staging CSV and the load manifests, nothing else."""
    r = p.resources
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadStaging",
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": [
                    f"arn:aws:s3:::{r.staging_bucket}/{r.staging_prefix}*",
                    f"arn:aws:s3:::{r.staging_bucket}/_etl/*",
                ],
            },
            {
                "Sid": "ListStaging",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": f"arn:aws:s3:::{r.staging_bucket}",
            },
        ],
    }


def tls_only_policy(bucket: str) -> dict[str, Any]:
    """Refuse any request to the bucket that is not over TLS. The Deny must name every action
    (`s3:*`) to mean anything; it is the one wildcard action in the platform, and it grants nothing."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


LAMBDA_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def lambda_policy(p: Platform, account: str, region: str, function: Function | None = None) -> dict[str, Any]:
    """Least privilege: for `function`, exactly the statements its spec names (each a named action
    on a named resource); without one, every statement the platform uses."""
    r = p.resources

    def arn(service: str, resource: str) -> str:
        return f"arn:aws:{service}:{region}:{account}:{resource}"

    statements = [
        {
            "Sid": "PutToStream",
            "Effect": "Allow",
            "Action": ["kinesis:PutRecords"],
            "Resource": arn("kinesis", f"stream/{r.stream}"),
        },
        {
            "Sid": "ReadStream",
            "Effect": "Allow",
            "Action": [
                "kinesis:GetRecords",
                "kinesis:GetShardIterator",
                "kinesis:DescribeStream",
                "kinesis:DescribeStreamSummary",
                "kinesis:ListShards",
                "kinesis:ListStreams",
            ],
            "Resource": arn("kinesis", f"stream/{r.stream}"),
        },
        {
            "Sid": "WriteOltp",
            "Effect": "Allow",
            "Action": ["dynamodb:BatchWriteItem", "dynamodb:PutItem"],
            "Resource": [
                arn("dynamodb", f"table/{r.invoice_table}"),
                arn("dynamodb", f"table/{r.customer_table}"),
                arn("dynamodb", f"table/{r.invoice_owner_table}"),
            ],
        },
        # The stream trigger recomputes a customer entry's line count and total from the invoice's
        # lines; the read API queries both tables and the customer table's ByDate index.
        {
            "Sid": "ReadOltp",
            "Effect": "Allow",
            "Action": ["dynamodb:Query"],
            "Resource": [
                arn("dynamodb", f"table/{r.invoice_table}"),
                arn("dynamodb", f"table/{r.customer_table}"),
                arn("dynamodb", f"table/{r.customer_table}/index/*"),
            ],
        },
        # The stream trigger checks the stored customer entries of the invoices its batch holds
        # whole (handlers/stream_trigger.customer_entries) and the owners of its invoices
        # (handlers/stream_trigger.stored_owners), one BatchGetItem per 100.
        {
            "Sid": "ReadCustomerEntries",
            "Effect": "Allow",
            "Action": ["dynamodb:BatchGetItem"],
            "Resource": [
                arn("dynamodb", f"table/{r.customer_table}"),
                arn("dynamodb", f"table/{r.invoice_owner_table}"),
            ],
        },
        # The read API: an invoice's owner first (one GetItem, whoever asks), then its customer
        # entry for the line count and total (handlers/reads.get_invoice).
        {
            "Sid": "ReadInvoiceOwners",
            "Effect": "Allow",
            "Action": ["dynamodb:GetItem"],
            "Resource": [
                arn("dynamodb", f"table/{r.invoice_owner_table}"),
                arn("dynamodb", f"table/{r.customer_table}"),
            ],
        },
        {
            "Sid": "WriteRawAndDeadLetters",
            "Effect": "Allow",
            "Action": ["s3:PutObject"],
            "Resource": [
                f"arn:aws:s3:::{r.raw_bucket}/{r.raw_prefix}*",
                f"arn:aws:s3:::{r.dead_letter_bucket}/{r.dead_letter_prefix}*",
            ],
        },
        {
            "Sid": "OnFailureDestination",
            "Effect": "Allow",
            "Action": ["sqs:SendMessage"],
            "Resource": arn("sqs", r.dead_letter_queue),
        },
        # The ETL job: raw -> processed (copy + delete), staging CSV written and read, its state object.
        {
            "Sid": "EtlRawObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": [
                f"arn:aws:s3:::{r.raw_bucket}/{r.raw_prefix}*",
                f"arn:aws:s3:::{r.raw_bucket}/{r.processed_prefix}*",
            ],
        },
        {
            "Sid": "EtlStagingObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject"],
            "Resource": [
                f"arn:aws:s3:::{r.staging_bucket}/{r.staging_prefix}*",
                f"arn:aws:s3:::{r.staging_bucket}/_etl/*",
            ],
        },
        {
            "Sid": "EtlListBuckets",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{r.raw_bucket}", f"arn:aws:s3:::{r.staging_bucket}"],
        },
        {
            "Sid": "EtlCatalog",
            "Effect": "Allow",
            "Action": ["glue:GetTable", "glue:CreateTable", "glue:UpdateTable"],
            "Resource": [
                arn("glue", "catalog"),
                arn("glue", f"database/{r.glue_database}"),
                arn("glue", f"table/{r.glue_database}/{r.glue_table}"),
            ],
        },
        # Redshift Data API: statements run as the job's role (no password, no VPC attachment).
        {
            "Sid": "RedshiftData",
            "Effect": "Allow",
            "Action": [
                "redshift-data:ExecuteStatement",
                "redshift-data:BatchExecuteStatement",
                "redshift-data:DescribeStatement",
                "redshift-data:GetStatementResult",
                "redshift-serverless:GetCredentials",
            ],
            "Resource": [
                arn("redshift-serverless", f"workgroup/{config.etl().redshift_workgroup}"),
                arn("redshift-data", "statement:*"),
            ]
            if not config.etl().redshift_cluster
            else [
                arn("redshift", f"cluster:{config.etl().redshift_cluster}"),
                arn("redshift", f"dbname:{config.etl().redshift_cluster}/{config.etl().redshift_database}"),
                arn("redshift-data", "statement:*"),
            ],
        },
        {
            "Sid": "ReadAuthSecrets",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            # Secrets Manager appends a random 6-character suffix to a secret's ARN.
            "Resource": [
                arn("secretsmanager", f"secret:{r.jwt_secret_name}-??????"),
                arn("secretsmanager", f"secret:{r.operator_secret_name}-??????"),
            ],
        },
        {
            "Sid": "Logs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": arn("logs", f"log-group:/aws/lambda/{function.name if function else '*'}:*"),
        },
    ]
    if function is not None:
        unknown = set(function.permissions) - {s["Sid"] for s in statements}
        if unknown:
            raise ValueError(f"{function.name}: unknown permissions {sorted(unknown)}")
        statements = [s for s in statements if s["Sid"] in function.permissions]
    return {"Version": "2012-10-17", "Statement": statements}
