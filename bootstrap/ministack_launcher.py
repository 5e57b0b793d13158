"""Start MiniStack with our performance fixes applied (`python -m bootstrap.ministack_launcher`).

Each fix keeps MiniStack's behaviour exactly and only removes a cost that grows with the data;
each is proposed upstream (docs/emulator-notes.md) and checked against the original in
tests/test_stack.py. The embedded stack starts MiniStack through this module; docker-compose runs
the image as it is.
"""
from __future__ import annotations

import time


def expire_records_when_due(stream: dict) -> None:
    """MiniStack's `kinesis._expire_records`, without a pass over every retained record on every
    PutRecords/GetRecords/DescribeStream call (O(stream length) per call: 9% of the emulator's CPU
    on the full file). Records are appended in arrival order, so they are all younger than the
    cutoff when the oldest is; only then is there nothing to do."""
    cutoff = time.time() - stream["RetentionPeriodHours"] * 3600
    for shard in stream["shards"].values():
        records = shard["records"]
        if records and records[0]["ApproximateArrivalTimestamp"] < cutoff:
            shard["records"] = [r for r in records if r["ApproximateArrivalTimestamp"] >= cutoff]


def apply() -> None:
    from ministack.services import kinesis

    kinesis._expire_records = expire_records_when_due


if __name__ == "__main__":
    apply()
    from ministack.app import main

    main()
