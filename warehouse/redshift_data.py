"""Redshift through the Redshift Data API: boto3 only (no driver in the job's zip), IAM
authentication (no password), no VPC attachment for the job.

`run(statements)` runs the list as one transaction, which is what the load needs (COPY, MERGE,
dimensions and the manifest commit together or not at all): one BatchExecuteStatement for up to
40 statements (the API's limit), otherwise a Data API session of its own in which BEGIN, each
statement and COMMIT are sent one after another (a caller that dies leaves the session to expire,
which rolls the transaction back). `query(sql)` is one ExecuteStatement and returns the rows as
Python values.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from ecom_core import aws, config


class RedshiftError(RuntimeError):
    """A statement failed on Redshift; the message is Redshift's."""


# BatchExecuteStatement takes at most this many statements (botocore's model: Sqls, max 40).
MAX_BATCH_STATEMENTS = 40
# How long a session of `run` outlives its last call. Longer than any pause of ours between two
# statements of a transaction (fetching and screening a file); short, because a transaction left
# open by a caller that died holds its locks (the load manifest's) until the session expires.
SESSION_KEEP_ALIVE_SECONDS = 120


class DataApi:
    def __init__(self, etl: config.Etl | None = None, client=None, *, poll_seconds: float = 0.25,
                 timeout: float = 900, sleep: Callable[[float], None] = time.sleep):
        self.etl = etl or config.etl()
        self.client = client or aws.client("redshift-data")
        self.poll_seconds, self.timeout, self.sleep = poll_seconds, timeout, sleep

    def _target(self) -> dict[str, str]:
        # A provisioned cluster (IAM: temporary credentials for the job's role) or a Serverless workgroup.
        if self.etl.redshift_cluster:
            return {"ClusterIdentifier": self.etl.redshift_cluster, "Database": self.etl.redshift_database}
        return {"WorkgroupName": self.etl.redshift_workgroup, "Database": self.etl.redshift_database}

    def _wait(self, statement_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            status = self.client.describe_statement(Id=statement_id)
            if status["Status"] == "FINISHED":
                return status
            if status["Status"] in ("FAILED", "ABORTED"):
                raise RedshiftError(status.get("Error") or status["Status"])
            if time.monotonic() > deadline:
                self.client.cancel_statement(Id=statement_id)
                raise RedshiftError(f"statement {statement_id} did not finish within {self.timeout} s")
            self.sleep(self.poll_seconds)

    def run(self, statements: list[str]) -> dict[str, Any]:
        """All statements in one transaction. Raises RedshiftError."""
        if len(statements) <= MAX_BATCH_STATEMENTS:
            answer = self.client.batch_execute_statement(Sqls=statements, **self._target())
            return self._wait(answer["Id"])
        first = self.client.execute_statement(Sql="BEGIN", SessionKeepAliveSeconds=SESSION_KEEP_ALIVE_SECONDS,
                                               **self._target())
        self._wait(first["Id"])
        session = first["SessionId"]
        try:
            for sql in statements:
                self._wait(self.client.execute_statement(Sql=sql, SessionId=session)["Id"])
        except BaseException:
            try:
                self._wait(self.client.execute_statement(Sql="ROLLBACK", SessionId=session)["Id"])
            except Exception:  # noqa: BLE001 - the session's expiry rolls it back anyway
                pass
            raise
        return self._wait(self.client.execute_statement(Sql="COMMIT", SessionId=session)["Id"])

    def query(self, sql: str) -> list[list[Any]]:
        answer = self.client.execute_statement(Sql=sql, **self._target())
        status = self._wait(answer["Id"])
        if not status.get("HasResultSet"):
            return []
        rows: list[list[Any]] = []
        kwargs: dict[str, Any] = {"Id": answer["Id"]}
        while True:
            page = self.client.get_statement_result(**kwargs)
            rows += [[_value(field) for field in record] for record in page["Records"]]
            if not page.get("NextToken"):
                return rows
            kwargs["NextToken"] = page["NextToken"]


def _value(field: dict[str, Any]) -> Any:
    """A Data API field ({"stringValue": ...}, {"longValue": ...}, {"isNull": true}) as a Python value."""
    if field.get("isNull"):
        return None
    for kind in ("stringValue", "longValue", "doubleValue", "booleanValue"):
        if kind in field:
            return field[kind]
    return None


def literal(value: Any) -> str:
    """A SQL literal for statements sent in a batch (BatchExecuteStatement takes no parameters).
    Only values we produce reach here (S3 keys, ETags, numbers, role ARNs); quotes are doubled and
    anything outside printable ASCII is refused rather than escaped."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if not (text.isascii() and text.isprintable()) or "\\" in text:
        raise ValueError(f"refusing to inline {text[:60]!r} into SQL")
    return "'" + text.replace("'", "''") + "'"
