"""Redshift through the Redshift Data API: boto3 only (no driver in the job's zip), IAM
authentication (no password), no VPC attachment for the job.

`run(statements)` runs the list as one transaction, which is what the load needs (COPY, MERGE,
dimensions and the manifest commit together or not at all): one BatchExecuteStatement for up to
40 statements (the API's limit), otherwise BEGIN, each statement and COMMIT one after another in
the client's Data API session (a caller that dies leaves the session to expire, which rolls the
transaction back). `query(sql)` is one ExecuteStatement and returns the rows as
Python values.

`connect()` gives the operator's tools (status, reconcile, report, query) a DB-API-like connection
over the same API: a Data API session of its own, so temporary tables and a transaction span
its statements as they would on one database connection; `%s` parameters travel as the API's named
parameters. The same code reads the local stand-in and a real workgroup.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from ecom_core import aws, config


class RedshiftError(RuntimeError):
    """A statement failed on Redshift; the message is Redshift's."""


# The first pause before asking again whether a statement has finished (see DataApi._wait).
FIRST_POLL_SECONDS = 0.01
# BatchExecuteStatement takes at most this many statements (botocore's model: Sqls, max 40).
MAX_BATCH_STATEMENTS = 40
# How long a session of `run` outlives its last call. Longer than any pause of ours between two
# statements of a transaction (its statements are prepared before BEGIN: the pause is one round
# trip); short, because a transaction left open by a caller that died holds its locks (the load
# manifest's, which the next run waits for) until the session expires.
SESSION_KEEP_ALIVE_SECONDS = 30
# How long `run` asks the API to hold each answer until its statements end (the API's
# WaitTimeSeconds, 1-30): a statement that ends by then needs no DescribeStatement, one round trip
# instead of two; a longer one is then polled as before.
WAIT_SECONDS = 20


