"""Sending events to POST /events: batched (default) or one per request like the original script.

Retries are safe: every event carries its deterministic event_id and every store is keyed by it.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, TextIO

import requests

from ecom_core import json_codec
from replay.source import Row


class ReplayError(RuntimeError):
    """The API refused us in a way retrying cannot fix (wrong key, wrong URL)."""


@dataclass
class Rejection:
    row: int
    field: str
    error: str


@dataclass
class ReplayResult:
    rows_read: int = 0
    accepted: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    high_water: dict[str, str] = field(default_factory=dict)  # shard -> highest sequence number

    @property
    def events_per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    def merge_high_water(self, shards: dict[str, str]) -> None:
        for shard, seq in shards.items():
            if shard not in self.high_water or int(seq) > int(self.high_water[shard]):
                self.high_water[shard] = seq


def batched(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


class Sender:
    # Retries stop after `attempts` AND `retry_seconds` are both used up: enough to ride out a
    # restart of the emulator (a graceful stop saves its state first, which takes a while when it
    # holds a lot), which replaying is safe across because event ids make every retry idempotent.
    def __init__(self, url: str, api_key: str, *, attempts: int = 8, timeout: float = 60, retry_seconds: float = 180):
        self.url = url.rstrip("/") + "/events"
        self.api_key = api_key
        self.attempts = attempts
        self.retry_seconds = retry_seconds
        self.timeout = timeout
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            session = requests.Session()
            session.headers.update({"x-api-key": self.api_key, "content-type": "application/json"})
            self._local.session = session
        return self._local.session

    def post(self, body: Any) -> tuple[requests.Response, int]:
        """POST with retries on connection errors, 429 and 5xx. Returns the response and the retries used."""
        delay = 0.2
        deadline = time.monotonic() + self.retry_seconds
        attempt = 0
        # Encoded once, compact UTF-8 (json_codec; requests' own encoder was a fifth of the
        # replay's CPU). The rows' numbers are finite (replay.source), so JSON can carry them.
        data = json_codec.dumps(body)
        while True:
            last = attempt + 1 >= self.attempts and time.monotonic() >= deadline
            try:
                response = self._session().post(self.url, data=data, timeout=self.timeout)
            except requests.RequestException as exc:
                if last:
                    raise ReplayError(
                        f"POST {self.url} failed after {attempt + 1} attempts over {self.retry_seconds:.0f}s: {exc}"
                    ) from exc
            else:
                if response.status_code in (401, 403):
                    raise ReplayError(
                        f"POST {self.url} answered {response.status_code}: {response.text[:200]} "
                        f"(is the API key right? `ecom endpoints` prints it)"
                    )
                if response.status_code not in (429, 500, 502, 503, 504) or last:
                    return response, attempt
            time.sleep(delay)
            delay = min(delay * 2, 5)
            attempt += 1

    def send_batch(
        self, rows: list[Row], single: bool = False
    ) -> tuple[list[str], list[Rejection], dict[str, str], int]:
        """Send rows; on a 400, set the named bad events aside and resend the rest (all or nothing per request)."""
        pending = rows
        rejected: list[Rejection] = []
        retries = 0
        requests_made = 0
        while pending:
            body = pending[0].event if single else [r.event for r in pending]
            response, used = self.post(body)
            retries += used
            requests_made += 1
            if response.status_code == 200:
                answer = response.json()
                return answer["event_ids"], rejected, answer.get("shards", {}), retries
            if response.status_code == 400:
                errors = response.json().get("errors", [])
                bad = {e.get("index") if e.get("index") is not None else 0 for e in errors}
                if not errors or not bad <= set(range(len(pending))):
                    raise ReplayError(f"POST answered 400 without per-event errors: {response.text[:300]}")
                for e in errors:
                    index = e.get("index") if e.get("index") is not None else 0
                    rejected.append(Rejection(pending[index].number, e.get("field", "?"), e.get("error", "?")))
                pending = [r for i, r in enumerate(pending) if i not in bad]
                continue
            raise ReplayError(f"POST answered {response.status_code}: {response.text[:300]}")
        return [], rejected, {}, retries


def replay(
    rows: Iterable[Row],
    sender: Sender,
    *,
    batch_size: int = 500,
    concurrency: int = 4,
    one_by_one: bool = False,
    progress: Callable[[int], None] | None = None,
    ledger: TextIO | None = None,
) -> ReplayResult:
    """Stream rows through the API with at most `concurrency` requests in flight (bounded memory).

    Accepted event ids are appended to `ledger` as each request is answered, so that
    `ecom reconcile` can later prove where every accepted event went.
    """
    result = ReplayResult()
    size = 1 if one_by_one else batch_size
    started = time.perf_counter()
    in_flight: set[Future] = set()

    def collect(done: Iterable[Future]) -> None:
        for future in done:
            accepted, rejected, shards, retries = future.result()
            result.accepted += len(accepted)
            if ledger is not None and accepted:
                ledger.write("\n".join(accepted) + "\n")
            result.rejected.extend(rejected)
            result.retries += retries
            result.merge_high_water(shards)
            if progress:
                progress(len(accepted) + len(rejected))

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        try:
            for chunk in batched(rows, size):
                result.rows_read += len(chunk)
                result.requests += 1
                in_flight.add(pool.submit(sender.send_batch, chunk, one_by_one))
                if len(in_flight) >= concurrency * 2:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    collect(done)
            done, in_flight = wait(in_flight)
            collect(done)
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
    result.rejected.sort(key=lambda r: r.row)
    result.seconds = time.perf_counter() - started
    return result
