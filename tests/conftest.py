"""One embedded stack for the whole test session: free ports, a temp data dir, torn down at the end."""
from __future__ import annotations

import csv
import gzip
import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FULL_FILE = ROOT / "data" / "ecommerce-data.csv.gz"
SAMPLE_FILE = ROOT / "data" / "sample-data.csv"


@pytest.fixture(scope="session")
def stack_env():
    """Start MiniStack + Postgres on free ports in a temp dir, bootstrap, and yield the endpoints."""
    from ecom import stack

    data_dir = Path(tempfile.mkdtemp(prefix="ecom-test-"))
    os.chmod(data_dir, 0o755)  # Postgres runs as an unprivileged user when we are root
    env = {"ECOM_DATA_DIR": str(data_dir), "ECOM_AWS_PORT": str(stack.free_port()),
           "ECOM_PG_PORT": str(stack.free_port()), "ECOM_TARGET": "embedded"}
    saved = {k: os.environ.get(k) for k in [*env, "AWS_ENDPOINT_URL", "WAREHOUSE_DSN"]}
    os.environ.update(env)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("WAREHOUSE_DSN", None)
    from bootstrap.deploy import deploy
    from ecom import config

    cfg = config.stack()
    try:
        stack.up(cfg)
        report = deploy(cfg)
        yield {"cfg": cfg, "env": env, "data_dir": data_dir, **report.outputs}
    finally:
        stack.down(cfg)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def clean_stores(stack_env):
    """Empty every store (DynamoDB, buckets, Glue table, warehouse). The stream cannot be emptied:
    tests compare stream counts against the baseline this returns."""
    from tests import helpers

    helpers.empty_stores(stack_env["cfg"])
    return helpers.counts(stack_env["cfg"])


def write_slice(first_row: int, last_row: int, dest: Path) -> Path:
    """Rows first_row..last_row (1-based data rows) of the full file, in its own format (ISO-8859-1, CRLF)."""
    with gzip.open(FULL_FILE, "rt", encoding="iso-8859-1", newline="") as src, \
            open(dest, "w", encoding="iso-8859-1", newline="") as out:
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
