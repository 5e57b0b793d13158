"""Test helpers that drive the real stack (no fakes)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from ecom import aws, config
from replay.client import Sender, replay
from replay.source import read_rows
from warehouse import db
from warehouse.reconcile import ledger_dir, open_ledger
from warehouse.status import store_counts, wait_for_drain


def empty_stores(cfg: config.Stack) -> None:
    r = config.resources()
    dynamodb = aws.client("dynamodb", cfg)
    for table, keys in ((r.invoice_table, ("InvoiceNo", "LineId")), (r.customer_table, ("CustomerID", "InvoiceNo"))):
        kwargs = {"TableName": table, "ProjectionExpression": ", ".join(f"#k{i}" for i in range(len(keys))),
                  "ExpressionAttributeNames": {f"#k{i}": k for i, k in enumerate(keys)}}
        while True:
            page = dynamodb.scan(**kwargs)
            items = page["Items"]
            for start in range(0, len(items), 25):
                dynamodb.batch_write_item(RequestItems={table: [{"DeleteRequest": {"Key": item}}
                                                                for item in items[start:start + 25]]})
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    s3 = aws.client("s3", cfg)
    for bucket in (r.raw_bucket, r.staging_bucket, r.dead_letter_bucket):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    glue = aws.client("glue", cfg)
    try:
        glue.delete_table(DatabaseName=r.glue_database, Name=r.glue_table)
    except glue.exceptions.EntityNotFoundException:
        pass
    shutil.rmtree(ledger_dir(cfg), ignore_errors=True)
    with db.connection() as conn:
        db.ensure_schema(conn)
        with conn.cursor() as cur:
            cur.execute("TRUNCATE dw.fact_sales_line, dw.load_manifest, dw.etl_run, "
                        "dw.dim_product, dw.dim_customer, dw.dim_country, dw.dim_date")
        conn.commit()


def counts(cfg: config.Stack) -> dict:
    return store_counts(cfg)


def replay_file(stack_env: dict, path: Path, rows: int | None = None, **kwargs):
    sender = Sender(stack_env["api_url"], stack_env["api_key"])
    with open_ledger(stack_env["cfg"], path) as ledger:
        result = replay(read_rows(path, rows), sender, ledger=ledger, **kwargs)
    assert wait_for_drain(result.high_water, stack_env["cfg"], timeout=300), "stream consumer did not catch up"
    return result


def read_csv(path: Path) -> pd.DataFrame:
    """The file as pandas reads it, for independent expectations (codes as text, blanks kept)."""
    return pd.read_csv(path, encoding="iso-8859-1", dtype=str, keep_default_na=False)


def dynamo_items(cfg: config.Stack, table: str) -> list[dict]:
    client = aws.client("dynamodb", cfg)
    from boto3.dynamodb.types import TypeDeserializer

    deserialize = TypeDeserializer().deserialize
    items, kwargs = [], {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        items.extend({k: deserialize(v) for k, v in item.items()} for item in page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def warehouse_rows(sql: str, params: tuple = ()) -> list[tuple]:
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()
