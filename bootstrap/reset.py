"""Empty every store of a stack (for benchmarks and tests that need a clean start)."""

from __future__ import annotations

import contextlib
import shutil

from ecom_core import aws, config


def empty_stores(cfg: config.Stack) -> None:
    """Empty DynamoDB, the buckets, the Glue table, the replay ledgers and every warehouse table.

    The stream cannot be emptied: callers compare stream counts against a baseline."""
    from warehouse import schema
    from warehouse.reconcile import ledger_dir, mark_reset
    from warehouse.redshift_data import DataApi

    r = config.resources()
    dynamodb = aws.client("dynamodb", cfg)
    for table in (r.invoice_table, r.customer_table, r.invoice_owner_table):
        keys = [k["AttributeName"] for k in dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]]
        for page in aws.pages(
            dynamodb.scan,
            TableName=table,
            ProjectionExpression=", ".join(f"#k{i}" for i in range(len(keys))),
            ExpressionAttributeNames={f"#k{i}": k for i, k in enumerate(keys)},
        ):
            for start in range(0, len(page["Items"]), 25):
                dynamodb.batch_write_item(
                    RequestItems={
                        table: [{"DeleteRequest": {"Key": item}} for item in page["Items"][start : start + 25]]
                    }
                )
    s3 = aws.client("s3", cfg)
    for bucket in (r.raw_bucket, r.staging_bucket, r.dead_letter_bucket):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
    glue = aws.client("glue", cfg)
    with contextlib.suppress(glue.exceptions.EntityNotFoundException):
        glue.delete_table(DatabaseName=r.glue_database, Name=r.glue_table)
    shutil.rmtree(ledger_dir(cfg), ignore_errors=True)
    mark_reset(cfg)  # the stream keeps its records: the reconciliation starts after them
    # Every table of schema dw emptied through the Data API, one TRUNCATE each (Redshift commits a
    # TRUNCATE on its own, so they cannot share a batch); the schema's version record stays.
    api = DataApi(cfg=cfg)
    schema.ensure_schema(api)
    for (name,) in api.query(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'dw' AND table_type = 'BASE TABLE' ORDER BY 1"
    ):
        if name != "schema_version":
            api.statement(f'TRUNCATE dw."{name}"')
    if cfg.target == "embedded":
        from bootstrap.stack import checkpoint

        # A crash from now on brings back the emptied stores, not the last saved ones (durability.py).
        checkpoint(cfg)
