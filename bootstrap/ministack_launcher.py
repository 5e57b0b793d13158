"""Start MiniStack with our performance fixes applied (`python -m bootstrap.ministack_launcher`).

Each fix keeps MiniStack's behaviour and only removes a cost that grows with the data or a
serialisation AWS does not have; each is proposed upstream (docs/emulator-notes.md) and checked
against the original in tests/test_stack.py. The embedded stack starts MiniStack through this
module; docker-compose runs the image as it is.
"""
from __future__ import annotations

import base64
import ctypes
import ctypes.util
import functools
import json
import logging
import os
import re
import threading
import time
import types

import orjson

from ecom_core import heap, json_codec

logger = logging.getLogger("lambda")


def expire_records_when_due(stream: dict) -> None:
    """MiniStack's `kinesis._expire_records`, without a pass over every retained record on every
    PutRecords/GetRecords/DescribeStream call (O(stream length) per call: 9% of the emulator's CPU
    on the full file). Records are appended in arrival order, so they are all younger than the
    cutoff when the oldest is; only then is there nothing to do."""
    cutoff = time.time() - stream["RetentionPeriodHours"] * 3600
    for shard in stream["shards"].values():
        records = shard["records"]
        if records and records[0]["ApproximateArrivalTimestamp"] < cutoff:
            shard["records"] = [r for r in records if r["ApproximateArrivalTimestamp"] >= cutoff]


# (mapping UUID, shard id) pairs with a batch being processed: at most one per shard, so each
# shard's records still reach the function in order, while different shards run side by side.
_shards_in_flight: set[tuple[str, str]] = set()
_shards_in_flight_lock = threading.Lock()


_STRICT_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _strictly_base64(data) -> bool:
    """What `b64decode(data, validate=True)` accepts (that alphabet, at most two "=" at the end, a
    multiple of 4 long), without decoding it to find out."""
    return isinstance(data, str) and len(data) % 4 == 0 and _STRICT_BASE64.fullmatch(data) is not None


def kinesis_event_record(record: dict, shard_id: str, source_arn: str, account_id: str, region: str) -> dict:
    """One stream record as the Lambda event shows it (MiniStack's shape, unchanged)."""
    data = record["Data"]
    if isinstance(data, bytes):
        data_b64 = base64.b64encode(data).decode("ascii")
    elif _strictly_base64(data):  # not decoding every record of every batch to find out
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


class KinesisBatchEvent(dict):
    """The event of one shard's batch as the poller below builds it: `{"Records": [...]}` of
    `kinesis_event_record`s, so only strings, integers and a finite arrival time (never None, NaN
    or a non-string key). `envelope_dumps` recognises it."""


def envelope_dumps(obj, **kwargs) -> str:
    """MiniStack's worker hand-off writes `json.dumps({"event": event, "ctx": {...}})` to the warm
    Lambda worker's stdin. For a Kinesis batch (5,000 records, ~4.5 MB of JSON) that took ~60 ms of
    the emulator's only interpreter per batch, 8 % of its samples at 200,000 rows (py-spy); orjson
    writes the same values in ~5 ms. Only a KinesisBatchEvent goes to orjson, whose output for such a value
    parses to what json's does (separators aside), and only if it is ASCII, as json's is; every
    other value, and every call with options, is json's."""
    if not kwargs and type(obj) is dict and any(type(value) is KinesisBatchEvent for value in obj.values()):
        members = []
        for key, value in obj.items():
            text = None
            if type(value) is KinesisBatchEvent:
                raw = orjson.dumps(value)
                text = raw.decode("ascii") if raw.isascii() else None
            members.append(f"{json.dumps(key)}: {text if text is not None else json.dumps(value)}")
        return "{" + ", ".join(members) + "}"
    return json.dumps(obj, **kwargs)


def json_module_with(**replaced) -> types.ModuleType:
    """A copy of the json module with the named functions replaced, to hand to one MiniStack module
    as its `json` (the real module stays as it is for everyone else)."""
    module = types.ModuleType("json")
    module.__dict__.update(json.__dict__)
    module.__dict__.update(replaced)
    return module


