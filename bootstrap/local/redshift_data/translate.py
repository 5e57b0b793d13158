"""Redshift SQL -> Postgres SQL, as narrowly as possible.

A statement is tokenized with sqlglot's Redshift tokenizer (quotes, comments and dollar strings
handled), and only the Redshift-only constructs found are rewritten in place; everything else
reaches Postgres exactly as it was written. A full sqlglot round trip (parse + generate) is used
for one construct only (`SELECT TOP n`): on the project's statements it rewrote more than it had to
(ANALYZE's column list became a function call, DATEDIFF(day, ...) became elapsed seconds / 86400,
which is not Redshift's count of day boundaries, column-level DISTKEY did not parse), so the
narrow rewrites below are the default (docs/local-redshift-data-api.md lists each one).

`translate(sql)` returns a `Translation` (cached by the SQL text: the same statements repeat on
every load) or raises `Unsupported` with Redshift-like text naming what is not supported.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import sqlglot
from sqlglot.tokens import Token, TokenType

# This module and copy.py share lexer.py's tokenizer helpers; `Unsupported` is imported from here too.
from bootstrap.local.redshift_data.copy import parse_copy
from bootstrap.local.redshift_data.lexer import QUOTED, Unsupported, matching, tokenize, word


@dataclass(frozen=True)
class Translation:
    kind: str  # "sql" (run `sql` on Postgres), "copy" (see copy.py), "noop"
    sql: str  # the Postgres text ("" for copy and noop)
    source: str  # the Redshift text as received
    changes: tuple[str, ...] = ()  # what was rewritten, for logs and docs
    copy: object | None = None  # copy.CopyCommand for kind == "copy"
    returns_rows: bool = field(default=False)

    @property
    def changed(self) -> bool:
        return self.kind != "sql" or self.sql != self.source.strip()


def _split_args(tokens: list[Token], open_i: int, close_i: int) -> list[tuple[int, int]]:
    """(first, last) token index of each comma-separated argument between the parentheses."""
    args, start, depth = [], open_i + 1, 0
    for j in range(open_i + 1, close_i):
        kind = tokens[j].token_type
        if kind == TokenType.L_PAREN:
            depth += 1
        elif kind == TokenType.R_PAREN:
            depth -= 1
        elif kind == TokenType.COMMA and depth == 0:
            args.append((start, j - 1))
            start = j + 1
    if start <= close_i - 1:
        args.append((start, close_i - 1))
    return args


class _Editor:
    """Replacements of token spans in the original text; the rest is kept byte for byte."""

    def __init__(self, sql: str, tokens: list[Token]):
        self.sql, self.tokens = sql, tokens
        self.edits: list[tuple[int, int, str]] = []
        self.changes: list[str] = []
        self.indexes: list[str] = []  # statements to run after this one, in its transaction

    def text(self, first: int, last: int) -> str:
        """The span's text with the edits already made inside it (inner calls are rewritten first)."""
        start, end = self.tokens[first].start, self.tokens[last].end + 1
        return self._apply(start, end, [e for e in self.edits if start <= e[0] and e[1] <= end])

    def replace(self, first: int, last: int, text: str, why: str) -> None:
        self.edits.append((self.tokens[first].start, self.tokens[last].end + 1, text))
        if why not in self.changes:
            self.changes.append(why)

    def remove(self, first: int, last: int, why: str) -> None:
        self.replace(first, last, "", why)

    def result(self) -> str:
        return self._apply(0, len(self.sql), self.edits)

    def _apply(self, begin: int, finish: int, edits: list[tuple[int, int, str]]) -> str:
        out, pos = [], begin
        for start, end, text in sorted(edits, key=lambda e: (e[0], -e[1])):
            if start < pos:  # inside an edit already applied (an outer call, made from its rewritten text)
                continue
            out += [self.sql[pos:start], text]
            pos = end
        out.append(self.sql[pos:finish])
        return "".join(out)


