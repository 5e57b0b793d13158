"""The staging side of a load, whatever the dialect: the temporary tables a group of files is copied
into, the per-file statistics the manifest records, and the screening of a file whose rows the
warehouse refused (the slow path). etl/load.py runs the load; warehouse/redshift.py is the Redshift
dialect that sends these statements.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass

from ecom_core.contract import COLUMNS, CSV_HEADER, SchemaDrift, csv_row_problem
from warehouse import star, tables

STAGE = "stage_sales_line"
STAGE_FILES = "stage_files"
COLUMN_LIST = ", ".join(f'"{w}"' for _, _, w in COLUMNS)
# Statistics for the planner on the columns the group's statements partition and join by (the
# dedupe window, the file join, the per-invoice look-up): a quarter of what all 13 columns cost.
ANALYZE_STAGE = f'ANALYZE {STAGE} ("event_id", "file_no", "invoice_no")'


def check_header(key: str, header_line: str) -> None:
    header = next(csv.reader([header_line]))
    if header == CSV_HEADER:
        return
    unexpected = [c for c in header if c not in CSV_HEADER]
    missing = [c for c in CSV_HEADER if c not in header]
    details = []
    if unexpected:
        details.append(f"new column(s) {', '.join(unexpected)} not in the warehouse")
    if missing:
        details.append(f"missing column(s) {', '.join(missing)}")
    if not details:
        details.append(f"columns in a different order: {', '.join(header)}")
    raise SchemaDrift(
        f"{key}: {'; '.join(details)}. Nothing from this file was loaded; add the column to "
        f"warehouse/schema.sql and ecom_core/contract.py, then rerun `ecom etl load`.",
        key=key,
    )


def file_stats_sql(for_manifest: bool = False) -> str:
    """Per file of the group: rows, distinct events, and events new to the warehouse (each counted
    in the first file of the group that has it, as sequential per-file loads would have counted
    it). Run after star.stage_facts (which looked each event up once) and before the facts are
    written. `for_manifest`: as the manifest's columns (file_key, etag, rows_in_file with the
    file's rejected rows, rows_inserted, rows_updated), for an INSERT ... SELECT."""
    # A file's distinct events: its rows less the extra copies of an event it holds more than once,
    # counted among the group's repeated events only (star.REPEATED_EVENTS, usually none) instead of
    # a count(DISTINCT) that sorts every event id of the group.
    stats = f"""
    FROM {STAGE_FILES} f
    LEFT JOIN (SELECT "file_no", count(*) AS rows FROM {STAGE} GROUP BY "file_no") r ON r."file_no" = f."file_no"
    LEFT JOIN (SELECT "file_no", sum("copies" - 1) AS extra
               FROM (SELECT d."file_no", d."event_id", count(*) AS "copies"
                     FROM {STAGE} AS d JOIN {star.REPEATED_EVENTS} AS e ON e."event_id" = d."event_id"
                     GROUP BY d."file_no", d."event_id") AS c
               GROUP BY "file_no") x ON x."file_no" = f."file_no"
    LEFT JOIN (SELECT "first_file_no" AS "file_no", count(*) AS new_events
               FROM {star.STAGE_FACT} WHERE "is_new" GROUP BY "first_file_no") n ON n."file_no" = f."file_no\""""
    events = "coalesce(r.rows, 0) - coalesce(x.extra, 0)"
    if not for_manifest:
        return f'SELECT f."file_no", coalesce(r.rows, 0), {events}, coalesce(n.new_events, 0) {stats}'
    return (
        f'SELECT f."file_key", f."etag", coalesce(r.rows, 0) + coalesce(j.rejected, 0), coalesce(n.new_events, 0), '
        f"{events} - coalesce(n.new_events, 0) {stats}\n"
        f'    LEFT JOIN (SELECT "file_key", count(*) AS rejected FROM {tables.REJECTS_TABLE} '
        f'GROUP BY "file_key") j ON j."file_key" = f."file_key"'
    )


StagedFile = tuple[str, str, Callable[[], bytes]]  # (key, etag, fetch the body)
# Per file: (rows, inserted, updated, rejected), or None when the manifest already had it.
Outcome = tuple[int, int, int, int]


@dataclass(frozen=True)
class Reject:
    file_key: str
    line_no: int  # line in the staging CSV (header = 1); 0 for the whole file
    event_id: str | None
    reason: str
    raw_line: str | None  # JSON, non-ASCII escaped: storable whatever the bytes were

    def row(self) -> tuple:
        return (
            self.file_key,
            self.line_no,
            self.event_id,
            self.reason[:1000],
            None if self.raw_line is None else self.raw_line[:65535],
        )


def _safe(text: str, limit: int) -> str:
    return json.dumps(text, ensure_ascii=True)[1:-1][:limit]


def screen(key: str, body: bytes) -> tuple[str, list[Reject]]:
    """The file's CSV with only the rows the warehouse can store, and the rest as rejects.

    The slow path: the load first tries a group as it is (our transform writes only rows that
    passed ingestion's rules) and screens only after the warehouse refused something.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ",".join(CSV_HEADER) + "\n", [
            Reject(key, 0, None, f"file is not UTF-8 ({exc.reason} at byte {exc.start})", None)
        ]
    header_line, _, rest = text.partition("\n")
    check_header(key, header_line)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    rejects: list[Reject] = []
    reader = csv.reader(io.StringIO(rest))
    while True:
        line_no = reader.line_num + 2  # the row about to be read starts on this line (header = 1)
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            rejects.append(Reject(key, line_no, None, f"not CSV: {exc}", None))
            continue
        row = dict(zip(CSV_HEADER, values, strict=False))  # a row of the wrong length is rejected below
        problem = (
            f"{len(values)} fields, expected {len(CSV_HEADER)}"
            if len(values) != len(CSV_HEADER)
            else csv_row_problem(row)
        )
        if problem:
            rejects.append(
                Reject(
                    key,
                    line_no,
                    _safe(row.get("event_id") or "", 256) or None,
                    problem,
                    json.dumps(values, ensure_ascii=True),
                )
            )
        else:
            writer.writerow(values)
    return out.getvalue(), rejects
