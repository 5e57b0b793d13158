"""One ETL run: transform -> catalog -> load under the warehouse lease, recorded in dw.etl_run."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ecom_core import config
from etl import catalog, load, transform
from etl.warehouses import Warehouse, open_warehouse

# Between lingering runs, how often to look for new input once the poll interval has passed.
ARRIVAL_CHECK_SECONDS = 0.5


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
    manifest_files: int = 0  # files the warehouse holds after the run (the job's idle check)


def _record(
    warehouse: Warehouse,
    run_id: str,
    started: datetime,
    outcome: str,
    message: str = "",
    t: transform.TransformResult | None = None,
    loaded: load.LoadResult | None = None,
    staging_files: int = 0,
) -> None:
    warehouse.record_run(
        {
            "run_id": run_id,
            "started_at": started.replace(tzinfo=None),
            "finished_at": datetime.now(UTC).replace(tzinfo=None),
            "outcome": outcome,
            "raw_objects": t.objects if t else 0,
            "staging_files": staging_files,
            "files_loaded": loaded.files_loaded if loaded else 0,
            "rows_inserted": loaded.rows_inserted if loaded else 0,
            "message": message[:2000],
        }
    )


def take_lease(warehouse: Warehouse, holder: str, wait_for_lease: float) -> None:
    """Hold the ETL lease (for config.etl().lease_seconds; renew it as the work goes), waiting up to
    `wait_for_lease` seconds for a run that holds it; LeaseHeld if it still does."""
    ttl = config.etl().lease_seconds
    deadline = time.monotonic() + wait_for_lease
    while not warehouse.acquire(holder, ttl):
        if time.monotonic() >= deadline:
            raise LeaseHeld(f"the ETL lease is held by {warehouse.lease_holder()}")
        time.sleep(1.0)


def run_once(cfg: config.Stack | None = None, *, holder: str | None = None, wait_for_lease: float = 0.0) -> RunResult:
    """Transform, catalog and load everything pending, holding the ETL lease for the whole run.

    Raises LeaseHeld (having done nothing) when another run holds the lease for longer than
    `wait_for_lease` seconds. The lease is renewed after every committed group of files and
    released at the end; a run that dies leaves it to expire (config.etl().lease_seconds)."""
    return run_while_busy(cfg, holder=holder, wait_for_lease=wait_for_lease)[-1]


def run_while_busy(
    cfg: config.Stack | None = None,
    *,
    holder: str | None = None,
    wait_for_lease: float = 0.0,
    linger_seconds: float = 0.0,
    poll_seconds: float | None = None,
    work_waiting: Callable[[], bool] | None = None,
    stop_at: float | None = None,
    after_run: Callable[[list[RunResult]], object] | None = None,
) -> list[RunResult]:
    """One run, then, under the same lease, another each time `work_waiting()` says new input has
    arrived, until nothing has come for `linger_seconds` or the clock passes `stop_at` (monotonic).
    Each run is recorded on its own in dw.etl_run, and `after_run` gets the runs so far after
    each one. With linger 0 (the default) this is one run. `poll_seconds`: between checks for new
    input (default: the configured config.etl().poll_seconds, as the deployed job uses)."""
    warehouse = open_warehouse(cfg)
    results: list[RunResult] = []
    try:
        warehouse.ensure_schema()
        holder = holder or f"run:{_run_id()}"
        take_lease(warehouse, holder, wait_for_lease)
        try:
            while True:
                run_started = time.monotonic()
                results.append(_run(warehouse, _run_id(), holder, cfg))
                if after_run is not None:
                    after_run(results)
                if not linger_seconds or work_waiting is None:
                    return results
                quiet_until = time.monotonic() + linger_seconds
                poll = config.etl().poll_seconds if poll_seconds is None else poll_seconds
                check = min(poll, ARRIVAL_CHECK_SECONDS)
                # Runs start at least one poll interval apart, even when work is already waiting: a
                # busy stream then gives each run several files instead of one (fewer, larger
                # loads). Once the interval has passed, input is looked for every `check` seconds,
                # so what lands on a stream gone quiet is loaded within about that, not up to a
                # whole interval later (the tail of a replay waited 0-5 s for nothing).
                time.sleep(max(check, run_started + poll - time.monotonic()))
                while not work_waiting():
                    if time.monotonic() >= quiet_until or (stop_at is not None and time.monotonic() >= stop_at):
                        return results
                    time.sleep(check)
                if stop_at is not None and time.monotonic() >= stop_at:
                    return results
                warehouse.renew(holder, config.etl().lease_seconds)
        finally:
            # e.g. the warehouse restarted: the lease frees itself (it expires)
            with contextlib.suppress(Exception):
                warehouse.release(holder)
    finally:
        warehouse.close()


def _run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def _run(warehouse: Warehouse, run_id: str, holder: str, cfg: config.Stack | None) -> RunResult:
    started = datetime.now(UTC)
    clock = time.perf_counter()
    t = loaded = None
    timings: dict[str, float] = {}
    ttl = config.etl().lease_seconds
    try:
        step = time.perf_counter()
        t = transform.transform(cfg)
        timings["transform"] = time.perf_counter() - step
        warehouse.renew(holder, ttl)
        step = time.perf_counter()
        pending = [o["Key"] for o in load.pending_keys(warehouse.loaded_keys(), cfg)]
        c = catalog.crawl(cfg, keys=pending)
        timings["catalog"] = time.perf_counter() - step
        step = time.perf_counter()
        # The load gets its own session: the group transactions never hold up the lease renewals.
        loaded = load.load(cfg, after_group=lambda: warehouse.renew(holder, ttl), schema_ready=True)
        timings["load"] = time.perf_counter() - step
    except Exception as exc:
        _record(warehouse, run_id, started, "failed", f"{type(exc).__name__}: {exc}", t, loaded)
        raise
    outcome = "succeeded" if not t.errors else "partial"
    # Step times first (the bench and an operator read them from dw.etl_run), then any errors.
    steps = ", ".join(f"{name} {seconds:.3f} s" for name, seconds in timings.items())
    _record(warehouse, run_id, started, outcome, "; ".join([steps, *t.errors]), t, loaded, staging_files=c.files)
    return RunResult(run_id, t, c, loaded, time.perf_counter() - clock, timings, outcome, warehouse.manifest_files())