# ------------------------------------------------------------------ statement-level refusals
REFUSED_FIRST = {
    "UNLOAD": "UNLOAD (export to S3)",
    "CREATE_EXTERNAL": "CREATE EXTERNAL (Redshift Spectrum)",
    "ALTER_EXTERNAL": "ALTER EXTERNAL (Redshift Spectrum)",
    "DROP_EXTERNAL": "DROP EXTERNAL (Redshift Spectrum)",
    "CREATE_LIBRARY": "CREATE LIBRARY",
    "CREATE_MODEL": "CREATE MODEL (Redshift ML)",
    "CREATE_DATASHARE": "CREATE DATASHARE",
    "ALTER_DATASHARE": "ALTER DATASHARE",
    "DESC_DATASHARE": "DESC DATASHARE",
    "CREATE_IDENTITY": "CREATE IDENTITY PROVIDER",
}
UNSUPPORTED_TYPES = {"SUPER", "GEOMETRY", "GEOGRAPHY", "HLLSKETCH"}
TABLE_ATTRIBUTES = {"DISTSTYLE", "DISTKEY", "SORTKEY", "COMPOUND", "INTERLEAVED", "BACKUP", "ENCODE"}
INDEX_CHANGE = "PRIMARY KEY/UNIQUE -> a non-unique index on the key (local only: lookups stay fast)"


def _refuse(what: str) -> Unsupported:
    return Unsupported(f"ERROR: {what} is not supported by the local Redshift Data API (Postgres stand-in)")


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> Translation:
    text = sql.strip()
    try:
        tokens = tokenize(text)
    except Exception:  # sqlglot could not tokenize: let Postgres report the syntax error
        return Translation("sql", text, sql)
    while tokens and tokens[-1].token_type == TokenType.SEMICOLON:
        text = text[: tokens[-1].start].rstrip()
        tokens.pop()
    if not tokens:
        raise Unsupported("ERROR: empty statement")
    if any(t.token_type == TokenType.SEMICOLON for t in tokens):
        raise Unsupported("ERROR: ExecuteStatement runs one statement; send several with BatchExecuteStatement")
    first = word(tokens[0])
    second = word(tokens[1]) if len(tokens) > 1 else ""
    for key in (first, f"{first}_{second}"):
        if key in REFUSED_FIRST:
            raise _refuse(REFUSED_FIRST[key])
    if first == "CREATE" and any(word(t) in ("EXTERNAL",) for t in tokens[1:4]):
        raise _refuse("CREATE EXTERNAL (Redshift Spectrum)")
    if first == "COPY":
        return Translation("copy", "", sql, ("COPY from S3 -> COPY FROM STDIN",), copy=parse_copy(text, tokens))
    if first == "ALTER" and second == "TABLE" and _alter_is_layout_only(tokens):
        return Translation(
            "noop", "", sql, ("ALTER TABLE of a physical layout (DISTKEY/SORTKEY/ENCODE): nothing to do",)
        )
    editor = _Editor(text, tokens)
    if first == "VACUUM":
        _vacuum(editor)
    elif first == "ANALYZE":
        if second == "COMPRESSION":
            raise _refuse("ANALYZE COMPRESSION")
        _analyze(editor)
    elif first == "CREATE":
        _create(editor)
    elif first == "ALTER" and second == "TABLE":
        _alter_table(editor)
    _expressions(editor)
    out = editor.result()
    if editor.indexes:  # one query string: Postgres runs it as one transaction (or in the batch's)
        out = ";\n".join([out] + editor.indexes)
    changes = list(editor.changes)
    if any(
        word(t) == "TOP" and i > 0 and word(tokens[i - 1]) in ("SELECT", "DISTINCT", "ALL")
        for i, t in enumerate(tokens)
    ):
        out = sqlglot.transpile(out, read="redshift", write="postgres")[0]
        changes.append("SELECT TOP n -> LIMIT n (sqlglot round trip)")
    return Translation("sql", out, sql, tuple(changes), returns_rows=first in ("SELECT", "WITH", "SHOW", "VALUES"))