def json_with_envelope_dumps() -> types.ModuleType:
    """The json module as MiniStack's lambda_runtime sees it: json itself, dumps as above."""
    return json_module_with(dumps=envelope_dumps)


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
                    source_arn, func_rec, func_name):
                continue
            esm_id = esm["UUID"]
            if L._esm_backoff_until.get(esm_id, 0) > time.time():
                continue
            if esm_id not in L._kinesis_positions:
                starting = esm.get("StartingPosition", "LATEST")
                L._kinesis_positions[esm_id] = {
                    shard_id: 0 if starting == "TRIM_HORIZON" else len(shard["records"])
                    for shard_id, shard in stream["shards"].items()}
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
                raw_records = shard["records"][pos:pos + batch_size]
                if not raw_records:
                    continue
                records = L._apply_filter_criteria(
                    [kinesis_event_record(r, shard_id, source_arn, event_account, event_region)
                     for r in raw_records], esm)
                if not records:
                    positions[shard_id] = pos + len(raw_records)
                    processed_any = True
                    continue
                with _shards_in_flight_lock:
                    _shards_in_flight.add((esm_id, shard_id))
                spawn_background(_invoke_shard_batch, esm, func_rec, KinesisBatchEvent(Records=records), positions,
                                 shard_id, pos, len(raw_records), stream_name,
                                 thread_name="ministack-esm-kinesis")
                processed_any = True
        finally:
            L._request_account_id.reset(account_token)
            L._request_region.reset(region_token)
    return processed_any


def _invoke_shard_batch(esm: dict, func_rec: dict, event: dict, positions: dict, shard_id: str,
                        pos: int, count: int, stream_name: str) -> None:
    from ministack.services import lambda_svc as L

    esm_id, func_name = esm["UUID"], esm["FunctionName"]
    try:
        result = L._execute_function(func_rec, event)
        if result.get("error"):
            body = result.get("body") or {}
            esm["LastProcessingResult"] = "FAILED"
            logger.warning(
                "ESM: Lambda %s failed processing Kinesis batch from %s/%s (errorType=%s errorMessage=%s)\n%s",
                func_name, stream_name, shard_id, body.get("errorType") if isinstance(body, dict) else None,
                body.get("errorMessage") if isinstance(body, dict) else None, result.get("log", ""))
            L._esm_backoff_until[esm_id] = time.time() + L._ESM_BACKOFF_SECONDS
        else:
            L._esm_backoff_until.pop(esm_id, None)
            positions[shard_id] = pos + count
            esm["LastProcessingResult"] = f"OK - {count} records"
            if result.get("log"):
                logger.info("ESM: Lambda %s output:\n%s", func_name, result["log"])
            logger.info("ESM: Lambda %s processed %d Kinesis records from %s/%s",
                        func_name, count, stream_name, shard_id)
    finally:
        with _shards_in_flight_lock:
            _shards_in_flight.discard((esm_id, shard_id))
        L._esm_wake.set()


class _BatchWriteScope(threading.local):
    """What the BatchWriteItem running on this thread has already done (None outside one)."""
    validated: set[int] | None = None
    # (id(table), id(item)) -> the item's resolved key (pk, sk, None), from the validating pass.
    keys: dict[tuple[int, int], tuple] | None = None
    capacity_wanted: bool = True


