"""The ETL lease: at most one run at a time, whoever starts it (the scheduled job, `ecom etl run`).

A row in dw.etl_lease, taken with a conditional UPDATE under a table lock and held for `ttl`
seconds, renewed after every group of files the load commits. A run that dies (killed, timed out)
stops renewing; its lease expires and the next tick takes over and redoes what was not committed
(each file's rows and manifest entry commit together, so nothing is loaded twice). Timestamps
come from the caller's clock (UTC), the same on every job instance.

Redshift SQL through the Data API (warehouse/redshift_data.py): one batch takes the lease (a batch
is one transaction), a query reads who holds it. Redshift has no sessions a lease could follow
(a dead holder's Data API session outlives it), so a lease is freed by its expiry alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from warehouse.redshift_data import DataApi, literal

LEASE_TABLE = "dw.etl_lease"
NAME = "etl"
EPOCH = datetime(1970, 1, 1)


class LeaseLost(RuntimeError):
    """Another run holds the lease now (ours expired): stop before committing anything more."""


@dataclass(frozen=True)
class Holder:
    holder: str | None
    expires_at: datetime | None


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def timestamp(value: datetime) -> str:
    # To the microsecond, as Redshift's TIMESTAMP keeps it: a run's start cut to the second sorted
    # before a moment it came after (the bench, which reads runs since a time, missed one).
    return f"TIMESTAMP '{value:%Y-%m-%d %H:%M:%S.%f}'"


def acquire(api: DataApi, holder: str, ttl: float) -> bool:
    """Take the lease if it is free, expired, or already ours (then: extend it). True if we hold it."""
    now = _now()
    api.run(
        [
            f"LOCK {LEASE_TABLE}",
            f'INSERT INTO {LEASE_TABLE} ("name", "holder", "acquired_at", "expires_at") SELECT {literal(NAME)}, NULL, '
            f"{timestamp(EPOCH)}, {timestamp(EPOCH)} "
            f'WHERE NOT EXISTS (SELECT 1 FROM {LEASE_TABLE} WHERE "name" = {literal(NAME)})',
            f'UPDATE {LEASE_TABLE} SET "holder" = {literal(holder)}, "acquired_at" = {timestamp(now)}, '
            f'"expires_at" = {timestamp(now + timedelta(seconds=ttl))} WHERE "name" = {literal(NAME)} AND '
            f'("holder" IS NULL OR "expires_at" < {timestamp(now)} OR "holder" = {literal(holder)})',
        ]
    )
    return current(api).holder == holder


def renew(api: DataApi, holder: str, ttl: float) -> None:
    """Extend our lease; raise LeaseLost if another run holds it now."""
    if not acquire(api, holder, ttl):
        raise LeaseLost(f"the ETL lease is no longer held by {holder}")


def release(api: DataApi, holder: str) -> None:
    api.run(
        [
            f'UPDATE {LEASE_TABLE} SET "holder" = NULL, "expires_at" = {timestamp(EPOCH)} '
            f'WHERE "name" = {literal(NAME)} AND "holder" = {literal(holder)}'
        ]
    )


def current(api: DataApi) -> Holder:
    """Who holds the lease now (Holder(None, None) when nobody does, or it has expired)."""
    rows = api.statement(f'SELECT "holder", "expires_at" FROM {LEASE_TABLE} WHERE "name" = {literal(NAME)}').rows
    if not rows or rows[0][0] is None or rows[0][1] < _now():
        return Holder(None, None)
    return Holder(rows[0][0], rows[0][1])
