"""Patches to MiniStack's Lambda service (`ministack.services.lambda_svc`).

- `poll_kinesis_shards_concurrently` replaces `_poll_kinesis`: each shard's batch on a thread of its
  own, one batch per shard in flight, otherwise MiniStack's code path (for speed, and as AWS runs a
  stream's shards). Upstream proposal: "the same change to `_poll_kinesis`" (docs/emulator-notes.md,
  the row on the Kinesis event source mapping).
- `execute_function_warm_answering_init_errors_as_aws` wraps `_execute_function_warm`: a function
  whose init failed (its module cannot be imported, raises, has no such handler) is answered with
  the payload AWS's Python runtime gives (errorType `Runtime.ImportModuleError` and the like,
  errorMessage, requestId, stackTrace) instead of MiniStack's `RuntimeError: Worker init failed:
  ...`; see lambda_runtime.py. No upstream proposal.

Checked against MiniStack's own poller in tests/unit/bootstrap/local/test_ministack.py,
and on the running stack in tests/stack/bootstrap/local/test_ministack.py.
"""

from __future__ import annotations

import base64
import logging
import threading
import time

from bootstrap.local.ministack import lambda_runtime as _runtime_patch
from bootstrap.local.ministack._patching import check as _check
from bootstrap.local.ministack._patching import strictly_base64, targets

logger = logging.getLogger("lambda")

MODULE = "ministack.services.lambda_svc"
PATCHED = targets(MODULE, "_poll_kinesis", "_execute_function_warm")
USED = (
    targets(
        MODULE,
        "_iter_all_esms",
        "get_region",
        "get_account_id",
        "_kinesis_stream_name_from_arn_spec",
        "_get_func_record_for_qualifier",
        "_cross_account_read_blocked",
        "_apply_filter_criteria",
        "_execute_function",
    )
    + targets(
        MODULE,
        "_request_account_id",
        "_request_region",
        "_esm_backoff_until",
        "_kinesis_positions",
        "_ESM_BACKOFF_SECONDS",
        "_esm_wake",
        kind="value",
    )
    + targets("ministack.core.arn", "parse_arn", "ArnParseError")
    + targets("ministack.core.concurrency", "spawn_background")
    + targets("ministack.services.kinesis", "_streams", kind="value")
)


# (mapping UUID, shard id) pairs with a batch being processed: at most one per shard, so each
# shard's records still reach the function in order, while different shards run side by side.
_shards_in_flight: set[tuple[str, str]] = set()
_shards_in_flight_lock = threading.Lock()


def kinesis_event_record(record: dict, shard_id: str, source_arn: str, account_id: str, region: str) -> dict:
    """One stream record as the Lambda event shows it (MiniStack's shape, unchanged)."""
    data = record["Data"]
    if isinstance(data, bytes):
        data_b64 = base64.b64encode(data).decode("ascii")
    elif strictly_base64(data):  # not decoding every record of every batch to find out
        data_b64 = data
    elif isinstance(data, str):
        try:
            base64.b64decode(data, validate=True)
            data_b64 = data
        except Exception:  # noqa: BLE001 - not base64: the text itself is the data
            data_b64 = base64.b64encode(data.encode("utf-8")).decode("ascii")
    else:
        data_b64 = base64.b64encode(str(data).encode("utf-8")).decode("ascii")
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": record["PartitionKey"],
            "sequenceNumber": record["SequenceNumber"],
            "data": data_b64,
            "approximateArrivalTimestamp": record["ApproximateArrivalTimestamp"],
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard_id}:{record['SequenceNumber']}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": f"arn:aws:iam::{account_id}:role/lambda-role",
        "awsRegion": region,
        "eventSourceARN": source_arn,
    }


