"""Shared fixtures, and the layout's one rule.

tests/unit/<package>/test_<module>.py need no stack; everything under tests/stack/ runs on an
embedded stack (the session's `stack_env`, started once on free ports in a temp dir and torn down
at the end, or one of its own) and is marked `stack` here, by folder. A test outside tests/stack
that takes `stack_env` is a collection error, so `pytest tests/unit` (`make unit`) never starts one.
Helpers the tests import live in tests/support/."""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import pytest

from bootstrap.reset import empty_stores
from ecom_core.config import FULL_FILE

STACK_TESTS = Path(__file__).resolve().parent / "stack"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark every test under tests/stack `stack` (before `-m` selects), and refuse a test elsewhere
    that needs the session's stack: it belongs under tests/stack."""
    misplaced = []
    for item in items:
        if STACK_TESTS in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.stack)
        elif "stack_env" in getattr(item, "fixturenames", ()):
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError(
            "these tests need the embedded stack: move them under tests/stack/: " + ", ".join(misplaced)
        )


@pytest.fixture(scope="session")
def stack_env():
    """Start MiniStack + Postgres on free ports in a temp dir, bootstrap, and yield the endpoints."""
    from bootstrap import stack

    # The ETL job's schedule stays off on the shared stack: most tests run the ETL by hand and count
    # what each run loads; tests/stack/etl/test_job.py switches it on.
    # A tick lingers only briefly here (a few seconds instead of 30) so tests that invoke the job
    # do not wait for it; tests/stack/etl/test_job.py checks the lingering itself.
    settings = {"ECOM_ETL_SCHEDULE_STATE": "DISABLED", "ECOM_ETL_LINGER_SECONDS": "3", "ECOM_ETL_POLL_SECONDS": "0.5"}
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        with stack.temporary_stack("ecom-test-") as env:
            yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(autouse=True)
def no_permission_is_denied(request):
    """Under the roles' full policies nothing the stack does is refused: after every test on the
    stack (except those that take a permission away, marked `denies_permissions`), the emulator's
    record of denials (bootstrap/local/ministack/iam.py) has no new line. A statement missing from a
    role fails the test that needed it, even where the function caught the refusal."""
    if "stack_env" not in request.fixturenames or request.node.get_closest_marker("denies_permissions"):
        yield
        return
    record = request.getfixturevalue("stack_env")["cfg"].logs_dir / "iam-denials.jsonl"
    start = record.stat().st_size if record.exists() else 0
    yield
    if record.exists():
        with open(record, encoding="utf-8") as log:
            log.seek(start)
            denied = log.read().splitlines()
        assert not denied, f"{len(denied)} request(s) denied under the full policies: " + "; ".join(denied[:5])


@pytest.fixture
def clean_stores(stack_env):
    """Empty every store (DynamoDB, buckets, Glue table, warehouse). The stream cannot be emptied:
    tests compare stream counts against the baseline this returns."""
    from tests.support import helpers

    empty_stores(stack_env["cfg"])
    return helpers.counts(stack_env["cfg"])


def write_slice(first_row: int, last_row: int, dest: Path) -> Path:
    """Rows first_row..last_row (1-based data rows) of the full file, in its own format (ISO-8859-1, CRLF)."""
    with (
        gzip.open(FULL_FILE, "rt", encoding="iso-8859-1", newline="") as src,
        open(dest, "w", encoding="iso-8859-1", newline="") as out,
    ):
        reader = csv.reader(src)
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(next(reader))
        for number, row in enumerate(reader, start=1):
            if number > last_row:
                break
            if number >= first_row:
                writer.writerow(row)
    return dest


@pytest.fixture(scope="session")
def slice_file(tmp_path_factory):
    """5,000 rows with cancellations, guest rows, repeated (InvoiceNo, StockCode) pairs and `£` vouchers."""
    return write_slice(40001, 45000, tmp_path_factory.mktemp("slices") / "slice-40001-45000.csv")
