"""Fault injection, off by default, switched on by configuration (ECOM_FAULTS) in tests and soaks.

    ECOM_FAULTS="trigger.after_dynamodb=0.05,load.after_copy=1:kill"

Each entry names a point in the code, the probability of failing each time execution passes it,
and what failing means:
    raise   (default) raise FaultInjected, a transient error: the caller's retry must make it whole
    kill    SIGKILL this process on the spot (for the ETL: a crash nothing can clean up after)
    sleep=S pause S seconds (to open a window in which a test restarts a dependency); says so on
            stderr first, so the test acts inside the window, not after a guessed delay

Points:
    trigger.before_dynamodb   kinesis-trigger, before any write of the batch
    trigger.mid_dynamodb      kinesis-trigger, after the first chunk of a DynamoDB batch write
    trigger.after_dynamodb    kinesis-trigger, after DynamoDB, before the raw S3 object
    transform.after_csv       etl transform, after a CSV is written, before its raw object moves
    load.after_copy           etl load, after COPY and the fact write, before COMMIT (inside the
                              group's open Data API transaction)
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

from ecom_core import config

POINTS = (
    "trigger.before_dynamodb",
    "trigger.mid_dynamodb",
    "trigger.after_dynamodb",
    "transform.after_csv",
    "load.after_copy",
)


SLEEP_ANNOUNCEMENT = "ecom faults: injected pause at"


class FaultInjected(RuntimeError):
    """A deliberately injected transient failure."""


def parse(spec: str) -> dict[str, tuple[float, str]]:
    plan: dict[str, tuple[float, str]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        point, _, rest = entry.partition("=")
        rate_text, _, action = rest.partition(":")
        if point not in POINTS:
            raise ValueError(f"ECOM_FAULTS: unknown point {point!r}; known: {', '.join(POINTS)}")
        rate = float(rate_text)
        if not 0 <= rate <= 1:
            raise ValueError(f"ECOM_FAULTS: rate for {point} must be between 0 and 1, got {rate_text}")
        action = action or "raise"
        if action not in ("raise", "kill") and not action.startswith("sleep="):
            raise ValueError(f"ECOM_FAULTS: action for {point} must be raise, kill or sleep=S, got {action!r}")
        plan[point] = (rate, action)
    return plan


_parsed: dict[str, dict[str, tuple[float, str]]] = {}
_random = random.Random()


class FaultInjectionRefused(RuntimeError):
    """ECOM_FAULTS is set where the target is real AWS."""


def refuse_on_aws(spec: str, cfg: config.Stack | None = None) -> None:
    """Fault injection is for the emulators: against real AWS (no emulator endpoint: the aws
    target, or a Lambda running on AWS itself) it refuses to switch on."""
    if spec and (cfg or config.stack()).endpoint_url is None:
        raise FaultInjectionRefused("ECOM_FAULTS is set but the target is real AWS: fault injection stays off there")


def _current_plan() -> dict[str, tuple[float, str]]:
    spec = config.faults()
    if spec not in _parsed:
        try:
            refuse_on_aws(spec)
        except FaultInjectionRefused as exc:
            # Refused, not raised: raising here would fail the very work it refuses to disturb.
            print(f"ecom faults: {exc}", file=sys.stderr)
            spec_plan: dict[str, tuple[float, str]] = {}
        else:
            spec_plan = parse(spec)
        _parsed[spec] = spec_plan
    return _parsed[spec]


def armed(point: str) -> bool:
    """Whether the configuration injects faults at `point` (code that must shape its work around
    the point, e.g. a barrier, does so only then)."""
    return point in _current_plan()


def maybe_fail(point: str) -> None:
    """Fail here if the configuration says so. Costs one dict lookup when fault injection is off."""
    plan = _current_plan()
    if point not in plan:
        return
    rate, action = plan[point]
    if _random.random() >= rate:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action.startswith("sleep="):
        seconds = float(action.split("=", 1)[1])
        print(f"{SLEEP_ANNOUNCEMENT} {point}: sleeping {seconds:g} s", file=sys.stderr, flush=True)
        time.sleep(seconds)
        return
    raise FaultInjected(f"injected fault at {point}")