# ------------------------------------------------------------------ expressions (any statement)
DATEPARTS = {
    "SECOND": ("second", 1),
    "SECONDS": ("second", 1),
    "SEC": ("second", 1),
    "SECS": ("second", 1),
    "S": ("second", 1),
    "MINUTE": ("minute", 60),
    "MINUTES": ("minute", 60),
    "MIN": ("minute", 60),
    "MINS": ("minute", 60),
    "M": ("minute", 60),
    "HOUR": ("hour", 3600),
    "HOURS": ("hour", 3600),
    "H": ("hour", 3600),
    "HR": ("hour", 3600),
    "HRS": ("hour", 3600),
    "DAY": ("day", 86400),
    "DAYS": ("day", 86400),
    "D": ("day", 86400),
    "WEEK": ("week", 604800),
    "WEEKS": ("week", 604800),
    "W": ("week", 604800),
    "MONTH": ("month", 0),
    "MONTHS": ("month", 0),
    "MON": ("month", 0),
    "MONS": ("month", 0),
    "QUARTER": ("quarter", 0),
    "QUARTERS": ("quarter", 0),
    "QTR": ("quarter", 0),
    "QTRS": ("quarter", 0),
    "YEAR": ("year", 0),
    "YEARS": ("year", 0),
    "Y": ("year", 0),
    "YR": ("year", 0),
    "YRS": ("year", 0),
}


def _datepart(editor: _Editor, first: int, last: int) -> tuple[str, int]:
    part = editor.text(first, last).strip("'\"").upper()
    if part not in DATEPARTS:
        raise _refuse(f"date part {part!r} in DATEADD/DATEDIFF")
    return DATEPARTS[part]


def _expressions(editor: _Editor) -> None:
    tokens = editor.tokens
    for i in range(len(tokens) - 1, -1, -1):  # right to left: inner calls first
        tok = tokens[i]
        w = word(tok)
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        prev = tokens[i - 1] if i > 0 else None
        called = nxt is not None and nxt.token_type == TokenType.L_PAREN
        if prev is not None and prev.token_type == TokenType.DOT:
            continue  # a qualified name (t.sysdate), not the function
        if w == "STL_LOAD_ERRORS" and not called:
            editor.replace(i, i, "local_redshift.stl_load_errors", "stl_load_errors -> local_redshift.stl_load_errors")
        elif w == "SYSDATE" and not called:
            editor.replace(i, i, "LOCALTIMESTAMP", "SYSDATE -> LOCALTIMESTAMP (transaction start, UTC)")
        elif w == "GETDATE" and called and tokens[i + 2].token_type == TokenType.R_PAREN:
            editor.replace(
                i,
                i + 2,
                "CAST(DATE_TRUNC('second', STATEMENT_TIMESTAMP()) AS TIMESTAMP)",
                "GETDATE() -> statement start, whole seconds, UTC",
            )
        elif w == "NVL" and called:
            editor.replace(i, i, "COALESCE", "NVL -> COALESCE")
        elif w == "LEN" and called:
            editor.replace(i, i, "LENGTH", "LEN -> LENGTH")
        elif w == "NVL2" and called:
            close = matching(tokens, i + 1)
            args = _split_args(tokens, i + 1, close)
            if len(args) != 3:
                raise Unsupported("ERROR: function nvl2 requires 3 arguments")
            a, b, c = (editor.text(*arg) for arg in args)
            editor.replace(i, close, f"(CASE WHEN ({a}) IS NOT NULL THEN ({b}) ELSE ({c}) END)", "NVL2 -> CASE")
        elif w in ("DATEADD", "DATEDIFF") and called:
            close = matching(tokens, i + 1)
            args = _split_args(tokens, i + 1, close)
            if len(args) != 3:
                raise Unsupported(f"ERROR: function {w.lower()} requires 3 arguments")
            part, seconds = _datepart(editor, *args[0])
            x, y = editor.text(*args[1]), editor.text(*args[2])
            if w == "DATEADD":
                editor.replace(
                    i,
                    close,
                    f"(CAST({y} AS TIMESTAMP) + ({x}) * INTERVAL '1 {part}')",
                    "DATEADD -> timestamp + n * interval",
                )
            else:
                editor.replace(
                    i, close, _datediff(part, seconds, x, y), "DATEDIFF -> boundaries crossed, as Redshift counts"
                )


