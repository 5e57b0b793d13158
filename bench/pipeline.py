"""`ecom bench`: the platform's ceiling, our pipeline and the original design, side by side in one run.

One fresh embedded stack (temp dir, free ports, the ETL job scheduled as deployed), then three
measurements on it:

1. ceiling: the emulator doing the same work with nothing of ours in between, driven directly with
   boto3 from this process: PutRecords of the same N records (same bytes, same partition keys, same
   shard count, same concurrency as the replay), BatchWriteItem of the same invoice and customer
   items (same chunking and threads as the trigger), the same S3 raw-object puts, and a bare
   Postgres COPY of the same rows into a copy of the fact table with its indexes (and, for the
   earlier rounds' figure, into one with the primary key only). Scratch resources, deleted after.
   The emulator is one process, so the stage times add up: ceiling wall = their sum.
2. original design: one event per request, sequentially, like the original script, on a slice
   (default 3,000 rows), through the same stack to the warehouse.
3. ours: the path a user runs, timed from outside: `ecom replay FILE` (the CLI, its default
   settings; it returns once the stream consumer has caught up), then nothing but the deployed
   scheduled ETL job (EventBridge Scheduler -> Lambda `etl-job`), from the first POST until the
   warehouse holds exactly the N rows. The job's own step times come from its run log (dw.etl_run).
   DynamoDB and the event-id set of the warehouse are then checked exactly (not timed).

Stores are emptied between 2 and 3 (not the stream), so 3 starts from the same state a fresh
deployment has, except for the original's records already consumed on the stream.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bootstrap.reset import empty_stores
from ecom_core import config
from ecom_core.events import DIGEST_MODULUS, id_hash
from warehouse import schema
from warehouse.redshift_data import DataApi

RESULTS_DIR = config.PROJECT_ROOT / "bench" / "results"
CEILING_STREAM = "bench-ceiling-stream"
CEILING_INVOICE = "bench-ceiling-invoice"
CEILING_CUSTOMER = "bench-ceiling-customer"
CEILING_OWNER = "bench-ceiling-invoice-owner"
CEILING_BUCKET = "bench-ceiling-raw"
CEILING_COPY_TABLE = "dw.bench_ceiling_copy"


# ------------------------------------------------------------------ memory


def _children(pid: int) -> list[int]:
    """Children of every thread of `pid` (a process started from a thread other than the main one,
    like the emulator's stream poller starting a Lambda worker, is listed under that thread)."""
    children: list[int] = []
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                children.extend(int(p) for p in handle.read().split())
        except OSError:
            continue
    return children


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


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


_WORKER = re.compile(r"ministack-lambda-(.+?)-[a-z0-9_]+/_worker\.py")


def _worker_function(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            found = _WORKER.search(handle.read().decode(errors="replace"))
    except OSError:
        return None
    return found.group(1) if found else None


class MemorySampler:
    """Peak memory per process group, and CPU seconds per process, sampled every `interval` seconds
    (Linux /proc; zeros elsewhere).

    Groups: the emulator process, its Lambda worker processes (CPU: per function), Postgres
    (postmaster + backends, proportional set size so shared buffers count once), ours (this
    process and its children: the `ecom replay` command), and (CPU only) the stack's Redshift Data
    API, which stands in for Redshift's front end as Postgres stands in for its engine.
    """

    def __init__(
        self,
        ministack_pid: int | None,
        postmaster_pid: int | None,
        interval: float = 0.5,
        redshift_data_pid: int | None = None,
    ):
        self.ministack_pid = ministack_pid
        self.postmaster_pid = postmaster_pid
        self.redshift_data_pid = redshift_data_pid
        self.interval = interval
        self.peaks: dict[str, int] = {"emulator": 0, "lambda_workers": 0, "postgres": 0, "ours": 0}
        # pid -> (group, CPU seconds when first seen since the reset, CPU seconds last seen)
        self._cpu: dict[int, tuple[str, float, float]] = {}
        # (perf_counter time, CPU seconds per group since the reset) at every sample: `cpu_by_phase`
        # cuts it at a run's phase bounds.
        self.series: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _groups(self) -> dict[int, str]:
        groups = {pid: "ours (replay command, bench)" for pid in _tree(os.getpid())}
        if self.ministack_pid:
            groups[self.ministack_pid] = "emulator"
            for pid in _tree(self.ministack_pid)[1:]:
                groups[pid] = f"lambda {_worker_function(pid) or 'worker'}"
        if self.postmaster_pid:
            groups.update({pid: "postgres" for pid in _tree(self.postmaster_pid)})
        if self.redshift_data_pid:
            groups[self.redshift_data_pid] = "redshift data api (local)"
        return groups

    def sample(self) -> dict[str, int]:
        now = {"emulator": 0, "lambda_workers": 0, "postgres": 0, "ours": _memory_kib(os.getpid(), "VmRSS")}
        if self.ministack_pid:
            now["emulator"] = _memory_kib(self.ministack_pid, "VmRSS")
            now["lambda_workers"] = sum(_memory_kib(p, "VmRSS") for p in _tree(self.ministack_pid)[1:])
        if self.postmaster_pid:
            now["postgres"] = sum(_memory_kib(p, "Pss") for p in _tree(self.postmaster_pid))
        with self._lock:
            for key, value in now.items():
                self.peaks[key] = max(self.peaks[key], value)
            for pid, group in self._groups().items():
                seconds = _cpu_seconds(pid)
                first = self._cpu[pid][1] if pid in self._cpu else 0.0  # born since: all its time counts
                self._cpu[pid] = (group, first, seconds)
            self.series.append((time.perf_counter(), self._totals()))
        return now

    def _totals(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for group, first, last in self._cpu.values():
            totals[group] = totals.get(group, 0.0) + last - first
        return totals

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def reset(self) -> None:
        with self._lock:
            self.peaks = dict.fromkeys(self.peaks, 0)
            # Processes alive now count from here; any that start later count from zero.
            self._cpu = {}
        self.sample()
        with self._lock:
            self._cpu = {pid: (group, last, last) for pid, (group, _, last) in self._cpu.items()}
            self.series = [(time.perf_counter(), self._totals())]

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds per group since the last reset (processes that ended between two samples lose
        at most `interval` seconds of their time)."""
        self.sample()
        with self._lock:
            totals = self._totals()
        return {group: round(seconds, 1) for group, seconds in sorted(totals.items(), key=lambda g: -g[1])}

    def __enter__(self) -> MemorySampler:
        self.reset()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def peaks_mib(self) -> dict[str, float]:
        return {k: round(v / 1024, 1) for k, v in self.peaks.items()}


def cpu_by_phase(
    series: list[tuple[float, dict[str, float]]], phases: list[tuple[str, float, float]]
) -> dict[str, dict[str, Any]]:
    """CPU seconds per process group within each phase (name, start, end on the series' clock), from
    cumulative samples (`MemorySampler.series`), each bound interpolated between the samples around
    it (0.5 s apart). Which process used the cores while the run waited on what."""

    def at(moment: float) -> dict[str, float]:
        if not series:
            return {}
        if moment <= series[0][0]:
            return series[0][1]
        for (t0, v0), (t1, v1) in itertools.pairwise(series):
            if t0 <= moment <= t1:
                share = (moment - t0) / (t1 - t0) if t1 > t0 else 1.0
                return {g: v0.get(g, 0.0) + (v1.get(g, 0.0) - v0.get(g, 0.0)) * share for g in set(v0) | set(v1)}
        return series[-1][1]

    out: dict[str, dict[str, Any]] = {}
    for name, start, end in phases:
        before, after = at(start), at(end)
        cpu = {g: round(after.get(g, 0.0) - before.get(g, 0.0), 2) for g in set(before) | set(after)}
        out[name] = {"seconds": round(end - start, 2), "cpu_seconds": dict(sorted(cpu.items(), key=lambda g: -g[1]))}
    return out


def machine_description() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
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
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "ministack": ministack_version,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python_loop_seconds": python_loop_seconds(),
    }


def python_loop_seconds(additions: int = 10_000_000) -> float:
    """Seconds of a fixed pure-Python loop at the start of the run: machines of the same kind here
    differ up to 3x, so results of different runs compare only through it (or side by side)."""
    started = time.perf_counter()
    total = 0
    for number in range(additions):
        total += number
    return round(time.perf_counter() - started, 2)


# ------------------------------------------------------------------ the fresh stack


@contextmanager
def fresh_stack(keep: bool = False) -> Iterator[dict[str, Any]]:
    """A new embedded stack on free ports in a temp dir; this process's environment points at it.

    Deployed as a user gets it: the ETL job's schedule on (whatever the caller's environment says),
    because the batch half of the measured path is that job."""
    from bootstrap import stack

    saved = os.environ.pop("ECOM_ETL_SCHEDULE_STATE", None)
    try:
        with stack.temporary_stack("ecom-bench-", keep=keep) as env:
            state = stack.read_state(env["cfg"])
            try:
                postmaster = int((env["data_dir"] / "pg" / "postmaster.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                postmaster = None
            yield {
                **env,
                "ministack_pid": state.get("ministack_pid"),
                "postmaster_pid": postmaster,
                "redshift_data_pid": state.get("redshift_data_pid"),
            }
    finally:
        if saved is not None:
            os.environ["ECOM_ETL_SCHEDULE_STATE"] = saved


# ------------------------------------------------------------------ source helpers


@dataclass
class SourceFacts:
    rows: int
    customer_invoices: int
    event_id_digest: int


def source_facts(path: Path, rows: int | None) -> SourceFacts:
    """What an exact reconciliation must find, from one streaming pass over the file (the ids the
    events are stored under, as ingestion binds them)."""
    count = digest = 0
    pairs: set[tuple[Any, str]] = set()
    for event in canonical_events(path, rows):
        count += 1
        digest = (digest + id_hash(event["event_id"])) % DIGEST_MODULUS
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


def _scratch_stream_and_tables(cfg: config.Stack, p) -> None:
    """The ceiling's own stream and tables, shaped as the platform's (spec), outside its stack."""
    from ecom_core import aws

    r = p.resources
    kinesis = aws.client("kinesis", cfg)
    kinesis.create_stream(StreamName=r.stream, ShardCount=r.stream_shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=r.stream, WaiterConfig={"Delay": 1})
    dynamodb = aws.client("dynamodb", cfg)
    for table in p.tables:
        dynamodb.create_table(**table.definition())
        dynamodb.get_waiter("table_exists").wait(TableName=table.name, WaiterConfig={"Delay": 1})


def measure_ceiling(path: Path, rows: int | None, *, put_concurrency: int, batch_size: int) -> dict[str, Any]:
    from bootstrap.spec import platform as spec_platform
    from ecom_core import aws
    from handlers import stream_trigger
    from handlers.ingestion import producer_client, wire_record
    from warehouse import db
    from warehouse.staging import COLUMN_LIST

    cfg = config.stack()
    scratch = config.Resources(
        stream=CEILING_STREAM,
        invoice_table=CEILING_INVOICE,
        customer_table=CEILING_CUSTOMER,
        invoice_owner_table=CEILING_OWNER,
    )
    _scratch_stream_and_tables(cfg, spec_platform(scratch))
    kinesis = producer_client(cfg)  # the ingestion Lambda's own PutRecords path
    s3 = aws.client("s3", cfg)
    s3.create_bucket(Bucket=CEILING_BUCKET)
    dynamodb = stream_trigger.wire_client(cfg)
    result: dict[str, Any] = {}

    # Only the calls are timed: the records, items and bodies of each window are built first (from
    # the file, streaming), so the ceiling is the emulator plus boto3, not our parsing.
    # Kinesis: PutRecords of the same records, `put_concurrency` calls in flight like the replay.
    def put(records: list[dict[str, Any]]) -> None:
        pending = records
        while pending:
            answer = kinesis.put_records(StreamName=CEILING_STREAM, Records=pending)
            pending = [r for r, o in zip(pending, answer["Records"], strict=True) if o.get("ErrorCode")]

    put_seconds = 0.0
    with ThreadPoolExecutor(max_workers=put_concurrency) as pool:
        for window in chunks(chunks(canonical_events(path, rows), 500), 20):
            requests = [[wire_record(e) for e in batch] for batch in window]
            clock = time.perf_counter()
            list(pool.map(put, requests))
            put_seconds += time.perf_counter() - clock
    result["kinesis_put_seconds"] = put_seconds
    kinesis.delete_stream(StreamName=CEILING_STREAM, EnforceConsumerDeletion=True)

    # DynamoDB, S3 and the COPY input from one more pass over the file, batch by batch as the
    # trigger sees it: its items written its way (chunks of 25, its thread count), its raw object
    # put, and the batch's CSV spooled to disk for the bare COPY below.
    from etl.transform import jsonl_to_csv

    items = {"invoice": 0, "customer": 0, "owner": 0}
    write_seconds = s3_seconds = 0.0
    objects = 0
    with tempfile.TemporaryFile(mode="w+b") as spool:
        spool.write((",".join(_csv_header()) + "\n").encode())
        for number, batch in enumerate(chunks(canonical_events(path, rows), batch_size)):
            invoice = [stream_trigger.invoice_item(e) for e in batch]
            # The trigger reads the invoice's stored lines first (redelivery-safe); the ceiling
            # measures the bare writes, so it totals the batch alone (a slightly kinder ceiling).
            customer = stream_trigger.customer_totals(invoice)
            # One owner item per invoice the batch starts (its first line's customer), as the trigger writes.
            owners: dict[str, Any] = {}
            for event in batch:
                owners.setdefault(
                    event["InvoiceNo"], stream_trigger.GUEST if event["CustomerID"] is None else event["CustomerID"]
                )
            items["invoice"] += len(invoice)
            items["customer"] += len(customer)
            items["owner"] += len(owners)
            # In wire form before the clock starts, as the requests of the other stages (until round
            # eleven this serialisation, ~4 s of the bench's CPU on the full file, was timed with the calls).
            invoice_wire = [stream_trigger.serialize_item(item) for item in invoice]
            customer_wire = [stream_trigger.serialize_item(item) for item in customer]
            owner_wire = [stream_trigger.owner_item(invoice_no, owner) for invoice_no, owner in owners.items()]
            clock = time.perf_counter()
            stream_trigger.write_items(CEILING_INVOICE, invoice_wire, dynamodb)
            stream_trigger.write_items(CEILING_CUSTOMER, customer_wire, dynamodb)
            stream_trigger.write_items(CEILING_OWNER, owner_wire, dynamodb)
            write_seconds += time.perf_counter() - clock
            body = stream_trigger.write_jsonl(batch)
            clock = time.perf_counter()
            s3.put_object(Bucket=CEILING_BUCKET, Key=f"raw/{number:08d}.jsonl", Body=body)
            s3_seconds += time.perf_counter() - clock
            objects += 1
            spool.write(jsonl_to_csv(body)[0].split(b"\n", 1)[1])
        result["dynamodb_seconds"] = write_seconds
        result["dynamodb_items"] = items["invoice"] + items["customer"] + items["owner"]
        result["s3_seconds"] = s3_seconds
        result["s3_objects"] = objects
        for table in (CEILING_INVOICE, CEILING_CUSTOMER, CEILING_OWNER):
            aws.client("dynamodb", cfg).delete_table(TableName=table)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=CEILING_BUCKET):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=CEILING_BUCKET, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=CEILING_BUCKET)

        # Postgres: a bare COPY of the same rows into a copy of the fact table with the fact table's
        # indexes (the yardstick of the load: the same rows into the same table), and, beside it,
        # into a copy with the primary key only (the yardstick of rounds one to six).
        schema.ensure_schema(DataApi())
        with db.connection() as conn:
            for all_indexes, seconds_key in ((True, "copy_seconds"), (False, "copy_key_only_seconds")):
                spool.seek(0)
                with conn.cursor() as cur:
                    created = create_copy_target(cur, CEILING_COPY_TABLE, all_indexes=all_indexes)
                conn.commit()
                clock = time.perf_counter()
                with conn.cursor() as cur:
                    cur.copy_expert(
                        f"COPY {CEILING_COPY_TABLE} ({COLUMN_LIST}) FROM STDIN WITH (FORMAT csv, HEADER true)", spool
                    )
                conn.commit()
                result[seconds_key] = time.perf_counter() - clock
                with conn.cursor() as cur:
                    cur.execute(f"SELECT count(*) FROM {CEILING_COPY_TABLE}")
                    result["copy_rows"] = cur.fetchone()[0]
                    cur.execute(f"DROP TABLE {CEILING_COPY_TABLE}")
                conn.commit()
                if all_indexes:
                    result["copy_indexes"] = created
    result["seconds"] = sum(
        result[k] for k in ("kinesis_put_seconds", "dynamodb_seconds", "s3_seconds", "copy_seconds")
    )
    return result


def create_copy_target(cur, table: str, *, all_indexes: bool = True) -> list[str]:
    """`table`: the staging CSV's columns with the fact table's types and, with all_indexes, every
    index the fact table has on those columns (read from the catalog: the non-unique ones the local
    Data API makes of its dropped primary key and of its SORTKEY; keys are informational, as on
    Redshift), or
    else a primary key on event_id only (the yardstick of rounds one to six). Returns the index
    definitions."""
    from ecom_core.contract import COLUMNS
    from warehouse import db
    from warehouse.staging import COLUMN_LIST

    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(f"CREATE TABLE {table} AS SELECT {COLUMN_LIST} FROM {db.FACT_TABLE} WHERE 1 = 0")
    if not all_indexes:
        cur.execute(f'ALTER TABLE {table} ADD PRIMARY KEY ("event_id")')
        return ['PRIMARY KEY ("event_id")']
    created: list[str] = []
    cur.execute(f"""
        SELECT pg_get_indexdef(i.indexrelid),
               ARRAY(SELECT a.attname FROM pg_attribute AS a
                     WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey))
        FROM pg_index AS i WHERE i.indrelid = '{db.FACT_TABLE}'::regclass
        ORDER BY i.indexrelid""")
    for definition, columns in cur.fetchall():
        # "CREATE [UNIQUE] INDEX name ON dw.fact_sales_line USING btree (...)": the same on the copy.
        match = re.fullmatch(r"CREATE (UNIQUE )?INDEX \S+ ON \S+ (USING .+)", definition)
        if match and set(columns) <= {name for _, _, name in COLUMNS}:
            statement = f"CREATE {match.group(1) or ''}INDEX ON {table} {match.group(2)}"
            cur.execute(statement)
            created.append(match.group(2))
    return created


def _csv_header() -> list[str]:
    from ecom_core.contract import CSV_HEADER

    return CSV_HEADER


# ------------------------------------------------------------------ 2 and 3. through the pipeline


def run_user_path(
    env: dict[str, Any],
    path: Path,
    rows: int | None,
    expected_rows: int,
    *,
    one_by_one: bool,
    concurrency: int,
    batch_size: int,
    timeout: float = 3600,
    sampler: MemorySampler | None = None,
) -> dict[str, Any]:
    """`ecom replay` as a user runs it (a separate process; it waits for the stream to drain), then
    only the scheduled job, until the warehouse holds `expected_rows`. Timed from outside; with a
    sampler, also the CPU per process in each phase (`cpu_by_phase`)."""
    from warehouse import db

    command = (
        [
            sys.executable,
            "-m",
            "ecom",
            "replay",
            str(path),
            "--no-progress",
            "--concurrency",
            str(concurrency),
            "--batch-size",
            str(batch_size),
        ]
        + (["--rows", str(rows)] if rows else [])
        + (["--one-by-one"] if one_by_one else [])
    )
    schema.ensure_schema(DataApi())  # what the job's first run does; the count below needs the table
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT now() AT TIME ZONE 'UTC'")  # dw.etl_run keeps UTC without zone, as the job writes it
        since = cur.fetchone()[0]
        cur.execute(f"SELECT count(*) FROM {db.FACT_TABLE}")
        rows_before = cur.fetchone()[0]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    returned = time.perf_counter()
    if done.returncode != 0:
        raise RuntimeError(f"ecom replay failed ({done.returncode}): {done.stderr[-2000:]}")
    said = re.search(r"accepted (\d+), rejected (\d+), (\d+) requests, (\d+) retries, ([\d.]+)s", done.stdout)
    lag = re.search(r"caught up in ([\d.]+)s", done.stdout)
    if not said or int(said.group(2)):
        raise RuntimeError(f"unexpected replay output: {done.stdout[-2000:]}")
    with db.connection() as conn:
        while True:
            with conn.cursor() as cur:
                cur.execute(f"SELECT count(*) FROM {db.FACT_TABLE}")
                warehouse_rows = cur.fetchone()[0]
            conn.rollback()
            if warehouse_rows >= expected_rows:
                break
            if time.perf_counter() - start > timeout:
                raise RuntimeError(
                    f"the scheduled job did not fill the warehouse within {timeout:.0f} s "
                    f"({warehouse_rows:,} of {expected_rows:,} rows)"
                )
            time.sleep(0.25)
        full = time.perf_counter()
        runs = _recorded_runs(conn, since, warehouse_rows - rows_before)
    ticks = [
        {
            "started_at": r[0].isoformat(),
            "seconds": (r[1] - r[0]).total_seconds() if r[1] else None,
            "outcome": r[2],
            "raw_objects": r[3],
            "files_loaded": r[4],
            "rows_inserted": r[5],
            "steps": {name: float(sec) for name, sec in re.findall(r"(transform|catalog|load) ([\d.]+) s", r[6] or "")},
        }
        for r in runs
    ]
    replay_seconds = float(said.group(5))
    lag_seconds = float(lag.group(1)) if lag else 0.0
    phases = {}
    if sampler is not None:
        sampler.sample()
        # The replay reports its sending time and the wait for the consumer after its last POST;
        # it exits right after, so its last POST was `lag` before it returned.
        last_post = returned - lag_seconds
        phases = cpu_by_phase(
            list(sampler.series),
            [
                ("replay (first to last POST)", last_post - replay_seconds, last_post),
                ("drain (last POST to consumer caught up)", last_post, returned),
                ("batch half after the drain", returned, full),
            ],
        )
    return {
        "command": " ".join(["ecom", *command[3:]]),
        "rows": int(said.group(1)),
        "requests": int(said.group(3)),
        "retries": int(said.group(4)),
        "replay_seconds": replay_seconds,
        "consumer_lag_seconds": lag_seconds,
        "consumer_seconds": replay_seconds + lag_seconds,
        "replay_command_seconds": returned - start,
        "batch_half_after_drain_seconds": full - returned,
        "etl_ticks": len(ticks),
        "etl_busy_seconds": sum(t["seconds"] or 0 for t in ticks),
        "transform_seconds": sum(t["steps"].get("transform", 0) for t in ticks),
        "catalog_seconds": sum(t["steps"].get("catalog", 0) for t in ticks),
        "load_seconds": sum(t["steps"].get("load", 0) for t in ticks),
        "files_loaded": sum(t["files_loaded"] for t in ticks),
        "rows_inserted": sum(t["rows_inserted"] for t in ticks),
        "ticks": ticks,
        "warehouse_rows_at_end": warehouse_rows,
        "seconds": full - start,
        "phases": phases,
    }


def _recorded_runs(conn, since, rows_inserted: int, wait_seconds: float = 60) -> list[tuple]:
    """The job's runs since `since`, once their records account for `rows_inserted` new rows.

    A run commits its last load group before it writes its dw.etl_run row, so the warehouse can
    hold every row a moment before the run that loaded them is on record (CI read zero runs once)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT started_at, finished_at, outcome, raw_objects, files_loaded, rows_inserted, message "
                "FROM dw.etl_run WHERE started_at >= %s ORDER BY started_at",
                (since,),
            )
            runs = cur.fetchall()
        conn.rollback()
        if sum(r[5] or 0 for r in runs) >= rows_inserted or time.monotonic() >= deadline:
            return runs
        time.sleep(0.1)


def reconcile(cfg: config.Stack, facts: SourceFacts) -> dict[str, Any]:
    """Exact counts in every store, and the exact event-id set of the warehouse and DynamoDB.

    The invoice table is scanned once (count and event-id digest together): MiniStack's Scan
    pagination costs O(table size) per page, so every extra full scan is quadratic.
    """
    from ecom_core import aws
    from ecom_core.aws import count_keys
    from warehouse import db
    from warehouse.status import count_items

    clock = time.perf_counter()
    r = config.resources()
    s3 = aws.client("s3", cfg)
    dynamodb = aws.client("dynamodb", cfg)
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT count(*), count(DISTINCT event_id), "
            f"coalesce(sum(('x' || substr(md5(event_id), 1, 15))::bit(60)::bigint::numeric), 0) "
            f"% {DIGEST_MODULUS} FROM {db.FACT_TABLE}"
        )
        rows, distinct, digest = cur.fetchone()
        cur.execute(f"SELECT count(*) FROM {db.MANIFEST_TABLE}")
        files_loaded = cur.fetchone()[0]
    dynamo_digest = dynamo_items = 0
    for item in aws.items(dynamodb.scan, TableName=r.invoice_table, ProjectionExpression="LineId"):
        dynamo_items += 1
        dynamo_digest = (dynamo_digest + id_hash(item["LineId"]["S"])) % DIGEST_MODULUS
    found = {
        "warehouse_rows": rows,
        "warehouse_distinct_event_ids": distinct,
        "dynamodb_invoice_lines": dynamo_items,
        "dynamodb_customer_invoices": count_items(dynamodb, r.customer_table),
        "staging_files": count_keys(s3, r.staging_bucket, r.staging_prefix),
        "files_loaded": files_loaded,
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
    return {
        "exact": all(checks.values()),
        "checks": checks,
        "seconds": time.perf_counter() - clock,
        "expected": {"rows": facts.rows, "customer_invoices": facts.customer_invoices},
        "found": found,
    }


def schedule_fields(schedule: dict[str, Any]) -> dict[str, Any]:
    """What UpdateSchedule needs of a GetSchedule answer to keep the schedule as it is (it replaces
    every field it is not given), to which the caller adds the State it wants."""
    return {k: schedule[k] for k in ("Name", "ScheduleExpression", "FlexibleTimeWindow", "Target")}


@contextmanager
def etl_quiet(cfg: config.Stack, wait_seconds: float = 600) -> Iterator[Callable[[], None]]:
    """Nothing of the ETL runs meanwhile: every enabled schedule disabled (and enabled again after)
    and the ETL lease held by the bench as a run holds it (`etl.run.take_lease`), so a tick already
    in flight finishes first and none starts. Yields the lease's renewal, for after each group.
    Without this a scheduled tick landing in the load alone found every file pending again (the
    manifest is emptied) and ran beside it."""
    from ecom_core import aws
    from etl.run import take_lease
    from etl.warehouses import open_warehouse

    scheduler = aws.client("scheduler", cfg)
    paused = []
    for item in scheduler.list_schedules()["Schedules"]:
        schedule = scheduler.get_schedule(Name=item["Name"])
        if schedule["State"] == "ENABLED":
            fields = schedule_fields(schedule)
            scheduler.update_schedule(**fields, State="DISABLED")
            paused.append(fields)
    holder = f"bench:{os.getpid()}"
    warehouse = open_warehouse(cfg)
    try:
        take_lease(warehouse, holder, wait_for_lease=wait_seconds)
        try:
            yield lambda: warehouse.renew(holder, config.etl().lease_seconds)
        finally:
            warehouse.release(holder)
    finally:
        warehouse.close()
        for fields in paused:
            scheduler.update_schedule(**fields, State="ENABLED")


def measure_load_alone(cfg: config.Stack, rows: int, sampler: MemorySampler | None = None) -> dict[str, Any]:
    """The pipeline's load once more with Postgres to itself: after the reconciliation, the
    warehouse's facts, dimensions, manifest and rejects are emptied and every staging file the job
    loaded is loaded again by the job's own load code (`etl.load.load`: groups of
    FILES_PER_TRANSACTION files), nothing else of the ETL running (`etl_quiet`). In the pipeline
    the load shares two cores with the stream consumer while the bare COPY runs alone; this is the
    like-for-like figure beside the COPY. The warehouse ends as it was (the same files, the same rows).
    `sampler`: CPU seconds per process during the load (what else still used the two cores)."""
    from etl.load import load
    from warehouse import db

    with etl_quiet(cfg) as renew_lease:
        with db.connection() as conn, conn.cursor() as cur:
            cur.execute(
                f'TRUNCATE {db.FACT_TABLE}, dw."dim_date", dw."dim_country", dw."dim_customer", '
                f'dw."dim_product", {db.MANIFEST_TABLE}, {db.REJECTS_TABLE}'
            )
            conn.commit()
        if sampler is not None:
            sampler.reset()
        clock = time.perf_counter()
        result = load(cfg, after_group=renew_lease, schema_ready=True)
        seconds = time.perf_counter() - clock
    out = {
        "seconds": seconds,
        "files_loaded": result.files_loaded,
        "rows_inserted": result.rows_inserted,
        "exact": result.rows_inserted == rows and result.rows_rejected == 0,
    }
    if sampler is not None:
        out["cpu_seconds"] = sampler.cpu_seconds()
    return out


# ------------------------------------------------------------------ the whole bench


def run(
    path: Path,
    rows: int | None = None,
    *,
    original_rows: int = 3000,
    concurrency: int = 4,
    batch_size: int = 500,
    keep: bool = False,
    skip_ceiling: bool = False,
    skip_original: bool = False,
    log: Callable[[str], None] = lambda m: None,
) -> dict[str, Any]:
    started_at = datetime.now(UTC)
    out: dict[str, Any] = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "file": str(path),
        "machine": machine_description(),
    }
    log("counting the source (one streaming pass) ...")
    facts = source_facts(path, rows)
    out["rows"] = facts.rows
    with fresh_stack(keep=keep) as env:
        r = config.resources()
        out["settings"] = {
            "stream_shards": r.stream_shards,
            "trigger_batch_size": r.trigger_batch_size,
            "trigger_write_threads": config.limits().trigger_write_threads,
            "replay_concurrency": concurrency,
            "replay_batch_size": batch_size,
            "etl_schedule": config.etl().schedule,
            "etl_schedule_state": config.etl().schedule_state,
            "stack_startup_seconds": round(env["startup_seconds"], 2),
        }
        with MemorySampler(
            env["ministack_pid"], env["postmaster_pid"], redshift_data_pid=env.get("redshift_data_pid")
        ) as memory:
            if not skip_ceiling:
                log(f"ceiling: the emulator doing the same work directly ({facts.rows:,} records) ...")
                memory.reset()
                out["ceiling"] = measure_ceiling(
                    path, rows, put_concurrency=concurrency, batch_size=r.trigger_batch_size
                )
                out["ceiling"]["peak_memory_mib"] = memory.peaks_mib()
                out["ceiling"]["cpu_seconds"] = memory.cpu_seconds()
            if not skip_original:
                n = min(original_rows, facts.rows)
                log(f"original design: {n:,} rows, one event per request, sequential ...")
                memory.reset()
                out["original"] = run_user_path(env, path, n, n, one_by_one=True, concurrency=1, batch_size=1)
                out["original"]["peak_memory_mib"] = memory.peaks_mib()
                out["original"]["cpu_seconds"] = memory.cpu_seconds()
                empty_stores(env["cfg"])
            log(f"ours: {facts.rows:,} rows through API -> Kinesis -> trigger -> DynamoDB + S3 -> ETL -> warehouse ...")
            memory.reset()
            out["ours"] = run_user_path(
                env,
                path,
                rows,
                facts.rows,
                one_by_one=False,
                concurrency=concurrency,
                batch_size=batch_size,
                sampler=memory,
            )
            out["ours"]["peak_memory_mib"] = memory.peaks_mib()
            out["ours"]["cpu_seconds"] = memory.cpu_seconds()
            log("reconciling every store exactly ...")
            out["reconciliation"] = reconcile(env["cfg"], facts)
            log("the load alone: every staging file again into the emptied warehouse ...")
            out["load_alone"] = measure_load_alone(env["cfg"], facts.rows, memory)
    out["summary"] = summarise(out)
    out["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
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
        if "load_alone" in out:
            summary["load_alone_vs_bare_copy"] = out["load_alone"]["seconds"] / ceiling["copy_seconds"]
            if "copy_key_only_seconds" in ceiling:
                # Rounds one to six compared with a COPY into a table with the primary key only.
                summary["load_alone_vs_key_only_copy"] = out["load_alone"]["seconds"] / ceiling["copy_key_only_seconds"]
    memory = ours.get("peak_memory_mib") or {}
    if memory.get("emulator"):
        # The emulator keeps every stream record, item and object in memory: its size grows with the data.
        summary["emulator_mib_per_1000_rows"] = memory["emulator"] / n * 1000
    summary["exact"] = out["reconciliation"]["exact"]
    return summary


def _fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _fmt_eps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def phase_table(phases: dict[str, dict[str, Any]], cores: int | None) -> list[str]:
    """Ours, phase by phase: the cores each process group kept busy on average (CPU seconds / wall
    seconds), and what stayed idle of the machine's cores."""
    if not phases:
        return []
    totals: dict[str, float] = {}
    for phase in phases.values():
        for group, seconds in phase["cpu_seconds"].items():
            totals[group] = totals.get(group, 0.0) + seconds
    groups = [g for g, seconds in sorted(totals.items(), key=lambda g: -g[1]) if seconds >= 0.05]
    lines = [
        "",
        "| ours by phase: cores busy (CPU s / wall s) | wall s | "
        + " | ".join(groups)
        + (f" | idle of {cores} |" if cores else " |"),
        "|---|---:|" + "---:|" * (len(groups) + (1 if cores else 0)),
    ]
    for name, phase in phases.items():
        wall = phase["seconds"]
        if wall <= 0:
            continue
        busy = [phase["cpu_seconds"].get(g, 0.0) / wall for g in groups]
        idle = [f"{max(0.0, cores - sum(phase['cpu_seconds'].values()) / wall):.2f}"] if cores else []
        lines.append(f"| {name} | {wall:.1f} | " + " | ".join([f"{b:.2f}" for b in busy] + idle) + " |")
    return lines


def table(out: dict[str, Any]) -> str:
    """One Markdown table: stages (ours vs ceiling), the original design, ratios, memory, counts."""
    n = out["rows"]
    ours, ceiling, original = out["ours"], out.get("ceiling"), out.get("original")
    s = out["summary"]
    lines = [
        f"rows: {n:,}   machine: {out['machine']['cores']} cores, {out['machine']['cpu']}, "
        f"{out['machine']['memory_gib']} GiB, 10 M-addition Python loop "
        f"{out['machine'].get('python_loop_seconds', '?')} s   settings: {json.dumps(out['settings'])}",
        "",
        "| stage | ours s | ours ev/s | ceiling s | ceiling ev/s | original s | original ev/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name, ours_s, ceiling_s, original_s, original_rows=None):
        lines.append(
            f"| {name} | {_fmt_s(ours_s)} | {_fmt_eps(_eps(n, ours_s))} | {_fmt_s(ceiling_s)} | "
            f"{_fmt_eps(_eps(n, ceiling_s))} | {_fmt_s(original_s)} | "
            f"{_fmt_eps(_eps(original_rows, original_s)) if original_rows else '-'} |"
        )

    o_rows = original["rows"] if original else None
    row(
        "API -> Kinesis (replay)",
        ours["replay_seconds"],
        ceiling and ceiling["kinesis_put_seconds"],
        original and original["replay_seconds"],
        o_rows,
    )
    row(
        "Kinesis -> DynamoDB + S3 (from replay start)",
        ours["consumer_seconds"],
        ceiling and ceiling["dynamodb_seconds"] + ceiling["s3_seconds"],
        original and original["consumer_seconds"],
        o_rows,
    )
    row(
        "  consumer lag after the last POST",
        ours["consumer_lag_seconds"],
        None,
        original and original["consumer_lag_seconds"],
        o_rows,
    )
    row(
        "batch half after the drain (next scheduled tick)",
        ours["batch_half_after_drain_seconds"],
        None,
        original and original["batch_half_after_drain_seconds"],
        o_rows,
    )
    row(
        f"ETL job busy, {ours['etl_ticks']} runs (overlaps the above)",
        ours["etl_busy_seconds"],
        None,
        original and original["etl_busy_seconds"],
        o_rows,
    )
    row(
        "  transform (raw JSON -> CSV), all runs",
        ours["transform_seconds"],
        None,
        original and original["transform_seconds"],
        o_rows,
    )
    row("  catalog, all runs", ours["catalog_seconds"], None, original and original["catalog_seconds"], o_rows)
    row(
        "  load (warehouse), all runs",
        ours["load_seconds"],
        ceiling and ceiling["copy_seconds"],
        original and original["load_seconds"],
        o_rows,
    )
    if "load_alone" in out:
        row(
            "  the same load alone, after the run (Postgres to itself)",
            out["load_alone"]["seconds"],
            ceiling and ceiling["copy_seconds"],
            None,
        )
    if ceiling and "copy_key_only_seconds" in ceiling:
        row(
            "  (bare COPY into a table with the primary key only, rounds one to six)",
            None,
            ceiling["copy_key_only_seconds"],
            None,
        )
    row(
        "**end to end** (first POST -> exact warehouse)",
        ours["seconds"],
        ceiling and ceiling["seconds"],
        original and original["seconds"],
        o_rows,
    )
    lines.append("")
    ratios = [f"ours end-to-end {_fmt_eps(s['ours_events_per_second'])} ev/s"]
    if "speedup_vs_original" in s:
        ratios.append(f"ours/original **{s['speedup_vs_original']:,.1f}x**")
    if "ours_vs_ceiling" in s:
        ratios.append(f"ours/ceiling **{s['ours_vs_ceiling']:.0%}**")
        ratios.append(
            f"load/bare COPY **{s['load_vs_bare_copy']:.1f}x** in the run"
            + (f", **{s['load_alone_vs_bare_copy']:.1f}x** alone" if "load_alone_vs_bare_copy" in s else "")
            + (
                f" ({s['load_alone_vs_key_only_copy']:.1f}x a COPY with the primary key only)"
                if "load_alone_vs_key_only_copy" in s
                else ""
            )
        )
    if "emulator_mib_per_1000_rows" in s:
        ratios.append(f"emulator {s['emulator_mib_per_1000_rows']:.2f} MiB per 1,000 rows")
    lines.append("; ".join(ratios))
    lines.append(
        f"measured path: `{ours['command']}` and the scheduled job "
        f"({out['settings'].get('etl_schedule')}, {out['settings'].get('etl_schedule_state')})"
    )
    lines.append("")
    lines.append("| peak memory (MiB) | emulator | Lambda workers | Postgres (PSS) | ours (bench process) |")
    lines.append("|---|---:|---:|---:|---:|")
    for name, part in (("ceiling", ceiling), ("original", original), ("ours", ours)):
        if part and "peak_memory_mib" in part:
            m = part["peak_memory_mib"]
            lines.append(
                f"| {name} | {m['emulator']:,.0f} | {m['lambda_workers']:,.0f} | {m['postgres']:,.0f} | "
                f"{m['ours']:,.0f} |"
            )
    lines.append("")
    parts = [
        (name, part)
        for name, part in (
            ("ceiling", ceiling),
            ("original", original),
            ("ours", ours),
            ("load alone", out.get("load_alone")),
        )
        if part
    ]
    lines.append("| CPU seconds, by process | " + " | ".join(name for name, _ in parts) + " |")
    lines.append("|---|" + "---:|" * len(parts))
    groups = sorted(
        {g for _, part in parts for g in part.get("cpu_seconds", {})},
        key=lambda g: -ours.get("cpu_seconds", {}).get(g, 0),
    )
    for group in groups:
        lines.append(
            f"| {group} | "
            + " | ".join(f"{part.get('cpu_seconds', {}).get(group, 0):,.1f}" for _, part in parts)
            + " |"
        )
    lines.extend(phase_table(ours.get("phases") or {}, out["machine"].get("cores")))
    rec = out["reconciliation"]
    lines.append("")
    lines.append(
        f"reconciliation {'EXACT' if rec['exact'] else 'NOT EXACT'}: expected {json.dumps(rec['expected'])}; "
        f"found {json.dumps(rec['found'])}"
    )
    if not rec["exact"]:
        lines.append("failed checks: " + ", ".join(k for k, v in rec["checks"].items() if not v))
    return "\n".join(lines)


def save(out: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = directory / f"{stamp}-{out['rows']}rows"
    base.with_suffix(".json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    base.with_suffix(".md").write_text(
        f"# ecom bench {out['started_at']}\n\nmachine: {json.dumps(out['machine'])}\n\n{table(out)}\n"
    )
    return base.with_suffix(".json")
