"""COPY from S3, as Redshift runs it, on Postgres: the files are read from S3 (a manifest's entries,
or every key under a prefix) and streamed into `COPY table (cols) FROM STDIN` in the statement's
own transaction, so a batch's COPY commits or rolls back with the rest of the batch.

Supported: MANIFEST, CSV / FORMAT [AS] CSV [QUOTE [AS] 'c'], the default pipe-delimited text format,
DELIMITER [AS] 'c', IGNOREHEADER [AS] n, GZIP / BZIP2, EMPTYASNULL, NULL [AS] 'str',
TIMEFORMAT/DATEFORMAT [AS] 'auto', ACCEPTINVCHARS [[AS] 'c'], ENCODING [AS] UTF8, REGION [AS] 'r',
and the authorisation clauses (IAM_ROLE, CREDENTIALS, ACCESS_KEY_ID/SECRET_ACCESS_KEY/SESSION_TOKEN:
accepted, not checked). COMPUPDATE, STATUPDATE and MAXERROR 0 are accepted and change nothing;
any other option is refused by name (docs/local-redshift-data-api.md).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlglot.tokens import Token, TokenType

from bootstrap.local.redshift_data.lexer import QUOTED, Unsupported, matching, word

IGNORED = {"COMPUPDATE", "STATUPDATE"}  # followed by ON|OFF|TRUE|FALSE|PRESET (optional)
AUTH = {"IAM_ROLE", "CREDENTIALS", "ACCESS_KEY_ID", "SECRET_ACCESS_KEY", "SESSION_TOKEN", "MASTER_SYMMETRIC_KEY"}
REFUSED = {
    "JSON",
    "AVRO",
    "PARQUET",
    "ORC",
    "FIXEDWIDTH",
    "SHAPEFILE",
    "BLANKSASNULL",
    "TRUNCATECOLUMNS",
    "FILLRECORD",
    "REMOVEQUOTES",
    "ESCAPE",
    "ROUNDEC",
    "TRIMBLANKS",
    "EXPLICIT_IDS",
    "LZOP",
    "ZSTD",
    "ENCRYPTED",
    "READRATIO",
    "SSH",
    "NOLOAD",
    "IGNOREBLANKLINES",
    "IGNOREALLERRORS",
    "SERIALIZETOJSON",
}


@dataclass(frozen=True)
class CopyCommand:
    table: str  # as written (Postgres accepts the same name)
    table_name: str  # the bare name, for Redshift's messages
    columns: str | None  # "(a, b)" as written, or None for every column
    source: str  # s3://bucket/key-or-prefix
    manifest: bool = False
    csv: bool = False
    delimiter: str | None = None
    quote: str | None = None
    ignore_header: int = 0
    compression: str | None = None  # gzip | bz2
    empty_as_null: bool = False
    null_as: str | None = None
    accept_invchars: str | None = None
    options: tuple[str, ...] = field(default=())

    def postgres_copy(self, not_null_columns: list[str]) -> str:
        opts = ["FORMAT csv" if self.csv else "FORMAT text"]
        if self.delimiter is not None or not self.csv:
            opts.append(f"DELIMITER {_pg_literal(self.delimiter if self.delimiter is not None else '|')}")
        if self.csv and self.quote is not None:
            opts.append(f"QUOTE {_pg_literal(self.quote)}")
        if self.null_as is not None:
            opts.append(f"NULL {_pg_literal(self.null_as)}")
        elif not self.csv and self.empty_as_null:
            opts.append("NULL ''")
        if self.csv and not_null_columns:
            opts.append("FORCE_NOT_NULL (" + ", ".join(_pg_ident(c) for c in not_null_columns) + ")")
        return f"COPY {self.table} {self.columns or ''} FROM STDIN WITH ({', '.join(opts)})"


def _pg_literal(text: str) -> str:
    return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _string(tokens: list[Token], i: int, what: str) -> str:
    if i >= len(tokens) or tokens[i].token_type not in QUOTED or tokens[i].token_type == TokenType.IDENTIFIER:
        raise Unsupported(f"ERROR: syntax error in COPY: {what} needs a quoted value")
    return tokens[i].text


def parse_copy(sql: str, tokens: list[Token]) -> CopyCommand:
    i = 1
    start = i
    while i + 1 < len(tokens) and tokens[i + 1].token_type == TokenType.DOT:
        i += 2
    table = sql[tokens[start].start : tokens[i].end + 1]
    table_name = tokens[i].text
    i += 1
    columns = None
    if i < len(tokens) and tokens[i].token_type == TokenType.L_PAREN:
        close = matching(tokens, i)
        columns = sql[tokens[i].start : tokens[close].end + 1]
        i = close + 1
    if i >= len(tokens) or word(tokens[i]) != "FROM":
        raise Unsupported("ERROR: syntax error in COPY: FROM expected")
    source = _string(tokens, i + 1, "FROM")
    if not source.startswith("s3://"):
        raise Unsupported(
            f"ERROR: COPY from {source.split(':', 1)[0]!r} (not S3) is not supported by the local Redshift Data API"
        )
    i += 2
    spec: dict[str, Any] = {"options": []}
    n = len(tokens)

    def value_after(j: int, what: str) -> tuple[str, int]:
        if j < n and word(tokens[j]) == "AS":
            j += 1
        return _string(tokens, j, what), j + 1

    while i < n:
        w = word(tokens[i])
        spec["options"].append(w)
        if w == "WITH":
            i += 1
        elif w in AUTH:
            if w == "IAM_ROLE" and i + 1 < n and word(tokens[i + 1]) == "DEFAULT":
                i += 2
            else:
                _, i = value_after(i + 1, w)
        elif w == "MANIFEST":
            spec["manifest"] = True
            i += 1
        elif w == "CSV":
            spec["csv"] = True
            i += 1
            if i < n and word(tokens[i]) == "QUOTE":
                spec["quote"], i = value_after(i + 1, "QUOTE")
        elif w == "FORMAT":
            j = i + 1
            if j < n and word(tokens[j]) == "AS":
                j += 1
            fmt = word(tokens[j]) if j < n else ""
            if fmt != "CSV":
                raise Unsupported(
                    f"ERROR: COPY option FORMAT AS {fmt or '?'} is not supported by the local "
                    "Redshift Data API (CSV and the default text format are)"
                )
            spec["csv"] = True
            i = j + 1
            if i < n and word(tokens[i]) == "QUOTE":
                spec["quote"], i = value_after(i + 1, "QUOTE")
        elif w == "QUOTE":
            spec["quote"], i = value_after(i + 1, "QUOTE")
        elif w == "DELIMITER":
            spec["delimiter"], i = value_after(i + 1, "DELIMITER")
        elif w in ("IGNOREHEADER",):
            j = i + 1
            if j < n and word(tokens[j]) == "AS":
                j += 1
            if j >= n or tokens[j].token_type != TokenType.NUMBER:
                raise Unsupported("ERROR: syntax error in COPY: IGNOREHEADER needs a number")
            spec["ignore_header"] = int(tokens[j].text)
            i = j + 1
        elif w in ("GZIP", "BZIP2"):
            spec["compression"] = "gzip" if w == "GZIP" else "bz2"
            i += 1
        elif w == "EMPTYASNULL":
            spec["empty_as_null"] = True
            i += 1
        elif w == "NULL":
            spec["null_as"], i = value_after(i + 1, "NULL AS")
        elif w in ("TIMEFORMAT", "DATEFORMAT"):
            fmt, i = value_after(i + 1, w)
            if fmt.lower() != "auto":
                raise Unsupported(
                    f"ERROR: COPY option {w} {fmt!r} is not supported by the local Redshift Data "
                    "API (only 'auto': Postgres reads ISO and other common forms)"
                )
        elif w == "ACCEPTINVCHARS":
            i += 1
            char = "?"
            if i < n and (word(tokens[i]) == "AS" or tokens[i].token_type == TokenType.STRING):
                char, i = value_after(i, "ACCEPTINVCHARS")
            spec["accept_invchars"] = char
        elif w == "ENCODING":
            j = i + 1
            if j < n and word(tokens[j]) == "AS":
                j += 1
            if j >= n or word(tokens[j]) not in ("UTF8", "UTF-8"):
                raise Unsupported(
                    "ERROR: COPY ENCODING other than UTF8 is not supported by the local Redshift Data API"
                )
            i = j + 1
        elif w == "REGION":
            _, i = value_after(i + 1, "REGION")
        elif w == "MAXERROR":
            j = i + 1
            if j < n and word(tokens[j]) == "AS":
                j += 1
            if j >= n or tokens[j].text != "0":
                raise Unsupported(
                    "ERROR: COPY option MAXERROR above 0 is not supported by the local Redshift Data "
                    "API (every malformed row fails the COPY)"
                )
            i = j + 1
        elif w in IGNORED:
            i += 1
            if i < n and word(tokens[i]) in ("ON", "OFF", "TRUE", "FALSE", "PRESET"):
                i += 1
        elif w in REFUSED:
            raise Unsupported(f"ERROR: COPY option {w} is not supported by the local Redshift Data API")
        else:
            raise Unsupported(f"ERROR: COPY option {tokens[i].text!r} is not supported by the local Redshift Data API")
    spec["options"] = tuple(spec["options"])
    return CopyCommand(table=table, table_name=table_name, columns=columns, source=source, **spec)


# ------------------------------------------------------------------ execution
class CopyFailed(Exception):
    """The COPY failed; the message is Redshift's."""

    def __init__(self, message: str, load_error: dict | None = None):
        super().__init__(message)
        self.load_error = load_error