def _datediff(part: str, seconds: int, a: str, b: str) -> str:
    """Redshift's DATEDIFF counts the `part` boundaries crossed between a and b."""
    ta, tb = f"CAST({a} AS TIMESTAMP)", f"CAST({b} AS TIMESTAMP)"
    if seconds:
        return (
            f"CAST((EXTRACT(EPOCH FROM DATE_TRUNC('{part}', {tb})) - "
            f"EXTRACT(EPOCH FROM DATE_TRUNC('{part}', {ta}))) / {seconds} AS BIGINT)"
        )
    per_year = {"year": "", "quarter": "4", "month": "12"}[part]
    if not per_year:
        return f"CAST(EXTRACT(YEAR FROM {tb}) - EXTRACT(YEAR FROM {ta}) AS BIGINT)"
    return (
        f"CAST((EXTRACT(YEAR FROM {tb}) * {per_year} + EXTRACT({part.upper()} FROM {tb})) - "
        f"(EXTRACT(YEAR FROM {ta}) * {per_year} + EXTRACT({part.upper()} FROM {ta})) AS BIGINT)"
    )


# ------------------------------------------------------------------ DDL
def _create(editor: _Editor) -> None:
    tokens = editor.tokens
    words = [word(t) for t in tokens]
    # CREATE [LOCAL] [TEMP|TEMPORARY] TABLE [IF NOT EXISTS] name ...
    i = 1
    while i < len(words) and words[i] in ("LOCAL", "TEMP", "TEMPORARY"):
        i += 1
    if i >= len(words) or words[i] != "TABLE":
        if "MATERIALIZED" in words[1:3] and "AUTO" in words:
            _strip_mv_attributes(editor, words)
        return
    i += 1
    if words[i : i + 3] == ["IF", "NOT", "EXISTS"]:
        i += 3
    name_first = i
    while i + 1 < len(tokens) and tokens[i + 1].token_type == TokenType.DOT:  # schema.table
        i += 2
    name_last = i
    i += 1
    keys: list[list[int]] = []  # the columns (token indexes) of each PRIMARY KEY / UNIQUE dropped
    if i < len(tokens) and tokens[i].token_type == TokenType.L_PAREN:
        close = matching(tokens, i)
        elements = _split_args(tokens, i, close)
        why_key = "PRIMARY KEY/UNIQUE/FOREIGN KEY dropped (informational on Redshift)"
        for n, (a, b) in enumerate(elements):
            if _table_constraint(words, a):
                key = _table_key_columns(tokens, words, a, b)
                if key:
                    keys.append(key)
                # remove the element and the comma before it (or after it, when it is first)
                if n > 0:
                    editor.remove(elements[n - 1][1] + 1, b, why_key)
                elif len(elements) > 1:
                    editor.remove(a, elements[1][0] - 1, why_key)
                else:
                    raise Unsupported("ERROR: a table needs at least one column")
            elif words[a] != "LIKE" and _column(editor, words, a, b):
                keys.append([a])
        i = close + 1
    # A compound sort key orders the table on Redshift; an index on its columns is what serves the
    # same range and equality lookups on Postgres.
    keys.extend(_table_attributes(editor, words, i))
    if keys:
        editor.indexes.extend(_key_indexes(editor, name_first, name_last, keys))


def _table_key_columns(tokens: list[Token], words: list[str], a: int, b: int) -> list[int]:
    """The column tokens of a table constraint `[CONSTRAINT n] PRIMARY KEY (a, b)` / `UNIQUE (a)`
    ([] for FOREIGN KEY)."""
    i = a + 2 if words[a] == "CONSTRAINT" else a
    if words[i] not in ("PRIMARY", "PRIMARY KEY", "UNIQUE"):
        return []
    while i <= b and tokens[i].token_type != TokenType.L_PAREN:
        i += 1
    if i > b:
        return []
    return [first for first, last in _split_args(tokens, i, matching(tokens, i)) if first == last]


def _key_indexes(editor: _Editor, name_first: int, name_last: int, keys: list[list[int]]) -> list[str]:
    """`CREATE INDEX IF NOT EXISTS <table>_<cols>_key ON <table> (<cols>)` for each dropped key: not
    unique (duplicates are stored, as on Redshift), only so that lookups on the key stay fast."""
    tokens, sql = editor.tokens, editor.sql
    table = sql[tokens[name_first].start : tokens[name_last].end + 1]
    out, seen = [], set()
    for key in keys:
        columns = tuple(sql[tokens[c].start : tokens[c].end + 1] for c in key)
        if columns in seen:
            continue
        seen.add(columns)
        name = "_".join([tokens[name_last].text] + [tokens[c].text for c in key] + ["key"])
        name = re.sub(r"[^a-z0-9_]", "_", name.lower())[:63]
        out.append(f'CREATE INDEX IF NOT EXISTS "{name}" ON {table} ({", ".join(columns)})')
    if out:
        editor.changes.append(INDEX_CHANGE)
    return out