def flat_item_passes(dynamodb, item, pk_name, sk_name) -> bool:
    """Whether MiniStack's `_validate_item(item, pk_name, sk_name)` accepts `item`, decided in one
    pass for the items this pipeline writes: every attribute a string or a number ({"S": str} or
    {"N": str}). It applies the same checks (a number MiniStack can canonicalise, no empty key
    string, key sizes, the 400 KB item size counted as MiniStack counts it) and canonicalises
    numbers in place as `_validate_item` does. False means "not decided here": any other shape,
    and any item failing a check, goes to `_validate_item` itself, which gives MiniStack's error.
    MiniStack's general walk dispatches on every type and depth for every attribute: a sixth of the
    emulator's CPU on the full file (docs/performance.md)."""
    if type(item) is not dict:
        return False
    size = 0
    for name, value in item.items():
        if type(value) is not dict or len(value) != 1:
            return False
        for kind, text in value.items():  # the one (type, value) pair
            pass
        if type(text) is not str:
            return False
        if kind == "S":
            length = len(text.encode("utf-8"))
            if name == pk_name and (not text or length > dynamodb._DDB_KEY_MAX_BYTES):
                return False
            if name == sk_name and (not text or length > dynamodb._DDB_SORT_KEY_MAX_BYTES):
                return False
        elif kind != "N":
            return False
        else:
            canonical = dynamodb._ddb_canonicalize_number(text)
            if canonical is None:
                return False
            value["N"] = canonical
            length = dynamodb._number_size_bytes(canonical)
        size += len(name.encode("utf-8")) + length
    return size <= dynamodb._DDB_ITEM_MAX_BYTES


def flat_values_pass(dynamodb, values: list) -> bool:
    """Whether MiniStack's `_values_error_response(values)` finds nothing (its per-value check of
    numbers and sets), decided here for values that are all flat strings or numbers; False means
    "not decided here" (another shape, or a number it refuses: it then gives its error itself)."""
    for value in values:
        if type(value) is not dict or len(value) != 1:
            return False
        for kind, text in value.items():  # the one (type, value) pair
            pass
        if type(text) is not str or (kind != "S" and (kind != "N" or dynamodb._number_error(text) is not None)):
            return False
    return True


def batch_write_item_doing_each_check_once(dynamodb) -> None:
    """Make MiniStack's `dynamodb._batch_write_item` validate each item once (flat string/number
    items in one pass, `flat_item_passes`), and size items for consumed capacity only when the
    caller asked for it; its checks, order, errors and stored items stay its own.

    MiniStack validates every PutRequest item in a first pass (so a bad member rejects the call
    before anything is written) and then again, unchanged, in the pass that writes it, resolving
    its key in both; and it sums every item's size for ConsumedCapacity whether or not
    ReturnConsumedCapacity asked for it. Item validation and sizing were a quarter of the
    emulator's CPU on the full file (docs/performance.md): half of that is the repeated work.
    Inside one call an item is the same dict object in both passes, so an item that passed is
    recognised by its id, and its key resolved in the first pass is the one the second gets."""
    original_batch_write = dynamodb._batch_write_item
    original_validate = dynamodb._validate_item
    original_accumulate = dynamodb._accumulate_write_capacity
    original_values_error = dynamodb._values_error_response
    original_resolve = dynamodb._resolve_table_key_values
    scope = _BatchWriteScope()

    def batch_write_item(data):
        scope.validated, scope.keys = set(), {}
        scope.capacity_wanted = isinstance(data, dict) and data.get("ReturnConsumedCapacity", "NONE") != "NONE"
        try:
            return original_batch_write(data)
        finally:
            scope.validated, scope.keys, scope.capacity_wanted = None, None, True

    def resolve_table_key_values(table, attrs, allow_extra):
        if scope.keys is None or not allow_extra:  # outside BatchWriteItem, or a DeleteRequest's key
            return original_resolve(table, attrs, allow_extra)
        remembered = scope.keys.get((id(table), id(attrs)))
        if remembered is None:
            remembered = original_resolve(table, attrs, allow_extra)
            if remembered[2] is None:
                scope.keys[(id(table), id(attrs))] = remembered
        return remembered

    def validate_item(item, pk_name=None, sk_name=None, *args, **kwargs):
        if scope.validated is None:
            return original_validate(item, pk_name, sk_name, *args, **kwargs)
        if id(item) in scope.validated:
            return None
        if flat_item_passes(dynamodb, item, pk_name, sk_name):
            error = None
        else:
            error = original_validate(item, pk_name, sk_name, *args, **kwargs)
        if error is None:
            scope.validated.add(id(item))
        return error

    def values_error_response(values, envelope):
        if scope.validated is None:
            return original_values_error(values, envelope)
        values = list(values)
        return None if flat_values_pass(dynamodb, values) else original_values_error(values, envelope)

    def accumulate_write_capacity(*args, **kwargs):
        if scope.capacity_wanted:
            return original_accumulate(*args, **kwargs)
        return None

    dynamodb._batch_write_item = batch_write_item
    dynamodb._validate_item = validate_item
    dynamodb._resolve_table_key_values = resolve_table_key_values
    dynamodb._values_error_response = values_error_response
    dynamodb._accumulate_write_capacity = accumulate_write_capacity


