"""The crawl (etl/catalog.py) records the staging CSV's schema in Glue on the running stack; the
type inference alone: tests/unit/etl/test_catalog.py."""

from __future__ import annotations

import pytest

from ecom_core import aws
from ecom_core.config import SAMPLE_FILE
from etl.catalog import crawl
from tests.support.helpers import replay_file


@pytest.mark.stack
def test_catalog_records_the_staging_schema_in_glue(stack_env, clean_stores):
    replay_file(stack_env, SAMPLE_FILE, rows=50)
    from etl.transform import transform

    transform(stack_env["cfg"])
    result = crawl(stack_env["cfg"])
    assert result.action == "created"
    table = aws.client("glue", stack_env["cfg"]).get_table(DatabaseName="ecom", Name="staging_events")["Table"]
    columns = {c["Name"]: c["Type"] for c in table["StorageDescriptor"]["Columns"]}
    # The sample's stock codes are all digits in these rows: the crawler must still say string.
    assert columns == {
        "event_id": "string",
        "invoice_no": "string",
        "stock_code": "string",
        "description": "string",
        "quantity": "bigint",
        "invoice_date": "timestamp",
        "unit_price": "decimal(14,3)",
        "customer_id": "bigint",
        "country": "string",
    }
    assert table["StorageDescriptor"]["Location"] == "s3://staging-bucket-ecom/csv/"
    assert crawl(stack_env["cfg"]).action == "unchanged"
