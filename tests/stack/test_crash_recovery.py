"""Acknowledged means durable (bootstrap/local/ministack/durability.py): SIGKILL the emulator after
the API has answered 200 for every event and before the trigger is done with them, run `ecom up`'s
start, and every event reaches DynamoDB, S3 and the warehouse exactly once, with no replay; the
deployment (API id, URL, key, functions, mapping) is the one from before."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time

import pytest
import requests

from bootstrap import stack
from bootstrap.deploy import find_api
from ecom_core import config
from etl.run import run_once
from replay.client import Sender, replay
from replay.source import read_rows
from tests.support.helpers import assert_exact
from warehouse.reconcile import open_ledger
from warehouse.status import wait_for_drain

pytestmark = pytest.mark.stack

FULL = config.FULL_FILE
BEFORE_CRASH = 15000
AFTER_CRASH = 1000


def _kill_emulator(cfg: config.Stack) -> None:
    pid = stack.read_state(cfg)["ministack_pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while stack.port_open(cfg.aws_port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not stack.port_open(cfg.aws_port), "the emulator still answers after SIGKILL"


def test_a_sigkilled_emulator_loses_no_acknowledged_event(stack_env, clean_stores):
    cfg = stack_env["cfg"]
    api = find_api(cfg)
    rows = read_rows(FULL)
    with open_ledger(cfg, FULL) as ledger:
        before = replay(
            itertools.islice(rows, BEFORE_CRASH),
            Sender(stack_env["api_url"], stack_env["api_key"]),
            ledger=ledger,
            concurrency=4,
        )
    assert before.accepted == BEFORE_CRASH  # every event answered 200 ...

    _kill_emulator(cfg)  # ... and the emulator killed before a graceful save
    clock = time.perf_counter()
    assert stack.up(cfg)
    restarted = time.perf_counter() - clock
    recovery = stack.last_recovery(cfg)
    assert recovery["unclean_stop"] is True and recovery["torn_lines"] == 0
    # The stream has every record back, and the crash took what the trigger had written since the
    # checkpoint `clean_stores` took: all of it is delivered again from the saved positions.
    assert recovery["by_stream"][config.resources().stream] >= BEFORE_CRASH
    assert recovery["redelivered"] == BEFORE_CRASH

    # The same deployment: the URL and key every producer was given still work.
    assert find_api(cfg) == api
    with open_ledger(cfg, FULL) as ledger:
        after = replay(
            itertools.islice(rows, AFTER_CRASH),
            Sender(stack_env["api_url"], stack_env["api_key"]),
            ledger=ledger,
            concurrency=2,
        )
    assert after.accepted == AFTER_CRASH
    assert wait_for_drain({**before.high_water, **after.high_water}, cfg, timeout=300)
    recovered = time.perf_counter() - clock

    run_once(cfg)
    assert_exact(stack_env, BEFORE_CRASH + AFTER_CRASH)
    print(
        f"crash recovery: {BEFORE_CRASH} acknowledged before the kill, {recovery['records']} stream records back "
        f"in {recovery['seconds']} s, emulator restarted in {restarted:.1f} s, stores caught up "
        f"{recovered:.1f} s after the restart began"
    )


def test_a_checkpoint_is_refused_with_a_reason_when_asked_wrongly(stack_env):
    answer = requests.get(f"{stack_env['cfg'].local_endpoint_url}/_ecom/checkpoint", timeout=10)
    assert answer.status_code == 405


def test_a_sigkill_in_the_middle_of_a_replay_loses_nothing_acknowledged(stack_env, clean_stores):
    """At any moment: the kill lands while requests are in flight. Those answered 200 are on the
    stream after the restart; those cut off get no 200 and the producer sends them again (as any
    client retries a request without an answer), and the ids keep every store exact."""
    cfg = stack_env["cfg"]
    outcome: dict = {}

    def run_replay():
        try:
            with open_ledger(cfg, FULL) as ledger:
                outcome["result"] = replay(
                    read_rows(FULL, 20000),
                    Sender(stack_env["api_url"], stack_env["api_key"]),
                    ledger=ledger,
                    concurrency=4,
                    batch_size=250,
                )
        except BaseException as exc:  # surfaced below
            outcome["error"] = exc

    thread = threading.Thread(target=run_replay)
    thread.start()
    time.sleep(1.5)  # mid-replay
    _kill_emulator(cfg)
    assert stack.up(cfg)
    thread.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].accepted == 20000
    assert stack.last_recovery(cfg)["unclean_stop"] is True
    assert wait_for_drain(outcome["result"].high_water, cfg, timeout=300)
    run_once(cfg)
    assert_exact(stack_env, 20000)
