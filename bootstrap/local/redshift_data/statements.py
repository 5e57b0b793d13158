"""Statements: the store the Data API answers from, and their execution on Postgres in worker threads.

Every ExecuteStatement / BatchExecuteStatement becomes a `Statement` (one `Sub` per SQL; a single
statement has one), queued on a small thread pool. A worker takes a connection of its own (one per
thread, kept), runs the statement (autocommit) or the batch (one transaction: the first failure rolls
back everything and the remaining statements are ABORTED), keeps the rows for GetStatementResult,
and ends with DISCARD ALL: like a Data API call on Redshift, each call is a session of its own (its
temporary tables and SET values do not outlive it).

A Data API *session* (SessionKeepAliveSeconds / SessionId) is one Postgres connection of its own,
kept open between calls: its statements run one at a time, in call order (a call while the previous
one still runs is refused, as AWS does: no queueing), autocommit unless the caller sent BEGIN, so
temporary tables, SETs and an open transaction outlive each call. A session idle longer than its
keep-alive is closed by the reaper thread: ROLLBACK of whatever is open, then the connection closed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extensions

from bootstrap.local.redshift_data.copy import CopyFailed, run_copy
from bootstrap.local.redshift_data.translate import Unsupported, bind_parameters, translate

log = logging.getLogger("redshift_data")

RESULT_TTL_SECONDS = 24 * 3600  # the Data API keeps results for 24 hours
MAX_STATEMENTS = 20000  # and we keep at most this many statements (oldest dropped first)
# Types whose text form Redshift returns as stringValue: taken from Postgres as text, unparsed.
TEXT_OIDS = (1082, 1083, 1114, 1184, 1266, 1186, 1700, 114, 3802, 2950, 869, 650, 774)
_AS_TEXT = psycopg2.extensions.new_type(TEXT_OIDS, "REDSHIFT_TEXT", lambda value, cur: value)
SIGNED = {"int2", "int4", "int8", "numeric", "float4", "float8"}
CHARACTER = {"varchar", "bpchar", "text", "char", "name"}
PRECISION = {
    "int2": 5,
    "int4": 10,
    "int8": 19,
    "float4": 8,
    "float8": 17,
    "bool": 1,
    "date": 13,
    "timestamp": 29,
    "timestamptz": 35,
    "time": 15,
    "timetz": 21,
}
SCALE = {"float4": 8, "float8": 17, "timestamp": 6, "timestamptz": 6, "time": 6, "timetz": 6}
LOAD_ERRORS = "local_redshift.stl_load_errors"
TERMINAL = ("FINISHED", "FAILED", "ABORTED")
SESSION_MAX_SECONDS = 24 * 3600  # AWS: a session is closed after 24 hours, a statement running in it terminated
SESSION_REAP_SECONDS = 0.2  # how often idle sessions are checked against their keep-alive
MAX_SESSIONS = 50  # open sessions at once (AWS: 500 per cluster/workgroup; each is a Postgres connection)
SESSIONS_KEPT = 5000  # closed sessions remembered (ListSessions, the error for a closed SessionId)


class ApiError(Exception):
    """An error answer of the API (HTTP 400 unless said otherwise)."""

    def __init__(self, code: str, message: str, status: int = 400, **fields: Any):
        super().__init__(message)
        self.code, self.message, self.status, self.fields = code, message, status, fields


def not_found(statement_id: str) -> ApiError:
    return ApiError("ResourceNotFoundException", "Query does not exist.", ResourceId=statement_id)


@dataclass
class Sub:
    id: str
    sql: str
    query_id: int
    created: float
    status: str = "SUBMITTED"
    error: str | None = None
    updated: float = 0.0
    duration_ns: int = 0
    result_rows: int = -1
    result_size: int = 0
    has_result_set: bool = False
    columns: list[dict] | None = None
    rows: list[tuple] | None = None

    def describe(self) -> dict[str, Any]:
        out = {
            "Id": self.id,
            "Status": self.status,
            "CreatedAt": self.created,
            "UpdatedAt": self.updated or self.created,
            "QueryString": self.sql,
            "Duration": self.duration_ns,
            "ResultRows": self.result_rows,
            "ResultSize": self.result_size,
            "HasResultSet": self.has_result_set,
            "RedshiftQueryId": self.query_id,
        }
        if self.error:
            out["Error"] = self.error
        return out


@dataclass
class Statement:
    id: str
    subs: list[Sub]
    is_batch: bool
    created: float
    target: dict[str, str]  # Database, ClusterIdentifier or WorkgroupName, DbUser, SecretArn
    name: str | None = None
    parameters: list[dict] | None = None
    status: str = "SUBMITTED"
    error: str | None = None
    updated: float = 0.0
    pid: int = 0
    conn: Any = None
    cancel_requested: bool = False
    future: Future | None = None
    done: threading.Event = field(default_factory=threading.Event)
    session_id: str | None = None

    def set(self, status: str) -> None:
        self.status, self.updated = status, time.time()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Id": self.id,
            "Status": self.status,
            "CreatedAt": self.created,
            "UpdatedAt": self.updated or self.created,
            "RedshiftPid": self.pid,
            "ResultFormat": "JSON",
            **self.target,
        }
        if self.error:
            out["Error"] = self.error
        if self.parameters:
            out["QueryParameters"] = self.parameters
        if self.session_id:
            out["SessionId"] = self.session_id
        if self.is_batch:
            out["ExecutionMode"] = "TRANSACTION"
            out["QueryString"] = ";\n".join(s.sql for s in self.subs)
            out["SubStatements"] = [s.describe() for s in self.subs]
            out["HasResultSet"] = any(s.has_result_set for s in self.subs)
            out["Duration"] = sum(s.duration_ns for s in self.subs)
            counted = [s.result_rows for s in self.subs if s.result_rows >= 0]
            out["ResultRows"] = sum(counted) if counted else -1
            out["ResultSize"] = sum(s.result_size for s in self.subs)
        else:
            sub = self.subs[0].describe()
            for key in ("QueryString", "Duration", "ResultRows", "ResultSize", "HasResultSet", "RedshiftQueryId"):
                out[key] = sub[key]
        return out

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Id": self.id,
            "Status": self.status,
            "CreatedAt": self.created,
            "UpdatedAt": self.updated or self.created,
            "IsBatchStatement": self.is_batch,
            "ResultFormat": "JSON",
        }
        if self.is_batch:
            out["QueryStrings"] = [s.sql for s in self.subs]
        else:
            out["QueryString"] = self.subs[0].sql
        if self.name:
            out["StatementName"] = self.name
        if self.parameters:
            out["QueryParameters"] = self.parameters
        if self.target.get("SecretArn"):
            out["SecretArn"] = self.target["SecretArn"]
        if self.session_id:
            out["SessionId"] = self.session_id
        return out


@dataclass
class Session:
    """A Data API session: one Postgres connection kept between calls."""

    id: str
    target: dict[str, str]
    keep_alive: int
    created: float
    updated: float = 0.0
    conn: Any = None
    current: Statement | None = None  # the last statement submitted (running, or ended)
    closed: str | None = None  # why it was closed (None while open)
    closed_at: float = 0.0
    run_lock: threading.Lock = field(default_factory=threading.Lock)  # held while a statement runs on conn
    state_lock: threading.Lock = field(default_factory=threading.Lock)  # guards current / closed / keep_alive

    def busy(self) -> bool:
        return self.current is not None and self.current.status not in TERMINAL

    def idle_since(self) -> float:
        if self.current is None:
            return self.created
        return self.current.updated or self.current.created

    def ttl(self) -> float:
        return min(self.idle_since() + self.keep_alive, self.created + SESSION_MAX_SECONDS)

    def status(self) -> str:
        return "CLOSED" if self.closed else "BUSY" if self.busy() else "AVAILABLE"

    def open_transaction(self) -> bool:
        conn = self.conn
        return (
            conn is not None
            and not conn.closed
            and conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE
        )

    def data(self) -> dict[str, Any]:
        """SessionData, as ListSessions answers it."""
        out: dict[str, Any] = {
            "SessionId": self.id,
            "Status": self.status(),
            "CreatedAt": self.created,
            "UpdatedAt": self.closed_at or self.updated or self.created,
            "SessionAliveSeconds": self.keep_alive,
            **{k: v for k, v in self.target.items() if k != "SecretArn"},
        }
        if not self.closed:
            out["SessionTtl"] = self.ttl()
        if self.busy():
            out["CurrentStatementId"] = self.current.id
        return out


def field_value(value: Any) -> dict[str, Any]:
    """A value as the Data API's Field (JSON result format)."""
    if value is None:
        return {"isNull": True}
    if isinstance(value, bool):
        return {"booleanValue": value}
    if isinstance(value, int):
        return {"longValue": value}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, (bytes, memoryview)):
        return {"stringValue": bytes(value).hex()}
    return {"stringValue": str(value)}