def index_checks_only_with_indexes(dynamodb) -> None:
    """MiniStack's `_validate_index_key_values` checks an item's secondary-index and vector-index
    key attributes: three helpers, each building the table's attribute types again and looping
    over its indexes (3 % of the emulator's CPU on the stream's path, per item written). For a
    table with no such index each of them loops over nothing and answers None: answered here
    without the calls. Any table with an index gets MiniStack's checks."""
    original = dynamodb._validate_index_key_values

    def validate_index_key_values(table, item, *args, **kwargs):
        if type(table) is dict and not (table.get("GlobalSecondaryIndexes") or table.get("LocalSecondaryIndexes")
                                        or table.get("VectorIndexes")):
            return None
        return original(table, item, *args, **kwargs)

    dynamodb._validate_index_key_values = validate_index_key_values


def memoized_for_text(function):
    """`function`, remembering its answers for text arguments (anything else goes straight to it).
    Only for pure functions of their one argument."""
    remembered = functools.lru_cache(maxsize=1 << 16)(function)

    @functools.wraps(function)
    def call(text):
        return remembered(text) if type(text) is str else function(text)

    call.cache_info = remembered.cache_info
    return call


# MiniStack's number checks: pure functions of a Number's text, run on every number of every item
# (canonical form, the error AWS would give, the size AWS counts) - a tenth of the emulator's time
# under BatchWriteItem. An order file repeats few distinct numbers (prices, quantities, ids).
NUMBER_CHECKS = ("_ddb_canonicalize_number", "_number_error", "_number_size_bytes")


def number_checks_remembered(dynamodb) -> None:
    for name in NUMBER_CHECKS:
        setattr(dynamodb, name, memoized_for_text(getattr(dynamodb, name)))


# A shard's hash-key bounds, as numbers: MiniStack parses both bounds of every shard for every
# record it routes (the texts are 39-digit integers; a stream has a handful of shards).
_hash_key_bound = functools.lru_cache(maxsize=4096)(int)


def route_to_shard(hash_key_int: int, stream: dict) -> str:
    """MiniStack's `kinesis._route_to_shard`, the same scan in the same order, with the bounds
    parsed once per text instead of per record."""
    for shard_id, shard in stream["shards"].items():
        if _hash_key_bound(shard["starting_hash_key"]) <= hash_key_int <= _hash_key_bound(shard["ending_hash_key"]):
            return shard_id
    return next(iter(stream["shards"]))


def kinesis_routing_remembered(kinesis) -> None:
    """PutRecords' per-record routing: the partition key's MD5 remembered per key (an invoice's
    lines share theirs) and the shard bounds parsed once; 5% of the emulator's CPU on the full file."""
    kinesis._partition_key_to_hash = memoized_for_text(kinesis._partition_key_to_hash)
    kinesis._route_to_shard = route_to_shard


def _ministack_decoded(data):
    """What MiniStack's PutRecords takes as a record's bytes: its (lenient) base64 decoding, or
    the value itself when that fails."""
    try:
        return base64.b64decode(data) if data else b""
    except Exception:  # noqa: BLE001 - MiniStack's own fallback, kept
        return data.encode() if isinstance(data, str) else data


