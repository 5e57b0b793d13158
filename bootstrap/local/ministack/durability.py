"""Acknowledged means durable on the embedded stack: a SIGKILL of the emulator loses no record the
API answered 200 for, and the deployment comes back as it was.

MiniStack keeps every service's state in memory and writes it to STATE_DIR only on a graceful stop
(PERSIST_STATE=1); only S3 objects go to disk as they arrive (S3_PERSIST=1). A SIGKILL took the
stream, DynamoDB, the API, the functions and their mappings back to the last graceful stop, or to
nothing. On AWS a 200 from PutRecords means the records are on a replicated stream. Three pieces
give the local stack the same promise:

- **The journal holds the stream's records.** Every record PutRecord/PutRecords appends to a shard
  is written, with its shard, sequence number and arrival time, to an append-only file before the
  answer goes out (one `write` per request: a kill leaves at most a torn last line, which recovery
  skips, and its request was never answered). The data is in the kernel before the 200, so a
  killed process loses nothing; a power cut can (no fsync; docs/reliability.md says so). The saved
  Kinesis state keeps the streams and shards without their records (which also makes saving it
  cheap): the journal is where records are kept, and a segment goes once all its records are past
  the stream's retention.
- **Checkpoints.** `POST /_ecom/checkpoint` saves every service's state as a graceful stop does,
  the Lambda mappings' positions first: a position moves only after the writes of the batches
  before it, so the DynamoDB saved next holds at least what every saved position delivered. The
  stack takes one after a deployment that changed something and after emptying the stores
  (bootstrap/stack.py `checkpoint`): the API's id, keys, functions and mappings survive a crash.
- **Recovery.** At start, after MiniStack has loaded the last saved state and before it answers a
  request, the journal's records are put back on their shards, in order, with their own sequence
  numbers: each shard's list is the one before the crash, so the mappings' saved positions (indexes
  into it) mean what they meant. The mappings resume from there and the trigger writes DynamoDB and
  S3 again from that point; every write is keyed by event id, so nothing is doubled. What was
  recovered goes to `recovery.json` beside the state (`ecom up` prints it).

Patches `ministack.app._load_persisted_state` (recovery after it), `ministack.app.app` (the
checkpoint route), `ministack.services.kinesis.get_state` (records left to the journal) and
`ministack.services.kinesis._put_record` (journaled; PutRecords is journaled by
bootstrap/local/ministack/kinesis.py, which replaces it). No upstream proposal yet
(docs/emulator-notes.md, the row on durability).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from bootstrap.local.ministack._patching import check as _check
from bootstrap.local.ministack._patching import targets

CHECKPOINT_PATH = "/_ecom/checkpoint"
RECOVERY_FILE = "recovery.json"
# Present while the emulator runs; still there at start when the last stop was not graceful.
RUNNING_MARKER = "running"

PATCHED = targets("ministack.app", "_load_persisted_state", "app") + targets(
    "ministack.services.kinesis", "_put_record", "get_state"
)
USED = (
    targets("ministack.app", "_build_persistence_save_dict")
    + targets("ministack.core.persistence", "save_state")
    + targets("ministack.core.persistence", "PERSIST_STATE", "STATE_DIR", kind="value")
    + targets("ministack.services.kinesis", "_resolve_stream")
    + targets("ministack.services.lambda_svc", "_esms", "_kinesis_positions", kind="value")
    + targets(
        "ministack.services.kinesis", "_streams", "_shard_iterators", "_consumers", "_resource_policies", kind="value"
    )
)

logger = logging.getLogger("ecom.durability")

# The order a checkpoint saves services in: the mappings' positions before what they write.
SAVED_FIRST = ("lambda",)
SAVE_ATTEMPTS = 3


def _encode(value: Any) -> Any:
    """Record data is the base64 text of the request; bytes only if a protocol ever hands them over."""
    if isinstance(value, (bytes, bytearray)):
        return {"__bytes__": base64.b64encode(bytes(value)).decode("ascii")}
    raise TypeError(f"cannot journal a {type(value).__name__}")


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__bytes__" in value:
        return base64.b64decode(value["__bytes__"])
    return value


class Journal:
    """Append-only segments `segment-<n>.jsonl` in one directory: one line per request, the
    stream's ARN and creation time and the records it appended as
    [shard, sequence number, arrival, data, partition key]."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._lock = threading.Lock()
        self._fd: int | None = None

    @staticmethod
    def number(path: Path) -> int:
        return int(path.stem.rsplit("-", 1)[1])

    def segments(self) -> list[Path]:
        return sorted(self.directory.glob("segment-*.jsonl"), key=self.number)

    def open_next(self) -> None:
        """New writes go to a new segment (never after a line a kill may have torn)."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            existing = self.segments()
            if self._fd is not None:
                os.close(self._fd)
            number = self.number(existing[-1]) + 1 if existing else 1
            self._fd = os.open(
                self.directory / f"segment-{number:06d}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
            )

    def append(self, stream: dict, records: list[tuple[str, dict]]) -> None:
        """Before the answer: the records `(shard id, record)` one request appended to `stream`."""
        if not records:
            return
        line = (
            json.dumps(
                {
                    "arn": stream["StreamARN"],
                    "created": stream.get("StreamCreationTimestamp"),
                    "records": [
                        [shard, r["SequenceNumber"], r["ApproximateArrivalTimestamp"], r["Data"], r["PartitionKey"]]
                        for shard, r in records
                    ],
                },
                separators=(",", ":"),
                default=_encode,
            ).encode()
            + b"\n"
        )
        with self._lock:
            if self._fd is None:
                return  # persistence is off: there is nothing to recover into either
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]


JOURNAL: Journal | None = None


def _streams_by_arn(kinesis) -> dict[str, dict]:
    return {stream["StreamARN"]: stream for stream in kinesis._streams._data.values()}


def recover(journal: Journal, kinesis, now: float | None = None) -> dict[str, Any]:
    """Put the journal's records back on the loaded streams' shards, in the journal's order.

    Records of a stream that is not in the saved state (deleted, or created and never saved) or
    that was created again since, and records past their stream's retention, are left out; a
    segment left with nothing to give is removed. A state saved before the journal existed still
    holds its records: they are journaled first, so the journal has every record from then on."""
    clock = time.perf_counter()
    now = time.time() if now is None else now
    streams = _streams_by_arn(kinesis)
    segments = journal.segments()
    if not segments:
        journal.open_next()
        for stream in streams.values():
            for shard_id, shard in stream["shards"].items():
                journal.append(stream, [(shard_id, record) for record in shard["records"]])
        segments = journal.segments()
    last = {
        (arn, shard_id): int(shard["records"][-1]["SequenceNumber"]) if shard["records"] else -1
        for arn, stream in streams.items()
        for shard_id, shard in stream["shards"].items()
    }
    recovered: dict[str, int] = {}
    expired = gone = torn = 0
    for path in segments:
        kept = 0
        with open(path, "rb") as lines:
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    torn += 1  # a write cut by the kill: its request was never answered
                    continue
                stream = streams.get(entry["arn"])
                if stream is None or stream.get("StreamCreationTimestamp") != entry["created"]:
                    gone += len(entry["records"])
                    continue
                cutoff = now - stream["RetentionPeriodHours"] * 3600
                for shard_id, sequence, arrival, data, key in entry["records"]:
                    shard = stream["shards"].get(shard_id)
                    if shard is None:
                        gone += 1
                        continue
                    if arrival < cutoff:
                        expired += 1
                        continue
                    kept += 1
                    if int(sequence) <= last[entry["arn"], shard_id]:
                        continue  # loaded with the state already
                    shard["records"].append(
                        {
                            "SequenceNumber": sequence,
                            "ApproximateArrivalTimestamp": arrival,
                            "Data": _decode(data),
                            "PartitionKey": key,
                        }
                    )
                    last[entry["arn"], shard_id] = int(sequence)
                    recovered[stream["StreamName"]] = recovered.get(stream["StreamName"], 0) + 1
        if not kept:
            path.unlink(missing_ok=True)
    journal.open_next()
    return {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "records": sum(recovered.values()),
        "by_stream": recovered,
        "expired": expired,
        "stream_gone": gone,
        "torn_lines": torn,
        "segments": len(journal.segments()),
        "seconds": round(time.perf_counter() - clock, 3),
    }


def state_without_records(kinesis):
    """MiniStack's Kinesis state (its `get_state`: a deep copy of the four stores) with every
    shard's records left out, without copying them first: the journal keeps them."""
    from ministack.core.responses import AccountRegionScopedDict

    def get_state():
        streams = AccountRegionScopedDict()
        for key, stream in list(kinesis._streams._data.items()):
            saved = {name: copy.deepcopy(value) for name, value in stream.items() if name != "shards"}
            saved["shards"] = {
                shard_id: {
                    **{name: copy.deepcopy(value) for name, value in shard.items() if name != "records"},
                    "records": [],
                }
                for shard_id, shard in list(stream["shards"].items())
            }
            streams._data[key] = saved
        return {
            "streams": streams,
            "shard_iterators": copy.deepcopy(kinesis._shard_iterators),
            "consumers": copy.deepcopy(kinesis._consumers),
            "resource_policies": copy.deepcopy(kinesis._resource_policies),
        }

    return get_state


