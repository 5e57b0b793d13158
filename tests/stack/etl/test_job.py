"""The batch half as a deployed, scheduled job (etl/job.py) on the embedded stack.

The shared test stack keeps the schedule DISABLED (the other tests run the ETL by hand and count
what each run loads); each test here switches it on through bootstrap, as a user's `make up` has it,
and off again afterwards.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from bootstrap.deploy import deploy
from ecom_core import aws, config
from ecom_core.config import SAMPLE_FILE
from tests.support.helpers import replay_file
from warehouse import db, lease, redshift_data, schema
from warehouse.reconcile import reconcile

pytestmark = pytest.mark.stack


@contextmanager
def job_settings(stack_env, **env):
    """Deploy with these ECOM_* settings (schedule state, lease...) and put the defaults back after;
    then wait for a tick still lingering to end, so it cannot load the next test's data."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deploy(stack_env["cfg"])
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        deploy(stack_env["cfg"])
        _wait_for_free_lease(timeout=config.etl().lease_seconds + 30)


def _wait_for_free_lease(timeout: float) -> None:
    """A tick releases the lease when it stops lingering; a killed one's lease expires."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _warehouse(
            "SELECT count(*) FROM dw.etl_lease WHERE holder IS NOT NULL AND expires_at > (now() AT TIME ZONE 'UTC')"
        ) == [(0,)]:
            return
        time.sleep(0.5)
    raise AssertionError(f"an ETL tick still held the lease after {timeout} s")


def _warehouse(sql: str) -> list[tuple]:
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
        conn.commit()
        return rows


def _wait_for_rows(expected: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _warehouse(f"SELECT count(*) FROM {db.FACT_TABLE}")[0][0] == expected:
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(f"the warehouse did not reach {expected} rows within {timeout} s")


def test_the_schedule_fills_the_warehouse_without_an_etl_command(stack_env, clean_stores):
    interval = config.etl().interval_seconds
    assert interval == 60  # the default: rate(1 minute)
    with job_settings(stack_env, ECOM_ETL_SCHEDULE_STATE="ENABLED"):
        scheduler = aws.client("scheduler", stack_env["cfg"])
        schedule = scheduler.get_schedule(Name=config.resources().etl_schedule_name)
        assert (schedule["ScheduleExpression"], schedule["State"]) == ("rate(1 minute)", "ENABLED")
        assert schedule["Target"]["Arn"].endswith(":function:etl-job")
        replay_file(stack_env, SAMPLE_FILE)  # the user's `make replay`; no ETL command follows
        waited = _wait_for_rows(417, timeout=interval + 45)
        print(f"\nwarehouse held the 417-row sample {waited:.1f} s after the last POST was consumed")
        assert reconcile(stack_env["cfg"]).exact
        env = {**os.environ, **stack_env["env"]}
        # The tick records itself right after the commit that made the rows visible: a moment later.
        for _ in range(40):
            status = json.loads(
                subprocess.run(
                    [sys.executable, "-m", "ecom", "status", "--json"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            job = status["etl_job"]
            if job.get("last_tick"):
                break
            time.sleep(0.5)
        assert (job["schedule"], job["state"]) == ("rate(1 minute)", "ENABLED")
        tick = job["last_tick"]
        assert tick["trigger"] == "schedule" and tick["outcome"] in ("succeeded", "idle")
        assert job["next_tick"] is not None
        runs = _warehouse("SELECT count(*), sum(files_loaded), sum(rows_inserted) FROM dw.etl_run")
        assert runs[0][1:] == (2, 417)  # each file once, however many ticks ran


def test_an_idle_tick_opens_no_warehouse_transaction(stack_env, clean_stores):
    from etl import job

    replay_file(stack_env, SAMPLE_FILE, rows=50)
    assert job.tick("test")["outcome"] == "succeeded"

    def no_warehouse(*args, **kwargs):
        raise AssertionError("an idle tick must not call the warehouse")

    real = redshift_data.DataApi.__init__
    redshift_data.DataApi.__init__ = no_warehouse
    try:
        assert job.tick("test") == {"outcome": "idle"}
    finally:
        redshift_data.DataApi.__init__ = real
    assert job.read_state(stack_env["cfg"])["last_tick"]["outcome"] == "idle"


def test_ticks_never_overlap_and_load_once(stack_env, clean_stores):
    lam = aws.client("lambda", stack_env["cfg"])
    replay_file(stack_env, SAMPLE_FILE)

    def invoke() -> dict:
        answer = lam.invoke(FunctionName="etl-job", Payload=json.dumps({"trigger": "schedule"}))
        assert "FunctionError" not in answer, answer["Payload"].read()
        return json.loads(answer["Payload"].read())

    # A run holds the lease (here: the test itself): a tick does nothing, says why, loads nothing.
    api = redshift_data.DataApi(cfg=stack_env["cfg"])
    schema.ensure_schema(api)
    assert lease.acquire(api, "test-holder", ttl=60)
    skipped = invoke()
    assert skipped["outcome"] == "skipped" and "test-holder" in skipped["reason"]
    assert _warehouse(f"SELECT count(*) FROM {db.FACT_TABLE}") == [(0,)]
    lease.release(api, "test-holder")

    # Two ticks fired together: one loads, the other is skipped (lease) or idle (came after).
    outcomes: list[dict] = []
    threads = [threading.Thread(target=lambda: outcomes.append(invoke())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(o["outcome"] for o in outcomes) in (["skipped", "succeeded"], ["idle", "succeeded"]), outcomes
    assert _warehouse("SELECT count(*), sum(files_loaded), sum(rows_inserted) FROM dw.etl_run") == [(1, 2, 417)]
    assert _warehouse(f"SELECT count(*), count(DISTINCT event_id) FROM {db.FACT_TABLE}") == [(417, 417)]
    assert reconcile(stack_env["cfg"]).exact


def test_a_run_killed_mid_load_is_finished_by_the_next_tick_exactly_once(stack_env, clean_stores):
    lam = aws.client("lambda", stack_env["cfg"])
    r = config.resources()
    replay_file(stack_env, SAMPLE_FILE)
    original = lam.get_function_configuration(FunctionName=r.etl_function)["Environment"]["Variables"]
    # The job dies between COPY/MERGE and COMMIT (SIGKILL of the function's process), holding a
    # short lease it will never release.
    lam.update_function_configuration(
        FunctionName=r.etl_function,
        Environment={
            "Variables": {**original, "ECOM_FAULTS": "load.after_copy=1:kill", "ECOM_ETL_LEASE_SECONDS": "10"}
        },
    )
    try:
        answer = lam.invoke(FunctionName=r.etl_function, Payload=json.dumps({"trigger": "schedule"}))
        assert "FunctionError" in answer  # the process was killed
    finally:
        lam.update_function_configuration(FunctionName=r.etl_function, Environment={"Variables": original})
    assert _warehouse(f"SELECT count(*) FROM {db.FACT_TABLE}") == [(0,)]
    assert _warehouse("SELECT holder IS NOT NULL FROM dw.etl_lease") == [(True,)]  # left behind

    # The schedule's next tick (after the dead run's lease expired) finishes the work, once.
    with job_settings(stack_env, ECOM_ETL_SCHEDULE_STATE="ENABLED", ECOM_ETL_LEASE_SECONDS="10"):
        _wait_for_rows(417, timeout=config.etl().interval_seconds + 60)
    assert _warehouse(f"SELECT count(*), count(DISTINCT event_id) FROM {db.FACT_TABLE}") == [(417, 417)]
    assert _warehouse(f"SELECT count(*) FROM {db.MANIFEST_TABLE}") == [(2,)]
    assert reconcile(stack_env["cfg"]).exact


def test_a_tick_keeps_loading_while_data_keeps_arriving(stack_env, clean_stores, monkeypatch):
    """A tick that found work stays while more arrives (linger): the second replay is in the
    warehouse seconds after its last record is consumed, loaded by the same tick, under one lease."""
    from etl import job

    monkeypatch.setenv("ECOM_ETL_LINGER_SECONDS", "20")
    monkeypatch.setenv("ECOM_ETL_POLL_SECONDS", "0.5")
    replay_file(stack_env, SAMPLE_FILE, rows=100)
    outcome: dict = {}
    ticking = threading.Thread(target=lambda: outcome.update(job.tick("test")))
    ticking.start()
    _wait_for_rows(100, timeout=60)
    replay_file(stack_env, SAMPLE_FILE)  # waits until the stream consumer has caught up
    behind = _wait_for_rows(417, timeout=30)  # no new tick: the schedule is off here
    ticking.join(timeout=120)
    assert not ticking.is_alive()
    print(f"\nthe lingering tick loaded the second replay {behind:.1f} s after it was consumed")
    assert behind < 10
    assert outcome["outcome"] == "succeeded" and outcome["runs"] >= 2 and outcome["rows_inserted"] == 417
    runs = _warehouse("SELECT count(*), sum(rows_inserted) FROM dw.etl_run")
    assert runs == [(outcome["runs"], 417)]
    assert job.read_state(stack_env["cfg"])["last_tick"]["runs"] == outcome["runs"]
    # Nothing arrived for the linger time: the tick ended, and the lease is free for the next one.
    assert _warehouse("SELECT count(*) FROM dw.etl_lease WHERE holder IS NOT NULL") == [(0,)]