def _split_url(url: str) -> tuple[str, str]:
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key


@dataclass(frozen=True)
class Source:
    url: str
    mandatory: bool = False  # a manifest entry's "mandatory"
    checked: bool = True  # known to exist; else the GET that loads it is the check (see source_files)


def _mandatory_missing(url: str, cmd: CopyCommand) -> str:
    return (
        f"ERROR: Manifest file is invalid: mandatory file not found: {url} "
        f"(S3ServiceException:The specified key does not exist.,Status 404) (manifest {cmd.source})"
    )


def source_files(s3, cmd: CopyCommand) -> list[Source]:
    """The files to load, in order. Raises CopyFailed as Redshift would.

    A manifest's entries are checked (HEAD) before anything is loaded, as Redshift checks them
    first, except a manifest of one entry (every COPY of the load): nothing is loaded before its
    file, so the GET that loads it is the check, with the same outcome (missing: mandatory fails
    the COPY with Redshift's message, optional loads nothing) and a round trip fewer
    (0.25 s of the full file's 111 COPYs)."""
    bucket, key = _split_url(cmd.source)
    if cmd.manifest:
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey as exc:
            raise CopyFailed(
                f"ERROR: Problem reading manifest file - S3ServiceException:The specified key does not "
                f"exist.,Status 404,Error NoSuchKey,Rid local,CanRetry 1 (manifest {cmd.source})"
            ) from exc
        except Exception as exc:
            raise CopyFailed(
                f"ERROR: Problem reading manifest file - S3ServiceException:{exc} (manifest {cmd.source})"
            ) from exc
        try:
            entries = json.loads(body)["entries"]
            urls = [(e["url"], bool(e.get("mandatory", False))) for e in entries]
        except (ValueError, KeyError, TypeError) as exc:
            raise CopyFailed(f"ERROR: Manifest file is not in correct json format (manifest {cmd.source})") from exc
        for url, _ in urls:
            if not url.startswith("s3://"):
                raise CopyFailed(f"ERROR: Manifest file is invalid: entry {url!r} is not an s3:// URL")
        if len(urls) == 1:
            return [Source(urls[0][0], urls[0][1], checked=False)]
        files = []
        for url, mandatory in urls:
            b, k = _split_url(url)
            try:
                s3.head_object(Bucket=b, Key=k)
            except Exception as exc:
                if mandatory:
                    raise CopyFailed(_mandatory_missing(url, cmd)) from exc
                continue
            files.append(Source(url, mandatory))
        return files
    files = []
    paginator = s3.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            files += [f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", []) if not o["Key"].endswith("/")]
    except Exception as exc:
        raise CopyFailed(f"ERROR: S3ServiceException:{exc} (COPY from {cmd.source})") from exc
    if not files:
        raise CopyFailed(f"ERROR: The specified S3 prefix '{key}' does not exist (bucket {bucket})")
    return [Source(url) for url in sorted(files)]


class _Stream:
    """A file-like text stream over an S3 body: decompressed, UTF-8 checked (or invalid bytes replaced
    as ACCEPTINVCHARS does), the first `skip` lines dropped. psycopg2's copy_expert calls read(n)."""

    def __init__(self, raw, cmd: CopyCommand):
        if cmd.compression == "gzip":
            raw = gzip.GzipFile(fileobj=raw)
        elif cmd.compression == "bz2":
            raw = bz2.BZ2File(raw)
        self.raw = raw
        errors = "strict"
        if cmd.accept_invchars is not None:
            errors = f"redshift_acceptinvchars_{ord(cmd.accept_invchars[:1] or '?')}"
            _register(errors, cmd.accept_invchars[:1] or "?")
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors)
        self.skip = cmd.ignore_header
        self.buffer = ""
        self.done = False

    def _fill(self, size: int) -> None:
        while not self.done and (self.skip or len(self.buffer) < size):
            chunk = self.raw.read(1 << 20)
            self.buffer += self.decoder.decode(chunk or b"", final=not chunk)
            if not chunk:
                self.done = True
            while self.skip and "\n" in self.buffer:
                self.buffer = self.buffer.split("\n", 1)[1]
                self.skip -= 1
            if self.done and self.skip:
                self.buffer, self.skip = "", 0

    def read(self, size: int = -1) -> str:
        self._fill(size if size and size > 0 else 1 << 62)
        if size is None or size < 0:
            out, self.buffer = self.buffer, ""
        else:
            out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    readline = read


