"""The compose stack's Redshift Data API (service `redshift-data`), run here as its image runs it.

There is no Docker engine on the project's CI machine, so the image itself is built only by the
GitHub compose job. This test runs what the image holds, the way it runs it: the package files the
Dockerfile copies (and nothing else of the project) under empty parents, an interpreter that sees
only the distributions requirements.txt installs (with their dependencies) and the standard library,
the Dockerfile's ENTRYPOINT with the compose file's command. Only the addresses are this stack's
(the compose network's `postgres` and `aws` are not names here). Then a COPY through a manifest
with an IAM role, from the stack's S3, through boto3's unchanged client.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import shlex
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import boto3
import psycopg2
import pytest
import requests
import yaml
from packaging.requirements import Requirement

from bootstrap.local.ministack.lambda_runtime import link_distributions
from ecom_core import aws, config

pytestmark = pytest.mark.stack

IMAGE_DIR = config.PROJECT_ROOT / "bootstrap" / "local" / "redshift_data"
SERVICE = yaml.safe_load((config.PROJECT_ROOT / "docker-compose.yml").read_text())["services"]["redshift-data"]
BUCKET = "compose-data-api-test"
ROLE = "arn:aws:iam::000000000000:role/ecom-redshift-copy-role"
TARGET = {"WorkgroupName": "ecom", "Database": "dev"}


def requirement_closure() -> set[str]:
    """The distributions `pip install -r requirements.txt` puts in the image: the pinned ones and
    what they require (no extras), as installed here."""
    pending = [
        Requirement(line).name
        for line in (IMAGE_DIR / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        for text in metadata.requires(name) or []:
            needed = Requirement(text)
            if needed.marker is None or needed.marker.evaluate({"extra": ""}):
                pending.append(needed.name)
    return seen


def image_layout(root: Path) -> tuple[Path, Path]:
    """(app, site): /app as the Dockerfile fills it, and a site-packages of the closure alone."""
    dockerfile = (IMAGE_DIR / "Dockerfile").read_text()
    # The layout below is what these lines make; if the Dockerfile changes, this must follow it.
    assert "touch bootstrap/__init__.py bootstrap/local/__init__.py" in dockerfile
    assert "COPY *.py bootstrap/local/redshift_data/" in dockerfile
    app = root / "app"
    package = app / "bootstrap" / "local" / "redshift_data"
    package.mkdir(parents=True)
    (app / "bootstrap" / "__init__.py").touch()
    (app / "bootstrap" / "local" / "__init__.py").touch()
    for module in IMAGE_DIR.glob("*.py"):
        (package / module.name).write_bytes(module.read_bytes())
    site = root / "site"
    site.mkdir()
    link_distributions(sorted(requirement_closure()), site)
    return app, site


def entrypoint() -> list[str]:
    match = re.search(r"^ENTRYPOINT (\[.*\])$", (IMAGE_DIR / "Dockerfile").read_text(), re.M)
    assert match, "the Dockerfile has no exec-form ENTRYPOINT"
    return json.loads(match.group(1))


def here(command: list[str], cfg: config.Stack, port: int) -> list[str]:
    """The compose command with this stack's addresses in place of the compose network's."""
    swapped = {
        "--host=0.0.0.0": "--host=127.0.0.1",
        "--port=4569": f"--port={port}",
        "--dsn=postgresql://ecom:${ECOM_PG_PASSWORD:-ecom-local-dev}@postgres:5432/ecom": f"--dsn={cfg.warehouse_dsn}",
        "--s3-endpoint=http://aws:4566": f"--s3-endpoint={cfg.endpoint_url}",
    }
    assert sorted(command) == sorted(swapped), command
    return [swapped[arg] for arg in command]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(client, statement_id: str) -> dict:
    deadline = time.monotonic() + 30
    while (status := client.describe_statement(Id=statement_id))["Status"] not in ("FINISHED", "FAILED", "ABORTED"):
        assert time.monotonic() < deadline, status
        time.sleep(0.02)
    return status


def test_the_compose_image_serves_the_data_api_with_its_own_files_alone(stack_env, tmp_path):
    cfg = stack_env["cfg"]
    app, site = image_layout(tmp_path)
    program, *args = entrypoint()
    assert program == "python" and args[:1] == ["-m"]
    port = _free_port()
    # -I -S: no site-packages, no PYTHONPATH, no script directory; `python -m` in WORKDIR /app puts
    # /app first on the path, then the image's site-packages.
    launcher = (
        f"import runpy, sys; sys.path[:0] = [{str(app)!r}, {str(site)!r}]; sys.argv[1:] = {args[2:]!r} + sys.argv[1:]; "
        f"runpy.run_module({args[1]!r}, run_name='__main__', alter_sys=True)"
    )
    command = [sys.executable, "-I", "-S", "-c", launcher, *here(SERVICE["command"], cfg, port)]
    log = open(tmp_path / "redshift-data.log", "wb")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(command, cwd=app, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp_path / "redshift-data.log").read_text()[-2000:] + shlex.join(command)
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the image's server did not answer /health"
            time.sleep(0.1)
        s3 = aws.client("s3", cfg)
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=BUCKET)
        body = io.StringIO()
        csv.writer(body).writerows([["id", "name"], [1, "WHITE HANGING HEART"], [2, "a, quoted"]])
        s3.put_object(Bucket=BUCKET, Key="copy/part.csv", Body=body.getvalue().encode())
        entries = {"entries": [{"url": f"s3://{BUCKET}/copy/part.csv", "mandatory": True}]}
        s3.put_object(Bucket=BUCKET, Key="copy/part.manifest", Body=json.dumps(entries).encode())
        client = boto3.client(
            "redshift-data",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name=cfg.region,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        batch = client.batch_execute_statement(
            Sqls=[
                "CREATE SCHEMA IF NOT EXISTS compose_test",
                "CREATE TABLE compose_test.copied (id integer, name varchar(40)) DISTSTYLE EVEN SORTKEY (id)",
                f"COPY compose_test.copied FROM 's3://{BUCKET}/copy/part.manifest' IAM_ROLE '{ROLE}' "
                "MANIFEST CSV IGNOREHEADER 1",
            ],
            **TARGET,
        )
        status = _wait(client, batch["Id"])
        assert status["Status"] == "FINISHED", status.get("Error")
        assert status["SubStatements"][2]["ResultRows"] == 2
        select = client.execute_statement(Sql="SELECT id, name FROM compose_test.copied ORDER BY id", **TARGET)
        assert _wait(client, select["Id"])["Status"] == "FINISHED"
        records = client.get_statement_result(Id=select["Id"])["Records"]
        assert records == [
            [{"longValue": 1}, {"stringValue": "WHITE HANGING HEART"}],
            [{"longValue": 2}, {"stringValue": "a, quoted"}],
        ]
    finally:
        server.terminate()
        server.wait(10)
        log.close()
        with psycopg2.connect(cfg.warehouse_dsn) as conn, conn.cursor() as cur:
            cur.execute("DROP SCHEMA IF EXISTS compose_test CASCADE")
