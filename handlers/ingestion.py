"""Lambda `data-ingestion`: POST /events -> validated, normalised events on the Kinesis stream.

The handler is a thin adapter: parse the HTTP shape, call `ingest`, shape the answer.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Callable
from typing import Any

from ecom_core import aws, config, json_codec
from ecom_core.events import OrderLine, event_json
from handlers.events import FieldError, InvalidEvent, normalize_batch
from handlers.http import Request, error, parse_request, response

RESOURCES = config.resources()
LIMITS = config.limits()


class PutFailed(RuntimeError):
    def __init__(self, accepted: list[OrderLine], failed: list[tuple[OrderLine, str]]) -> None:
        self.accepted = accepted
        self.failed = failed
        super().__init__(f"{len(failed)} records could not be put after retries")


def encode_record(event: OrderLine) -> dict[str, Any]:
    """The stream record of an event: its canonical JSON, partitioned by invoice (an invoice's
    lines stay on one shard, in order)."""
    return {"Data": event_json(event), "PartitionKey": event["InvoiceNo"]}


def wire_record(event: OrderLine) -> dict[str, Any]:
    """`encode_record` in PutRecords' wire form (Data as base64 text), for `producer_client`."""
    record = encode_record(event)
    return {"Data": base64.b64encode(record["Data"]).decode("ascii"), "PartitionKey": record["PartitionKey"]}


def producer_client(cfg: config.Stack | None = None) -> aws.Client:
    """The Kinesis client PutRecords goes through: records in wire form (`wire_record`), sent as a
    signed POST first (aws.SignedPostFirst; botocore's validation, serialisation and parsing of
    500 records were a third of this Lambda's put). A fallback re-send can repeat records a lost
    answer already wrote, as botocore's own retries can: the stream is at-least-once and every
    store is keyed by event id."""
    return _producer(cfg or config.stack())


@functools.cache
def _producer(cfg: config.Stack) -> aws.Client:
    return aws.signed_post_first(aws.client("kinesis", cfg, parameter_validation=False), "PutRecords", cfg=cfg)


def put_events(
    events: list[OrderLine],
    client: aws.Client | None = None,
    *,
    attempts: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, str]:
    """PutRecords, retrying only the records that failed (throttling is per record). `client`
    takes wire-form records (`producer_client`).

    Returns the highest sequence number written per shard, which lets a producer wait for
    the consumer to catch up. Raises PutFailed naming what could not be written.
    """
    client = client or producer_client()
    attempts = attempts or LIMITS.put_records_attempts
    pending = list(events)
    high_water: dict[str, str] = {}
    last_errors: dict[str, str] = {}
    for attempt in range(attempts):
        result = client.put_records(StreamName=RESOURCES.stream, Records=[wire_record(e) for e in pending])
        retry: list[OrderLine] = []
        for event, outcome in zip(pending, result["Records"], strict=True):
            if "SequenceNumber" in outcome and not outcome.get("ErrorCode"):
                shard, seq = outcome["ShardId"], outcome["SequenceNumber"]
                if shard not in high_water or int(seq) > int(high_water[shard]):
                    high_water[shard] = seq
            else:
                retry.append(event)
                last_errors[event["event_id"]] = f"{outcome.get('ErrorCode')}: {outcome.get('ErrorMessage')}"
        if not retry:
            return high_water
        pending = retry
        sleep(min(0.05 * 2**attempt, 1.0))
    accepted_ids = {e["event_id"] for e in events} - {e["event_id"] for e in pending}
    raise PutFailed(
        [e for e in events if e["event_id"] in accepted_ids],
        [(e, last_errors.get(e["event_id"], "unknown")) for e in pending],
    )


def read_events(request: Request) -> list[OrderLine]:
    """The request's events, validated and normalised; raises InvalidEvent (400) or BodyTooLarge (413)."""
    if request.passthrough:
        body = request.parsed_body
    else:
        if request.body is None or not request.body.strip():
            raise InvalidEvent([FieldError(None, "(body)", "is empty; send an event object or an array of events")])
        if len(request.body) > LIMITS.max_body_bytes:
            raise BodyTooLarge(f"request body is {len(request.body)} bytes; the limit is {LIMITS.max_body_bytes}")
        try:
            # Strict UTF-8, and a number a float cannot hold as sent (1e-400, 1e400) kept apart
            # for normalize_event to refuse naming its field, instead of stored as 0 or inf.
            body = json_codec.loads_request(request.body)
        except json_codec.NotUTF8 as exc:
            raise InvalidEvent([FieldError(None, "(body)", str(exc))]) from None
        except RecursionError:
            raise InvalidEvent([FieldError(None, "(body)", "is nested too deeply")]) from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidEvent([FieldError(None, "(body)", f"is not valid JSON ({ascii(str(exc))[:120]})")]) from None
    return normalize_batch(body, LIMITS.max_events_per_request)


class BodyTooLarge(ValueError):
    pass


def ingest(request: Request) -> dict[str, Any]:
    if request.method != "POST":
        return error(405, f"method {ascii(request.method)[:20]} not allowed; use POST")
    try:
        events = read_events(request)
    except BodyTooLarge as exc:
        return error(413, str(exc))
    except InvalidEvent as exc:
        body_level = exc.errors[0].field == "(body)"
        summary = f"request body {exc.errors[0].message}" if body_level else "invalid events; nothing was accepted"
        return error(400, summary, errors=[e.as_dict() for e in exc.errors[:1000]], error_count=len(exc.errors))
    except Exception as exc:  # noqa: BLE001 - client bytes never get a 5xx; the type is logged for us
        print(json.dumps({"fn": RESOURCES.ingestion_function, "unreadable_request": type(exc).__name__}))
        return error(400, "the request could not be read as events; nothing was accepted")
    try:
        high_water = put_events(events)
    except PutFailed as exc:
        # Records already on the stream stay there; a retry of the whole request is safe
        # because every event keeps its event_id and all downstream writes are keyed by it.
        return error(
            503,
            "the stream did not accept every event; retry the request",
            accepted=[e["event_id"] for e in exc.accepted],
            failed=[{"event_id": e["event_id"], "error": why} for e, why in exc.failed],
        )
    return response(200, {"accepted": len(events), "event_ids": [e["event_id"] for e in events], "shards": high_water})


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        request = parse_request(event)
    except Exception:  # noqa: BLE001 - e.g. a body flagged base64 that is not: the client's bytes
        request = Request(method="POST", body=None)
        result = error(400, "the request body could not be decoded")
    else:
        result = ingest(request)
    # One log line per invocation (the emulator also waits for output before returning).
    print(
        json.dumps(
            {
                "fn": "data-ingestion",
                "status": result["statusCode"],
                "request_id": request.request_id,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            }
        )
    )
    if request.passthrough:
        result = {**result, "body": json.loads(result["body"])}
    return result
