"""The Glue catalog's type inference (etl/catalog.py): codes stay strings, types only widen, and
sampling the typed columns answers as sampling every column. No stack; the crawl into Glue on the
running stack: tests/stack/etl/test_catalog.py."""

from __future__ import annotations

from ecom_core.config import SAMPLE_FILE
from etl.catalog import infer


def test_catalog_keeps_codes_as_strings_and_only_widens():
    all_digits = b"event_id,invoice_no,stock_code,quantity,unit_price,customer_id\ne1,536365,22423,6,2.55,17850\n"
    columns = dict(infer([all_digits]))
    assert columns == {
        "event_id": "string",
        "invoice_no": "string",
        "stock_code": "string",
        "quantity": "bigint",
        "unit_price": "decimal(14,3)",
        "customer_id": "bigint",
    }
    widened = dict(
        infer([b"quantity,unit_price\n1,3\n"], previous={"quantity": "bigint", "unit_price": "decimal(14,3)"})
    )
    assert widened == {"quantity": "bigint", "unit_price": "decimal(14,3)"}  # never narrowed back


def test_catalog_samples_only_the_typed_columns_and_answers_as_sampling_every_column():
    from pathlib import Path

    from ecom_core.contract import ALWAYS_STRING
    from ecom_core.events import event_json
    from etl.catalog import SAMPLE_ROWS_PER_FILE, value_type, widen
    from etl.transform import jsonl_to_csv
    from handlers.events import normalize_event
    from replay.source import read_rows

    def every_column(bodies, previous=None):  # the crawler before it skipped the code columns
        import csv
        import io

        columns, types = [], dict(previous or {})
        for body in bodies:
            reader = csv.reader(io.StringIO(body.decode("utf-8", errors="replace")))
            header = next(reader, [])
            columns += [name for name in header if name not in columns]
            for number, row in enumerate(reader):
                if number >= SAMPLE_ROWS_PER_FILE:
                    break
                # A short row is read as far as it goes, as the crawler reads it.
                for name, value in zip(header, row, strict=False):
                    types[name] = widen(types.get(name), value_type.__wrapped__(value))
        columns += [name for name in previous or {} if name not in columns]
        return [(n, "string" if n in ALWAYS_STRING or types.get(n) is None else types[n]) for n in columns]

    lines = [event_json(normalize_event(row.event, 0)) for row in read_rows(Path(SAMPLE_FILE))]
    real = [jsonl_to_csv(b"\n".join(lines[start : start + 100]))[0] for start in range(0, len(lines), 100)]
    odd = [
        b"quantity,stock_code,unit_price,invoice_date,customer_id\n7,85123A,1,2011-01-16T15:30:00\n-3,22423,2.5,x,\n",
        b"unit_price,quantity,extra\n,1e3,12\n4,5\n",
        b"",
        b"customer_id\n\n123456789012345678901\n",
    ]
    for bodies, previous in (
        (real, None),
        (odd, None),
        (odd, {"quantity": "bigint", "gone": "timestamp"}),
        (real + odd, {"customer_id": "decimal(14,3)"}),
    ):
        assert infer(bodies, previous) == every_column(bodies, previous)
    assert dict(infer(real))["quantity"] == "bigint" and dict(infer(odd))["quantity"] == "string"