class Engine:
    def __init__(
        self,
        dsn: str,
        s3_factory: Callable[[], Any],
        *,
        workers: int = 4,
        max_sessions: int = MAX_SESSIONS,
        reap_seconds: float = SESSION_REAP_SECONDS,
    ):
        self.dsn = dsn
        self.s3_factory = s3_factory
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="redshift-data")
        # Session statements: at most one running per session (a busy session refuses the next call),
        # so this pool only bounds how many sessions run a statement at the same time.
        self.max_sessions = max_sessions
        self.session_pool = ThreadPoolExecutor(max(max_sessions, 1), thread_name_prefix="redshift-data-session")
        self.local = threading.local()
        self.lock = threading.Lock()
        self.statements: OrderedDict[str, Statement] = OrderedDict()
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.query_ids = itertools.count(1000)
        self.type_names: dict[int, str] = {}
        self.meta_lock = threading.Lock()
        self.meta_conn = None
        self._load_type_names()
        self.stopping = threading.Event()
        self.reaper = threading.Thread(
            target=self._reap_loop, args=(reap_seconds,), name="redshift-data-reaper", daemon=True
        )
        self.reaper.start()

    # -- connections
    def connect(self):
        # jit=off: Postgres' JIT compiled every statement of a load over a few hundred thousand rows
        # (its cost threshold) afresh, 50-300 ms each: 2.5 s of an 11.3 s full-file load, more than
        # it saved. It changes how fast a plan runs, never what it returns.
        conn = psycopg2.connect(
            self.dsn,
            application_name="local-redshift-data",
            options="-c TimeZone=UTC -c DateStyle=ISO,MDY -c jit=off",
        )
        psycopg2.extensions.register_type(_AS_TEXT, conn)
        conn.autocommit = True
        return conn

    def _thread_conn(self):
        conn = getattr(self.local, "conn", None)
        if conn is None or conn.closed:
            conn = self.local.conn = self.connect()
        return conn

    def _s3(self):
        s3 = getattr(self.local, "s3", None)
        if s3 is None:
            s3 = self.local.s3 = self.s3_factory()
        return s3

    def _load_type_names(self) -> None:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT oid, typname FROM pg_type")
                self.type_names = {int(oid): name for oid, name in cur.fetchall()}
                cur.execute("CREATE SCHEMA IF NOT EXISTS local_redshift")
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {LOAD_ERRORS} (userid integer, slice integer, tbl integer, "
                    "starttime timestamp, session integer, query integer, filename varchar(256), "
                    "line_number bigint, colname varchar(127), type varchar(10), col_length varchar(10), "
                    "position integer, raw_line varchar(1024), raw_field_value varchar(1024), "
                    "err_code integer, err_reason varchar(100), is_partial integer, start_offset bigint)"
                )
        finally:
            conn.close()

    def metadata_query(self, sql: str, params: tuple = (), *, fetch: bool = True) -> list[tuple]:
        with self.meta_lock:
            for attempt in (1, 2):
                try:
                    if self.meta_conn is None or self.meta_conn.closed:
                        self.meta_conn = self.connect()
                    with self.meta_conn.cursor() as cur:
                        cur.execute(sql, params)
                        return cur.fetchall() if fetch else []
                except psycopg2.OperationalError as exc:
                    if attempt == 2:
                        raise ApiError("DatabaseConnectionException", "Database connection failed", status=500) from exc
                    self.meta_conn = None
        return []

    # -- sessions
    def open_session(self, target: dict[str, str], keep_alive: int) -> Session:
        now = time.time()
        with self.lock:
            if sum(1 for s in self.sessions.values() if not s.closed) >= self.max_sessions:
                raise ApiError(
                    "ActiveSessionsExceededException",
                    f"The maximum number of active sessions ({self.max_sessions}) is reached: wait for "
                    "one to expire, or run without SessionKeepAliveSeconds",
                )
            while len(self.sessions) >= SESSIONS_KEPT:
                oldest = next((s for s in self.sessions.values() if s.closed), None)
                if oldest is None:
                    break
                del self.sessions[oldest.id]
            session = Session(str(uuid.uuid4()), dict(target), keep_alive, now, now)
            self.sessions[session.id] = session
        return session

    def session(self, session_id: str) -> Session:
        """An open session, or ResourceNotFoundException (never existed) / ValidationException (closed)."""
        with self.lock:
            session = self.sessions.get(session_id)
        if session is None:
            raise ApiError("ResourceNotFoundException", f"Session {session_id} does not exist.", ResourceId=session_id)
        self._expire(session, time.time())
        if session.closed:
            raise ApiError(
                "ValidationException",
                f"Session {session_id} is closed: {session.closed}. Start a new "
                "session (SessionKeepAliveSeconds without SessionId).",
            )
        return session

    def list_sessions(self) -> list[Session]:
        now = time.time()
        with self.lock:
            sessions = list(self.sessions.values())
        for session in sessions:
            self._expire(session, now)
        return sessions

    def _expire(self, session: Session, now: float) -> None:
        """Close the session if it outlived its keep-alive (idle) or 24 hours (even busy)."""
        with session.state_lock:
            if session.closed:
                return
            if now >= session.created + SESSION_MAX_SECONDS:
                session.closed = "it reached the 24-hour limit of a session"
            elif not session.busy() and now >= session.ttl():
                session.closed = (
                    f"it was idle longer than its SessionKeepAliveSeconds ({session.keep_alive} s); "
                    "its open transaction, if any, was rolled back"
                )
            else:
                return
            session.closed_at = now
            running = session.current if session.busy() else None
        if running is not None:
            with contextlib.suppress(ApiError):
                self.cancel(running)
        log.info("session %s closed: %s", session.id, session.closed)
        self.session_pool.submit(self._close_conn, session)

    def _close_conn(self, session: Session) -> None:
        with session.run_lock:  # after the statement running on it, if any
            conn, session.conn = session.conn, None
            if conn is None or conn.closed:
                return
            try:
                if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    with conn.cursor() as cur:
                        cur.execute("ROLLBACK")
            except psycopg2.Error:
                pass
            finally:
                conn.close()

    def _reap_loop(self, every: float) -> None:
        while not self.stopping.wait(every):
            try:
                self.list_sessions()
            except Exception:  # never let the reaper die
                log.exception("session reaper")

    # -- the store
    def submit(
        self,
        sqls: list[str],
        *,
        is_batch: bool,
        target: dict[str, str],
        name: str | None,
        parameters: list[dict] | None,
        session: Session | None = None,
        keep_alive: int | None = None,
    ) -> Statement:
        now = time.time()
        sid = str(uuid.uuid4())
        subs = [
            Sub(f"{sid}:{n}" if is_batch else sid, sql, next(self.query_ids), now)
            for n, sql in enumerate(sqls, start=1)
        ]
        st = Statement(
            sid, subs, is_batch, now, target, name, parameters or None, session_id=session.id if session else None
        )
        if session is not None:
            with session.state_lock:
                if session.closed:
                    raise ApiError("ValidationException", f"Session {session.id} is closed: {session.closed}.")
                if session.busy():
                    raise ApiError(
                        "ValidationException",
                        f"Session {session.id} is busy: statement {session.current.id} is still running "
                        "(a session runs one statement at a time; wait for it with DescribeStatement)",
                    )
                if is_batch and session.open_transaction():
                    raise ApiError(
                        "ValidationException",
                        f"Session {session.id} has an open transaction (BEGIN without COMMIT or ROLLBACK): "
                        "BatchExecuteStatement runs as a transaction of its own. End the transaction "
                        "first, or send the statements with ExecuteStatement.",
                    )
                if keep_alive is not None:
                    session.keep_alive = keep_alive
                session.current, session.updated = st, now
        with self.lock:
            self._evict(now)
            self.statements[sid] = st
        if session is not None:
            st.future = self.session_pool.submit(self._run_in_session, st, session)
        else:
            st.future = self.pool.submit(self._run, st)
        return st

    def _evict(self, now: float) -> None:
        while self.statements:
            oldest = next(iter(self.statements.values()))
            if len(self.statements) < MAX_STATEMENTS and oldest.created > now - RESULT_TTL_SECONDS:
                return
            if not oldest.done.is_set():
                return
            self.statements.popitem(last=False)

    def get(self, statement_id: str) -> tuple[Statement, Sub | None]:
        """The statement, and the sub-statement when the id names one ("<id>:<n>")."""
        base, _, number = statement_id.partition(":")
        with self.lock:
            st = self.statements.get(base)
        if st is None:
            raise not_found(statement_id)
        if not number:
            return st, None
        if not st.is_batch or not number.isdigit() or not 1 <= int(number) <= len(st.subs):
            raise not_found(statement_id)
        return st, st.subs[int(number) - 1]

    def all(self) -> list[Statement]:
        with self.lock:
            return list(self.statements.values())

    def cancel(self, st: Statement) -> bool:
        if st.status in ("FINISHED", "FAILED", "ABORTED"):
            raise ApiError(
                "ValidationException", f"Could not cancel a query that is already in {st.status} state with ID: {st.id}"
            )
        st.cancel_requested = True
        conn = st.conn
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.cancel()
        return True

    # -- execution (worker threads)
    def _run_in_session(self, st: Statement, session: Session) -> None:
        with session.run_lock:
            try:
                if st.cancel_requested or session.closed:
                    self._abort_rest(st, 0, "Query cancelled on user's request")
                    st.set("ABORTED")
                    return
                st.set("PICKED")
                if session.conn is None:
                    try:
                        session.conn = self.connect()
                    except psycopg2.Error as exc:
                        st.error = f"ERROR: could not connect to the database: {str(exc).strip()}"
                        self._abort_rest(st, 0, st.error, status="FAILED")
                        self._lost(session, "its connection to the database could not be opened")
                        st.set("FAILED")
                        return
                conn = session.conn
                st.pid = conn.get_backend_pid()
                st.conn = conn
                st.set("STARTED")
                conn.autocommit = not st.is_batch
                try:
                    self._run_subs(st, conn)
                finally:
                    st.conn = None
                    if not conn.closed:
                        try:
                            if not conn.autocommit:
                                conn.rollback()  # nothing left after a batch's commit; its rollback otherwise
                                conn.autocommit = True
                        except psycopg2.Error:
                            conn.close()
                    if conn.closed:
                        self._lost(session, "its connection to the database was lost")
            except Exception as exc:  # a bug here must still end the statement
                log.exception("statement %s", st.id)
                st.error = f"ERROR: internal error in the local Redshift Data API: {exc!r}"
                st.set("FAILED")
            finally:
                st.done.set()

    def _lost(self, session: Session, why: str) -> None:
        with session.state_lock:
            if not session.closed:
                session.closed, session.closed_at = why, time.time()
        conn, session.conn = session.conn, None
        if conn is not None and not conn.closed:
            conn.close()

    def _run(self, st: Statement) -> None:
        try:
            if st.cancel_requested:
                self._abort_rest(st, 0, "Query cancelled on user's request")
                st.set("ABORTED")
                return
            st.set("PICKED")
            try:
                conn = self._thread_conn()
            except psycopg2.Error as exc:
                st.error = f"ERROR: could not connect to the database: {str(exc).strip()}"
                self._abort_rest(st, 0, st.error, status="FAILED")
                st.set("FAILED")
                return
            st.pid = conn.get_backend_pid()
            st.conn = conn
            st.set("STARTED")
            conn.autocommit = not st.is_batch
            try:
                self._run_subs(st, conn)
            finally:
                st.conn = None
                self._reset(conn)
        except Exception as exc:  # a bug here must still end the statement
            log.exception("statement %s", st.id)
            st.error = f"ERROR: internal error in the local Redshift Data API: {exc!r}"
            st.set("FAILED")
        finally:
            st.done.set()

    def _run_subs(self, st: Statement, conn) -> None:
        params = {p["name"]: p["value"] for p in (st.parameters or [])}
        with conn.cursor() as cur:
            for n, sub in enumerate(st.subs):
                sub.status, sub.updated = "STARTED", time.time()
                started = time.perf_counter_ns()
                load_error = None
                try:
                    self._execute(cur, sub, params)
                except Exception as exc:
                    failed_status, message = "FAILED", _error_text(exc)
                    if isinstance(exc, psycopg2.extensions.QueryCanceledError) and st.cancel_requested:
                        failed_status, message = "ABORTED", f"Query (pid {st.pid}) cancelled on user's request"
                    if isinstance(exc, CopyFailed):
                        load_error = exc.load_error
                    if not isinstance(exc, (psycopg2.Error, Unsupported, CopyFailed)):
                        log.exception("statement %s", sub.id)
                    sub.duration_ns = time.perf_counter_ns() - started
                    sub.status, sub.error, sub.updated = failed_status, message, time.time()
                    sub.rows = None
                    if not conn.autocommit:
                        conn.rollback()
                    elif (
                        not conn.closed
                        and conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
                    ):
                        _abort_transaction(cur)  # in a session's BEGIN block: any error aborts it, as on Redshift
                    if load_error:
                        self._record_load_error(st, sub, load_error)
                    self._abort_rest(st, n + 1, None)
                    st.error = message
                    st.set(failed_status)
                    return
                sub.duration_ns = time.perf_counter_ns() - started
                sub.status, sub.updated = "FINISHED", time.time()
            if not conn.autocommit:
                conn.commit()
        st.set("FINISHED")

    def _abort_rest(self, st: Statement, start: int, error: str | None, status: str = "ABORTED") -> None:
        for sub in st.subs[start:]:
            sub.status, sub.updated = status, time.time()
            if error:
                sub.error = error

    def _execute(self, cur, sub: Sub, params: dict[str, str]) -> None:
        t = translate(sub.sql)
        if t.kind == "noop":
            sub.result_rows = 0
            return
        if t.kind == "copy":
            sub.result_rows = run_copy(cur, self._s3(), t.copy)
            return
        sql = t.sql
        if params:
            try:
                sql = bind_parameters(sql, params, lambda v: _quote(cur.connection, v))
            except KeyError as missing:
                raise Unsupported(f"ERROR: no value for parameter :{missing.args[0]}") from missing
        cur.execute(sql)
        if cur.description is None:
            sub.result_rows = cur.rowcount
            return
        rows = cur.fetchall()
        sub.columns = self._columns(cur)
        sub.rows, sub.has_result_set, sub.result_rows = rows, True, len(rows)
        sub.result_size = _estimate_size(rows)

    def _columns(self, cur) -> list[dict]:
        description = cur.description  # before the catalog query below replaces it
        tables = {(c.table_oid, c.table_column) for c in description if c.table_oid}
        info: dict[tuple[int, int], tuple[str, str, bool]] = {}
        if tables:
            oids = sorted({t for t, _ in tables})
            cur.execute(
                "SELECT a.attrelid, a.attnum, n.nspname, c.relname, a.attnotnull FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE a.attrelid = ANY(%s) AND a.attnum > 0",
                (oids,),
            )
            info = {(int(r[0]), int(r[1])): (r[2], r[3], r[4]) for r in cur.fetchall()}
        out = []
        for c in description:
            typ = self.type_names.get(c.type_code, "unknown")
            schema, table, not_null = info.get((c.table_oid, c.table_column), ("", "", False))
            if typ == "numeric":
                precision, scale = (c.precision, c.scale) if c.precision is not None else (0, 0)
            elif typ in CHARACTER:
                precision, scale = (c.internal_size if c.internal_size and c.internal_size > 0 else 65535), 0
            else:
                precision, scale = PRECISION.get(typ, 0), SCALE.get(typ, 0)
            out.append(
                {
                    "name": c.name,
                    "label": c.name,
                    "typeName": typ,
                    "nullable": 0 if not_null else 1,
                    "precision": precision,
                    "scale": scale,
                    "isCaseSensitive": typ in CHARACTER,
                    "isCurrency": False,
                    "isSigned": typ in SIGNED,
                    "schemaName": schema,
                    "tableName": table,
                    "length": 0,
                }
            )
        return out

    def _reset(self, conn) -> None:
        """End the call's session state (Redshift: each Data API call is its own session)."""
        if conn.closed:
            self.local.conn = None
            return
        try:
            if not conn.autocommit:
                conn.rollback()
                conn.autocommit = True
            with conn.cursor() as cur:
                if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    cur.execute("ROLLBACK")  # a BEGIN sent without a session: the call's end ends it
                cur.execute("DISCARD ALL")
        except psycopg2.Error:
            conn.close()
            self.local.conn = None

    def _record_load_error(self, st: Statement, sub: Sub, error: dict) -> None:
        """A row in local_redshift.stl_load_errors, written on a connection of its own (kept after the
        statement's transaction rolls back, as Redshift keeps it)."""
        try:
            self.metadata_query(
                f"INSERT INTO {LOAD_ERRORS} (userid, slice, tbl, starttime, session, query, filename, line_number, "
                "colname, type, col_length, position, raw_line, raw_field_value, err_code, err_reason, is_partial, "
                "start_offset) VALUES (100, 0, 0, LOCALTIMESTAMP, %s, %s, %s, %s, %s, '', '', 0, %s, '', %s, %s, 0, 0)",
                (
                    st.pid,
                    sub.query_id,
                    error["filename"][:256],
                    error["line_number"],
                    error["colname"][:127],
                    error["raw_line"][:1024],
                    error["err_code"],
                    error["err_reason"][:100],
                ),
                fetch=False,
            )
        except (psycopg2.Error, ApiError):
            log.exception("could not record the load error of %s", sub.id)

    def shutdown(self) -> None:
        self.stopping.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            sessions = list(self.sessions.values())
        for session in sessions:
            if not session.closed:
                session.closed, session.closed_at = "the server stopped", time.time()
                conn = session.conn
                if conn is not None and not conn.closed:
                    with contextlib.suppress(psycopg2.Error):
                        conn.cancel()
        self.session_pool.shutdown(wait=False, cancel_futures=True)
        for session in sessions:
            if session.run_lock.acquire(timeout=2):
                try:
                    if session.conn is not None and not session.conn.closed:
                        session.conn.close()  # Postgres rolls back what was open
                finally:
                    session.run_lock.release()


def _abort_transaction(cur) -> None:
    """Put the open transaction block in Postgres' aborted state (what any error does on Redshift):
    for failures raised here before Postgres saw the statement (a refusal, an S3 read)."""
    with contextlib.suppress(psycopg2.Error):
        cur.execute("DO $$BEGIN RAISE EXCEPTION 'aborted by the failed statement'; END$$")


def _quote(conn, value: str) -> str:
    quoted = psycopg2.extensions.QuotedString(value)
    quoted.prepare(conn)
    return quoted.getquoted().decode(conn.encoding if conn.encoding != "UTF8" else "utf-8")


def _error_text(exc: Exception) -> str:
    if isinstance(exc, psycopg2.Error):
        primary = exc.diag.message_primary if exc.diag else None
        return f"ERROR: {primary or str(exc).strip()}"
    text = str(exc)
    return text if text.startswith("ERROR:") else f"ERROR: {text}"


def _estimate_size(rows: list[tuple]) -> int:
    """Bytes of the result, estimated from up to 1,000 rows."""
    if not rows:
        return 0
    sample = rows[:1000]
    size = sum(len(str(v)) if v is not None else 0 for row in sample for v in row)
    return size * len(rows) // len(sample)