def _saved(path: Path, attempt) -> bool:
    """Whether `attempt()` replaced the file at `path` (MiniStack's save logs a failure and returns)."""
    before = path.stat().st_ino if path.exists() else None
    attempt()
    return path.exists() and path.stat().st_ino != before


def checkpoint() -> dict[str, Any]:
    """Save every service's state, the mappings' positions first. Runs on the server's event loop,
    so no request is handled meanwhile."""
    from ministack import app
    from ministack.core import persistence

    clock = time.perf_counter()
    getters = app._build_persistence_save_dict()
    order = [name for name in SAVED_FIRST if name in getters] + [n for n in getters if n not in SAVED_FIRST]
    failed = []
    for name in order:
        path = Path(persistence.STATE_DIR) / f"{name}.json"
        for _ in range(SAVE_ATTEMPTS):
            try:
                # A state read while a poller thread changes a dict raises; the next attempt reads again.
                state = getters[name]()
            except RuntimeError:
                continue
            if state is None or _saved(path, lambda name=name, state=state: persistence.save_state(name, state)):
                break
        else:
            failed.append(name)
    return {"services": len(order), "failed": failed, "seconds": round(time.perf_counter() - clock, 3)}


def with_checkpoint_route(asgi_app):
    """MiniStack's ASGI app, plus `POST /_ecom/checkpoint` (loopback only, as the emulator is)."""

    async def routed(scope, receive, send):
        if scope["type"] != "http" or scope["path"] != CHECKPOINT_PATH:
            await asgi_app(scope, receive, send)
            return
        if scope["method"] != "POST":
            status, answer = 405, {"message": "POST only"}
        else:
            answer = checkpoint()
            status = 500 if answer["failed"] else 200
        body = json.dumps(answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return routed


def recovering(load_persisted_state):
    """MiniStack's start-up load, then the journal's records put back."""

    def load_then_recover():
        global JOURNAL
        from ministack.core import persistence
        from ministack.services import kinesis

        load_persisted_state()
        state_dir = Path(persistence.STATE_DIR)
        JOURNAL = Journal(state_dir / "kinesis-journal")
        report = recover(JOURNAL, kinesis)
        report["unclean_stop"] = (state_dir / RUNNING_MARKER).exists()
        report["redelivered"] = records_after_saved_positions(kinesis)
        (state_dir / RUNNING_MARKER).touch()
        (state_dir / RECOVERY_FILE).write_text(json.dumps(report) + "\n")
        # Said loudly after a crash or when records could not go back; a clean start is routine.
        level = logging.WARNING if report["unclean_stop"] or report["stream_gone"] else logging.INFO
        logger.log(
            level,
            "Kinesis journal: %d records put back on their shards in %.2f s (%d past retention, "
            "%d of streams no longer there, %d torn lines); %d after the mappings' saved positions%s",
            report["records"],
            report["seconds"],
            report["expired"],
            report["stream_gone"],
            report["torn_lines"],
            report["redelivered"],
            "; the last stop was not graceful" if report["unclean_stop"] else "",
        )

    return load_then_recover


def records_after_saved_positions(kinesis) -> int:
    """How many records the Kinesis mappings will deliver from their (loaded) positions on: after a
    crash, what the trigger writes again since the last checkpoint."""
    from ministack.services import lambda_svc

    streams = _streams_by_arn(kinesis)
    pending = 0
    for key, esm in list(lambda_svc._esms._data.items()):
        stream = streams.get(esm.get("EventSourceArn", ""))
        if stream is None:
            continue
        positions = lambda_svc._kinesis_positions._data.get(key, {})
        pending += sum(
            len(shard["records"]) - positions.get(shard_id, 0) for shard_id, shard in stream["shards"].items()
        )
    return pending


def stopped_cleanly() -> None:
    """The server returned after its graceful shutdown (MiniStack saved its state): the next start
    is not a recovery from a crash."""
    from ministack.core import persistence

    if persistence.PERSIST_STATE:
        (Path(persistence.STATE_DIR) / RUNNING_MARKER).unlink(missing_ok=True)


def journaled_put_record(kinesis, put_record):
    """MiniStack's PutRecord, its record journaled before the answer."""

    def put(data):
        response = put_record(data)
        if response[0] == 200 and JOURNAL is not None:
            answer = json.loads(response[2])
            _name, stream = kinesis._resolve_stream(data)
            records = stream["shards"][answer["ShardId"]]["records"]
            record = next(r for r in reversed(records) if r["SequenceNumber"] == answer["SequenceNumber"])
            JOURNAL.append(stream, [(answer["ShardId"], record)])
        return response

    return put


def check() -> None:
    _check(__name__, PATCHED, USED)


def apply() -> None:
    """Refuse (PatchTargetMissing) before changing anything unless every name is there, then patch.
    Without PERSIST_STATE there is no saved state to recover into: nothing is patched."""
    check()
    from ministack import app
    from ministack.core import persistence
    from ministack.services import kinesis

    if not persistence.PERSIST_STATE:
        return
    app._load_persisted_state = recovering(app._load_persisted_state)
    app.app = with_checkpoint_route(app.app)
    kinesis._put_record = journaled_put_record(kinesis, kinesis._put_record)
    kinesis.get_state = state_without_records(kinesis)
