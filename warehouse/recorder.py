"""A connection that records the SQL it is given instead of running it.

The Redshift dialect runs the star schema's statements (warehouse/star.py) through the Data API:
they are produced by the same functions the Postgres load calls on a live cursor, called on this
recorder. The dialect tests record the Postgres load the same way to compare the two.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class RecordingCursor:
    def __init__(self, statements: list[str], answer: Callable[[str], list[tuple]] | None = None):
        self.statements = statements
        self.answer = answer or (lambda sql: [])
        self.rowcount = 0
        self._rows: list[tuple] = []

    def execute(self, sql: str, params: Any = None) -> None:
        self.statements.append(sql if params is None else _render(sql, params))
        self._rows = list(self.answer(sql))

    def executemany(self, sql: str, rows: list) -> None:
        for params in rows:
            self.execute(sql, params)

    def copy_expert(self, sql: str, stream: Any) -> None:
        self.statements.append(sql)

    def fetchall(self) -> list[tuple]:
        return self._rows

    def fetchone(self) -> tuple | None:
        return self._rows[0] if self._rows else None

    def __enter__(self) -> RecordingCursor:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


class RecordingConnection:
    def __init__(self, answer: Callable[[str], list[tuple]] | None = None):
        self.statements: list[str] = []
        self.answer = answer

    def cursor(self, *args: Any, **kwargs: Any) -> RecordingCursor:
        return RecordingCursor(self.statements, self.answer)

    def commit(self) -> None:
        self.statements.append("COMMIT")

    def rollback(self) -> None:
        self.statements.append("ROLLBACK")


def _render(sql: str, params: Any) -> str:
    """psycopg2-style %s parameters as literals (for reading the recording, never for running it)."""

    def lit(value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, (int, float)):
            return str(value)
        if isinstance(value, (list, tuple)):
            return "ARRAY[" + ", ".join(lit(v) for v in value) + "]"
        return "'" + str(value).replace("'", "''") + "'"

    return sql % tuple(lit(v) for v in params) if isinstance(params, (list, tuple)) else sql