class DataApi:
    def __init__(
        self,
        etl: config.Etl | None = None,
        client: aws.Client | None = None,
        *,
        cfg: config.Stack | None = None,
        poll_seconds: float = 0.25,
        timeout: float = 900,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.etl = etl or config.etl()
        self.client = client or aws.client("redshift-data", cfg)
        self.poll_seconds, self.timeout, self.sleep = poll_seconds, timeout, sleep
        self.session: str | None = None  # the session long transactions run in (see _begin)

    def _target(self) -> dict[str, str]:
        # A provisioned cluster (IAM: temporary credentials for the job's role) or a Serverless workgroup.
        if self.etl.redshift_cluster:
            return {"ClusterIdentifier": self.etl.redshift_cluster, "Database": self.etl.redshift_database}
        return {"WorkgroupName": self.etl.redshift_workgroup, "Database": self.etl.redshift_database}

    def _wait(self, statement_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        # The pause before the next look is a tenth of the time waited so far (at least 10 ms, at most
        # poll_seconds): most statements of a load take tens of milliseconds, and a long one is
        # seen finished at most ~10 % late. Doubling pauses finished the load's longest statements
        # up to 0.4 s late (1.2 s of a full-file load); on AWS every look is a billed call, which a
        # pause proportional to the wait keeps few.
        started = time.monotonic()
        while True:
            status = self.client.describe_statement(Id=statement_id)
            if status["Status"] == "FINISHED":
                return status
            if status["Status"] in ("FAILED", "ABORTED"):
                raise RedshiftError(status.get("Error") or status["Status"])
            if time.monotonic() > deadline:
                self.client.cancel_statement(Id=statement_id)
                raise RedshiftError(f"statement {statement_id} did not finish within {self.timeout} s")
            self.sleep(min(self.poll_seconds, max(FIRST_POLL_SECONDS, (time.monotonic() - started) / 10)))

    def run(
        self,
        statements: list[str],
        before_commit: Callable[[], None] | None = None,
        *,
        prepare: Sequence[str] = (),
    ) -> dict[str, Any]:
        """All statements in one transaction. Raises RedshiftError. `before_commit` runs with the
        transaction's work done and not committed (a batch: before it is sent, the server runs it
        whole) - the load's fault point.

        `prepare`: statements run first, in the same Data API session, as batches of up to
        MAX_BATCH_STATEMENTS (each a transaction of its own): work on the session's temporary
        tables that needs no lock (the load's COPYs into its staging tables). The transaction then
        runs in that session too: one BatchExecuteStatement when it fits one, else BEGIN, each
        statement, COMMIT."""
        if not prepare and len(statements) <= MAX_BATCH_STATEMENTS:
            if before_commit is not None:
                before_commit()
            answer = self.client.batch_execute_statement(
                Sqls=statements, WaitTimeSeconds=WAIT_SECONDS, **self._target()
            )
            return self._ended(answer)
        first = True
        batch = max(MAX_BATCH_STATEMENTS, 1)  # a test sets the limit to 0 to force the BEGIN path
        for start in range(0, len(prepare), batch):
            self._ended(self._in_session(list(prepare[start : start + batch]), first))
            first = False
        if len(statements) <= MAX_BATCH_STATEMENTS:
            if before_commit is not None:
                before_commit()
            return self._ended(self._in_session(statements, first))
        session = self._begin(first)
        try:
            for sql in statements:
                self._ended(self._in_session([sql], False))
            if before_commit is not None:
                before_commit()
        except BaseException:
            with contextlib.suppress(Exception):  # the session's expiry rolls it back anyway
                self._ended(self._in_session(["ROLLBACK"], False))
            raise
        return self._commit(session)

    def _in_session(self, sqls: list[str], first: bool) -> dict[str, Any]:
        """`sqls` in this client's session (one statement, or a batch: a transaction of its own),
        answered once they end or WAIT_SECONDS pass. `first` (the first call of a `run`): the session
        its last `run` used while it lives (a session is a server connection: one per transaction
        would pile up to the API's limit of active sessions), else a new one. Later calls need the
        same session: its end (expiry, a lost connection) fails the transaction."""
        kwargs: dict[str, Any]
        if len(sqls) == 1:
            call, kwargs = self.client.execute_statement, {"Sql": sqls[0]}
        else:
            call, kwargs = self.client.batch_execute_statement, {"Sqls": sqls}
        if self.session:
            try:
                return call(**kwargs, SessionId=self.session, WaitTimeSeconds=WAIT_SECONDS)
            except ClientError as exc:
                if aws.error_code(exc) not in ("ValidationException", "ResourceNotFoundException"):
                    raise
                if not first:
                    raise RedshiftError(f"the Data API session ended: {exc}") from exc
                self.session = None  # expired (or closed): open another
        answer = call(
            **kwargs,
            SessionKeepAliveSeconds=SESSION_KEEP_ALIVE_SECONDS,
            WaitTimeSeconds=WAIT_SECONDS,
            **self._target(),
        )
        self.session = answer["SessionId"]
        return answer

    def _ended(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The answer of a call sent with WaitTimeSeconds: FINISHED as it is, else waited for
        (DescribeStatement: a statement still running, or the error of one that failed)."""
        if answer.get("Status") == "FINISHED":
            return answer
        return self._wait(answer["Id"])

    def _begin(self, first: bool = True) -> str:
        """BEGIN in this client's session (see _in_session)."""
        self._ended(self._in_session(["BEGIN"], first))
        assert self.session is not None
        return self.session

    def _commit(self, session: str) -> dict[str, Any]:
        return self._ended(self.client.execute_statement(Sql="COMMIT", SessionId=session, WaitTimeSeconds=WAIT_SECONDS))

    def query(self, sql: str) -> list[list[Any]]:
        return [list(row) for row in self.statement(sql).rows]

    def statement(
        self,
        sql: str,
        parameters: list[dict[str, str]] | None = None,
        *,
        session: str | None = None,
        keep_alive: int | None = None,
    ) -> Result:
        """One ExecuteStatement (in `session`, or opening one that lives `keep_alive` seconds), waited
        for; its rows as Python values typed by the result's column metadata."""
        kwargs: dict[str, Any] = {"Sql": sql}
        if parameters:
            kwargs["Parameters"] = parameters
        if session:
            kwargs["SessionId"] = session
        else:
            kwargs.update(self._target())
            if keep_alive:
                kwargs["SessionKeepAliveSeconds"] = keep_alive
        answer = self.client.execute_statement(**kwargs)
        status = self._wait(answer["Id"])
        result = Result(session=answer.get("SessionId") or session, rowcount=int(status.get("ResultRows", -1)))
        if not status.get("HasResultSet"):
            return result
        page_args: dict[str, Any] = {"Id": answer["Id"]}
        while True:
            page = self.client.get_statement_result(**page_args)
            if not result.columns:
                result.columns = [
                    (c.get("name") or c.get("label") or "", c.get("typeName") or "")
                    for c in page.get("ColumnMetadata", [])
                ]
            types = [t for _, t in result.columns]
            result.rows += [
                tuple(_typed(field, types[i] if i < len(types) else "") for i, field in enumerate(record))
                for record in page["Records"]
            ]
            if not page.get("NextToken"):
                return result
            page_args["NextToken"] = page["NextToken"]


class Result:
    def __init__(self, session: str | None = None, rowcount: int = -1):
        self.session, self.rowcount = session, rowcount
        self.columns: list[tuple[str, str]] = []  # (name, Redshift type name)
        self.rows: list[tuple[Any, ...]] = []


# How long a tool's session outlives its last statement: a tool that dies leaves it (and any
# transaction it opened) to expire this soon after.
TOOL_SESSION_SECONDS = 60


class Connection:
    """The operator tools' connection: a Data API session, opened by the first statement."""

    def __init__(self, api: DataApi | None = None):
        self.api = api or DataApi()
        self.session: str | None = None
        self.in_transaction = False

    def cursor(self) -> Cursor:
        return Cursor(self)

    def _run(self, sql: str, parameters: list[dict[str, str]] | None = None) -> Result:
        result = self.api.statement(
            sql, parameters, session=self.session, keep_alive=None if self.session else TOOL_SESSION_SECONDS
        )
        self.session = result.session
        return result

    def begin(self) -> None:
        """An explicit transaction in which every statement sees one snapshot. Redshift runs every
        isolation level it accepts as serializable; the level is named for the local stand-in,
        whose Postgres would otherwise read committed (a snapshot per statement)."""
        self._run("BEGIN ISOLATION LEVEL REPEATABLE READ")
        self.in_transaction = True

    def commit(self) -> None:
        if self.in_transaction:
            self._run("COMMIT")
            self.in_transaction = False

    def rollback(self) -> None:
        if self.in_transaction:
            self._run("ROLLBACK")
            self.in_transaction = False

    def close(self) -> None:
        # A session cannot be closed through the API; it expires TOOL_SESSION_SECONDS after its last
        # statement. An open transaction is rolled back first, so nothing waits for the expiry.
        with contextlib.suppress(RedshiftError):
            self.rollback()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Cursor:
    """What the tools use of a DB-API cursor: execute with %s parameters, fetch, iterate, description."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.description: list[tuple[str, str]] | None = None
        self.rowcount = -1
        self._rows: list[tuple[Any, ...]] = []
        self._next = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        text, parameters = bind(sql, params)
        result = self.connection._run(text, parameters)
        self.description = list(result.columns) if result.columns else None
        self.rowcount, self._rows, self._next = result.rowcount, result.rows, 0

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows, self._next = self._rows[self._next :], len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while (row := self.fetchone()) is not None:
            yield row

    def close(self) -> None:
        self._rows = []

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(cfg: config.Stack | None = None) -> Connection:
    return Connection(DataApi(cfg=cfg))


_PLACEHOLDER = re.compile(r"%(s|%)")


def bind(sql: str, params: Sequence[Any]) -> tuple[str, list[dict[str, str]]]:
    """psycopg2-style `%s` placeholders as the Data API's `:pN` parameters. The API's parameter
    values are non-empty strings, so NULL, numbers, booleans and '' are written as literals."""
    if not params:
        return sql, []
    values = iter(params)
    parameters: list[dict[str, str]] = []

    def one(match: re.Match) -> str:
        if match.group(1) == "%":
            return "%"
        value = next(values)
        if value is None or isinstance(value, (bool, int)) or value == "":
            return literal(value)
        if isinstance(value, (float, Decimal)):
            return repr(value) if isinstance(value, float) else str(value)  # a Decimal keeps every digit
        name = f"p{len(parameters) + 1}"
        parameters.append(
            {"name": name, "value": value.isoformat() if isinstance(value, (date, datetime)) else str(value)}
        )
        return f":{name}"

    text = _PLACEHOLDER.sub(one, sql)
    if next(values, _PLACEHOLDER) is not _PLACEHOLDER:
        raise ValueError("more parameters than %s placeholders")
    return text, parameters


def _value(field: dict[str, Any]) -> Any:
    """A Data API field ({"stringValue": ...}, {"longValue": ...}, {"isNull": true}) as a Python value."""
    if field.get("isNull"):
        return None
    for kind in ("stringValue", "longValue", "doubleValue", "booleanValue"):
        if kind in field:
            return field[kind]
    return None


def _typed(field: dict[str, Any], type_name: str) -> Any:
    """A field as the Python value a database driver gives: the API sends DECIMAL, DATE and
    TIMESTAMP as strings, which the column's type name says how to read."""
    value = _value(field)
    if not isinstance(value, str):
        return value
    if type_name in ("numeric", "decimal"):
        return Decimal(value)
    if type_name in ("timestamp", "timestamptz"):
        return datetime.fromisoformat(value)
    if type_name == "date":
        return date.fromisoformat(value)
    return value


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
