"""Unit tests of the raw JSON Lines -> staging CSV conversion and the load's header check."""

from __future__ import annotations

import csv
import io
import json
from itertools import islice

import pytest

from ecom_core import config
from ecom_core.config import FULL_FILE
from ecom_core.contract import CSV_HEADER, SchemaDrift
from etl.transform import jsonl_to_csv, staging_key_for
from handlers.stream_trigger import write_jsonl
from replay.source import read_rows
from warehouse.staging import check_header


def test_jsonl_to_csv_round_trips_real_rows_with_quotes_commas_and_blanks():
    # The first 5,000 rows of the file: descriptions with a double quote or a comma, guest rows and
    # rows without a description, each kept exactly through RFC 4180 quoting.
    rows = [r.event for r in islice(read_rows(FULL_FILE), 5000)]
    picked = [e for e in rows if e["Description"] and ('"' in e["Description"] or "," in e["Description"])][:20]
    picked += [e for e in rows if e["CustomerID"] is None][:5] + [e for e in rows if e["Description"] is None][:2]
    chosen = list({e["event_id"]: e for e in picked}.values())
    assert any('"' in (e["Description"] or "") for e in chosen) and any(e["Description"] is None for e in chosen)
    body = write_jsonl(chosen + chosen[:3])  # a redelivered copy inside one object
    data, count = jsonl_to_csv(body)
    assert count == len(chosen)
    parsed = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert parsed[0] == CSV_HEADER
    by_id = {row[0]: dict(zip(CSV_HEADER, row, strict=True)) for row in parsed[1:]}
    for event in chosen:
        row = by_id[event["event_id"]]
        assert row["description"] == (event["Description"] or "")
        assert row["customer_id"] == ("" if event["CustomerID"] is None else str(event["CustomerID"]))
        assert row["quantity"] == str(event["Quantity"]) and row["invoice_date"] == event["InvoiceDate"]


def test_jsonl_to_csv_names_the_bad_line():
    with pytest.raises(ValueError, match="line 2: not JSON"):
        jsonl_to_csv(json.dumps({"event_id": "a"}).encode() + b"\n{oops\n")


def test_staging_key_follows_the_raw_key():
    assert (
        staging_key_for("raw/shardId-000000000001/10-20.jsonl", config.resources())
        == "csv/shardId-000000000001/10-20.csv"
    )


def test_check_header_accepts_the_contract_and_names_drift():
    check_header("k", ",".join(CSV_HEADER))
    with pytest.raises(SchemaDrift, match="new column\\(s\\) discount_code"):
        check_header("k", ",".join(CSV_HEADER + ["discount_code"]))
    with pytest.raises(SchemaDrift, match="missing column\\(s\\) country"):
        check_header("k", ",".join(CSV_HEADER[:-1]))
    with pytest.raises(SchemaDrift, match="different order"):
        check_header("k", ",".join(reversed(CSV_HEADER)))
