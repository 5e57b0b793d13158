"""The embedded stack (bootstrap/stack.py) running: Postgres with the load's settings, and `ecom up`
bringing back a Postgres killed uncleanly (on a stack of its own). Without a stack (binaries,
stopping the emulator): tests/unit/bootstrap/test_stack.py."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from bootstrap import stack
from ecom_core import config


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@pytest.mark.stack
def test_the_warehouse_runs_with_the_load_settings(stack_env):
    """The embedded cluster and docker-compose's Postgres keep the load's sorts and temporary tables
    in memory (bootstrap/stack.py PG_LOAD_SETTINGS), with the same values."""
    import re

    from warehouse import db

    wanted = dict(re.findall(r"-c (\w+)=(\w+)", stack.PG_LOAD_SETTINGS))
    assert wanted == {"work_mem": "64MB", "temp_buffers": "64MB"}
    with db.connection(stack_env["cfg"].warehouse_dsn) as conn, conn.cursor() as cur:
        for name, value in wanted.items():
            cur.execute(f"SHOW {name}")
            assert cur.fetchone()[0] == value, name
    with open(config.PROJECT_ROOT / "docker-compose.yml", encoding="utf-8") as handle:
        compose = handle.read()
    assert 'command: ["postgres", ' + ", ".join(f'"-c", "{k}={v}"' for k, v in wanted.items()) + "]" in compose


def _kill_postmaster(cfg: config.Stack) -> int:
    """SIGKILL the cluster's postmaster (its PID is the first line of postmaster.pid), as the OOM
    killer would: no shutdown, its lock files stay behind."""
    pid = int((cfg.data_dir / "pg" / "postmaster.pid").read_text().splitlines()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while stack._pid_alive(pid) and not _is_zombie(pid):
        assert time.monotonic() < deadline, "the postmaster outlived SIGKILL"
        time.sleep(0.05)
    return pid


@pytest.mark.stack
def test_up_recovers_a_postgres_killed_uncleanly(monkeypatch):
    """After a SIGKILL of the postmaster, `ecom up` (stack.up) starts Postgres again (its crash
    recovery) with the committed data, and the Data API answers at once: also while the dead PID is a
    zombie not yet reaped, while its backends linger, and when the PID now belongs to another process
    (its lock files name a live process that is no postgres of this cluster; it is left alone).
    On a stack of its own: killing the session's Postgres would fail other tests."""
    from warehouse import db
    from warehouse.redshift_data import DataApi

    data_dir = Path(tempfile.mkdtemp(prefix="ecom-test-crash-"))
    os.chmod(data_dir, 0o755)  # Postgres runs as an unprivileged user when we are root
    for name, value in {
        "ECOM_DATA_DIR": str(data_dir),
        "ECOM_AWS_PORT": str(stack.free_port()),
        "ECOM_PG_PORT": str(stack.free_port()),
        "ECOM_REDSHIFT_DATA_PORT": str(stack.free_port()),
        "ECOM_TARGET": "embedded",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("WAREHOUSE_DSN", raising=False)
    cfg = config.stack()
    pgdata = cfg.data_dir / "pg"
    impostor = None
    try:
        assert stack.up(cfg)
        with db.connection(cfg.warehouse_dsn) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE crash_probe (n integer); INSERT INTO crash_probe VALUES (1), (2)")
            conn.commit()
        assert DataApi(cfg=cfg).query("SELECT count(*) FROM crash_probe") == [[2]]

        def assert_recovers(expected: int) -> None:
            assert not stack.status(cfg).postgres_up and (pgdata / "postmaster.pid").exists()
            assert stack.up(cfg)
            assert stack.status(cfg).up
            with db.connection(cfg.warehouse_dsn) as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
                cur.execute("SELECT count(*) FROM crash_probe")
                assert cur.fetchone() == (expected,)
                cur.execute(f"INSERT INTO crash_probe VALUES ({expected + 1})")
                conn.commit()
            # The Data API's connections to the old server are gone with it: not one statement fails.
            api = DataApi(cfg=cfg)
            assert all(api.query("SELECT count(*) FROM crash_probe") == [[expected + 1]] for _ in range(6))

        # A client's backend is open while the postmaster dies: it lingers a moment after it.
        idle = db.connect(cfg.warehouse_dsn)
        try:
            _kill_postmaster(cfg)
            assert_recovers(2)
        finally:
            idle.close()

        # The dead PID reused by another process of the server's user: Postgres alone would refuse
        # ("Is another postmaster running?"); that process is not ours to stop.
        impostor = subprocess.Popen(["sleep", "300"], user=stack.PG_SERVICE_USER if os.geteuid() == 0 else None)
        dead = _kill_postmaster(cfg)
        for lock in [pgdata / "postmaster.pid", *pgdata.glob(".s.PGSQL.*.lock")]:
            lines = lock.read_text().splitlines()
            assert lines[0] == str(dead)
            lock.write_text("\n".join([str(impostor.pid), *lines[1:]]) + "\n")
        assert_recovers(3)
        assert impostor.poll() is None, "a process that only had the dead server's PID was stopped"

        # A running server's files are never removed.
        running = stack.running_postmaster(cfg)
        assert running is not None and running[1] == cfg.pg_port
        assert not stack.clear_stale_lock_files(cfg) and (pgdata / "postmaster.pid").exists()
        assert not stack.up(cfg)
    finally:
        stack.down(cfg)
        if impostor is not None:
            impostor.kill()
            impostor.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
