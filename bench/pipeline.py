"""`ecom bench`: the platform's ceiling, our pipeline and the original design, side by side in one run.

One fresh embedded stack (temp dir, free ports), then three measurements on it:

1. ceiling: the emulator doing the same work with nothing of ours in between, driven directly with
   boto3 from this process: PutRecords of the same N records (same bytes, same partition keys, same
   shard count, same concurrency as the replay), BatchWriteItem of the same invoice and customer
   items (same chunking and threads as the trigger), the same S3 raw-object puts, and a bare
   Postgres COPY of the same rows into a copy of the fact table. Scratch resources, deleted after.
   The emulator is one process, so the stage times add up: ceiling wall = their sum.
2. original design: one event per request, sequentially, like the original script, on a slice
   (default 3,000 rows), through the same stack to the warehouse.
3. ours: the file (or the first N rows) through API -> Kinesis -> trigger -> DynamoDB + S3 -> ETL
   -> warehouse, timed per stage, from the first POST until the warehouse holds exactly the N rows.
   DynamoDB and the event-id set of the warehouse are then checked exactly (not timed).

Stores are emptied between 2 and 3 (not the stream), so 3 starts from the same state a fresh
deployment has, except for the original's records already consumed on the stream.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from ecom_core import config
from bootstrap.reset import empty_stores

RESULTS_DIR = config.PROJECT_ROOT / "bench" / "results"
CEILING_STREAM = "bench-ceiling-stream"
CEILING_INVOICE = "bench-ceiling-invoice"
CEILING_CUSTOMER = "bench-ceiling-customer"
CEILING_BUCKET = "bench-ceiling-raw"
CEILING_COPY_TABLE = "dw.bench_ceiling_copy"


# ------------------------------------------------------------------ memory

def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(_children(current))
    return pids


def _memory_kib(pid: int, field: str) -> int:
    """`Pss` from smaps_rollup (shared pages counted once across Postgres' processes) or `VmRSS`."""
    source = f"/proc/{pid}/smaps_rollup" if field == "Pss" else f"/proc/{pid}/status"
    try:
        with open(source) as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class MemorySampler:
    """Peak memory per process group, sampled every `interval` seconds (Linux /proc; zeros elsewhere).

    Groups: the emulator process, its Lambda worker processes, Postgres (postmaster + backends,
    proportional set size so shared buffers count once), and ours (this process: replay, ETL).
    """

    def __init__(self, ministack_pid: int | None, postmaster_pid: int | None, interval: float = 0.5):
        self.ministack_pid = ministack_pid
        self.postmaster_pid = postmaster_pid
        self.interval = interval
        self.peaks: dict[str, int] = {"emulator": 0, "lambda_workers": 0, "postgres": 0, "ours": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def sample(self) -> dict[str, int]:
        now = {"emulator": 0, "lambda_workers": 0, "postgres": 0, "ours": _memory_kib(os.getpid(), "VmRSS")}
        if self.ministack_pid:
            now["emulator"] = _memory_kib(self.ministack_pid, "VmRSS")
            now["lambda_workers"] = sum(_memory_kib(p, "VmRSS") for p in _tree(self.ministack_pid)[1:])
        if self.postmaster_pid:
            now["postgres"] = sum(_memory_kib(p, "Pss") for p in _tree(self.postmaster_pid))
        for key, value in now.items():
            self.peaks[key] = max(self.peaks[key], value)
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def reset(self) -> None:
        self.peaks = dict.fromkeys(self.peaks, 0)
        self.sample()

    def __enter__(self) -> "MemorySampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def peaks_mib(self) -> dict[str, float]:
        return {k: round(v / 1024, 1) for k, v in self.peaks.items()}


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((l.split(":", 1)[1].strip() for l in handle if l.startswith("model name")), cpu)
    except OSError:
        pass
    memory_gib = None
    try:
        with open("/proc/meminfo") as handle:
            memory_gib = round(int(handle.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        from importlib.metadata import version
        ministack_version = version("ministack")
    except Exception:
        ministack_version = "?"
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory_gib,
        "os": platform.platform(), "python": platform.python_version(), "ministack": ministack_version,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "note": "shared machine: other engineers' test runs were using the same 2 cores",
    }


# ------------------------------------------------------------------ the fresh stack

@contextmanager
def fresh_stack(keep: bool = False) -> Iterator[dict[str, Any]]:
    """A new embedded stack on free ports in a temp dir; this process's environment points at it.

    The scheduled ETL job is switched off: this bench times the ETL steps itself (run_once), and a
    tick in the middle would take the lease and the work from under it."""
    from bootstrap import stack

    os.environ["ECOM_ETL_SCHEDULE_STATE"] = "DISABLED"
    with stack.temporary_stack("ecom-bench-", keep=keep) as env:
        state = stack.read_state(env["cfg"])
        try:
            postmaster = int((env["data_dir"] / "pg" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            postmaster = None
        yield {**env, "ministack_pid": state.get("ministack_pid"), "postmaster_pid": postmaster}


# ------------------------------------------------------------------ source helpers

@dataclass
class SourceFacts:
    rows: int
    customer_invoices: int
    event_id_digest: int


def _id_hash(event_id: str) -> int:
    # First 60 bits of md5: the same number Postgres computes in `warehouse_digest`.
    return int(hashlib.md5(event_id.encode()).hexdigest()[:15], 16)


DIGEST_MODULUS = 2 ** 63


def source_facts(path: Path, rows: int | None) -> SourceFacts:
    """What an exact reconciliation must find, from one streaming pass over the file (the ids the
    events are stored under, as ingestion binds them)."""
    count = digest = 0
    pairs: set[tuple[Any, str]] = set()
    for event in canonical_events(path, rows):
        count += 1
        digest = (digest + _id_hash(event["event_id"])) % DIGEST_MODULUS
        if event["CustomerID"] is not None:
            pairs.add((event["CustomerID"], event["InvoiceNo"]))
    return SourceFacts(count, len(pairs), digest)


def canonical_events(path: Path, rows: int | None) -> Iterator[dict[str, Any]]:
    """The file's rows as the ingestion Lambda puts them on the stream (validated, normalised)."""
    from handlers.events import accept_event
    from replay.source import read_rows

    for row in read_rows(path, rows):
        yield accept_event(row.event)


def chunks(iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def bounded_map(pool: ThreadPoolExecutor, fn: Callable, items, in_flight: int) -> int:
    """Run fn over a stream of items with at most `in_flight` pending (bounded memory). Returns the count."""
    pending: set = set()
    done_count = 0
    for item in items:
        pending.add(pool.submit(fn, item))
        if len(pending) >= in_flight:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()
                done_count += 1
    for future in pending:
        future.result()
        done_count += 1
    return done_count


# ------------------------------------------------------------------ 1. ceiling

def measure_ceiling(path: Path, rows: int | None, *, put_concurrency: int, batch_size: int) -> dict[str, Any]:
    from bootstrap.deploy import Deployer
    from bootstrap.spec import platform as spec_platform
    from ecom_core import aws
    from handlers import stream_trigger
    from handlers.ingestion import encode_record
    from warehouse import db
    from etl.load import COLUMN_LIST

    cfg = config.stack()
    scratch = config.Resources(stream=CEILING_STREAM, invoice_table=CEILING_INVOICE,
                               customer_table=CEILING_CUSTOMER)
    deployer = Deployer(cfg, spec_platform(scratch))
    deployer.stream()
    deployer.tables()
    kinesis = aws.client("kinesis", cfg)
    s3 = aws.client("s3", cfg)
    s3.create_bucket(Bucket=CEILING_BUCKET)
    dynamodb = stream_trigger.writer_client(cfg)
    result: dict[str, Any] = {}

    # Only the calls are timed: the records, items and bodies of each window are built first (from
    # the file, streaming), so the ceiling is the emulator plus boto3, not our parsing.
    # Kinesis: PutRecords of the same records, `put_concurrency` calls in flight like the replay.
    def put(records: list[dict[str, Any]]) -> None:
        pending = records
        while pending:
            answer = kinesis.put_records(StreamName=CEILING_STREAM, Records=pending)
            pending = [r for r, o in zip(pending, answer["Records"]) if o.get("ErrorCode")]

    put_seconds = 0.0
    with ThreadPoolExecutor(max_workers=put_concurrency) as pool:
        for window in chunks(chunks(canonical_events(path, rows), 500), 20):
            requests = [[encode_record(e) for e in batch] for batch in window]
            clock = time.perf_counter()
            list(pool.map(put, requests))
            put_seconds += time.perf_counter() - clock
    result["kinesis_put_seconds"] = put_seconds
    kinesis.delete_stream(StreamName=CEILING_STREAM, EnforceConsumerDeletion=True)

    # DynamoDB, S3 and the COPY input from one more pass over the file, batch by batch as the
    # trigger sees it: its items written its way (chunks of 25, its thread count), its raw object
    # put, and the batch's CSV spooled to disk for the bare COPY below.
    from etl.transform import jsonl_to_csv

    items = {"invoice": 0, "customer": 0}
    write_seconds = s3_seconds = 0.0
    objects = 0
    with tempfile.TemporaryFile(mode="w+b") as spool:
        spool.write((",".join(_csv_header()) + "\n").encode())
        for number, batch in enumerate(chunks(canonical_events(path, rows), batch_size)):
            invoice = [stream_trigger.invoice_item(e) for e in batch]
            # The trigger reads the invoice's stored lines first (redelivery-safe); the ceiling
            # measures the bare writes, so it totals the batch alone (a slightly kinder ceiling).
            customer = stream_trigger.customer_totals(invoice)
            items["invoice"] += len(invoice)
            items["customer"] += len(customer)
            clock = time.perf_counter()
            stream_trigger.batch_write(CEILING_INVOICE, invoice, dynamodb)
            stream_trigger.batch_write(CEILING_CUSTOMER, customer, dynamodb)
            write_seconds += time.perf_counter() - clock
            body = stream_trigger.write_jsonl(batch)
            clock = time.perf_counter()
            s3.put_object(Bucket=CEILING_BUCKET, Key=f"raw/{number:08d}.jsonl", Body=body)
            s3_seconds += time.perf_counter() - clock
            objects += 1
            spool.write(jsonl_to_csv(body)[0].split(b"\n", 1)[1])
        result["dynamodb_seconds"] = write_seconds
        result["dynamodb_items"] = items["invoice"] + items["customer"]
        result["s3_seconds"] = s3_seconds
        result["s3_objects"] = objects
        for table in (CEILING_INVOICE, CEILING_CUSTOMER):
            aws.client("dynamodb", cfg).delete_table(TableName=table)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=CEILING_BUCKET):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=CEILING_BUCKET, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=CEILING_BUCKET)

        # Postgres: one bare COPY of the same rows into a copy of the fact table (same keys, indexes).
        spool.seek(0)
        with db.connection() as conn:
            db.ensure_schema(conn)
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {CEILING_COPY_TABLE}")
                # The CSV's columns, their types and the key: the bare cost of landing these rows.
                cur.execute(f"CREATE TABLE {CEILING_COPY_TABLE} AS SELECT {COLUMN_LIST} FROM {db.FACT_TABLE} "
                            f"WHERE 1 = 0")
                cur.execute(f'ALTER TABLE {CEILING_COPY_TABLE} ADD PRIMARY KEY ("event_id")')
            conn.commit()
            clock = time.perf_counter()
            with conn.cursor() as cur:
                cur.copy_expert(f"COPY {CEILING_COPY_TABLE} ({COLUMN_LIST}) FROM STDIN WITH (FORMAT csv, HEADER true)",
                                spool)
            conn.commit()
            result["copy_seconds"] = time.perf_counter() - clock
            with conn.cursor() as cur:
                cur.execute(f"SELECT count(*) FROM {CEILING_COPY_TABLE}")
                result["copy_rows"] = cur.fetchone()[0]
                cur.execute(f"DROP TABLE {CEILING_COPY_TABLE}")
            conn.commit()
    result["seconds"] = sum(result[k] for k in ("kinesis_put_seconds", "dynamodb_seconds", "s3_seconds", "copy_seconds"))
    return result


def _csv_header() -> list[str]:
    from ecom_core.contract import CSV_HEADER
    return CSV_HEADER


# ------------------------------------------------------------------ 2 and 3. through the pipeline

def run_pipeline(env: dict[str, Any], path: Path, rows: int | None, *, one_by_one: bool, concurrency: int,
                 batch_size: int) -> dict[str, Any]:
    """Replay -> wait for the consumer -> ETL, timed per stage."""
    from etl.run import run_once
    from replay.client import Sender, replay
    from replay.source import read_rows
    from warehouse import db
    from warehouse.status import wait_for_drain

    cfg = env["cfg"]
    sender = Sender(env["api_url"], env["api_key"])
    start = time.perf_counter()
    result = replay(read_rows(path, rows), sender, batch_size=batch_size, concurrency=concurrency,
                    one_by_one=one_by_one)
    replayed = time.perf_counter()
    if result.rejected:
        raise RuntimeError(f"the API rejected {len(result.rejected)} rows, e.g. {result.rejected[0]}")
    if not wait_for_drain(result.high_water, cfg, timeout=3600, poll=0.2):
        raise RuntimeError("the stream consumer did not catch up within an hour")
    drained = time.perf_counter()
    run = run_once(cfg)
    if run.transform.errors:
        raise RuntimeError(f"the ETL left raw objects in place: {run.transform.errors[:3]}")
    with db.connection() as conn:
        warehouse_rows = db.count(conn, db.FACT_TABLE)
    finished = time.perf_counter()
    return {
        "rows": result.accepted, "requests": result.requests, "retries": result.retries,
        "replay_seconds": replayed - start, "consumer_lag_seconds": drained - replayed,
        "consumer_seconds": drained - start, "etl_seconds": run.seconds,
        "transform_seconds": run.timings.get("transform"), "catalog_seconds": run.timings.get("catalog"),
        "load_seconds": run.timings.get("load"), "raw_objects": run.transform.objects,
        "files_loaded": run.load.files_loaded, "rows_inserted": run.load.rows_inserted,
        "warehouse_rows_at_end": warehouse_rows, "seconds": finished - start,
    }


def reconcile(cfg: config.Stack, facts: SourceFacts) -> dict[str, Any]:
    """Exact counts in every store, and the exact event-id set of the warehouse and DynamoDB.

    The invoice table is scanned once (count and event-id digest together): MiniStack's Scan
    pagination costs O(table size) per page, so every extra full scan is quadratic.
    """
    from ecom_core import aws
    from warehouse import db
    from warehouse.status import count_items, count_keys

    clock = time.perf_counter()
    r = config.resources()
    s3 = aws.client("s3", cfg)
    dynamodb = aws.client("dynamodb", cfg)
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*), count(DISTINCT event_id), "
                    f"coalesce(sum(('x' || substr(md5(event_id), 1, 15))::bit(60)::bigint::numeric), 0) "
                    f"% {DIGEST_MODULUS} FROM {db.FACT_TABLE}")
        rows, distinct, digest = cur.fetchone()
        cur.execute(f"SELECT count(*) FROM {db.MANIFEST_TABLE}")
        files_loaded = cur.fetchone()[0]
    dynamo_digest = dynamo_items = 0
    for item in aws.items(dynamodb.scan, TableName=r.invoice_table, ProjectionExpression="LineId"):
        dynamo_items += 1
        dynamo_digest = (dynamo_digest + _id_hash(item["LineId"]["S"])) % DIGEST_MODULUS
    found = {
        "warehouse_rows": rows, "warehouse_distinct_event_ids": distinct,
        "dynamodb_invoice_lines": dynamo_items,
        "dynamodb_customer_invoices": count_items(dynamodb, r.customer_table),
        "staging_files": count_keys(s3, r.staging_bucket, r.staging_prefix), "files_loaded": files_loaded,
        "raw_objects_pending": count_keys(s3, r.raw_bucket, r.raw_prefix),
        "raw_objects_processed": count_keys(s3, r.raw_bucket, r.processed_prefix),
        "quarantined": count_keys(s3, r.dead_letter_bucket, r.dead_letter_prefix),
    }
    checks = {
        "warehouse_rows": rows == facts.rows,
        "warehouse_no_duplicates": distinct == rows,
        "warehouse_event_ids_match_source": int(digest) == facts.event_id_digest,
        "dynamodb_invoice_lines": dynamo_items == facts.rows,
        "dynamodb_event_ids_match_source": dynamo_digest == facts.event_id_digest,
        "dynamodb_customer_invoices": found["dynamodb_customer_invoices"] == facts.customer_invoices,
        "every_staging_file_loaded_once": files_loaded == found["staging_files"],
        "no_raw_left": found["raw_objects_pending"] == 0,
        "nothing_quarantined": found["quarantined"] == 0,
    }
    return {"exact": all(checks.values()), "checks": checks, "seconds": time.perf_counter() - clock,
            "expected": {"rows": facts.rows, "customer_invoices": facts.customer_invoices}, "found": found}


# ------------------------------------------------------------------ the whole bench

def run(path: Path, rows: int | None = None, *, original_rows: int = 3000, concurrency: int = 4,
        batch_size: int = 500, keep: bool = False, skip_ceiling: bool = False, skip_original: bool = False,
        log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    started_at = datetime.now(timezone.utc)
    out: dict[str, Any] = {"started_at": started_at.isoformat(timespec="seconds"), "file": str(path),
                           "machine": machine_description()}
    log("counting the source (one streaming pass) ...")
    facts = source_facts(path, rows)
    out["rows"] = facts.rows
    with fresh_stack(keep=keep) as env:
        r = config.resources()
        out["settings"] = {"stream_shards": r.stream_shards, "trigger_batch_size": r.trigger_batch_size,
                           "trigger_write_threads": config.limits().trigger_write_threads,
                           "replay_concurrency": concurrency, "replay_batch_size": batch_size,
                           "stack_startup_seconds": round(env["startup_seconds"], 2)}
        with MemorySampler(env["ministack_pid"], env["postmaster_pid"]) as memory:
            if not skip_ceiling:
                log(f"ceiling: the emulator doing the same work directly ({facts.rows:,} records) ...")
                memory.reset()
                out["ceiling"] = measure_ceiling(path, rows, put_concurrency=concurrency,
                                                 batch_size=r.trigger_batch_size)
                out["ceiling"]["peak_memory_mib"] = memory.peaks_mib()
            if not skip_original:
                n = min(original_rows, facts.rows)
                log(f"original design: {n:,} rows, one event per request, sequential ...")
                memory.reset()
                out["original"] = run_pipeline(env, path, n, one_by_one=True, concurrency=1, batch_size=1)
                out["original"]["peak_memory_mib"] = memory.peaks_mib()
                empty_stores(env["cfg"])
            log(f"ours: {facts.rows:,} rows through API -> Kinesis -> trigger -> DynamoDB + S3 -> ETL -> warehouse ...")
            memory.reset()
            out["ours"] = run_pipeline(env, path, rows, one_by_one=False, concurrency=concurrency,
                                       batch_size=batch_size)
            out["ours"]["peak_memory_mib"] = memory.peaks_mib()
            log("reconciling every store exactly ...")
            out["reconciliation"] = reconcile(env["cfg"], facts)
    out["summary"] = summarise(out)
    out["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return out


def _eps(rows: int, seconds: float | None) -> float | None:
    return rows / seconds if seconds else None


def summarise(out: dict[str, Any]) -> dict[str, Any]:
    n = out["rows"]
    ours = out["ours"]
    summary: dict[str, Any] = {"ours_events_per_second": _eps(n, ours["seconds"])}
    if "original" in out:
        original = out["original"]
        summary["original_events_per_second"] = _eps(original["rows"], original["seconds"])
        summary["speedup_vs_original"] = summary["ours_events_per_second"] / summary["original_events_per_second"]
    if "ceiling" in out:
        ceiling = out["ceiling"]
        summary["ceiling_events_per_second"] = _eps(n, ceiling["seconds"])
        summary["ours_vs_ceiling"] = summary["ours_events_per_second"] / summary["ceiling_events_per_second"]
        summary["load_vs_bare_copy"] = ours["load_seconds"] / ceiling["copy_seconds"]
    summary["exact"] = out["reconciliation"]["exact"]
    return summary


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _fmt_eps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def table(out: dict[str, Any]) -> str:
    """One Markdown table: stages (ours vs ceiling), the original design, ratios, memory, counts."""
    n = out["rows"]
    ours, ceiling, original = out["ours"], out.get("ceiling"), out.get("original")
    s = out["summary"]
    lines = [f"rows: {n:,}   machine: {out['machine']['cores']} cores, {out['machine']['cpu']}, "
             f"{out['machine']['memory_gib']} GiB (shared)   settings: {json.dumps(out['settings'])}", "",
             "| stage | ours s | ours ev/s | ceiling s | ceiling ev/s | original s | original ev/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def row(name, ours_s, ceiling_s, original_s, original_rows=None):
        lines.append(f"| {name} | {_fmt_s(ours_s)} | {_fmt_eps(_eps(n, ours_s))} | {_fmt_s(ceiling_s)} | "
                     f"{_fmt_eps(_eps(n, ceiling_s))} | {_fmt_s(original_s)} | "
                     f"{_fmt_eps(_eps(original_rows, original_s)) if original_rows else '-'} |")

    o_rows = original["rows"] if original else None
    row("API -> Kinesis (replay)", ours["replay_seconds"], ceiling and ceiling["kinesis_put_seconds"],
        original and original["replay_seconds"], o_rows)
    row("Kinesis -> DynamoDB + S3 (from replay start)", ours["consumer_seconds"],
        ceiling and ceiling["dynamodb_seconds"] + ceiling["s3_seconds"], original and original["consumer_seconds"], o_rows)
    row("  consumer lag after the last POST", ours["consumer_lag_seconds"], None,
        original and original["consumer_lag_seconds"], o_rows)
    row("ETL transform (raw JSON -> CSV)", ours["transform_seconds"], None, original and original["transform_seconds"], o_rows)
    row("ETL catalog", ours["catalog_seconds"], None, original and original["catalog_seconds"], o_rows)
    row("ETL load (warehouse)", ours["load_seconds"], ceiling and ceiling["copy_seconds"],
        original and original["load_seconds"], o_rows)
    row("**end to end** (first POST -> exact warehouse)", ours["seconds"], ceiling and ceiling["seconds"],
        original and original["seconds"], o_rows)
    lines.append("")
    ratios = [f"ours end-to-end {_fmt_eps(s['ours_events_per_second'])} ev/s"]
    if "speedup_vs_original" in s:
        ratios.append(f"ours/original **{s['speedup_vs_original']:,.1f}x**")
    if "ours_vs_ceiling" in s:
        ratios.append(f"ours/ceiling **{s['ours_vs_ceiling']:.0%}**")
        ratios.append(f"load/bare COPY **{s['load_vs_bare_copy']:.1f}x**")
    lines.append("; ".join(ratios))
    lines.append("")
    lines.append("| peak memory (MiB) | emulator | Lambda workers | Postgres (PSS) | ours (bench process) |")
    lines.append("|---|---:|---:|---:|---:|")
    for name, part in (("ceiling", ceiling), ("original", original), ("ours", ours)):
        if part and "peak_memory_mib" in part:
            m = part["peak_memory_mib"]
            lines.append(f"| {name} | {m['emulator']:,.0f} | {m['lambda_workers']:,.0f} | {m['postgres']:,.0f} | "
                         f"{m['ours']:,.0f} |")
    rec = out["reconciliation"]
    lines.append("")
    lines.append(f"reconciliation {'EXACT' if rec['exact'] else 'NOT EXACT'}: expected {json.dumps(rec['expected'])}; "
                 f"found {json.dumps(rec['found'])}")
    if not rec["exact"]:
        lines.append("failed checks: " + ", ".join(k for k, v in rec["checks"].items() if not v))
    return "\n".join(lines)


def save(out: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = directory / f"{stamp}-{out['rows']}rows"
    base.with_suffix(".json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    base.with_suffix(".md").write_text(f"# ecom bench {out['started_at']}\n\n"
                                       f"machine: {json.dumps(out['machine'])}\n\n{table(out)}\n")
    return base.with_suffix(".json")
