"""The platform, described once. bootstrap/template.py renders it as the CloudFormation template that
bootstrap/deploy.py deploys on every target; `plan` prints it for a real account."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ecom_core import config


@dataclass(frozen=True)
class Table:
    name: str
    key: list[tuple[str, str, str]]  # (attribute, type, HASH|RANGE)
    local_indexes: list[tuple[str, str, str]] = field(default_factory=list)  # (index, sort attr, type)

    def definition(self) -> dict[str, Any]:
        """The table as DynamoDB's CreateTable takes it, which is also the AWS::DynamoDB::Table
        resource's properties (the same names)."""
        attributes = {name: typ for name, typ, _ in self.key}
        attributes.update({attr: typ for _, attr, typ in self.local_indexes})
        out: dict[str, Any] = {
            "TableName": self.name,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": n, "KeyType": k} for n, _, k in self.key],
            "AttributeDefinitions": [{"AttributeName": n, "AttributeType": t} for n, t in attributes.items()],
        }
        if self.local_indexes:
            hash_key = next(n for n, _, k in self.key if k == "HASH")
            out["LocalSecondaryIndexes"] = [
                {
                    "IndexName": index,
                    "Projection": {"ProjectionType": "ALL"},
                    "KeySchema": [
                        {"AttributeName": hash_key, "KeyType": "HASH"},
                        {"AttributeName": attr, "KeyType": "RANGE"},
                    ],
                }
                for index, attr, _ in self.local_indexes
            ]
        return out


@dataclass(frozen=True)
class Function:
    name: str
    handler: str
    description: str
    timeout: int
    memory: int
    # Gets the token settings as environment: issuer, audience, and the Secrets Manager names of the
    # token key and the operator key (never their values), which it may read.
    auth_env: bool = False
    # What it may do, by statement id of bootstrap.policies.lambda_policy: each function gets its own
    # role with exactly these (least privilege: the read API cannot write, ingestion cannot read).
    permissions: tuple[str, ...] = ("Logs",)
    # Which zip: "handlers" (handlers/ + ecom_core/: stdlib and boto3 only) or "etl" (the job:
    # ecom_core/, etl/, warehouse/ and its SQL; see bootstrap/package.py).
    package: str = "handlers"
    # Gets the ETL settings and the warehouse secret's name.
    etl_env: bool = False
    # ReservedConcurrentExecutions on AWS (None: none reserved); see platform() for the values.
    reserved_concurrency: int | None = None

    @property
    def role_name(self) -> str:
        return f"ecom-{self.name}-role"


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    function: str
    api_key_required: bool
    authorizer: str | None = None  # name of a Lambda authorizer (authorizationType CUSTOM)


@dataclass(frozen=True)
class Authorizer:
    """A TOKEN Lambda authorizer: API Gateway passes the `identity_source` header to `function`."""

    name: str
    function: str
    identity_source: str = "method.request.header.Authorization"
    # Checked by API Gateway before the Lambda runs: a malformed header is a 401 for free.
    validation_expression: str = r"^(Bearer|Operator) [A-Za-z0-9._~+/=-]{1,4096}$"
    ttl_seconds: int = 60


@dataclass(frozen=True)
class Mapping:
    """Kinesis -> kinesis-trigger. AWS honours every field; MiniStack only batch size and position
    (it retries forever), which the handler's design tolerates (docs/emulator-notes.md)."""

    batch_size: int
    starting_position: str = "TRIM_HORIZON"
    batching_window_s: int = 1
    max_retry_attempts: int = 50
    bisect_on_error: bool = True


@dataclass(frozen=True)
class Schedule:
    """An EventBridge Scheduler schedule invoking a function (the batch half's clock)."""

    name: str
    expression: str
    state: str
    function: str
    role_name: str
    description: str
    input: str = '{"trigger": "schedule"}'


# Gateway-generated errors (missing/invalid API key, 401/403 from the authorizer, unknown route)
# answer in the same JSON shape as the handlers: {"error": ..., "type": ...}.
GATEWAY_RESPONSES = ("DEFAULT_4XX", "DEFAULT_5XX")
GATEWAY_ERROR_TEMPLATE = '{"error":$context.error.messageString,"type":"$context.error.responseType"}'


@dataclass(frozen=True)
class Throttle:
    """The usage plan's limits on the API key (requests per second, burst)."""

    rate: float = 10000.0
    burst: int = 5000


@dataclass(frozen=True)
class Platform:
    resources: config.Resources
    buckets: list[str]
    tables: list[Table]
    functions: list[Function]
    routes: list[Route]
    mapping: Mapping
    authorizers: list[Authorizer] = field(default_factory=list)
    schedules: list[Schedule] = field(default_factory=list)
    runtime: str = "python3.12"
    throttle: Throttle = field(default_factory=Throttle)
    gateway_responses: tuple[str, ...] = GATEWAY_RESPONSES

    @property
    def secrets(self) -> list[tuple[str, str]]:
        """(Secrets Manager name, what it holds). Values: bootstrap writes them, never the spec."""
        r = self.resources
        return [
            (r.jwt_secret_name, "HS256 signing key of customer tokens (ECOM_JWT_SECRET)"),
            (r.operator_secret_name, "operator key of the read API (ECOM_OPERATOR_KEY)"),
        ]