def _decoded_size(data) -> int:
    """len(_ministack_decoded(data)); for strict base64 text (what every SDK sends) from its
    length alone: a multiple of 4 characters, 3 bytes each, less one per "=" at the end."""
    if _strictly_base64(data):
        return len(data) // 4 * 3 - (len(data) - len(data.rstrip("=")))
    return len(_ministack_decoded(data))


class _DecodedOnDemand:
    """The (partition key, bytes) pairs PutRecords hands to Firehose's fan-out, decoded only when
    iterated: the fan-out iterates them only for a delivery stream reading this stream."""

    def __init__(self, records: list):
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self):
        for record in self._records:
            yield record.get("PartitionKey", ""), _ministack_decoded(record.get("Data", ""))


def put_records_without_decoding(kinesis):
    """MiniStack's `kinesis._put_records`, the same checks, records, answers and fan-out in the same
    order, without base64-decoding every record twice: once to size it (computed from the text's
    length for strict base64) and once more for the Firehose fan-out (decoded only if a delivery
    stream reads this stream). The two decodings were ~8 % of the emulator's CPU on the stream's
    path (py-spy, 200,000 rows)."""
    def put_records(data):
        name, stream = kinesis._resolve_stream(data)
        if not stream:
            return kinesis.error_response_json("ResourceNotFoundException", f"Stream {name} not found", 400)
        if stream["StreamStatus"] != "ACTIVE":
            return kinesis.error_response_json("ResourceInUseException", f"Stream {name} is {stream['StreamStatus']}",
                                               400)
        kinesis._expire_records(stream)
        records = data.get("Records", [])
        if len(records) > 500:
            return kinesis.error_response_json(
                "ValidationException", "1 validation error detected: Value at 'records' failed to satisfy constraint: "
                "Member must have length less than or equal to 500", 400)
        total_size = 0
        for rec in records:
            pk = rec.get("PartitionKey", "")
            if len(pk) > 256:
                return kinesis.error_response_json(
                    "ValidationException", "1 validation error detected: Value at 'partitionKey' failed to satisfy "
                    "constraint: Member must have length less than or equal to 256", 400)
            size = _decoded_size(rec.get("Data", ""))
            if size > 1_048_576:
                return kinesis.error_response_json(
                    "ValidationException", "1 validation error detected: Value at 'data' failed to satisfy constraint: "
                    "Member must have length less than or equal to 1048576", 400)
            total_size += size + len(pk.encode())
        if total_size > 5_242_880:
            return kinesis.error_response_json("ValidationException", "Records total payload size exceeds 5 MB limit", 400)

        results = []
        encryption = stream.get("EncryptionType", "NONE")
        for rec in records:
            pk = rec.get("PartitionKey", "")
            eh = rec.get("ExplicitHashKey")
            sid = kinesis._route_to_shard(int(eh) if eh else kinesis._partition_key_to_hash(pk), stream)
            seq = kinesis._next_sequence_number()
            stream["shards"][sid]["records"].append({
                "SequenceNumber": seq, "ApproximateArrivalTimestamp": round(time.time(), 3),
                "Data": rec.get("Data", ""), "PartitionKey": pk})
            results.append({"SequenceNumber": seq, "ShardId": sid, "EncryptionType": encryption})
        kinesis.esm_wake.set()
        try:
            from ministack.services import firehose
            firehose.ingest_from_kinesis_source(stream["StreamARN"], _DecodedOnDemand(records))
        except Exception:  # noqa: BLE001 - best effort, as in MiniStack
            kinesis.logger.exception("Firehose fan-out from Kinesis PutRecords failed")
        return kinesis.json_response({"FailedRecordCount": 0, "Records": results, "EncryptionType": encryption})

    kinesis._put_records = put_records


