"""The batch half as a deployed job: Lambda `etl-job`, invoked by an EventBridge Scheduler schedule
(`rate(1 minute)` by default, ECOM_ETL_SCHEDULE) on every target, and by hand through `ecom etl run`.

One tick:
1. Idle check on S3 only: no raw object waiting and every staging file already counted as loaded
   (the count the last run left in `s3://<staging>/_etl/state.json`)? Then the tick records
   "idle" and returns: no warehouse connection, no transaction.
2. Otherwise `etl.run.run_once` under the warehouse lease (warehouse/lease.py): a tick that finds
   the lease held by a live run records "skipped" and returns; a run that died is redone by the
   first tick after its lease expires, and the manifest keeps every file exactly once.
3. The outcome (and the run id) goes to `_etl/state.json` for `ecom status`.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ecom_core import aws, config

if TYPE_CHECKING:  # imported when a run starts (etl.run), not at every cold start
    from etl.run import RunResult

STATE_KEY = "_etl/state.json"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_state(cfg: config.Stack | None = None, s3: aws.Client | None = None) -> dict[str, Any]:
    r = config.resources()
    try:
        body = (s3 or aws.client("s3", cfg)).get_object(Bucket=r.staging_bucket, Key=STATE_KEY)["Body"].read()
        return json.loads(body)
    except Exception:  # noqa: BLE001 - no state yet (or unreadable): the next run writes it
        return {}


def write_state(state: dict[str, Any], cfg: config.Stack | None = None, s3: aws.Client | None = None) -> None:
    r = config.resources()
    (s3 or aws.client("s3", cfg)).put_object(
        Bucket=r.staging_bucket,
        Key=STATE_KEY,
        Body=json.dumps(state, default=str).encode(),
        ContentType="application/json",
    )


def nothing_to_do(state: dict[str, Any], s3: aws.Client) -> bool:
    """True when S3 alone shows there is no work: no raw object pending, no staging file beyond
    those the last run counted as loaded."""
    r = config.resources()
    if raw_waiting(s3):
        return False
    return "files_loaded" in state and aws.count_keys(s3, r.staging_bucket, r.staging_prefix) == state["files_loaded"]


def _tick_facts(trigger: str) -> dict[str, Any]:
    """What every recorded tick says about itself: who started it, when, on which schedule."""
    etl = config.etl()
    return {"trigger": trigger, "at": _now(), "schedule": etl.schedule, "interval_seconds": etl.interval_seconds}


def raw_waiting(s3: aws.Client) -> bool:
    r = config.resources()
    return bool(s3.list_objects_v2(Bucket=r.raw_bucket, Prefix=r.raw_prefix, MaxKeys=1).get("KeyCount", 0))


def tick(
    trigger: str = "schedule",
    cfg: config.Stack | None = None,
    wait_for_lease: float = 0.0,
    seconds_left: float | None = None,
) -> dict[str, Any]:
    """One tick of the batch half, as the schedule (or a person) starts it. Returns what happened.

    A tick that finds work keeps going while more arrives (config.etl().linger_seconds): while the
    stream is busy the warehouse trails it by seconds, not by up to a schedule interval. It stops
    early enough to finish inside the function's time (`seconds_left`, from the Lambda context)."""
    from etl.run import LeaseHeld, run_while_busy

    # One S3 client for the whole tick: an idle tick is four S3 calls and nothing else.
    s3 = aws.client("s3", cfg)
    state = read_state(cfg, s3)
    started = time.perf_counter()
    facts = _tick_facts(trigger)
    if nothing_to_do(state, s3):
        write_state(
            {**state, "last_tick": {**facts, "outcome": "idle", "seconds": round(time.perf_counter() - started, 3)}},
            cfg,
            s3,
        )
        return {"outcome": "idle"}
    etl = config.etl()
    # The last run may take a while (a backlog): stop lingering with a fifth of the time (>= 2 min) to spare.
    stop_at = None if seconds_left is None else time.monotonic() + seconds_left - max(120.0, seconds_left / 5)
    try:
        results = run_while_busy(
            cfg,
            holder=f"{trigger}:{uuid.uuid4().hex[:12]}",
            wait_for_lease=wait_for_lease,
            linger_seconds=etl.linger_seconds,
            poll_seconds=etl.poll_seconds,
            work_waiting=lambda: raw_waiting(s3),
            stop_at=stop_at,
            # Recorded after every run, so `ecom status` follows a lingering tick.
            after_run=lambda done: record(done, trigger, cfg, facts, s3),
        )
    except LeaseHeld as held:
        write_state({**state, "last_tick": {**facts, "outcome": "skipped", "reason": str(held)}}, cfg, s3)
        return {"outcome": "skipped", "reason": str(held)}
    except Exception as exc:
        write_state(
            {**state, "last_tick": {**facts, "outcome": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}},
            cfg,
            s3,
        )
        raise
    return _summary(results)  # already recorded by the last after_run


def record(
    results: RunResult | list[RunResult],
    trigger: str,
    cfg: config.Stack | None = None,
    facts: dict[str, Any] | None = None,
    s3: aws.Client | None = None,
) -> dict[str, Any]:
    """Write finished runs (etl.run.RunResult, one or the list of a tick) to the job state:
    `ecom status` and the idle check read it. Returns the tick's summary."""
    results = results if isinstance(results, list) else [results]
    summary = _summary(results)
    write_state(
        {"files_loaded": results[-1].manifest_files, "last_tick": {**(facts or _tick_facts(trigger)), **summary}},
        cfg,
        s3,
    )
    return summary


def _summary(results: list[RunResult]) -> dict[str, Any]:
    result = results[-1]
    return {
        "outcome": result.outcome,
        "run_id": result.run_id,
        "runs": len(results),
        "files_loaded": sum(r.load.files_loaded for r in results),
        "rows_inserted": sum(r.load.rows_inserted for r in results),
        "rows_rejected": sum(r.load.rows_rejected for r in results),
        "seconds": round(sum(r.seconds for r in results), 3),
    }


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Lambda entry point (the schedule's target). Thin: the work is `tick`."""
    started = time.perf_counter()
    trigger = str((event or {}).get("trigger") or "schedule")[:32]
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    summary = tick(trigger, seconds_left=remaining() / 1000 if callable(remaining) else None)
    # One log line per invocation (the emulator also waits for output before returning).
    print(
        json.dumps(
            {"fn": config.resources().etl_function, **summary, "ms": round((time.perf_counter() - started) * 1000, 1)},
            default=str,
        )
    )
    return summary
