"""The whole path on the running embedded stack, with exact counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest
import requests

from ecom_core import config
from ecom_core.config import SAMPLE_FILE
from etl.run import run_once
from tests.support.helpers import counts, dynamo_items, read_csv, replay_file, warehouse_rows
from tests.support.hostile import GOOD

pytestmark = pytest.mark.stack


def _expected_customer_entries(df) -> int:
    with_customer = df[df.CustomerID != ""]
    return with_customer[["CustomerID", "InvoiceNo"]].drop_duplicates().shape[0]


def test_sample_end_to_end(stack_env, clean_stores):
    df = read_csv(SAMPLE_FILE)
    assert len(df) == 417
    result = replay_file(stack_env, SAMPLE_FILE)
    assert (result.rows_read, result.accepted, result.rejected) == (417, 417, [])
    run = run_once(stack_env["cfg"])
    assert run.transform.errors == []
    assert run.transform.rows == 417

    c = counts(stack_env["cfg"])
    assert c["stream_records"] - clean_stores["stream_records"] == 417
    assert c["invoice_lines"] == 417
    assert c["warehouse_rows"] == 417
    assert c["customer_invoices"] == _expected_customer_entries(df)
    assert c["raw_objects_pending"] == 0
    assert c["raw_objects_processed"] == c["staging_files"] == c["files_loaded"] == run.transform.objects > 0
    assert c["quarantined"] == 0

    # The right customer -> invoice entries, not just the right number of them.
    r = config.resources()
    entries = {(int(i["CustomerID"]), i["InvoiceNo"]) for i in dynamo_items(stack_env["cfg"], r.customer_table)}
    expected = {(int(c_), i) for c_, i in df[df.CustomerID != ""][["CustomerID", "InvoiceNo"]].itertuples(index=False)}
    assert entries == expected


def test_slice_exact_counts_and_values(stack_env, clean_stores, slice_file):
    df = read_csv(slice_file)
    # The slice has every trap the issue names; check that before trusting the counts.
    cancellations = df[df.InvoiceNo.str.startswith("C")]
    guests = df[df.CustomerID == ""]
    repeated = df[df.duplicated(["InvoiceNo", "StockCode"], keep=False)]
    vouchers = df[df.Description.str.contains("£")]
    assert len(df) == 5000 and len(cancellations) > 0 and len(guests) > 0 and len(repeated) > 0
    assert len(vouchers) == 3

    result = replay_file(stack_env, slice_file, concurrency=3)
    assert result.accepted == 5000 and result.rejected == []
    run_once(stack_env["cfg"])

    c = counts(stack_env["cfg"])
    assert c["stream_records"] - clean_stores["stream_records"] == 5000
    assert c["invoice_lines"] == 5000
    assert c["warehouse_rows"] == 5000
    assert c["customer_invoices"] == _expected_customer_entries(df)
    assert c["raw_objects_pending"] == 0 and c["quarantined"] == 0
    assert c["files_loaded"] == c["staging_files"]

    lines = dynamo_items(stack_env["cfg"], config.resources().invoice_table)
    by_invoice: dict[str, list[dict]] = {}
    for line in lines:
        by_invoice.setdefault(line["InvoiceNo"], []).append(line)

    # A cancellation keeps its negative quantity, in DynamoDB and in the warehouse.
    cancel = cancellations.iloc[0]
    dyn = [line for line in by_invoice[cancel.InvoiceNo] if line["StockCode"] == cancel.StockCode]
    assert dyn and all(line["Quantity"] == int(cancel.Quantity) < 0 for line in dyn)
    wh = warehouse_rows(
        "SELECT quantity, unit_price FROM dw.fact_sales_line WHERE invoice_no = %s AND stock_code = %s",
        (cancel.InvoiceNo, cancel.StockCode),
    )
    assert wh and all(q == int(cancel.Quantity) and p == Decimal(cancel.UnitPrice) for q, p in wh)

    # A guest line: no CustomerID anywhere, and no customer entry for its invoice.
    guest = guests.iloc[0]
    guest_lines = by_invoice[guest.InvoiceNo]
    assert len(guest_lines) == (df.InvoiceNo == guest.InvoiceNo).sum()
    assert all("CustomerID" not in line for line in guest_lines)
    assert warehouse_rows(
        "SELECT count(*) FROM dw.fact_sales_line WHERE invoice_no = %s AND customer_id IS NULL", (guest.InvoiceNo,)
    )[0][0] == len(guest_lines)

    # Both (all) lines of a repeated (InvoiceNo, StockCode) pair survive, with their own quantities.
    pair = repeated.groupby(["InvoiceNo", "StockCode"]).size().sort_values(ascending=False).index[0]
    source = sorted(int(q) for q in df[(df.InvoiceNo == pair[0]) & (df.StockCode == pair[1])].Quantity)
    stored = sorted(int(line["Quantity"]) for line in by_invoice[pair[0]] if line["StockCode"] == pair[1])
    assert len(source) >= 2 and stored == source
    wh_pair = sorted(
        q
        for (q,) in warehouse_rows(
            "SELECT quantity FROM dw.fact_sales_line WHERE invoice_no = %s AND stock_code = %s", pair
        )
    )
    assert wh_pair == source

    # The `£` of the gift vouchers survives ISO-8859-1 -> JSON -> DynamoDB -> UTF-8 CSV -> Postgres.
    expected_vouchers = sorted(vouchers.Description)
    assert (
        sorted(line["Description"] for ls in by_invoice.values() for line in ls if "£" in line.get("Description", ""))
        == expected_vouchers
    )
    assert (
        sorted(
            d
            for (d,) in warehouse_rows("SELECT description FROM dw.fact_sales_line WHERE description LIKE %s", ("%£%",))
        )
        == expected_vouchers
    )

    # Totals to the cent: the warehouse equals an independent sum over the CSV.
    expected_total = sum(Decimal(q) * Decimal(p) for q, p in zip(df.Quantity, df.UnitPrice, strict=True))
    assert warehouse_rows("SELECT sum(quantity * unit_price) FROM dw.fact_sales_line")[0][0] == expected_total


def test_replaying_and_rerunning_changes_no_count(stack_env, clean_stores, slice_file):
    replay_file(stack_env, slice_file, rows=1500)
    run_once(stack_env["cfg"])
    first = counts(stack_env["cfg"])
    assert first["invoice_lines"] == first["warehouse_rows"] == 1500

    replay_file(stack_env, slice_file, rows=1500)  # same event ids again
    second_run = run_once(stack_env["cfg"])
    assert second_run.load.rows_inserted == 0  # the new files held only known events
    run_once(stack_env["cfg"])  # and an ETL run with nothing new
    again = counts(stack_env["cfg"])
    for key in ("invoice_lines", "customer_invoices", "warehouse_rows", "quarantined", "raw_objects_pending"):
        assert again[key] == first[key], key
    assert again["stream_records"] == first["stream_records"] + 1500  # the stream saw them twice; nothing else did


def _post(stack_env, body, *, key=True, raw=None, headers=None):
    h = {"content-type": "application/json", **(headers or {})}
    if key:
        h["x-api-key"] = stack_env["api_key"]
    data = raw if raw is not None else json.dumps(body)
    return requests.post(stack_env["api_url"] + "/events", data=data, headers=h, timeout=30)


def test_bad_requests_get_clear_4xx_and_write_nothing(stack_env, clean_stores):
    cases = []
    response = _post(stack_env, None, raw="this is not json")
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    cases.append(response)

    missing = {k: v for k, v in GOOD.items() if k != "Country"}
    response = _post(stack_env, [GOOD, missing])
    assert response.status_code == 400
    assert response.json()["errors"] == [{"index": 1, "field": "Country", "error": "is required"}]

    wrong = [
        dict(GOOD, Quantity="six"),
        dict(GOOD, UnitPrice="2.55"),
        dict(GOOD, InvoiceDate="2010-13-45"),
        dict(GOOD, CustomerID="abc"),
    ]
    response = _post(stack_env, wrong)
    assert response.status_code == 400
    named = {(e["index"], e["field"]) for e in response.json()["errors"]}
    assert named == {(0, "Quantity"), (1, "UnitPrice"), (2, "InvoiceDate"), (3, "CustomerID")}

    response = _post(stack_env, [dict(GOOD) for _ in range(501)])
    assert response.status_code == 400 and "at most 500" in response.json()["errors"][0]["error"]

    response = _post(stack_env, None, raw=json.dumps([dict(GOOD, Description="x" * 900)] * 2000))
    assert response.status_code == 413

    response = _post(stack_env, GOOD, key=False)
    assert response.status_code == 403
    response = _post(stack_env, GOOD, key=False, headers={"x-api-key": "wrong-key"})
    assert response.status_code == 403

    c = counts(stack_env["cfg"])
    assert c["stream_records"] == clean_stores["stream_records"]
    assert c["invoice_lines"] == 0 and c["customer_invoices"] == 0 and c["raw_objects_pending"] == 0


def test_passthrough_shape_and_single_event(stack_env, clean_stores):
    """The original project's non-proxy body and a single object body both work."""
    from ecom_core import aws
    from handlers.events import accept_event

    # Stored under the id bound to the content (ecom_core.events.bound_event_id), as the API answers.
    stored = {name: accept_event(dict(GOOD, event_id=name))["event_id"] for name in ("passthrough-1", "single-1")}
    lam = aws.client("lambda", stack_env["cfg"])
    payload = {"body-json": dict(GOOD, event_id="passthrough-1"), "context": {"http-method": "POST"}}
    out = json.loads(lam.invoke(FunctionName="data-ingestion", Payload=json.dumps(payload))["Payload"].read())
    assert out["statusCode"] == 200 and out["body"]["event_ids"] == [stored["passthrough-1"]]
    response = _post(stack_env, dict(GOOD, event_id="single-1"))
    assert response.status_code == 200 and response.json()["event_ids"] == [stored["single-1"]]
    from warehouse.status import wait_for_drain

    high = dict(out["body"]["shards"])
    for shard, seq in response.json()["shards"].items():
        high[shard] = max(high.get(shard, "0"), seq, key=int)
    assert wait_for_drain(high, stack_env["cfg"], timeout=60)
    lines = dynamo_items(stack_env["cfg"], config.resources().invoice_table)
    assert sorted(line["LineId"] for line in lines) == sorted(stored.values())
    assert all(line["CustomerID"] == 17850 and line["InvoiceDate"] == "2010-12-01T08:26:00" for line in lines)