def projection_planned_once(dynamodb) -> None:
    """MiniStack's `_project_item` checks and parses the ProjectionExpression (reserved words, path
    syntax, overlapping paths: a pairwise comparison) for every item it projects; a Query of an
    invoice's 200 lines spent half its 17 ms on that. Here the item-independent part is done once
    per (expression, names), by MiniStack's own function on an empty item (so it raises exactly
    what it raises), and each item gets MiniStack's per-item steps (`_project_one`,
    `_merge_projection`, `_compact_projection`) in MiniStack's order."""
    original = dynamodb._project_item

    @functools.lru_cache(maxsize=1024)
    def planned(expression: str, names: tuple) -> list:
        attr_names = dict(names)
        original({}, expression, attr_names)
        return [dynamodb._parse_projection_path(path, attr_names)
                for path in (a.strip() for a in expression.split(",")) if path]

    def project_item(item, proj_expr, attr_names):
        if not proj_expr or type(proj_expr) is not str:
            return original(item, proj_expr, attr_names)
        try:
            names = tuple(sorted((attr_names or {}).items()))
            hash(names)
        except TypeError:  # names that are not plain text: MiniStack decides
            return original(item, proj_expr, attr_names)
        result: dict = {}
        for parts in planned(proj_expr, names):
            if not parts:
                continue
            root_kind, root_name = parts[0]
            if root_kind != "name" or root_name not in item:
                continue
            sub = dynamodb._project_one(item[root_name], parts[1:])
            if sub is None:
                continue
            result[root_name] = dynamodb._merge_projection(result[root_name], sub) if root_name in result else sub
        return {name: dynamodb._compact_projection(value) for name, value in result.items()}

    dynamodb._project_item = project_item


def condition_checks_remembered(dynamodb) -> None:
    """MiniStack's `_evaluate_condition` tokenizes and grammar-checks the expression again for every
    item it evaluates (a Query's key condition: once per line of the invoice). Both are pure
    functions of the expression's text; remembered here, the tokens handed out as a fresh list
    each time (callers may keep or change theirs)."""
    tokenize, syntax_error = dynamodb._tokenize, dynamodb._condition_syntax_error
    tokens_of = functools.lru_cache(maxsize=4096)(lambda expr: tuple(tokenize(expr)))
    syntax_error_of = functools.lru_cache(maxsize=4096)(syntax_error)

    def remembered_tokenize(expr):
        return list(tokens_of(expr)) if type(expr) is str else tokenize(expr)

    def remembered_syntax_error(expr, slot):
        return syntax_error_of(expr, slot) if type(expr) is str and type(slot) is str else syntax_error(expr, slot)

    dynamodb._tokenize = remembered_tokenize
    dynamodb._condition_syntax_error = remembered_syntax_error


# mallopt's parameter number for the arena limit (glibc's malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8


def json_reading_with_json_codec() -> types.ModuleType:
    """The json module as MiniStack's DynamoDB service sees it: json itself, with loads by
    ecom_core.json_codec (orjson, with json's answers: the same value or the same error). A
    BatchWriteItem body of 25 invoice lines reads in 0.045 ms instead of 0.065 ms; decoding request
    bodies was 7 % of the emulator's CPU on the stream's path (py-spy, 200,000 rows). A call with
    options (none in that module today) is json's. (Kinesis keeps json: its bodies are mostly
    base64 text, which json reads about as fast.)"""
    def loads(text, **options):
        return json.loads(text, **options) if options else json_codec.loads(text)

    return json_module_with(loads=loads)


def two_malloc_arenas() -> bool:
    """glibc gives threads that allocate at the same time malloc arenas of their own (up to eight
    per core) and returns freed memory from them only at their top. MiniStack hands each Kinesis
    batch to the Lambda worker on a new thread, and the hand-off's multi-megabyte buffers left
    about 100 MB more resident in those arenas at 200,000 rows (emulator peak 828-848 MB against
    725-736 MB before the orjson hand-off; 741 MB with two arenas). The interpreter lock
    serialises the emulator's Python anyway, so two arenas cost it no parallelism. Set before
    MiniStack starts any thread; a no-op where the C library is not glibc."""
    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c")).mallopt(_M_ARENA_MAX, 2))
    except (OSError, AttributeError, TypeError):
        return False