# The emulators' development names (the README, the tests and the CLI use them) and what a real
# AWS deployment gets instead: nothing on an AWS account says "local" or "test".
LOCAL_JWT_ISSUER = "ecom-local"
AWS_JWT_ISSUER = "ecom-pipeline"
AWS_NAMES = {"api_stage": "v1", "api_key_name": "ecom-pipeline-key"}


def for_target(resources: config.Resources, target: str | None) -> config.Resources:
    """The resources' names on `target`: on AWS the production stage and API key name."""
    return dataclasses.replace(resources, **AWS_NAMES) if target == "aws" else resources


def jwt_issuer(target: str | None) -> str:
    """The token issuer the functions verify: the configured one, except that AWS never gets the
    emulators' development issuer (ECOM_JWT_ISSUER set to anything else is kept)."""
    issuer = config.auth().jwt_issuer
    return AWS_JWT_ISSUER if target == "aws" and issuer == LOCAL_JWT_ISSUER else issuer


# Reserved concurrency of the functions behind the public API (AWS only). The usage plan lets 10,000
# requests/s through (Throttle), and concurrency = rate x duration: at ~150 ms a request
# data-ingestion alone would need ~1,500 concurrent executions, more than the account's default
# quota (1,000) for all functions together, so a producer at the plan's limit would starve the
# stream consumer (whose backlog expires after 24 h) and the ETL job. Reserving caps each public
# function, and guarantees it that much:
# - data-ingestion 200: ~1,300 requests/s at ~150 ms, 650,000 events/s in batches of 500 (far past
#   the stream's shards; docs/performance.md sizes 50,000 events/s at 15-20 executions);
# - customer-reads 100: ~2,000 requests/s at ~50 ms (one or two DynamoDB queries);
# - api-authorizer 50: ~5,000 token checks/s at ~10 ms, and API Gateway caches each answer 60 s.
# Above that Lambda throttles and the caller gets a 429/5xx, which `ecom replay` retries. Together
# 350: 650 of the default 1,000 stay for kinesis-trigger and etl-job (AWS keeps at least 100
# unreserved; an account whose quota is below 450 must raise it first: docs/aws.md).
RESERVED_CONCURRENCY = {"ingestion": 200, "reads": 100, "authorizer": 50}


def platform(resources: config.Resources | None = None, target: str | None = None) -> Platform:
    """The platform; with target "aws", under the names a real account gets (for_target)."""
    r = for_target(resources or config.resources(), target)
    return Platform(
        resources=r,
        buckets=[r.raw_bucket, r.staging_bucket, r.dead_letter_bucket],
        tables=[
            # One item per line, keyed by event id: repeated (InvoiceNo, StockCode) lines never collide
            # and a redelivered record rewrites the same item.
            Table(r.invoice_table, [("InvoiceNo", "S", "HASH"), ("LineId", "S", "RANGE")]),
            # One item per (customer, invoice); newest-first listing through the ByDate index.
            Table(
                r.customer_table,
                [("CustomerID", "N", "HASH"), ("InvoiceNo", "S", "RANGE")],
                local_indexes=[("ByDate", "InvoiceDate", "S")],
            ),
            # One item per invoice: the customer its first line named (none for a guest invoice).
            # A later line naming anyone else is quarantined, and reads check ownership here first.
            Table(r.invoice_owner_table, [("InvoiceNo", "S", "HASH")]),
        ],
        functions=[
            Function(
                r.ingestion_function,
                "handlers.ingestion.handler",
                "POST /events: validate, normalise, PutRecords to the stream",
                timeout=30,
                memory=256,
                permissions=("PutToStream", "Logs"),
                reserved_concurrency=RESERVED_CONCURRENCY["ingestion"],
            ),
            Function(
                r.trigger_function,
                "handlers.stream_trigger.handler",
                "Kinesis batch -> DynamoDB lines and customer entries + raw JSON Lines in S3",
                timeout=120,
                memory=512,
                permissions=(
                    "ReadStream",
                    "WriteOltp",
                    "ReadOltp",
                    "ReadCustomerEntries",
                    "WriteRawAndDeadLetters",
                    "OnFailureDestination",
                    "Logs",
                ),
            ),
            Function(
                r.reads_function,
                "handlers.reads.handler",
                "GET /customers/{customerId}/invoices and GET /invoices/{invoiceNo} (OLTP reads)",
                timeout=30,
                memory=256,
                auth_env=True,
                permissions=("ReadOltp", "ReadInvoiceOwners", "ReadAuthSecrets", "Logs"),
                reserved_concurrency=RESERVED_CONCURRENCY["reads"],
            ),
            Function(
                r.etl_function,
                "etl.job.handler",
                "The batch half on a schedule: raw JSON -> staging CSV -> Glue table -> warehouse (lease, "
                "exactly once per file)",
                timeout=900,
                memory=1024,
                package="etl",
                etl_env=True,
                permissions=(
                    "EtlRawObjects",
                    "EtlStagingObjects",
                    "EtlListBuckets",
                    "EtlCatalog",
                    "RedshiftData",
                    "Logs",
                ),
            ),
            Function(
                r.authorizer_function,
                "handlers.authorizer.handler",
                "API Gateway TOKEN authorizer: customer JWT (HS256) or operator key",
                timeout=10,
                memory=128,
                auth_env=True,
                permissions=("ReadAuthSecrets", "Logs"),
                reserved_concurrency=RESERVED_CONCURRENCY["authorizer"],
            ),
        ],
        routes=[
            Route("/events", "POST", r.ingestion_function, api_key_required=True),
            Route(
                "/customers/{customerId}/invoices",
                "GET",
                r.reads_function,
                api_key_required=False,
                authorizer=r.authorizer_name,
            ),
            Route(
                "/invoices/{invoiceNo}", "GET", r.reads_function, api_key_required=False, authorizer=r.authorizer_name
            ),
        ],
        authorizers=[
            Authorizer(r.authorizer_name, r.authorizer_function, ttl_seconds=config.auth().authorizer_cache_seconds)
        ],
        mapping=Mapping(batch_size=r.trigger_batch_size),
        schedules=[
            Schedule(
                r.etl_schedule_name,
                config.etl().schedule,
                config.etl().schedule_state,
                r.etl_function,
                r.scheduler_role_name,
                "ecom-pipeline: run the batch half (etl-job) on a clock",
            )
        ],
    )