def _table_constraint(words: list[str], a: int) -> bool:
    w = words[a : a + 4]
    if w[:1] == ["CONSTRAINT"]:
        w = words[a + 2 : a + 4]
    return w[:1] in (["PRIMARY KEY"], ["FOREIGN KEY"], ["UNIQUE"]) or w[:2] in (["PRIMARY", "KEY"], ["FOREIGN", "KEY"])


def _table_attributes(editor: _Editor, words: list[str], i: int) -> list[list[int]]:
    """DISTSTYLE x, DISTKEY (c), [COMPOUND|INTERLEAVED] SORTKEY (c, ...) | AUTO, ENCODE AUTO, BACKUP YES|NO,
    up to the AS of a CREATE TABLE AS. Returns the columns (token indexes) of a compound sort key."""
    tokens = editor.tokens
    sort_keys: list[list[int]] = []
    while i < len(tokens):
        w = words[i]
        if w == "AS":
            return sort_keys
        if w in ("COMPOUND", "INTERLEAVED") and i + 1 < len(tokens) and words[i + 1] == "SORTKEY":
            start, i = i, i + 1
        else:
            start = i
        w = words[i]
        if w in ("DISTSTYLE", "BACKUP") or (
            w in ("ENCODE", "SORTKEY") and i + 1 < len(tokens) and words[i + 1] == "AUTO"
        ):
            editor.remove(start, i + 1, "DISTSTYLE/DISTKEY/SORTKEY/ENCODE/BACKUP dropped (physical layout)")
            i += 2
        elif w in ("DISTKEY", "SORTKEY") and i + 1 < len(tokens) and tokens[i + 1].token_type == TokenType.L_PAREN:
            close = matching(tokens, i + 1)
            if w == "SORTKEY" and words[start] != "INTERLEAVED":
                sort_keys.append([first for first, last in _split_args(tokens, i + 1, close) if first == last])
            editor.remove(start, close, "DISTSTYLE/DISTKEY/SORTKEY/ENCODE/BACKUP dropped (physical layout)")
            i = close + 1
        else:
            i += 1
    return sort_keys


def _strip_mv_attributes(editor: _Editor, words: list[str]) -> None:
    tokens = editor.tokens
    for i, w in enumerate(words):
        if w == "AS":
            break
        if (
            w == "AUTO"
            and i > 0
            and words[i - 1] == "REFRESH"
            and i + 1 < len(tokens)
            and words[i + 1] in ("YES", "NO")
        ):
            editor.remove(i - 1, i + 1, "AUTO REFRESH dropped")
        elif w == "BACKUP" and i + 1 < len(tokens):
            editor.remove(i, i + 1, "BACKUP dropped")
    _table_attributes(editor, words, 0)


TYPE_RENAMES = {"NVARCHAR": "VARCHAR", "NCHAR": "CHAR", "BPCHAR": "CHAR"}