def poll_kinesis_shards_concurrently() -> bool:
    """MiniStack's `lambda_svc._poll_kinesis`, with each shard's batch invoked on a thread of its
    own instead of one after another on the poll thread.

    AWS runs one invocation per shard at a time, and the shards of a stream concurrently; MiniStack
    ran every shard of every mapping in turn on its single poll thread, so with two shards only one
    trigger worker ever ran and the emulator waited on it (docs/performance.md). Everything else is
    MiniStack's: the same checks, event shape, filter criteria, starting position, success and
    failure handling (the position advances only on success; a failure backs the mapping off).
    Returns True when a batch was dispatched or skipped by a filter this pass; a finished batch
    wakes the poll loop (`esm_wake`) so the shard's next batch goes out at once."""
    from ministack.core.arn import ArnParseError, parse_arn
    from ministack.core.concurrency import spawn_background
    from ministack.services import kinesis as _kin
    from ministack.services import lambda_svc as L

    processed_any = False
    for acct_id, region, esm in L._iter_all_esms():
        account_token = L._request_account_id.set(acct_id)
        region_token = L._request_region.set(region)
        try:
            if not esm.get("Enabled", True):
                continue
            source_arn = esm.get("EventSourceArn", "")
            try:
                source_spec = parse_arn(source_arn)
            except ArnParseError:
                continue
            if source_spec.service != "kinesis" or source_spec.region != L.get_region():
                continue
            stream_name = L._kinesis_stream_name_from_arn_spec(source_spec)
            if not stream_name:
                continue
            func_name = esm["FunctionName"]
            func_rec, _cfg = L._get_func_record_for_qualifier(func_name, esm.get("Qualifier"))
            if func_rec is None:
                continue
            stream = _kin._streams.get_scoped(source_spec.account_id, source_spec.region, stream_name)
            if not stream or stream.get("StreamARN") != source_arn or stream["StreamStatus"] != "ACTIVE":
                continue
            if source_spec.account_id != L.get_account_id() and L._cross_account_read_blocked(
                source_arn, func_rec, func_name
            ):
                continue
            esm_id = esm["UUID"]
            if L._esm_backoff_until.get(esm_id, 0) > time.time():
                continue
            if esm_id not in L._kinesis_positions:
                starting = esm.get("StartingPosition", "LATEST")
                L._kinesis_positions[esm_id] = {
                    shard_id: 0 if starting == "TRIM_HORIZON" else len(shard["records"])
                    for shard_id, shard in stream["shards"].items()
                }
            batch_size = esm.get("BatchSize", 100)
            positions = L._kinesis_positions[esm_id]
            # The mapping's account and region (this pass's context), read once, not per record.
            event_account, event_region = L.get_account_id(), L.get_region()

            for shard_id, shard in list(stream["shards"].items()):
                if shard_id not in positions:
                    positions[shard_id] = len(shard["records"])
                    continue
                with _shards_in_flight_lock:
                    if (esm_id, shard_id) in _shards_in_flight:
                        continue
                pos = positions[shard_id]
                raw_records = shard["records"][pos : pos + batch_size]
                if not raw_records:
                    continue
                records = L._apply_filter_criteria(
                    [kinesis_event_record(r, shard_id, source_arn, event_account, event_region) for r in raw_records],
                    esm,
                )
                if not records:
                    positions[shard_id] = pos + len(raw_records)
                    processed_any = True
                    continue
                with _shards_in_flight_lock:
                    _shards_in_flight.add((esm_id, shard_id))
                spawn_background(
                    _invoke_shard_batch,
                    esm,
                    func_rec,
                    _runtime_patch.KinesisBatchEvent(Records=records),
                    positions,
                    shard_id,
                    pos,
                    len(raw_records),
                    stream_name,
                    thread_name="ministack-esm-kinesis",
                )
                processed_any = True
        finally:
            L._request_account_id.reset(account_token)
            L._request_region.reset(region_token)
    return processed_any


def _invoke_shard_batch(
    esm: dict, func_rec: dict, event: dict, positions: dict, shard_id: str, pos: int, count: int, stream_name: str
) -> None:
    from ministack.services import lambda_svc as L

    esm_id, func_name = esm["UUID"], esm["FunctionName"]
    try:
        result = L._execute_function(func_rec, event)
        if result.get("error"):
            body = result.get("body") or {}
            esm["LastProcessingResult"] = "FAILED"
            logger.warning(
                "ESM: Lambda %s failed processing Kinesis batch from %s/%s (errorType=%s errorMessage=%s)\n%s",
                func_name,
                stream_name,
                shard_id,
                body.get("errorType") if isinstance(body, dict) else None,
                body.get("errorMessage") if isinstance(body, dict) else None,
                result.get("log", ""),
            )
            L._esm_backoff_until[esm_id] = time.time() + L._ESM_BACKOFF_SECONDS
        else:
            L._esm_backoff_until.pop(esm_id, None)
            positions[shard_id] = pos + count
            esm["LastProcessingResult"] = f"OK - {count} records"
            if result.get("log"):
                logger.info("ESM: Lambda %s output:\n%s", func_name, result["log"])
            logger.info(
                "ESM: Lambda %s processed %d Kinesis records from %s/%s", func_name, count, stream_name, shard_id
            )
    finally:
        with _shards_in_flight_lock:
            _shards_in_flight.discard((esm_id, shard_id))
        L._esm_wake.set()


def execute_function_warm_answering_init_errors_as_aws(original):
    """MiniStack's `_execute_function_warm`; when the function's init failed on this call (our
    worker script's report, lambda_runtime.py), the Invoke is answered as on AWS: a function error
    (Unhandled) whose payload is {"errorMessage", "errorType", "requestId", "stackTrace"} with the
    runtime's error type (Runtime.ImportModuleError, ...), and the log line AWS's runtime writes.
    MiniStack answered `{"errorMessage": "Worker init failed: ...", "errorType": "RuntimeError"}`."""

    def execute_function_warm(func, event, request_id):
        _runtime_patch.take_init_error()  # nothing left over from another call on this thread
        result = original(func, event, request_id)
        error = _runtime_patch.take_init_error()
        if error is None or not (isinstance(result, dict) and result.get("error")):
            return result
        body = {
            "errorMessage": error["errorMessage"],
            "errorType": error["errorType"],
            "requestId": request_id,
            "stackTrace": error["stackTrace"],
        }
        return {**result, "body": body, "log": runtime_error_log(body)}

    execute_function_warm.__wrapped__ = original
    return execute_function_warm


def runtime_error_log(error: dict) -> str:
    """The lines AWS's Python runtime logs for an error (awslambdaric `log_error`)."""
    lines = [f"[ERROR] {error['errorType']}: {error['errorMessage']}", "Traceback (most recent call last):"]
    for element in error.get("stackTrace") or ():
        lines.extend(element.splitlines() or [""])
    return "\n".join(lines)


def check() -> None:
    _check(__name__, PATCHED, USED)


def apply() -> None:
    """Refuse (PatchTargetMissing) before changing anything unless every name is there, then patch."""
    check()
    from ministack.services import lambda_svc

    lambda_svc._poll_kinesis = poll_kinesis_shards_concurrently
    lambda_svc._execute_function_warm = execute_function_warm_answering_init_errors_as_aws(
        lambda_svc._execute_function_warm
    )