_REGISTERED: set[str] = set()


def _register(name: str, char: str) -> None:
    if name not in _REGISTERED:
        codecs.register_error(name, lambda exc: (char * (exc.end - exc.start), exc.end))
        _REGISTERED.add(name)


def _char_columns(cur, cmd: CopyCommand) -> list[str]:
    """The target's character columns: without EMPTYASNULL Redshift loads an empty CSV field into
    them as '' (Postgres would read NULL), so they are FORCE_NOT_NULL."""
    cur.execute(
        "SELECT a.attname, t.typcategory FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = CAST(%s AS regclass) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (cmd.table,),
    )
    rows = cur.fetchall()
    wanted = None
    if cmd.columns:
        wanted = {_unquote(c) for c in _split_columns(cmd.columns[1:-1])}
    return [name for name, category in rows if category == "S" and (wanted is None or name in wanted)]


def _split_columns(text: str) -> list[str]:
    return [c.strip() for c in re.findall(r'(?:"(?:[^"]|"")*"|[^,])+', text)]


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()


_CONTEXT = re.compile(r"COPY [^,]+, line (\d+)(?:, column ([^:]+))?(?::\s*\"?(.*?)\"?)?$", re.S)


def run_copy(cur, s3, cmd: CopyCommand) -> int:
    """Load every source file; returns the rows loaded. Raises CopyFailed (the transaction is then
    aborted: the caller rolls back)."""
    import psycopg2

    files = source_files(s3, cmd)
    force = [] if cmd.empty_as_null or not cmd.csv else _char_columns(cur, cmd)
    statement = cmd.postgres_copy(force)
    total = 0
    for source in files:
        url = source.url
        bucket, key = _split_url(url)
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        except Exception as exc:
            if source.checked:
                raise CopyFailed(f"ERROR: S3ServiceException:{exc} (COPY of {url})") from exc
            if source.mandatory:  # what the HEAD of source_files would have found
                raise CopyFailed(_mandatory_missing(url, cmd)) from exc
            continue
        stream = _Stream(body, cmd)
        try:
            cur.copy_expert(statement, stream, size=1 << 20)
        except UnicodeDecodeError as exc:
            raise CopyFailed(
                _load_failed(cmd),
                {
                    "filename": url,
                    "line_number": -1,
                    "colname": "",
                    "err_reason": f"Invalid UTF8 byte sequence ({exc.reason})",
                    "raw_line": "",
                    "err_code": 1220,
                },
            ) from exc
        except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
            diag = exc.diag
            match = _CONTEXT.search(diag.context or "")
            line = int(match.group(1)) + cmd.ignore_header if match else -1
            raise CopyFailed(
                _load_failed(cmd),
                {
                    "filename": url,
                    "line_number": line,
                    "colname": (match.group(2) or "") if match else "",
                    "err_reason": diag.message_primary or str(exc),
                    "raw_line": (match.group(3) or "")[:1024] if match else "",
                    "err_code": 1200 if isinstance(exc, psycopg2.DataError) else 1216,
                },
            ) from exc
        total += max(cur.rowcount, 0)
    return total


def _load_failed(cmd: CopyCommand) -> str:
    return f"ERROR: Load into table '{cmd.table_name}' failed.  Check 'stl_load_errors' system table for details."
