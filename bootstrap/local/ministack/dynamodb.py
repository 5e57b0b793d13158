"""Patches to MiniStack's DynamoDB (`ministack.services.dynamodb`), for performance: each keeps
MiniStack's checks, errors, answers and stored items, and only removes repeated work.

- `batch_write_item_doing_each_check_once` (wraps `_batch_write_item`, `_validate_item`,
  `_resolve_table_key_values`, `_values_error_response`, `_accumulate_write_capacity`): each item
  validated and its key resolved once per BatchWriteItem, capacity summed only when asked, flat
  string/number items decided in one pass (`flat_item_passes`, `flat_values_pass`). Upstream
  proposals: "drop the second `_validate_item` in the write pass and guard
  `_accumulate_write_capacity` with the `ReturnConsumedCapacity` check", and "a fast path for flat
  items" (docs/emulator-notes.md, the BatchWriteItem rows).
- `number_checks_remembered` (`_ddb_canonicalize_number`, `_number_error`, `_number_size_bytes`
  remembered per text). Upstream proposal: "the same decorator" (docs/emulator-notes.md, the
  number-checks row).
- `index_checks_only_with_indexes` (`_validate_index_key_values`): no upstream proposal.
- `projection_planned_once` (`_project_item`) and `condition_checks_remembered` (`_tokenize`,
  `_condition_syntax_error`): no upstream proposal.
- `json_reading_with_json_codec` (the module's `json`, loads by ecom_core.json_codec): no upstream
  proposal.

Checked against MiniStack's own functions in tests/unit/bootstrap/local/test_ministack.py.
"""

from __future__ import annotations

import functools
import json
import threading
import types

from bootstrap.local.ministack._patching import check as _check
from bootstrap.local.ministack._patching import json_module_with, memoized_for_text, targets
from ecom_core import json_codec

MODULE = "ministack.services.dynamodb"
# MiniStack's number checks: pure functions of a Number's text, run on every number of every item
# (canonical form, the error AWS would give, the size AWS counts) - a tenth of the emulator's time
# under BatchWriteItem. An order file repeats few distinct numbers (prices, quantities, ids).
NUMBER_CHECKS = ("_ddb_canonicalize_number", "_number_error", "_number_size_bytes")

PATCHED = targets(MODULE, "json", kind="module") + targets(
    MODULE,
    "_batch_write_item",
    "_validate_item",
    "_resolve_table_key_values",
    "_values_error_response",
    "_accumulate_write_capacity",
    "_validate_index_key_values",
    *NUMBER_CHECKS,
    "_project_item",
    "_tokenize",
    "_condition_syntax_error",
)
USED = targets(MODULE, "_parse_projection_path", "_project_one", "_merge_projection", "_compact_projection") + targets(
    MODULE, "_DDB_KEY_MAX_BYTES", "_DDB_SORT_KEY_MAX_BYTES", "_DDB_ITEM_MAX_BYTES", kind="value"
)


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
        [(kind, text)] = value.items()  # the one (type, value) pair
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
        [(kind, text)] = value.items()  # the one (type, value) pair
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
        if type(table) is dict and not (
            table.get("GlobalSecondaryIndexes") or table.get("LocalSecondaryIndexes") or table.get("VectorIndexes")
        ):
            return None
        return original(table, item, *args, **kwargs)

    dynamodb._validate_index_key_values = validate_index_key_values


def number_checks_remembered(dynamodb) -> None:
    for name in NUMBER_CHECKS:
        setattr(dynamodb, name, memoized_for_text(getattr(dynamodb, name)))


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
        return [
            dynamodb._parse_projection_path(path, attr_names)
            for path in (a.strip() for a in expression.split(","))
            if path
        ]

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


def check() -> None:
    _check(__name__, PATCHED, USED)


def apply() -> None:
    """Refuse (PatchTargetMissing) before changing anything unless every name is there, then patch."""
    check()
    from ministack.services import dynamodb

    dynamodb.json = json_reading_with_json_codec()
    batch_write_item_doing_each_check_once(dynamodb)
    index_checks_only_with_indexes(dynamodb)
    number_checks_remembered(dynamodb)
    projection_planned_once(dynamodb)
    condition_checks_remembered(dynamodb)
