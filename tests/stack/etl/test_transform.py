"""The transform (etl/transform.py) on the running stack: it moves only the raw objects it listed.
The conversion itself without a stack: tests/unit/etl/test_transform.py."""

from __future__ import annotations

import os
import sys

import pytest

from ecom_core.config import SAMPLE_FILE
from tests.support.helpers import InFaultWindow, counts, replay_file

ECOM = [sys.executable, "-m", "ecom"]


@pytest.mark.stack
def test_raw_objects_arriving_during_a_transform_are_kept(stack_env, clean_stores):
    """The original sync-then-rm lost these; here only the objects a run listed are moved."""
    replay_file(stack_env, SAMPLE_FILE, rows=200)
    env = {**os.environ, **stack_env["env"], "ECOM_FAULTS": "transform.after_csv=1:sleep=3"}
    etl = InFaultWindow(ECOM + ["etl", "transform"], env)  # it has listed the raw objects and written a CSV
    replay_file(stack_env, SAMPLE_FILE)  # rows 201..417 arrive while the transform runs
    returncode, err = etl.finish(timeout=120)
    assert returncode == 0, err
    c = counts(stack_env["cfg"])
    assert c["raw_objects_pending"] >= 1  # the new arrivals wait for the next run
    from etl.run import run_once

    run_once(stack_env["cfg"])
    c = counts(stack_env["cfg"])
    assert c["raw_objects_pending"] == 0 and c["warehouse_rows"] == 417 and c["invoice_lines"] == 417
