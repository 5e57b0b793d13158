"""The warehouse load: exactly once through a crash, schema drift stops it, old warehouses upgrade."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import textwrap

import pytest

from ecom_core import aws, config
from ecom_core.contract import CSV_HEADER, SchemaDrift
from etl import catalog, load, transform
from etl.run import run_once
from tests.support.helpers import load_staged, read_csv, replay_file, warehouse_rows

pytestmark = pytest.mark.stack

CRASH_BEFORE_THE_SECOND_COMMIT = textwrap.dedent("""
    import os, signal
    from etl import load
    from warehouse import redshift_data

    load.FILES_PER_TRANSACTION = 1               # one file per transaction: the first commits on its own
    redshift_data.MAX_BATCH_STATEMENTS = 0       # every transaction in a Data API session: BEGIN, ..., COMMIT
    redshift_data.SESSION_KEEP_ALIVE_SECONDS = 5  # the session a dead job leaves expires (and rolls back) soon
    commit = redshift_data.DataApi._commit
    groups = []

    def crash_before_commit(self, session):
        rows = self.statement('SELECT count(*) FROM dw.fact_sales_line', session=session).rows[0][0]
        files = self.statement('SELECT count(*) FROM dw.load_manifest', session=session).rows[0][0]
        if files == 2:  # the second file's group: COPY, facts, dimensions and manifest done, not committed
            print("crashing with", rows, "rows visible", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return commit(self, session)

    redshift_data.DataApi._commit = crash_before_commit
    load.load()
""")


def _staged_rows(cfg, key: str) -> int:
    body = aws.client("s3", cfg).get_object(Bucket=config.resources().staging_bucket, Key=key)["Body"].read()
    return len(list(csv.reader(io.StringIO(body.decode("utf-8"))))) - 1


def _dimensions_match_facts() -> None:
    """Every dimension holds exactly the keys the committed facts use: nothing from a rolled-back file."""
    for dim, key, fact_key in (
        ("dim_product", "product_code", "product_code"),
        ("dim_date", "date_key", "date_key"),
        ("dim_country", "country", "country"),
        ("dim_customer", "customer_id", "customer_id"),
    ):
        in_dim = {r[0] for r in warehouse_rows(f'SELECT "{key}" FROM dw.{dim}')}
        in_facts = {r[0] for r in warehouse_rows(f'SELECT DISTINCT "{fact_key}" FROM dw.fact_sales_line')} - {None}
        assert in_dim == in_facts, dim


def test_crash_between_copy_and_commit_then_rerun_loads_each_file_once(stack_env, clean_stores, slice_file):
    cfg = stack_env["cfg"]
    replay_file(stack_env, slice_file, rows=2000)
    staged = transform.transform(cfg)
    catalog.crawl(cfg)
    keys = sorted(staged.csv_keys)
    assert len(keys) >= 3 and staged.rows == 2000
    rows_per_file = {k: _staged_rows(cfg, k) for k in keys}

    env = {**os.environ, **stack_env["env"]}
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_BEFORE_THE_SECOND_COMMIT], env=env, capture_output=True, text=True, timeout=300
    )
    assert crashed.returncode == -9, crashed.stderr  # killed, not a clean exit
    visible = rows_per_file[keys[0]] + rows_per_file[keys[1]]
    assert f"crashing with {visible} rows visible" in crashed.stdout  # inside the open transaction

    # Only the first file committed: its rows, its manifest entry, its dimension rows.
    assert warehouse_rows('SELECT "file_key" FROM dw.load_manifest') == [(keys[0],)]
    assert warehouse_rows('SELECT count(*), count(DISTINCT "source_file") FROM dw.fact_sales_line') == [
        (rows_per_file[keys[0]], 1)
    ]
    _dimensions_match_facts()

    rerun = load.load(cfg)  # waits for the dead job's session to expire: it holds the manifest's lock
    assert rerun.files_loaded == len(keys) - 1 and rerun.loaded_keys == keys[1:]
    assert rerun.rows_inserted == 2000 - rows_per_file[keys[0]] and rerun.rows_updated == 0
    assert load.load(cfg).files_loaded == 0  # and nothing is left to do

    assert warehouse_rows('SELECT count(*), count(DISTINCT "event_id") FROM dw.fact_sales_line') == [(2000, 2000)]
    assert sorted(warehouse_rows('SELECT "file_key", "rows_in_file", "rows_inserted" FROM dw.load_manifest')) == [
        (k, rows_per_file[k], rows_per_file[k]) for k in keys
    ]
    _dimensions_match_facts()
    df = read_csv(slice_file).head(2000)
    from decimal import Decimal

    assert warehouse_rows('SELECT sum("amount") FROM dw.fact_sales_line')[0][0] == sum(
        Decimal(q) * Decimal(p) for q, p in zip(df.Quantity, df.UnitPrice, strict=True)
    )


def _put_staging(cfg, key: str, header: list[str], rows: list[list[str]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    aws.client("s3", cfg).put_object(
        Bucket=config.resources().staging_bucket, Key=key, Body=out.getvalue().encode("utf-8")
    )


LINE = {
    "event_id": "drift-0",
    "invoice_no": "536365",
    "stock_code": "85123A",
    "description": "WHITE HANGING HEART T-LIGHT HOLDER",
    "quantity": "6",
    "invoice_date": "2010-12-01T08:26:00",
    "unit_price": "2.55",
    "customer_id": "17850",
    "country": "United Kingdom",
}


def test_a_new_staging_column_stops_the_load_naming_it(stack_env, clean_stores):
    cfg = stack_env["cfg"]
    prefix = config.resources().staging_prefix
    good_key, drift_key = f"{prefix}drift/0000.csv", f"{prefix}drift/0001.csv"
    _put_staging(cfg, good_key, CSV_HEADER, [[LINE[c] for c in CSV_HEADER]])
    _put_staging(
        cfg,
        drift_key,
        CSV_HEADER[:4] + ["discount_code"] + CSV_HEADER[4:],
        [[LINE[c] for c in CSV_HEADER[:4]] + ["XMAS10"] + [dict(LINE, event_id="drift-1")[c] for c in CSV_HEADER[4:]]],
    )
    with pytest.raises(SchemaDrift) as stopped:
        run_once(cfg)
    message = str(stopped.value)
    assert drift_key in message and "new column(s) discount_code" in message and "Nothing from this file" in message
    # The crawler saw the column; the warehouse did not take it, and nothing of that file landed.
    assert "discount_code" in [name for name, _ in catalog.catalog_columns(cfg)]
    assert warehouse_rows('SELECT "event_id" FROM dw.fact_sales_line') == [("drift-0",)]
    assert warehouse_rows('SELECT "file_key" FROM dw.load_manifest') == [(good_key,)]
    last = warehouse_rows('SELECT "outcome", "message" FROM dw.etl_run ORDER BY "started_at" DESC LIMIT 1')[0]
    assert last[0] == "failed" and "discount_code" in last[1]

    # The CLI says the same and fails.
    env = {**os.environ, **stack_env["env"]}
    cli = subprocess.run(
        [sys.executable, "-m", "ecom", "etl", "load"], env=env, capture_output=True, text=True, timeout=300
    )
    assert cli.returncode == 1 and "discount_code" in cli.stderr and drift_key in cli.stderr

    # Same columns in another order would load misaligned values: refused too.
    swapped = CSV_HEADER[:]
    q, p = swapped.index("quantity"), swapped.index("unit_price")
    swapped[q], swapped[p] = swapped[p], swapped[q]
    _put_staging(cfg, drift_key, swapped, [[dict(LINE, event_id="drift-1")[c] for c in swapped]])
    with pytest.raises(SchemaDrift, match="columns in a different order"):
        load.load(cfg)
    assert warehouse_rows("SELECT count(*) FROM dw.fact_sales_line") == [(1,)]


def test_a_warehouse_from_before_the_star_schema_is_upgraded_in_place(stack_env, clean_stores, slice_file):
    """The previous version's fact table (no derived columns, no dimensions) gains them on the next
    ensure_schema (through the Data API, as the job runs it), with the same values a fresh load computes."""
    from warehouse import db, schema, star
    from warehouse.redshift_data import DataApi

    replay_file(stack_env, slice_file, rows=1500)
    run_once(stack_env["cfg"])
    derived = ", ".join(f'"{c}"' for c in star.DERIVED_COLUMN_TYPES)

    def state():
        return (
            sorted(warehouse_rows(f'SELECT "event_id", {derived} FROM dw.fact_sales_line')),
            *(
                sorted(warehouse_rows(f"SELECT * FROM dw.{t}"), key=repr)
                for t in ("dim_product", "dim_customer", "dim_country", "dim_date")
            ),
        )

    fresh = state()
    assert sum(1 for row in fresh[0] if row[-1]) > 0  # some repeated rows are flagged
    with db.connection() as conn:
        with conn.cursor() as cur:
            for column in star.DERIVED_COLUMN_TYPES:
                cur.execute(f'ALTER TABLE dw.fact_sales_line DROP COLUMN "{column}" CASCADE')
            cur.execute("DROP TABLE dw.dim_product, dw.dim_customer, dw.dim_country, dw.dim_date")
        conn.commit()
    assert warehouse_rows("SELECT to_regclass('analytics.top_products')") == [(None,)]  # CASCADE took the views
    changed = schema.ensure_schema(DataApi(cfg=stack_env["cfg"]))
    assert changed == [
        f"added the star columns {', '.join(star.DERIVED_COLUMN_TYPES)} and built the dimensions",
        "re-created the analytics views",
    ]
    assert state() == fresh
    assert schema.ensure_schema(DataApi(cfg=stack_env["cfg"])) == []  # and the next run changes nothing
    assert warehouse_rows("SELECT count(*) FROM analytics.sales_line") == [(1500,)]


def _csv_body(*events) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows([[e[c] for c in CSV_HEADER] for e in events])
    return out.getvalue().encode("utf-8")


def test_a_redelivered_event_that_changed_re_evaluates_the_group_it_left(stack_env, clean_stores):
    """Two identical rows: one is flagged. If one of them is redelivered with another stock code, the
    group it left has one member, which must no longer be flagged (and the new group has none)."""
    cfg = stack_env["cfg"]
    first, second = dict(LINE, event_id="same-a"), dict(LINE, event_id="same-b")
    flags = 'SELECT "event_id", "stock_code", "is_duplicate_row" FROM dw.fact_sales_line ORDER BY 1'
    assert load_staged(cfg, [("csv/redelivery/1.csv", _csv_body(first, second))]) == [
        ("csv/redelivery/1.csv", (2, 2, 0, 0))
    ]
    assert warehouse_rows(flags) == [("same-a", "85123A", False), ("same-b", "85123A", True)]
    assert load_staged(cfg, [("csv/redelivery/2.csv", _csv_body(dict(second, stock_code="85123B")))]) == [
        ("csv/redelivery/2.csv", (1, 0, 1, 0))
    ]
    assert warehouse_rows(flags) == [("same-a", "85123A", False), ("same-b", "85123B", False)]
    assert warehouse_rows('SELECT "product_code" FROM dw.dim_product ORDER BY 1') == [("85123A",), ("85123B",)]


def test_an_event_repeated_in_and_across_the_files_of_a_group_is_one_fact_the_last_file_wins(stack_env, clean_stores):
    """One group, three files: file 0 holds e1 and e2 twice, file 1 holds e2 again (changed) and
    e3, file 2 only e1. Per file the manifest counts rows, and each event as new only in the first
    file that has it (as file-by-file loads would have); the warehouse keeps the last file's copy."""
    e1, e2, e3 = (dict(LINE, event_id=f"rep-{n}", stock_code=f"2000{n}") for n in (1, 2, 3))
    files = [
        ("csv/repeat/0.csv", _csv_body(e1, e2, e2)),
        ("csv/repeat/1.csv", _csv_body(dict(e2, quantity="7"), e3)),
        ("csv/repeat/2.csv", _csv_body(e1)),
    ]
    outcomes = load_staged(stack_env["cfg"], files)
    # (rows, inserted, updated, rejected): file 0: 3 rows, 2 distinct events, both new;
    # file 1: e2 counted new in file 0 (so updated here), e3 new; file 2: e1 counted in file 0.
    assert outcomes == [
        ("csv/repeat/0.csv", (3, 2, 0, 0)),
        ("csv/repeat/1.csv", (2, 1, 1, 0)),
        ("csv/repeat/2.csv", (1, 0, 1, 0)),
    ]
    assert warehouse_rows('SELECT "event_id", "quantity", "source_file" FROM dw.fact_sales_line ORDER BY 1') == [
        ("rep-1", 6, "csv/repeat/2.csv"),
        ("rep-2", 7, "csv/repeat/1.csv"),
        ("rep-3", 6, "csv/repeat/1.csv"),
    ]
    assert warehouse_rows(
        'SELECT "file_key", "rows_in_file", "rows_inserted", "rows_updated" FROM dw.load_manifest ORDER BY 1'
    ) == [("csv/repeat/0.csv", 3, 2, 0), ("csv/repeat/1.csv", 2, 1, 1), ("csv/repeat/2.csv", 1, 0, 1)]