def _column(editor: _Editor, words: list[str], a: int, b: int) -> bool:
    """One column definition: name, type, constraints. True when it had PRIMARY KEY or UNIQUE."""
    tokens = editor.tokens
    i = a + 1  # after the name
    # the type: one or more words, optional (params)
    t0 = i
    while (
        i <= b
        and words[i]
        and words[i]
        not in (
            "ENCODE",
            "DISTKEY",
            "SORTKEY",
            "PRIMARY",
            "PRIMARY KEY",
            "UNIQUE",
            "NOT",
            "NULL",
            "DEFAULT",
            "IDENTITY",
            "GENERATED",
            "REFERENCES",
            "COLLATE",
            "CONSTRAINT",
            "CHECK",
        )
        and tokens[i].token_type != TokenType.L_PAREN
    ):
        i += 1
    type_words = words[t0:i]
    params = None
    if i <= b and tokens[i].token_type == TokenType.L_PAREN:
        params = (i, matching(tokens, i))
        i = params[1] + 1
        while i <= b and words[i] in ("WITH", "WITHOUT", "TIME", "ZONE"):
            i += 1
    name = " ".join(type_words)
    if not type_words:
        return False
    is_key = False
    if type_words[0] in UNSUPPORTED_TYPES:
        raise _refuse(f"data type {type_words[0]}")
    if params and editor.text(params[0] + 1, params[1] - 1).strip().upper() == "MAX":
        editor.replace(params[0], params[1], "(65535)", "VARCHAR(MAX) -> VARCHAR(65535)")
    if type_words[0] in TYPE_RENAMES:
        editor.replace(t0, t0, TYPE_RENAMES[type_words[0]], "NVARCHAR/NCHAR/BPCHAR -> VARCHAR/CHAR")
    elif name in ("VARBYTE", "VARBINARY", "BINARY VARYING"):
        editor.replace(t0, params[1] if params else i - 1, "BYTEA", "VARBYTE -> BYTEA")
    elif name == "TEXT":
        editor.replace(t0, t0, "VARCHAR(256)", "TEXT -> VARCHAR(256) (Redshift's TEXT)")
    elif name in ("NUMERIC", "DECIMAL") and not params:
        editor.replace(t0, t0, f"{name}(18,0)", "NUMERIC without precision -> NUMERIC(18,0) (Redshift's default)")
    # constraints and attributes
    why_key = "PRIMARY KEY/UNIQUE/FOREIGN KEY dropped (informational on Redshift)"
    while i <= b:
        w = words[i]
        if w == "ENCODE" and i + 1 <= b:
            editor.remove(i, i + 1, "DISTSTYLE/DISTKEY/SORTKEY/ENCODE/BACKUP dropped (physical layout)")
            i += 2
        elif w in ("DISTKEY", "SORTKEY"):
            editor.remove(i, i, "DISTSTYLE/DISTKEY/SORTKEY/ENCODE/BACKUP dropped (physical layout)")
            i += 1
        elif w == "PRIMARY" and i + 1 <= b and words[i + 1] == "KEY":
            editor.remove(i, i + 1, why_key)
            is_key = True
            i += 2
        elif w in ("UNIQUE", "PRIMARY KEY"):
            editor.remove(i, i, why_key)
            is_key = True
            i += 1
        elif w == "CONSTRAINT" and i + 2 <= b and words[i + 2] in ("PRIMARY", "PRIMARY KEY", "UNIQUE", "REFERENCES"):
            editor.remove(i, i + 1, why_key)
            i += 2
        elif w == "REFERENCES":
            j = i + 1
            while j + 1 <= b and tokens[j + 1].token_type == TokenType.DOT:
                j += 2
            if j + 1 <= b and tokens[j + 1].token_type == TokenType.L_PAREN:
                j = matching(tokens, j + 1)
            editor.remove(i, j, why_key)
            i = j + 1
        elif w == "IDENTITY" and i + 1 <= b and tokens[i + 1].token_type == TokenType.L_PAREN:
            close = matching(tokens, i + 1)
            seed, step = (editor.text(*x) for x in _split_args(tokens, i + 1, close))
            editor.replace(
                i,
                close,
                f"GENERATED BY DEFAULT AS IDENTITY (START WITH {seed} INCREMENT BY {step})",
                "IDENTITY(seed, step) -> GENERATED BY DEFAULT AS IDENTITY",
            )
            i = close + 1
        elif (
            w == "GENERATED"
            and words[i + 1 : i + 5] == ["BY", "DEFAULT", "AS", "IDENTITY"]
            and i + 5 <= b
            and tokens[i + 5].token_type == TokenType.L_PAREN
        ):
            close = matching(tokens, i + 5)
            seed, step = (editor.text(*x) for x in _split_args(tokens, i + 5, close))
            editor.replace(
                i + 5,
                close,
                f"(START WITH {seed} INCREMENT BY {step})",
                "IDENTITY(seed, step) -> GENERATED BY DEFAULT AS IDENTITY",
            )
            i = close + 1
        elif w == "COLLATE" and i + 1 <= b:
            if words[i + 1] == "CASE_INSENSITIVE":
                raise _refuse("COLLATE CASE_INSENSITIVE")
            if words[i + 1] == "CASE_SENSITIVE":
                editor.remove(i, i + 1, "COLLATE CASE_SENSITIVE dropped (the default)")
            i += 2
        elif tokens[i].token_type == TokenType.L_PAREN:
            i = matching(tokens, i) + 1
        else:
            i += 1
    return is_key


