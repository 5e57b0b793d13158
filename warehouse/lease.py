"""The ETL lease: at most one run at a time, whoever starts it (the scheduled job, `ecom etl run`).

A row in dw.etl_lease, taken with a conditional UPDATE under a table lock and held for `ttl`
seconds, renewed after every group of files the load commits. A run that dies (killed, timed out)
stops renewing; its lease expires and the next tick takes over and redoes what was not committed
(each file's rows and manifest entry commit together, so nothing is loaded twice). Timestamps
come from the caller's clock (UTC), the same on every job instance.

On Postgres the lease also records the holder's server session (`pg_backend_pid()`): a process
that dies takes its session with it, and a lease whose session is gone is free at once, without
waiting for it to expire. Redshift (etl/redshift.py) has only the expiry.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

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
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _lock(cur) -> None:
    cur.execute(f"LOCK TABLE {LEASE_TABLE} IN EXCLUSIVE MODE")


def acquire(conn, holder: str, ttl: float) -> bool:
    """Take the lease if it is free, expired, or already ours. Commits; True if we hold it."""
    now = _now()
    with conn.cursor() as cur:
        _lock(cur)
        cur.execute(f'SELECT count(*) FROM {LEASE_TABLE} WHERE "name" = %s', (NAME,))
        if cur.fetchone()[0] == 0:
            cur.execute(f'INSERT INTO {LEASE_TABLE} ("name", "holder", "acquired_at", "expires_at") '
                        f'VALUES (%s, NULL, %s, %s)', (NAME, EPOCH, EPOCH))
        cur.execute(f'UPDATE {LEASE_TABLE} SET "holder" = %s, "acquired_at" = %s, "expires_at" = %s, '
                    f'"holder_session" = pg_backend_pid() '
                    f'WHERE "name" = %s AND ("holder" IS NULL OR "expires_at" < %s OR "holder" = %s '
                    f'OR "holder_session" NOT IN (SELECT "pid" FROM pg_stat_activity WHERE "pid" IS NOT NULL))',
                    (holder, now, now + timedelta(seconds=ttl), NAME, now, holder))
        taken = cur.rowcount == 1
    conn.commit()
    return taken


def renew(conn, holder: str, ttl: float) -> None:
    """Extend our lease; raise LeaseLost if it is no longer ours. Commits."""
    now = _now()
    with conn.cursor() as cur:
        cur.execute(f'UPDATE {LEASE_TABLE} SET "expires_at" = %s WHERE "name" = %s AND "holder" = %s '
                    f'AND "expires_at" >= %s', (now + timedelta(seconds=ttl), NAME, holder, now))
        kept = cur.rowcount == 1
    conn.commit()
    if not kept:
        raise LeaseLost(f"the ETL lease is no longer held by {holder}")


def release(conn, holder: str) -> None:
    with conn.cursor() as cur:
        cur.execute(f'UPDATE {LEASE_TABLE} SET "holder" = NULL, "expires_at" = %s WHERE "name" = %s AND "holder" = %s',
                    (EPOCH, NAME, holder))
    conn.commit()


def current(conn) -> Holder:
    with conn.cursor() as cur:
        cur.execute(f'SELECT "holder", "expires_at" FROM {LEASE_TABLE} WHERE "name" = %s AND "holder_session" IN '
                    f'(SELECT "pid" FROM pg_stat_activity)', (NAME,))
        row = cur.fetchone()
    conn.commit()
    if row is None or row[0] is None or row[1] < _now():
        return Holder(None, None)
    return Holder(row[0], row[1])
