"""One ETL run: transform -> catalog -> load under the warehouse lease, recorded in dw.etl_run."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ecom_core import config
from etl import catalog, load, transform
from warehouse import db, lease


class LeaseHeld(RuntimeError):
    """Another run (scheduled or manual) holds the lease: this one did nothing."""


@dataclass
class RunResult:
    run_id: str
    transform: transform.TransformResult
    catalog: catalog.CatalogResult
    load: load.LoadResult
    seconds: float
    # Wall seconds per step (transform, catalog, load), for `ecom bench` and the run log.
    timings: dict[str, float] = field(default_factory=dict)
    outcome: str = "succeeded"
    manifest_files: int = 0   # files the warehouse holds after the run (the job's idle check)


def _record(run_id: str, started: datetime, outcome: str, message: str = "",
            t: transform.TransformResult | None = None, l: load.LoadResult | None = None,
            staging_files: int = 0, dsn: str | None = None) -> None:
    with db.connection(dsn) as conn:
        db.ensure_schema(conn)
        with conn.cursor() as cur:
            cur.execute('DELETE FROM dw.etl_run WHERE "run_id" = %s', (run_id,))
            cur.execute('INSERT INTO dw.etl_run ("run_id", "started_at", "finished_at", "outcome", "raw_objects", '
                        '"staging_files", "files_loaded", "rows_inserted", "message") '
                        'VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)',
                        (run_id, started.replace(tzinfo=None), datetime.now(timezone.utc).replace(tzinfo=None),
                         outcome, t.objects if t else 0, staging_files, l.files_loaded if l else 0,
                         l.rows_inserted if l else 0, message[:2000]))
        conn.commit()


def _take_lease(holder: str, wait_for_lease: float, dsn: str | None) -> None:
    ttl = config.etl().lease_seconds
    deadline = time.monotonic() + wait_for_lease
    with db.connection(dsn) as conn:
        db.ensure_schema(conn)
        while not lease.acquire(conn, holder, ttl):
            if time.monotonic() >= deadline:
                current = lease.current(conn)
                raise LeaseHeld(f"the ETL lease is held by {current.holder} until {current.expires_at}")
            time.sleep(1.0)


def run_once(cfg: config.Stack | None = None, dsn: str | None = None, *, holder: str | None = None,
             wait_for_lease: float = 0.0) -> RunResult:
    """Transform, catalog and load everything pending, holding the ETL lease for the whole run.

    Raises LeaseHeld (having done nothing) when another run holds the lease for longer than
    `wait_for_lease` seconds. The lease is renewed after every committed group of files and
    released at the end; a run that dies leaves it to expire (config.etl().lease_seconds)."""
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    holder = holder or f"run:{run_id}"
    _take_lease(holder, wait_for_lease, dsn)
    try:
        return _run(run_id, holder, cfg, dsn)
    finally:
        with db.connection(dsn) as conn:
            lease.release(conn, holder)


def _run(run_id: str, holder: str, cfg: config.Stack | None, dsn: str | None) -> RunResult:
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    t = l = None
    timings: dict[str, float] = {}
    ttl = config.etl().lease_seconds
    try:
        with db.connection(dsn) as lease_conn:
            step = time.perf_counter()
            t = transform.transform(cfg)
            timings["transform"] = time.perf_counter() - step
            lease.renew(lease_conn, holder, ttl)
            step = time.perf_counter()
            with db.connection(dsn) as conn:
                db.ensure_schema(conn)
                pending = [o["Key"] for o in load.pending_keys(conn, cfg)]
            c = catalog.crawl(cfg, keys=pending)
            timings["catalog"] = time.perf_counter() - step
            step = time.perf_counter()
            l = load.load(cfg, dsn, after_group=lambda: lease.renew(lease_conn, holder, ttl))
            timings["load"] = time.perf_counter() - step
    except Exception as exc:
        _record(run_id, started, "failed", f"{type(exc).__name__}: {exc}", t, l, dsn=dsn)
        raise
    outcome = "succeeded" if not t.errors else "partial"
    _record(run_id, started, outcome, "; ".join(t.errors), t, l, staging_files=c.files, dsn=dsn)
    with db.connection(dsn) as conn:
        manifest_files = db.count(conn, db.MANIFEST_TABLE)
        conn.commit()
    return RunResult(run_id, t, c, l, time.perf_counter() - clock, timings, outcome, manifest_files)