def invoke_permissions(p: Platform) -> list[tuple[str, str]]:
    """(function, what may call it): API Gateway invokes each route's function from any stage and
    method of the API, and each authorizer's function as that authorizer."""
    routes = sorted({rt.function for rt in p.routes})
    return [(name, "routes") for name in routes] + [(a.function, f"authorizer {a.name}") for a in p.authorizers]


def function_environment(
    resources: config.Resources, function: Function | None = None, target: str | None = None
) -> dict[str, str]:
    """What the handlers read through ecom_core.config (explicit, so a deployment documents itself)."""
    env = {
        "ECOM_RAW_BUCKET": resources.raw_bucket,
        "ECOM_DEAD_LETTER_BUCKET": resources.dead_letter_bucket,
        "ECOM_STREAM": resources.stream,
        "ECOM_CUSTOMER_TABLE": resources.customer_table,
        "ECOM_INVOICE_TABLE": resources.invoice_table,
        "ECOM_INVOICE_OWNER_TABLE": resources.invoice_owner_table,
    }
    if function is not None and function.etl_env:
        etl = config.etl()
        # The job reaches the warehouse through the Redshift Data API on every target (no DSN, no
        # driver in its zip); locally the stack's own Data API answers for the workgroup.
        env.update(
            {
                "ECOM_STAGING_BUCKET": resources.staging_bucket,
                "ECOM_GLUE_DATABASE": resources.glue_database,
                "ECOM_GLUE_TABLE": resources.glue_table,
                "ECOM_ETL_SCHEDULE": etl.schedule,
                "ECOM_ETL_LEASE_SECONDS": str(etl.lease_seconds),
                "ECOM_ETL_LINGER_SECONDS": str(etl.linger_seconds),
                "ECOM_ETL_POLL_SECONDS": str(etl.poll_seconds),
                "ECOM_REDSHIFT_WORKGROUP": etl.redshift_workgroup,
                "ECOM_REDSHIFT_CLUSTER": etl.redshift_cluster,
                "ECOM_REDSHIFT_DATABASE": etl.redshift_database,
                "ECOM_REDSHIFT_COPY_ROLE": etl.redshift_copy_role_name,
            }
        )
    if function is not None and function.auth_env:
        auth = config.auth()
        # Only the functions that verify credentials get these; the keys themselves stay in Secrets
        # Manager (ecom_core/secrets.py reads them at cold start).
        env.update(
            {
                "ECOM_JWT_ISSUER": jwt_issuer(target),
                "ECOM_JWT_AUDIENCE": auth.jwt_audience,
                "ECOM_JWT_SECRET_ID": resources.jwt_secret_name,
                "ECOM_OPERATOR_KEY_SECRET_ID": resources.operator_secret_name,
                "ECOM_JWT_MAX_TTL_SECONDS": str(auth.max_token_ttl_seconds),
                "ECOM_SECRET_CACHE_SECONDS": str(auth.secret_cache_seconds),
            }
        )
    return env
