"""Read-API latency benchmark (not a test): `make bench-read` or `python -m bench.read_api`.

Starts its own embedded stack on free ports in a temp dir (or uses the configured one with
--use-running), loads >= 100,000 rows (the first N rows of the file plus every row of customer
14911 and invoice 573585, the largest), then measures, interleaved in one run:

  GET /customers/{id}/invoices   (customer token; first page, limit 20)
  GET /invoices/{no}             (operator key; first page, limit 20; whole invoice read for the total)
  bare DynamoDB Query            (the same reads straight against the emulator, no API/Lambda)
  bare Lambda invoke             (customer-reads answering 400 before any DynamoDB call)
  read-time aggregation          (the design not chosen: customer page + one Query per invoice, 8 threads)

over --requests requests each for a spread of customers/invoices, every 10th being the largest.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BIG_CUSTOMER, BIG_INVOICE = 14911, "573585"


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return {
        "n": len(ordered),
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "mean": statistics.fmean(ordered),
        "max": ordered[-1],
    }


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def run(rows: int, requests_per_route: int, seed: int) -> dict:
    import boto3
    import requests

    from bench.readapi_data import expectations, write_filtered
    from bootstrap.deploy import find_api
    from ecom_core import aws, config
    from handlers.auth import mint
    from replay.client import Sender, replay
    from replay.source import read_rows
    from warehouse.status import store_counts, wait_for_drain

    cfg = config.stack()
    r = config.resources()
    api = find_api(cfg)
    work = Path(tempfile.mkdtemp(prefix="bench-read-"))
    path = write_filtered(work / "bench-read.csv", first_rows=rows, customers=(BIG_CUSTOMER,), invoices=(BIG_INVOICE,))
    expect = expectations(path)
    print(f"loading {path.name}: {sum(i['lines'] for i in expect['invoices'].values()):,} rows ...", flush=True)
    started = time.perf_counter()
    result = replay(read_rows(path), Sender(api["api_url"], api["api_key"]), concurrency=4)
    sent = time.perf_counter() - started
    assert wait_for_drain(result.high_water, cfg, timeout=1800), "stream consumer did not catch up"
    loaded = time.perf_counter() - started
    counts = store_counts(cfg, include_stream=False)
    print(
        f"loaded: {result.accepted:,} events accepted in {sent:.1f}s, in DynamoDB after {loaded:.1f}s; "
        f"{counts['invoice_lines']:,} invoice lines, {counts['customer_invoices']:,} customer entries",
        flush=True,
    )
    shutil.rmtree(work, ignore_errors=True)

    rng = random.Random(seed)
    customers = sorted(expect["by_customer"])
    invoices = sorted(expect["invoices"])
    pick_customers = [BIG_CUSTOMER if i % 10 == 0 else rng.choice(customers) for i in range(requests_per_route)]
    pick_invoices = [BIG_INVOICE if i % 10 == 0 else rng.choice(invoices) for i in range(requests_per_route)]
    tokens = {c: f"Bearer {mint(c, ttl_seconds=3600)}" for c in set(pick_customers)}
    operator = f"Operator {config.auth().operator_key}"
    http = requests.Session()
    dynamodb = boto3.resource(
        "dynamodb",
        endpoint_url=cfg.endpoint_url,
        region_name=cfg.region,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).meta.client
    lam = aws.client("lambda", cfg)
    base = api["api_url"]

    def get(url, auth):
        response = http.get(url, headers={"Authorization": auth}, timeout=60)
        assert response.status_code == 200, (url, response.status_code, response.text[:200])

    def bare_customer(c):
        return dynamodb.query(
            TableName=r.customer_table,
            IndexName="ByDate",
            ScanIndexForward=False,
            Limit=21,
            KeyConditionExpression="CustomerID = :c",
            ExpressionAttributeValues={":c": c},
        )

    def bare_invoice(n):
        for _ in aws.pages(
            dynamodb.query,
            TableName=r.invoice_table,
            KeyConditionExpression="InvoiceNo = :n",
            ExpressionAttributeValues={":n": n},
        ):
            pass

    pool = ThreadPoolExecutor(max_workers=8)

    def read_time_aggregation(c):
        page = bare_customer(c)["Items"]
        list(pool.map(lambda item: bare_invoice(item["InvoiceNo"]), page[:20]))

    bad_event = json.dumps(
        {
            "resource": "/customers/{customerId}/invoices",
            "httpMethod": "GET",
            "pathParameters": {"customerId": "x"},
            "headers": {"Authorization": operator},
        }
    )

    def bare_invoke():
        out = lam.invoke(FunctionName=r.reads_function, Payload=bad_event)
        assert json.loads(out["Payload"].read())["statusCode"] == 400

    series: dict[str, list[float]] = {
        k: []
        for k in (
            "GET /customers/{id}/invoices",
            "bare Query customer (ByDate, 21)",
            "read-time aggregation (1+20 Queries)",
            "GET /invoices/{no}",
            "bare Query invoice (all lines)",
            "bare Lambda invoke (400, no DynamoDB)",
        )
    }
    largest: dict[str, list[float]] = {k: [] for k in series}
    # Warm-up: the workers, the connections and the authorizer cache of the first tokens.
    for c, n in zip(pick_customers[:30], pick_invoices[:30], strict=True):
        get(f"{base}/customers/{c}/invoices", tokens[c])
        get(f"{base}/invoices/{n}", operator)
    for i, (c, n) in enumerate(zip(pick_customers, pick_invoices, strict=True)):
        measured = {
            "GET /customers/{id}/invoices": timed(lambda c=c: get(f"{base}/customers/{c}/invoices", tokens[c])),
            "bare Query customer (ByDate, 21)": timed(lambda c=c: bare_customer(c)),
            "read-time aggregation (1+20 Queries)": timed(lambda c=c: read_time_aggregation(c)),
            "GET /invoices/{no}": timed(lambda n=n: get(f"{base}/invoices/{n}", operator)),
            "bare Query invoice (all lines)": timed(lambda n=n: bare_invoice(n)),
            "bare Lambda invoke (400, no DynamoDB)": timed(bare_invoke),
        }
        for name, ms in measured.items():
            series[name].append(ms)
            if i % 10 == 0:
                largest[name].append(ms)
    pool.shutdown()
    return {
        "rows_loaded": counts["invoice_lines"],
        "customer_entries": counts["customer_invoices"],
        "load_seconds": round(loaded, 1),
        "requests_per_route": requests_per_route,
        "distinct_customers": len(set(pick_customers)),
        "distinct_invoices": len(set(pick_invoices)),
        "all": {k: percentiles(v) for k, v in series.items()},
        "largest only (14911 / 573585)": {k: percentiles(v) for k, v in largest.items()},
    }


def print_report(report: dict) -> None:
    print(
        f"\nrows loaded {report['rows_loaded']:,} ({report['customer_entries']:,} customer entries, "
        f"load {report['load_seconds']}s); {report['requests_per_route']} requests per route, "
        f"{report['distinct_customers']} customers, {report['distinct_invoices']} invoices"
    )
    for group in ("all", "largest only (14911 / 573585)"):
        print(f"\n{group}\n{'series':42} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, p in report[group].items():
            print(f"{name:42} {p['n']:>5} {p['p50']:>8.1f} {p['p95']:>8.1f} {p['p99']:>8.1f} {p['max']:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="first N rows of the file (plus 14911 and 573585)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per route")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--use-running",
        action="store_true",
        help="use the stack of the current environment (ECOM_*) instead of a private one",
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args()
    if args.use_running:
        report = run(args.rows, args.requests, args.seed)
    else:
        from bootstrap import stack

        with stack.temporary_stack("ecom-bench-"):
            report = run(args.rows, args.requests, args.seed)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
