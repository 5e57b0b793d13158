"""The emulator's journal and recovery (bootstrap/local/ministack/durability.py), without a stack:
what a crash leaves on disk is put back exactly, in order, and nothing else is."""

from __future__ import annotations

import types

from ministack.core.responses import AccountRegionScopedDict

from bootstrap.local.ministack import durability

ARN = "arn:aws:kinesis:us-east-1:000000000000:stream/events"
NOW = 1_800_000_000.0


def _kinesis(created: float = 1.0, shards=("shardId-000000000000", "shardId-000000000001")):
    streams = AccountRegionScopedDict()
    streams._data[("000000000000", "us-east-1", "events")] = {
        "StreamName": "events",
        "StreamARN": ARN,
        "StreamCreationTimestamp": created,
        "RetentionPeriodHours": 24,
        "StreamStatus": "ACTIVE",
        "shards": {s: {"starting_hash_key": "0", "records": []} for s in shards},
    }
    return types.SimpleNamespace(_streams=streams, _shard_iterators={}, _consumers={}, _resource_policies={})


def _stream(kinesis) -> dict:
    return next(iter(kinesis._streams._data.values()))


def _record(n: int, arrival: float = NOW - 60) -> dict:
    return {
        "SequenceNumber": f"{n:030d}",
        "ApproximateArrivalTimestamp": arrival,
        "Data": f"ZGF0YS0{n}",
        "PartitionKey": f"key-{n}",
    }


def test_recovery_puts_back_every_journaled_record_in_order_and_skips_a_torn_write(tmp_path):
    before = _kinesis()
    journal = durability.Journal(tmp_path / "journal")
    journal.open_next()
    shard_a, shard_b = list(_stream(before)["shards"])
    written = {shard_a: [_record(1), _record(3)], shard_b: [_record(2)]}
    journal.append(_stream(before), [(shard_a, written[shard_a][0]), (shard_b, written[shard_b][0])])
    journal.append(_stream(before), [(shard_a, written[shard_a][1])])
    # A kill in the middle of the next request's write: half a line, never answered.
    with open(journal.segments()[-1], "ab") as segment:
        segment.write(b'{"arn":"' + ARN.encode() + b'","created":1.0,"records":[["shardId-0000')

    after = _kinesis()  # the state saved at the last checkpoint: no records
    report = durability.recover(durability.Journal(tmp_path / "journal"), after, now=NOW)

    assert {s: shard["records"] for s, shard in _stream(after)["shards"].items()} == written
    assert report["records"] == 3 and report["torn_lines"] == 1 and report["by_stream"] == {"events": 3}
    assert report["expired"] == report["stream_gone"] == 0
    # Recovery writes to a new segment: never after the torn line.
    assert len(list((tmp_path / "journal").glob("segment-*.jsonl"))) == 2


def test_recovery_leaves_out_expired_records_and_streams_created_again(tmp_path):
    old = _kinesis(created=1.0)
    journal = durability.Journal(tmp_path / "journal")
    journal.open_next()
    shard = next(iter(_stream(old)["shards"]))
    journal.append(_stream(old), [(shard, _record(1, arrival=NOW - 25 * 3600)), (shard, _record(2))])

    kept = _kinesis(created=1.0)
    report = durability.recover(durability.Journal(tmp_path / "journal"), kept, now=NOW)
    assert [r["SequenceNumber"] for r in _stream(kept)["shards"][shard]["records"]] == [f"{2:030d}"]
    assert report["expired"] == 1

    recreated = _kinesis(created=2.0)  # deleted and created again: the old records are not its own
    report = durability.recover(durability.Journal(tmp_path / "journal"), recreated, now=NOW)
    assert all(not s["records"] for s in _stream(recreated)["shards"].values())
    assert report["stream_gone"] == 2


def test_a_state_saved_before_the_journal_existed_is_journaled_first(tmp_path):
    """Upgrading a stack whose saved Kinesis state still holds its records: they go to the journal
    (the saved state will not hold them again), and a second recovery finds them there."""
    loaded = _kinesis()
    shard = next(iter(_stream(loaded)["shards"]))
    _stream(loaded)["shards"][shard]["records"] = [_record(1), _record(2)]
    report = durability.recover(durability.Journal(tmp_path / "journal"), loaded, now=NOW)
    assert report["records"] == 0 and len(_stream(loaded)["shards"][shard]["records"]) == 2

    again = _kinesis()
    report = durability.recover(durability.Journal(tmp_path / "journal"), again, now=NOW)
    assert report["records"] == 2
    assert _stream(again)["shards"][shard]["records"] == [_record(1), _record(2)]


def test_the_saved_kinesis_state_keeps_streams_and_shards_but_not_records():
    kinesis = _kinesis()
    shard = next(iter(_stream(kinesis)["shards"]))
    _stream(kinesis)["shards"][shard]["records"] = [_record(1)]
    state = durability.state_without_records(kinesis)()
    saved = next(iter(state["streams"]._data.values()))
    assert saved["StreamARN"] == ARN and set(saved["shards"]) == set(_stream(kinesis)["shards"])
    assert all(s["records"] == [] for s in saved["shards"].values())
    assert saved["shards"][shard]["starting_hash_key"] == "0"
    assert _stream(kinesis)["shards"][shard]["records"] == [_record(1)]  # the live stream untouched
