"""The "crawler": infer the staging CSV schema and create or update the Glue Data Catalog table.

MiniStack's Glue crawler is a stub that infers nothing, and a crawler that trusts a sample is
wrong on this data anyway (an all-digit slice makes StockCode an integer, then `85123A` fails).
So this reads the headers and values of the staging files itself, only ever widens a column's
type (bigint -> decimal -> string), and keeps code columns as strings.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from ecom_core import aws, config
from ecom_core.contract import ALWAYS_STRING
from etl.transform import list_keys

_INT = re.compile(r"^-?\d{1,18}$")
_DECIMAL = re.compile(r"^-?\d+\.\d+$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
# Widening order: a column's type only moves to the right.
ORDER = ["bigint", "decimal(14,3)", "timestamp", "string"]
SAMPLE_ROWS_PER_FILE = 2000


@functools.lru_cache(maxsize=1 << 14)  # quantities, prices, customers and minutes repeat
def value_type(value: str) -> str | None:
    if value == "":
        return None  # null says nothing about the type
    if _INT.match(value):
        return "bigint"
    if _DECIMAL.match(value):
        return "decimal(14,3)"
    if _TIMESTAMP.match(value):
        return "timestamp"
    return "string"


def widen(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None or a == b:
        return a
    if {a, b} <= {"bigint", "decimal(14,3)"}:
        return "decimal(14,3)"
    return "string"


@dataclass
class CatalogResult:
    files: int = 0
    columns: list[tuple[str, str]] = field(default_factory=list)
    action: str = "unchanged"
    new_columns: list[str] = field(default_factory=list)


def infer(csv_bodies: Iterable[bytes], previous: dict[str, str] | None = None) -> list[tuple[str, str]]:
    columns: list[str] = []
    types: dict[str, str | None] = dict(previous or {})
    for body in csv_bodies:
        # The crawler only learns types: bytes that are not UTF-8 or not CSV are the load's to
        # refuse (as rejects), so here they never stop a run.
        reader = csv.reader(io.StringIO(body.decode("utf-8", errors="replace")))
        try:
            header = next(reader, [])
            for name in header:
                if name not in columns:
                    columns.append(name)
            # Code columns are strings whatever their values look like: only the others are sampled
            # (they were 5 of 9, and this loop was the job's largest CPU cost after the transform).
            sampled = [(position, name) for position, name in enumerate(header) if name not in ALWAYS_STRING]
            for number, row in enumerate(reader):
                if number >= SAMPLE_ROWS_PER_FILE:
                    break
                for position, name in sampled:
                    if position < len(row):
                        types[name] = widen(types.get(name), value_type(row[position]))
        except csv.Error:
            continue
    for name in list(previous or {}):
        if name not in columns:
            columns.append(name)
    return [
        (name, found if name not in ALWAYS_STRING and (found := types.get(name)) is not None else "string")
        for name in columns
    ]


def crawl(cfg: config.Stack | None = None, keys: list[str] | None = None) -> CatalogResult:
    """Crawl `keys` (default: every staging file); the table's previous columns are kept and widened."""
    r = config.resources()
    s3 = aws.client("s3", cfg)
    glue = aws.client("glue", cfg)
    if keys is None:
        keys = [o["Key"] for o in list_keys(s3, r.staging_bucket, r.staging_prefix)]
    try:
        table = glue.get_table(DatabaseName=r.glue_database, Name=r.glue_table)["Table"]
        previous = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    except ClientError as exc:
        if aws.service_missing(exc):
            # LocalStack community has no Glue. The load checks every file's header against the
            # warehouse itself, so the pipeline stays correct without a catalog; say so and go on.
            return CatalogResult(action="skipped (Glue is not offered by this target)")
        if exc.response["Error"]["Code"] != "EntityNotFoundException":
            raise
        table, previous = None, {}
    if not keys:
        return CatalogResult(files=0, columns=list(previous.items()))
    # Headers of every file (schema drift shows up in any one of them); values sampled per file.
    # A generator: one body in memory at a time, however many files are pending.
    bodies = (s3.get_object(Bucket=r.staging_bucket, Key=k)["Body"].read() for k in keys)
    columns = infer(bodies, previous)
    result = CatalogResult(
        files=len(keys), columns=columns, new_columns=[n for n, _ in columns if previous and n not in previous]
    )
    table_input = {
        "Name": r.glue_table,
        "Description": "Order-line events as UTF-8 CSV, one file per stream batch",
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "csv", "skip.header.line.count": "1", "delimiter": ","},
        "StorageDescriptor": {
            "Columns": [{"Name": n, "Type": t} for n, t in columns],
            "Location": f"s3://{r.staging_bucket}/{r.staging_prefix}",
            "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            "SerdeInfo": {
                "SerializationLibrary": "org.apache.hadoop.hive.serde2.OpenCSVSerde",
                "Parameters": {"separatorChar": ",", "quoteChar": '"', "escapeChar": "\\"},
            },
        },
    }
    if table is None:
        glue.create_table(DatabaseName=r.glue_database, TableInput=table_input)
        result.action = "created"
    elif previous != dict(columns) or list(previous) != [n for n, _ in columns]:
        glue.update_table(DatabaseName=r.glue_database, TableInput=table_input)
        result.action = "updated"
    return result


def catalog_columns(cfg: config.Stack | None = None) -> list[tuple[str, str]]:
    r = config.resources()
    glue = aws.client("glue", cfg)
    try:
        table = glue.get_table(DatabaseName=r.glue_database, Name=r.glue_table)["Table"]
    except ClientError:
        return []
    return [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