def _alter_is_layout_only(tokens: list[Token]) -> bool:
    """ALTER TABLE t ALTER [COMPOUND] SORTKEY|DISTKEY|DISTSTYLE|ENCODE ..., or ALTER COLUMN c ENCODE x,
    or ADD [CONSTRAINT n] PRIMARY KEY/UNIQUE/FOREIGN KEY (informational)."""
    words = [word(t) for t in tokens]
    for i, w in enumerate(words[3:], start=3):
        if w == "ALTER" and i + 1 < len(words):
            nxt = words[i + 1]
            if nxt in ("SORTKEY", "DISTKEY", "DISTSTYLE", "ENCODE", "COMPOUND", "INTERLEAVED"):
                return True
            if nxt == "COLUMN" and "ENCODE" in words[i + 2 : i + 4]:
                return True
        if w == "ADD" and i + 1 < len(words):
            return _table_constraint(words, i + 1)
    return False


def _alter_table(editor: _Editor) -> None:
    """ALTER TABLE t ADD [COLUMN] c type ENCODE x ...: the column definition's rewrites."""
    words = [word(t) for t in editor.tokens]
    if "APPEND" in words:
        raise _refuse("ALTER TABLE APPEND")
    for i, w in enumerate(words):
        if w == "ADD":
            start = i + 2 if i + 1 < len(words) and words[i + 1] == "COLUMN" else i + 1
            if start < len(words):
                _column(editor, words, start, len(words) - 1)
            return


_VACUUM = re.compile(
    r"VACUUM(?:\s+(?:FULL|SORT\s+ONLY|DELETE\s+ONLY|REINDEX|RECLUSTER))?"
    r"(?:\s+(?P<table>[\w.\"$]+))?(?:\s+TO\s+\d+\s+PERCENT)?(?:\s+BOOST)?",
    re.I,
)


def _vacuum(editor: _Editor) -> None:
    """VACUUM [FULL|SORT ONLY|DELETE ONLY|REINDEX|RECLUSTER] [table [TO n PERCENT]] [BOOST] -> VACUUM [table]
    (sqlglot keeps VACUUM's arguments as one raw token)."""
    match = _VACUUM.fullmatch(editor.sql)
    if not match:
        raise Unsupported("ERROR: syntax error in VACUUM")
    editor.replace(
        0,
        len(editor.tokens) - 1,
        f"VACUUM {match.group('table') or ''}".strip(),
        "VACUUM options dropped (Postgres VACUUM)",
    )


def _analyze(editor: _Editor) -> None:
    words = [word(t) for t in editor.tokens]
    n = len(words)
    if n >= 3 and words[-1] == "COLUMNS" and words[-2] in ("PREDICATE", "ALL"):
        editor.remove(n - 2, n - 1, "ANALYZE PREDICATE/ALL COLUMNS dropped")


# ------------------------------------------------------------------ parameters
_PARAM_NAME = re.compile(r"[0-9a-zA-Z_]+")


def bind_parameters(sql: str, parameters: dict[str, str], quote) -> str:
    """`:name` placeholders replaced by `quote(value)` (a Postgres string literal: its type is
    inferred from the context, as Redshift infers a parameter's). Raises KeyError for a name
    used in the SQL without a value."""
    tokens = tokenize(sql)
    editor = _Editor(sql, tokens)
    for i, tok in enumerate(tokens[:-1]):
        nxt = tokens[i + 1]
        if (
            tok.token_type == TokenType.COLON
            and nxt.start == tok.end + 1
            and nxt.token_type not in QUOTED
            and _PARAM_NAME.fullmatch(nxt.text)
            and not (i > 0 and tokens[i - 1].end == tok.start - 1 and tokens[i - 1].token_type == TokenType.COLON)
        ):
            if nxt.text not in parameters:
                raise KeyError(nxt.text)
            editor.replace(i, i + 1, quote(parameters[nxt.text]), "parameter")
    return editor.result()
