"""`ecom bench` on a small slice: it runs on its own fresh stack and reconciles exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ecom_core.config import PROJECT_ROOT as ROOT


def test_bench_small_slice_reconciles_exactly(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ECOM_DATA_DIR", "ECOM_AWS_PORT", "ECOM_PG_PORT", "AWS_ENDPOINT_URL", "WAREHOUSE_DSN")
    }
    out = subprocess.run(
        [sys.executable, "-m", "ecom", "bench", "--rows", "2000", "--original-rows", "100", "--json", "--no-save"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["rows"] == 2000
    assert result["reconciliation"]["exact"], result["reconciliation"]
    assert all(result["reconciliation"]["checks"].values())
    assert result["ours"]["warehouse_rows_at_end"] == 2000
    # The user's path: the CLI replay, then only the scheduled job (no ETL command) filled the warehouse.
    assert (
        result["ours"]["command"].startswith("ecom replay ") and result["settings"]["etl_schedule_state"] == "ENABLED"
    )
    assert result["ours"]["etl_ticks"] >= 1 and result["ours"]["rows_inserted"] == 2000
    assert sum(t["rows_inserted"] for t in result["ours"]["ticks"]) == 2000
    assert result["original"]["rows"] == 100
    summary = result["summary"]
    # The load again with Postgres to itself: every staging file, every row, the warehouse exact again.
    assert result["load_alone"]["exact"] and result["load_alone"]["rows_inserted"] == 2000
    assert result["load_alone"]["files_loaded"] == result["reconciliation"]["found"]["files_loaded"]
    # What used the cores meanwhile, per process (at 2,000 rows each rounds to 0.0 s: present, not > 0).
    assert {"postgres", "emulator"} <= set(result["load_alone"]["cpu_seconds"])
    # The COPY yardstick lands the rows into a table with the fact table's indexes; the earlier
    # rounds' key-only COPY is measured beside it.
    assert result["ceiling"]["copy_rows"] == 2000 and result["ceiling"]["copy_key_only_seconds"] > 0
    assert len(result["ceiling"]["copy_indexes"]) == 2
    for key in (
        "speedup_vs_original",
        "ours_vs_ceiling",
        "load_vs_bare_copy",
        "load_alone_vs_bare_copy",
        "load_alone_vs_key_only_copy",
    ):
        assert summary[key] > 0
    assert result["ours"]["peak_memory_mib"]["emulator"] > 0
    # Ours phase by phase: the replay, the drain, the batch half after it; their CPU is part of the run's.
    phases = result["ours"]["phases"]
    assert list(phases) == [
        "replay (first to last POST)",
        "drain (last POST to consumer caught up)",
        "batch half after the drain",
    ]
    assert (
        abs(phases["batch half after the drain"]["seconds"] - result["ours"]["batch_half_after_drain_seconds"]) < 0.01
    )
    assert phases["replay (first to last POST)"]["cpu_seconds"]["lambda data-ingestion"] > 0
    for group, seconds in result["ours"]["cpu_seconds"].items():
        assert sum(p["cpu_seconds"].get(group, 0) for p in phases.values()) <= seconds + 0.1


@pytest.mark.stack
def test_the_load_alone_runs_with_the_etl_quiet(stack_env):
    """While the bench measures the load alone, no scheduled tick may start (the schedule is
    disabled) and none may still run (the bench holds the ETL lease); afterwards both are as before."""
    from bench.pipeline import etl_quiet, schedule_fields
    from ecom_core import aws
    from warehouse import lease, schema
    from warehouse.redshift_data import DataApi

    cfg = stack_env["cfg"]
    scheduler = aws.client("scheduler", cfg)
    [item] = scheduler.list_schedules()["Schedules"]
    schedule = scheduler.get_schedule(Name=item["Name"])
    fields = schedule_fields(schedule)
    # The shared test stack keeps the schedule off; as deployed for users it is on.
    scheduler.update_schedule(**fields, State="ENABLED")
    try:
        api = DataApi(cfg=cfg)
        schema.ensure_schema(api)
        with etl_quiet(cfg):
            assert scheduler.get_schedule(Name=item["Name"])["State"] == "DISABLED"
            assert (lease.current(api).holder or "").startswith("bench:")
        assert scheduler.get_schedule(Name=item["Name"])["State"] == "ENABLED"
        assert lease.current(api).holder is None
    finally:
        scheduler.update_schedule(**fields, State="DISABLED")


@pytest.mark.stack
def test_the_copy_yardstick_has_the_fact_tables_indexes(stack_env):
    """The bare COPY the load is compared with lands in a table indexed like the fact table: the
    same indexes (column lists and methods), read from the catalog: those the local Data API made of
    its dropped primary key and its SORTKEY (keys are informational there, as on Redshift)."""
    from bench.pipeline import create_copy_target
    from warehouse import db, schema
    from warehouse.redshift_data import DataApi

    def index_shapes(cur, table):
        cur.execute(f"""SELECT i.indisprimary, i.indisunique,
                               regexp_replace(pg_get_indexdef(i.indexrelid), '^.* USING ', 'USING ')
                        FROM pg_index AS i WHERE i.indrelid = '{table}'::regclass ORDER BY 3""")
        return cur.fetchall()

    schema.ensure_schema(DataApi(cfg=stack_env["cfg"]))
    with db.connection() as conn, conn.cursor() as cur:
        try:
            create_copy_target(cur, "dw.test_copy_target")
            fact = index_shapes(cur, db.FACT_TABLE)
            assert index_shapes(cur, "dw.test_copy_target") == fact
            # The local Data API's: a non-unique index for the dropped primary key, one for the sort key.
            assert fact == [
                (False, False, "USING btree (event_id)"),
                (False, False, "USING btree (invoice_no, stock_code, invoice_ts)"),
            ]
            create_copy_target(cur, "dw.test_copy_target", all_indexes=False)
            assert index_shapes(cur, "dw.test_copy_target") == [(True, True, "USING btree (event_id)")]
        finally:
            conn.rollback()


@pytest.mark.stack
def test_the_bench_waits_for_the_run_that_loaded_the_rows_to_be_on_record(stack_env):
    """A run commits its rows before its dw.etl_run row: the bench, which sees the rows first, must
    wait for that record (CI once read zero runs for a warehouse the job had filled)."""
    import threading
    import time

    from bench.pipeline import _recorded_runs
    from warehouse import db, schema
    from warehouse.redshift_data import DataApi

    run_id = "test-recorded-late"

    def record_late():
        time.sleep(0.5)
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO dw.etl_run (run_id, started_at, finished_at, outcome, rows_inserted) "
                "VALUES (%s, now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC', 'succeeded', 2000)",
                (run_id,),
            )
            conn.commit()

    schema.ensure_schema(DataApi(cfg=stack_env["cfg"]))
    with db.connection() as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT now() AT TIME ZONE 'UTC'")
            since = cur.fetchone()[0]
        conn.rollback()
        writer = threading.Thread(target=record_late)
        writer.start()
        try:
            runs = _recorded_runs(conn, since, 2000, wait_seconds=30)
            assert [(r[2], r[5]) for r in runs] == [("succeeded", 2000)]
            # Nothing to wait for: what is on record comes back at once.
            began = time.monotonic()
            assert len(_recorded_runs(conn, since, 0, wait_seconds=30)) == 1
            assert time.monotonic() - began < 5
        finally:
            writer.join()
            with conn.cursor() as cur:
                cur.execute("DELETE FROM dw.etl_run WHERE run_id = %s", (run_id,))
            conn.commit()
