"""The platform, described once. `deploy` applies it; `plan` prints it for a real account."""
from __future__ import annotations

from dataclasses import dataclass, field

from ecom import config


@dataclass(frozen=True)
class Table:
    name: str
    key: list[tuple[str, str, str]]               # (attribute, type, HASH|RANGE)
    local_indexes: list[tuple[str, str, str]] = field(default_factory=list)  # (index, sort attr, type)


@dataclass(frozen=True)
class Function:
    name: str
    handler: str
    description: str
    timeout: int
    memory: int


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    function: str
    api_key_required: bool


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
class Platform:
    resources: config.Resources
    buckets: list[str]
    tables: list[Table]
    functions: list[Function]
    routes: list[Route]
    mapping: Mapping
    runtime: str = "python3.12"
    role_name: str = "ecom-lambda-role"


def platform(resources: config.Resources | None = None) -> Platform:
    r = resources or config.resources()
    return Platform(
        resources=r,
        buckets=[r.raw_bucket, r.staging_bucket, r.dead_letter_bucket],
        tables=[
            # One item per line, keyed by event id: repeated (InvoiceNo, StockCode) lines never collide
            # and a redelivered record rewrites the same item.
            Table(r.invoice_table, [("InvoiceNo", "S", "HASH"), ("LineId", "S", "RANGE")]),
            # One item per (customer, invoice); newest-first listing through the ByDate index.
            Table(r.customer_table, [("CustomerID", "N", "HASH"), ("InvoiceNo", "S", "RANGE")],
                  local_indexes=[("ByDate", "InvoiceDate", "S")]),
        ],
        functions=[
            Function(r.ingestion_function, "handlers.ingestion.handler",
                     "POST /events: validate, normalise, PutRecords to the stream", timeout=30, memory=256),
            Function(r.trigger_function, "handlers.stream_trigger.handler",
                     "Kinesis batch -> DynamoDB lines and customer entries + raw JSON Lines in S3",
                     timeout=120, memory=512),
        ],
        routes=[Route("/events", "POST", r.ingestion_function, api_key_required=True)],
        mapping=Mapping(batch_size=r.trigger_batch_size),
    )


def function_environment(resources: config.Resources) -> dict[str, str]:
    """What the handlers read through ecom.config (explicit, so a deployment documents itself)."""
    return {
        "ECOM_RAW_BUCKET": resources.raw_bucket,
        "ECOM_DEAD_LETTER_BUCKET": resources.dead_letter_bucket,
        "ECOM_STREAM": resources.stream,
        "ECOM_CUSTOMER_TABLE": resources.customer_table,
        "ECOM_INVOICE_TABLE": resources.invoice_table,
    }