def apply() -> None:
    two_malloc_arenas()
    # The emulator holds every item and record it stores as Python objects: without this, each
    # full collection walked all of them again (5-6 % of its CPU at 200,000 rows; ecom_core.heap).
    heap.freeze_survivors_of_full_collections()
    from ministack.core import lambda_runtime
    from ministack.services import dynamodb, kinesis, lambda_svc

    kinesis._expire_records = expire_records_when_due
    dynamodb.json = json_reading_with_json_codec()
    lambda_runtime.json = json_with_envelope_dumps()
    lambda_svc._poll_kinesis = poll_kinesis_shards_concurrently
    batch_write_item_doing_each_check_once(dynamodb)
    index_checks_only_with_indexes(dynamodb)
    number_checks_remembered(dynamodb)
    projection_planned_once(dynamodb)
    condition_checks_remembered(dynamodb)
    kinesis_routing_remembered(kinesis)
    put_records_without_decoding(kinesis)


# MiniStack's own server settings (`ministack.app.main`), kept when serving through uvicorn.
KEEP_ALIVE_SECONDS = 75
GRACEFUL_SHUTDOWN_SECONDS = 3  # hypercorn's default graceful timeout


def uvicorn_settings() -> dict | None:
    """How to serve MiniStack's ASGI app with uvicorn (C HTTP parser and event loop), or None to
    keep MiniStack's own server (hypercorn + h11).

    MiniStack is an ASGI app and its detached mode already runs it under a server of choice
    (`hypercorn ministack.app:app`). Per request, hypercorn with the pure-Python h11 parser cost
    more emulator CPU than many handlers: 1.29-1.55 ms per 25-item BatchWriteItem against 0.65 ms
    in the handler itself; under uvicorn with httptools and uvloop 0.88 ms (docs/performance.md,
    round ten). MiniStack's settings are kept: its bind address and port, keep-alive 75 s, the
    lifespan (startup, and the state saved on shutdown), its own log set-up, one Date header (the
    app adds it; uvicorn's would be a second), no Server header and no X-Forwarded-* rewriting.
    HTTPS (USE_SSL) and a missing uvicorn or httptools keeps MiniStack's own server."""
    import importlib.util

    from ministack.core import tls

    if tls.use_ssl_enabled() or not all(importlib.util.find_spec(name) for name in ("uvicorn", "httptools")):
        return None
    from ministack.app import _resolve_port

    # uvloop has no Windows build; asyncio's own loop there (1.01 ms in the same measurement).
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return dict(host=os.environ.get("BIND_HOST", "0.0.0.0"), port=int(_resolve_port()), loop=loop,
                http="httptools", lifespan="on", timeout_keep_alive=KEEP_ALIVE_SECONDS,
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, date_header=False, server_header=False,
                # hypercorn leaves the client address and scheme as the socket gives them, and MiniStack
                # reads X-Forwarded-Proto itself: uvicorn's rewriting from X-Forwarded-* stays off.
                proxy_headers=False,
                access_log=False, log_config=None, log_level=os.environ.get("LOG_LEVEL", "INFO").lower())


def serve() -> None:
    settings = uvicorn_settings()
    if settings is None:
        from ministack.app import main

        main()
        return
    import uvicorn
    from ministack.app import _pid_file, app

    # As MiniStack's main: the soft limit on open files raised to the hard one (connection bursts),
    # and, as there, no failure where that cannot be done (no `resource` on Windows, a container
    # that refuses it).
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    # The file `ministack --stop` reads, written and removed as MiniStack's main does.
    pid_file = _pid_file(settings["port"])
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    try:
        uvicorn.run(app, **settings)
    finally:
        try:
            os.remove(pid_file)
        except OSError:
            pass


if __name__ == "__main__":
    apply()
    serve()
