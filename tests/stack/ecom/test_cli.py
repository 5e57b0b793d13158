"""The `ecom` CLI (ecom/cli.py) against the running stack: its commands, `endpoints`, and `up` on a
running stack is a no-op."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ECOM = [sys.executable, "-m", "ecom"]


@pytest.mark.stack
def test_cli_help_endpoints_and_up_is_a_no_op(stack_env):
    env = {**os.environ, **stack_env["env"]}
    help_text = subprocess.run(ECOM + ["--help"], env=env, capture_output=True, text=True, check=True).stdout
    for command in ("up", "down", "endpoints", "bootstrap", "replay", "etl", "status", "reconcile", "dlq"):
        assert f" {command} " in help_text
    info = json.loads(
        subprocess.run(ECOM + ["endpoints", "--json"], env=env, capture_output=True, text=True, check=True).stdout
    )
    assert info["api_url"] == stack_env["api_url"] and info["api_key"] == stack_env["api_key"]
    assert info["warehouse_dsn"].endswith(f":{stack_env['env']['ECOM_PG_PORT']}/ecom")
    assert info["redshift_data"] == {
        "endpoint_url": f"http://127.0.0.1:{stack_env['env']['ECOM_REDSHIFT_DATA_PORT']}",
        "workgroup": "ecom",
        "cluster": None,
        "database": "dev",
    }
    out = subprocess.run(ECOM + ["up"], env=env, capture_output=True, text=True, check=True).stdout
    # Running: nothing started, and the deployment's change set is empty (same code, same settings).
    assert "stack already running" in out and "0 created, updated or deleted" in out and info["events_url"] in out
