"""Test helpers that drive the real stack (no fakes)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from ecom_core import aws, config
from replay.client import Sender, replay
from replay.source import read_rows
from warehouse import db
from warehouse.reconcile import open_ledger, reconcile
from warehouse.status import store_counts, wait_for_drain


def counts(cfg: config.Stack) -> dict:
    return store_counts(cfg)


class InFaultWindow:
    """A command started with an ECOM_FAULTS `sleep=S` pause, returned once it is inside the pause
    (it says so on stderr), so the test acts in the window instead of after a guessed delay.
    `finish()` waits for the command and returns (returncode, its stderr)."""

    def __init__(self, command: list[str], env: dict[str, str], timeout: float = 120):
        import subprocess
        import threading

        from ecom_core.faults import SLEEP_ANNOUNCEMENT

        self.process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        inside = threading.Event()

        def read() -> None:
            for line in self.process.stderr:
                self.lines.append(line)
                if line.startswith(SLEEP_ANNOUNCEMENT):
                    inside.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not inside.wait(timeout):
            self.process.kill()
            raise AssertionError(f"{' '.join(command)} never reached its fault window:\n" + "".join(self.lines)[-800:])

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=30)
        return self.process.returncode, "".join(self.lines)


def replay_file(stack_env: dict, path: Path, rows: int | None = None, **kwargs):
    sender = Sender(stack_env["api_url"], stack_env["api_key"])
    with open_ledger(stack_env["cfg"], path) as ledger:
        result = replay(read_rows(path, rows), sender, ledger=ledger, **kwargs)
    assert wait_for_drain(result.high_water, stack_env["cfg"], timeout=300), "stream consumer did not catch up"
    return result


def read_csv(path: Path) -> pd.DataFrame:
    """The file as pandas reads it, for independent expectations (codes as text, blanks kept)."""
    return pd.read_csv(path, encoding="iso-8859-1", dtype=str, keep_default_na=False)


def dynamo_items(cfg: config.Stack, table: str) -> list[dict]:
    client = aws.client("dynamodb", cfg)
    from boto3.dynamodb.types import TypeDeserializer

    deserialize = TypeDeserializer().deserialize
    return [{k: deserialize(v) for k, v in item.items()} for item in aws.items(client.scan, TableName=table)]


def load_staged(cfg: config.Stack, files: list[tuple[str, bytes]]) -> list[tuple[str, tuple | None]]:
    """Put each (key, CSV body) in the staging bucket and load them as one group, the way the job
    does (warehouse/redshift.py, through the stack's Redshift Data API). Returns the per-file outcomes."""
    from warehouse.redshift import RedshiftWarehouse

    s3 = aws.client("s3", cfg)
    for key, body in files:
        s3.put_object(Bucket=config.resources().staging_bucket, Key=key, Body=body)
    # One warehouse client for the test session: its Data API session carries every group (a new
    # client per call would leave a session behind each time, up to the API's limit).
    warehouse = _warehouses.get(id(cfg))
    if warehouse is None:
        warehouse = _warehouses[id(cfg)] = RedshiftWarehouse(cfg)
    warehouse.ensure_schema()
    return warehouse.load_group([(key, "", lambda body=body: body) for key, body in files])


_warehouses: dict[int, Any] = {}


def warehouse_rows(sql: str, params: tuple = ()) -> list[tuple]:
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def function_zip(files: dict[str, str]) -> bytes:
    """A Lambda deployment package of the given files (name -> source), for test functions."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def assert_exact(stack_env: dict, accepted: int) -> dict:
    """Reconcile exact: `accepted` events, each in every stage, one row each in DynamoDB and the warehouse."""
    result = reconcile(stack_env["cfg"])
    summary = result.as_dict(limit=5)
    assert result.exact, summary
    assert len(result.accepted) == accepted
    for stage in ("dynamodb", "warehouse"):
        assert summary["stages"][stage]["distinct_events"] == accepted
        assert summary["stages"][stage]["rows"] == accepted, stage  # one row each, none twice
    return summary