def test_cli_replay_and_etl_run(stack_env, clean_stores, tmp_path):
    """The commands a user types, as subprocesses against the same stack."""
    env = {**os.environ, **stack_env["env"]}
    ecom = [sys.executable, "-m", "ecom"]
    out = subprocess.run(
        ecom + ["replay", str(SAMPLE_FILE), "--rows", "100", "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "rows read 100, accepted 100, rejected 0" in out.stdout
    out = subprocess.run(ecom + ["etl", "run"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    status = json.loads(
        subprocess.run(ecom + ["status", "--json"], env=env, capture_output=True, text=True, timeout=300).stdout
    )
    assert status["invoice_lines"] == status["warehouse_rows"] == 100

    # A bad row is named (file, row, field) and makes the exit code non-zero; the good rows still land.
    bad = tmp_path / "bad.csv"
    lines = SAMPLE_FILE.read_text(encoding="iso-8859-1").splitlines()
    fields = lines[3].split(",")
    fields[3] = "three"
    bad.write_text("\n".join([lines[0], lines[1], lines[2], ",".join(fields)]) + "\n", encoding="iso-8859-1")
    out = subprocess.run(
        ecom + ["replay", str(bad), "--no-progress"], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 1
    assert f"{bad}: row 3: Quantity: must be an integer" in out.stderr
    assert "accepted 2, rejected 1" in out.stdout


def test_transform_converts_many_objects_at_once_and_leaves_a_bad_one_in_place(stack_env, clean_stores):
    """The transform works on several raw objects at a time (etl.transform.TRANSFORM_THREADS): every
    good object's CSV has its rows in its order and the run reports them in the listing's order; a
    broken object does not stop the others and stays raw, named in the run's errors."""
    from bench.pipeline import canonical_events
    from ecom_core import aws
    from etl.transform import TRANSFORM_THREADS, transform
    from handlers.stream_trigger import write_jsonl

    r = config.resources()
    s3 = aws.client("s3", stack_env["cfg"])
    events = list(canonical_events(SAMPLE_FILE, 417))
    chunks = [events[start : start + 30] for start in range(0, len(events), 30)]  # 14 objects
    assert len(chunks) > 2 * TRANSFORM_THREADS
    keys = [f"{r.raw_prefix}shardId-000000000000/{n:04d}.jsonl" for n in range(len(chunks))]
    for key, chunk in zip(keys, chunks, strict=True):
        s3.put_object(Bucket=r.raw_bucket, Key=key, Body=write_jsonl(chunk))
    bad_key = f"{r.raw_prefix}shardId-000000000000/0005-bad.jsonl"
    s3.put_object(Bucket=r.raw_bucket, Key=bad_key, Body=write_jsonl(chunks[0][:2]) + b"{not json\n")

    result = transform(stack_env["cfg"])
    assert result.objects == len(chunks) and result.rows == 417
    assert result.csv_keys == [f"{r.staging_prefix}shardId-000000000000/{n:04d}.csv" for n in range(len(chunks))]
    assert len(result.errors) == 1 and bad_key in result.errors[0] and "line 3: not JSON" in result.errors[0]
    for key, chunk in zip(result.csv_keys, chunks, strict=True):
        text = s3.get_object(Bucket=r.staging_bucket, Key=key)["Body"].read().decode("utf-8")
        assert [line.split(",", 1)[0] for line in text.splitlines()[1:]] == [e["event_id"] for e in chunk]
    c = counts(stack_env["cfg"])
    assert c["raw_objects_pending"] == 1 and c["raw_objects_processed"] == c["staging_files"] == len(chunks)
