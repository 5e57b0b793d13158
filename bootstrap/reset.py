"""Empty every store of a stack (for benchmarks and tests that need a clean start)."""
from __future__ import annotations

import shutil

from ecom_core import aws, config


def empty_stores(cfg: config.Stack) -> None:
    """Empty DynamoDB, the buckets, the Glue table, the replay ledgers and every warehouse table.

    The stream cannot be emptied: callers compare stream counts against a baseline."""
    from warehouse import db
    from warehouse.reconcile import ledger_dir

    r = config.resources()
    dynamodb = aws.client("dynamodb", cfg)
    for table in (r.invoice_table, r.customer_table):
        keys = [k["AttributeName"] for k in dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]]
        for page in aws.pages(dynamodb.scan, TableName=table,
                              ProjectionExpression=", ".join(f"#k{i}" for i in range(len(keys))),
                              ExpressionAttributeNames={f"#k{i}": k for i, k in enumerate(keys)}):
            for start in range(0, len(page["Items"]), 25):
                dynamodb.batch_write_item(RequestItems={table: [{"DeleteRequest": {"Key": item}}
                                                                for item in page["Items"][start:start + 25]]})
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
            cur.execute("SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') FROM pg_tables "
                        "WHERE schemaname = 'dw'")
            tables = cur.fetchone()[0]
            if tables:
                cur.execute(f"TRUNCATE {tables}")
        conn.commit()
