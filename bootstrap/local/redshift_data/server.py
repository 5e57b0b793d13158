"""The HTTP side: AWS JSON 1.1 (`X-Amz-Target: RedshiftData.<Operation>`), as botocore's
`redshift-data` client sends it, answered from the statement store (statements.py).

    python -m bootstrap.local.redshift_data --port 4599 --dsn postgresql://... --s3-endpoint http://127.0.0.1:4566

Requests are not signature-checked (any credentials work, as on the other local emulators).
SQL errors are statements with Status FAILED and an Error, never an HTTP error; malformed requests
are ValidationException (400), unknown ids ResourceNotFoundException (400).

Sessions: SessionKeepAliveSeconds with a target opens one (the answer carries its SessionId);
SessionId runs the call on it (statements.Session, docs/local-redshift-data-api.md "Sessions").
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bootstrap.local.redshift_data.statements import MAX_SESSIONS, ApiError, Engine, Session, Statement, field_value

log = logging.getLogger("redshift_data")

PAGE_ROWS = 10000  # rows per GetStatementResult page (AWS pages at 100 MB)
SETTLE_SECONDS = 0.05  # ExecuteStatement answers after the statement ends, if it ends this soon
MAX_BATCH_STATEMENTS = 40  # AWS: BatchExecuteStatement takes 1 to 40 SQL statements (botocore does not check the 40)
CONTENT_TYPE = b"application/x-amz-json-1.1"
TARGET_PREFIX = "RedshiftData."


def _token(kind: str, statement_id: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([kind, statement_id, offset]).encode()).decode()


def _offset(token: str | None, kind: str, statement_id: str) -> int:
    if not token:
        return 0
    try:
        got_kind, got_id, offset = json.loads(base64.urlsafe_b64decode(token.encode()))
        if got_kind == kind and got_id == statement_id and isinstance(offset, int) and offset >= 0:
            return offset
    except (ValueError, TypeError):
        pass
    raise ApiError("ValidationException", "Invalid NextToken")


def _require(payload: dict, name: str, kind: type = str) -> Any:
    value = payload.get(name)
    if value is None or (kind is str and value == ""):
        raise ApiError("ValidationException", f"{name} is required")
    if not isinstance(value, kind):
        raise ApiError("ValidationException", f"{name} must be a {kind.__name__}")
    return value


def _options(payload: dict) -> None:
    if payload.get("ResultFormat") not in (None, "JSON"):
        raise ApiError("ValidationException", "ResultFormat CSV is not supported by the local Redshift Data API")
    wait = payload.get("WaitTimeSeconds")
    if wait is not None and (not isinstance(wait, int) or isinstance(wait, bool) or not 1 <= wait <= 30):
        raise ApiError("ValidationException", "WaitTimeSeconds must be an integer from 1 to 30")


def _keep_alive(payload: dict) -> int | None:
    value = payload.get("SessionKeepAliveSeconds")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 86400:
        raise ApiError("ValidationException", "SessionKeepAliveSeconds must be an integer from 0 to 86400")
    return value


def _target(payload: dict) -> dict[str, str]:
    """Where the SQL runs: exactly one of ClusterIdentifier / WorkgroupName, and a Database. Every
    target is the one Postgres database of --dsn (the names are echoed, not checked)."""
    cluster, workgroup = payload.get("ClusterIdentifier"), payload.get("WorkgroupName")
    if bool(cluster) == bool(workgroup):
        raise ApiError("ValidationException", "Either ClusterIdentifier or WorkgroupName must be specified, not both")
    target = {"Database": _require(payload, "Database")}
    target["ClusterIdentifier" if cluster else "WorkgroupName"] = cluster or workgroup
    for key in ("DbUser", "SecretArn"):
        if payload.get(key):
            target[key] = payload[key]
    return target


def _session_id(payload: dict) -> str | None:
    """SessionId, refused with a target: the session already has one (AWS answers the same)."""
    session_id = payload.get("SessionId")
    if session_id is None:
        return None
    if not isinstance(session_id, str) or not session_id:
        raise ApiError("ValidationException", "SessionId must be a session's identifier")
    given = [k for k in ("ClusterIdentifier", "WorkgroupName", "Database") if payload.get(k)]
    if given:
        raise ApiError(
            "ValidationException",
            f"SessionId cannot be specified with {', '.join(given)}: the session "
            "already runs on its cluster or workgroup and database",
        )
    return session_id


def _parameters(payload: dict) -> list[dict] | None:
    params = payload.get("Parameters")
    if params is None:
        return None
    if not isinstance(params, list) or not all(
        isinstance(p, dict) and isinstance(p.get("name"), str) and isinstance(p.get("value"), str) for p in params
    ):
        raise ApiError("ValidationException", "Parameters must be a list of {name, value} strings")
    return params


class Api:
    def __init__(
        self,
        engine: Engine,
        *,
        page_rows: int = PAGE_ROWS,
        settle_seconds: float = SETTLE_SECONDS,
        max_batch_statements: int = MAX_BATCH_STATEMENTS,
    ):
        self.engine, self.page_rows, self.settle_seconds = engine, page_rows, settle_seconds
        self.max_batch_statements = max_batch_statements
        self.ops: dict[str, Callable[[dict], Awaitable[dict]]] = {
            "ExecuteStatement": self.execute_statement,
            "BatchExecuteStatement": self.batch_execute_statement,
            "DescribeStatement": self.describe_statement,
            "GetStatementResult": self.get_statement_result,
            "ListStatements": self.list_statements,
            "CancelStatement": self.cancel_statement,
            "ListDatabases": self.list_databases,
            "ListSchemas": self.list_schemas,
            "ListTables": self.list_tables,
            "DescribeTable": self.describe_table,
            "ListSessions": self.list_sessions,
        }

    # -- ASGI
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        status, answer = await self.handle(scope["method"], headers.get("x-amz-target", ""), body)
        data = json.dumps(answer, separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", CONTENT_TYPE),
                    (b"content-length", str(len(data)).encode()),
                    (b"x-amzn-requestid", str(uuid.uuid4()).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def handle(self, method: str, target: str, body: bytes) -> tuple[int, dict]:
        if method == "GET":
            return 200, {"service": "redshift-data (local)", "statements": len(self.engine.statements)}
        try:
            if not target.startswith(TARGET_PREFIX):
                raise ApiError("UnknownOperationException", f"Unknown X-Amz-Target {target!r}")
            op = self.ops.get(target[len(TARGET_PREFIX) :])
            if op is None:
                raise ApiError(
                    "UnknownOperationException",
                    f"Operation {target[len(TARGET_PREFIX) :]} is not supported by the local Redshift Data API",
                )
            try:
                payload = json.loads(body or b"{}")
            except ValueError as exc:
                raise ApiError("SerializationException", "The request body is not JSON") from exc
            if not isinstance(payload, dict):
                raise ApiError("SerializationException", "The request body is not a JSON object")
            return 200, await op(payload)
        except ApiError as err:
            return err.status, {"__type": err.code, "Message": err.message, "message": err.message, **err.fields}
        except Exception as exc:  # a bug: the only 5xx
            log.exception("request %s", target)
            return 500, {"__type": "InternalServerException", "Message": repr(exc)}

    # -- statements
    async def _settle(self, st: Statement, wait: float | None = None) -> None:
        seconds = wait if wait else self.settle_seconds
        if seconds > 0 and st.future is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(st.future)), seconds)

    def _accepted(self, st: Statement, payload: dict) -> dict:
        out: dict[str, Any] = {"Id": st.id, "CreatedAt": st.created, **st.target}
        if st.session_id:
            out["SessionId"] = st.session_id
        if payload.get("WaitTimeSeconds"):
            out.update(
                {"Status": st.status, "RedshiftPid": st.pid, "HasResultSet": any(sub.has_result_set for sub in st.subs)}
            )
        return out

    def _where(self, payload: dict) -> tuple[dict[str, str], Session | None, int | None]:
        """The call's target and session: SessionId (an open session), or a target, and with
        SessionKeepAliveSeconds a new session on it (opened last: after every other check)."""
        _options(payload)
        keep_alive = _keep_alive(payload)
        session_id = _session_id(payload)
        if session_id is not None:
            session = self.engine.session(session_id)
            return session.target, session, keep_alive
        return _target(payload), None, keep_alive

    def _submit(self, payload: dict, sqls: list[str], is_batch: bool, where: tuple) -> Statement:
        target, session, keep_alive = where
        opened = session is None and keep_alive is not None
        if opened:
            session = self.engine.open_session(target, keep_alive)
        try:
            return self.engine.submit(
                sqls,
                is_batch=is_batch,
                target=target,
                name=payload.get("StatementName"),
                parameters=_parameters(payload),
                session=session,
                keep_alive=keep_alive,
            )
        except ApiError:
            if opened:
                session.closed, session.closed_at = "its first statement was refused", time.time()
            raise

    async def execute_statement(self, payload: dict) -> dict:
        sql = _require(payload, "Sql")
        where = self._where(payload)
        st = self._submit(payload, [sql], False, where)
        await self._settle(st, payload.get("WaitTimeSeconds"))
        return self._accepted(st, payload)

    async def batch_execute_statement(self, payload: dict) -> dict:
        sqls = _require(payload, "Sqls", list)
        if not sqls or not all(isinstance(s, str) and s for s in sqls):
            raise ApiError("ValidationException", "Sqls must hold 1 or more SQL statements")
        if len(sqls) > self.max_batch_statements:
            raise ApiError(
                "ValidationException",
                f"1 validation error detected: Value at 'sqls' failed to satisfy "
                f"constraint: Member must have length less than or equal to "
                f"{self.max_batch_statements} (got {len(sqls)} statements)",
            )
        if payload.get("ExecutionMode") not in (None, "TRANSACTION"):
            raise ApiError(
                "ValidationException",
                "ExecutionMode AUTO_COMMIT is not supported by the local Redshift Data API: a batch is one transaction",
            )
        where = self._where(payload)
        st = self._submit(payload, sqls, True, where)
        await self._settle(st, payload.get("WaitTimeSeconds"))
        return self._accepted(st, payload)

    async def describe_statement(self, payload: dict) -> dict:
        st, sub = self.engine.get(_require(payload, "Id"))
        wait = payload.get("WaitTimeSeconds")
        if wait and not st.done.is_set() and st.future is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(st.future)), float(wait))
        if sub is not None:
            return sub.describe()
        return st.describe()

    async def get_statement_result(self, payload: dict) -> dict:
        statement_id = _require(payload, "Id")
        st, sub = self.engine.get(statement_id)
        if sub is None:
            if st.is_batch:
                raise ApiError(
                    "ValidationException",
                    "Use the Id of a sub-statement (<id>:<n>) for the results of a BatchExecuteStatement",
                )
            sub = st.subs[0]
        if sub.status != "FINISHED":
            if sub.status == "FAILED":
                raise ApiError("ValidationException", f"Query failed: {sub.error}")
            raise ApiError(
                "ValidationException",
                f"Query has not finished (Status {sub.status}). Check the status with DescribeStatement.",
            )
        if not sub.has_result_set or sub.rows is None:
            raise ApiError(
                "ValidationException", "Query does not have result. Please check query status with DescribeStatement."
            )
        offset = _offset(payload.get("NextToken"), "result", statement_id)
        rows = sub.rows[offset : offset + self.page_rows]
        records = await asyncio.to_thread(lambda: [[field_value(v) for v in row] for row in rows])
        out: dict[str, Any] = {"Records": records, "ColumnMetadata": sub.columns, "TotalNumRows": len(sub.rows)}
        if offset + self.page_rows < len(sub.rows):
            out["NextToken"] = _token("result", statement_id, offset + self.page_rows)
        return out

    async def list_statements(self, payload: dict) -> dict:
        status = payload.get("Status") or "ALL"
        name = payload.get("StatementName")
        limit = payload.get("MaxResults") or 100
        if not isinstance(limit, int) or not 0 <= limit <= 100:
            raise ApiError("ValidationException", "MaxResults must be 0 to 100")
        limit = limit or 100
        chosen = [
            st
            for st in reversed(self.engine.all())
            if (status == "ALL" or st.status == status) and (not name or (st.name or "").startswith(name))
        ]
        offset = _offset(payload.get("NextToken"), "list", "statements")
        out: dict[str, Any] = {"Statements": [st.summary() for st in chosen[offset : offset + limit]]}
        if offset + limit < len(chosen):
            out["NextToken"] = _token("list", "statements", offset + limit)
        return out

    async def list_sessions(self, payload: dict) -> dict:
        status, session_id = payload.get("Status"), payload.get("SessionId")
        if status not in (None, "AVAILABLE", "BUSY", "CLOSED"):
            raise ApiError("ValidationException", "Status must be AVAILABLE, BUSY or CLOSED")
        if session_id and any(payload.get(k) for k in ("Status", "ClusterIdentifier", "WorkgroupName", "Database")):
            raise ApiError(
                "ValidationException",
                "SessionId cannot be specified with Status, ClusterIdentifier, WorkgroupName or Database",
            )
        if payload.get("ClusterIdentifier") and payload.get("WorkgroupName"):
            raise ApiError(
                "ValidationException", "Either ClusterIdentifier or WorkgroupName can be specified, not both"
            )
        limit = payload.get("MaxResults") or 100
        if not isinstance(limit, int) or not 0 <= limit <= 100:
            raise ApiError("ValidationException", "MaxResults must be 0 to 100")
        sessions = await asyncio.to_thread(self.engine.list_sessions)
        wanted = (status,) if status else ("AVAILABLE", "BUSY") if not session_id else ("AVAILABLE", "BUSY", "CLOSED")
        chosen = [
            s.data()
            for s in reversed(sessions)
            if (not session_id or s.id == session_id)
            and s.status() in wanted
            and all(
                not payload.get(k) or s.target.get(k) == payload[k]
                for k in ("ClusterIdentifier", "WorkgroupName", "Database")
            )
        ]
        offset = _offset(payload.get("NextToken"), "list", "sessions")
        out: dict[str, Any] = {"Sessions": chosen[offset : offset + limit]}
        if offset + limit < len(chosen):
            out["NextToken"] = _token("list", "sessions", offset + limit)
        return out

    async def cancel_statement(self, payload: dict) -> dict:
        st, _ = self.engine.get(_require(payload, "Id"))
        return {"Status": self.engine.cancel(st)}

    # -- metadata
    def _page(self, payload: dict, kind: str, items: list, key: str) -> dict:
        limit = payload.get("MaxResults") or 1000
        offset = _offset(payload.get("NextToken"), kind, kind)
        out: dict[str, Any] = {key: items[offset : offset + limit]}
        if offset + limit < len(items):
            out["NextToken"] = _token(kind, kind, offset + limit)
        return out

    async def _meta(self, sql: str, params: tuple = ()) -> list[tuple]:
        return await asyncio.to_thread(self.engine.metadata_query, sql, params)

    def _meta_target(self, payload: dict) -> None:
        if bool(payload.get("ClusterIdentifier")) == bool(payload.get("WorkgroupName")):
            raise ApiError(
                "ValidationException", "Either ClusterIdentifier or WorkgroupName must be specified, not both"
            )

    async def list_databases(self, payload: dict) -> dict:
        self._meta_target(payload)
        rows = await self._meta("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname")
        return self._page(payload, "databases", [r[0] for r in rows], "Databases")

    async def list_schemas(self, payload: dict) -> dict:
        self._meta_target(payload)
        _require(payload, "Database")
        rows = await self._meta(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s "
            "AND nspname NOT LIKE 'pg\\_temp\\_%%' "
            "AND nspname NOT LIKE 'pg\\_toast%%' ORDER BY nspname",
            (payload.get("SchemaPattern") or "%",),
        )
        return self._page(payload, "schemas", [r[0] for r in rows], "Schemas")

    async def list_tables(self, payload: dict) -> dict:
        self._meta_target(payload)
        _require(payload, "Database")
        rows = await self._meta(
            "SELECT c.relname, n.nspname, CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' "
            "ELSE 'TABLE' END FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p', 'v', 'm') AND n.nspname LIKE %s AND c.relname LIKE %s "
            "AND n.nspname NOT LIKE 'pg\\_temp\\_%%' AND n.nspname NOT LIKE 'pg\\_toast%%' "
            "ORDER BY n.nspname, c.relname",
            (payload.get("SchemaPattern") or "%", payload.get("TablePattern") or "%"),
        )
        return self._page(payload, "tables", [{"name": r[0], "schema": r[1], "type": r[2]} for r in rows], "Tables")

    async def describe_table(self, payload: dict) -> dict:
        self._meta_target(payload)
        _require(payload, "Database")
        schema, table = payload.get("Schema") or "public", payload.get("Table")
        rows = await self._meta(
            "SELECT table_name, column_name, udt_name, is_nullable, character_maximum_length, numeric_precision, "
            "numeric_scale, datetime_precision, column_default FROM information_schema.columns "
            "WHERE table_schema = %s AND (%s IS NULL OR table_name = %s) ORDER BY table_name, ordinal_position",
            (schema, table, table),
        )
        if table and not rows:
            raise ApiError("ValidationException", f"Table {schema}.{table} does not exist")
        columns = []
        for name_, column, typ, nullable, char_len, num_prec, num_scale, dt_prec, default in rows:
            columns.append(
                {
                    "name": column,
                    "label": column,
                    "typeName": typ,
                    "nullable": 1 if nullable == "YES" else 0,
                    "length": char_len or 0,
                    "precision": char_len or num_prec or 0,
                    "scale": num_scale if num_scale is not None else (dt_prec or 0),
                    "isCaseSensitive": typ in ("varchar", "bpchar", "text"),
                    "isCurrency": False,
                    "isSigned": typ in ("int2", "int4", "int8", "numeric", "float4", "float8"),
                    "schemaName": schema,
                    "tableName": name_,
                    **({"columnDefault": default} if default else {}),
                }
            )
        out = self._page(payload, f"describe-{schema}-{table}", columns, "ColumnList")
        out["TableName"] = table or ""
        return out


def make_app(
    dsn: str,
    s3_endpoint: str,
    *,
    workers: int = 4,
    page_rows: int = PAGE_ROWS,
    settle_seconds: float = SETTLE_SECONDS,
    region: str = "us-east-1",
    max_batch_statements: int = MAX_BATCH_STATEMENTS,
    max_sessions: int = MAX_SESSIONS,
) -> Api:
    import boto3
    from botocore.config import Config

    def s3():
        return boto3.session.Session().client(
            "s3",
            endpoint_url=s3_endpoint,
            region_name=region,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
        )

    return Api(
        Engine(dsn, s3, workers=workers, max_sessions=max_sessions),
        page_rows=page_rows,
        settle_seconds=settle_seconds,
        max_batch_statements=max_batch_statements,
    )


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m bootstrap.local.redshift_data", description="A local Redshift Data API backed by Postgres."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--dsn", required=True, help="the Postgres database standing in for Redshift")
    parser.add_argument("--s3-endpoint", required=True, help="where COPY reads s3:// sources (credentials test/test)")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--workers", type=int, default=4, help="statements running at once")
    parser.add_argument("--page-rows", type=int, default=PAGE_ROWS, help="rows per GetStatementResult page")
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=SETTLE_SECONDS * 1000,
        help="ExecuteStatement waits this long for the statement to end before answering",
    )
    parser.add_argument(
        "--max-batch-statements",
        type=int,
        default=MAX_BATCH_STATEMENTS,
        help="statements a BatchExecuteStatement may hold (AWS: 40; raise it only to run loads "
        "that would be refused on AWS)",
    )
    parser.add_argument(
        "--max-sessions",
        type=int,
        default=MAX_SESSIONS,
        help="Data API sessions open at once, one Postgres connection each (AWS: 500)",
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = make_app(
        args.dsn,
        args.s3_endpoint,
        workers=args.workers,
        page_rows=args.page_rows,
        settle_seconds=args.settle_ms / 1000,
        region=args.region,
        max_batch_statements=args.max_batch_statements,
        max_sessions=args.max_sessions,
    )
    started = time.time()
    log.info("local redshift-data on %s:%s (ready in %.2f s)", args.host, args.port, time.time() - started)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
