"""ecom_core/events.py without a stack: reading a field of a record of hostile bytes answers None.
The same record on the running stack's stream: tests/stack/test_reliability.py."""

from __future__ import annotations

DEEP_RECORD = b'{"a":' * 100_000 + b"1" + b"}" * 100_000  # 600 KB: within a Kinesis record's 1 MiB


def test_record_fields_of_hostile_bytes_are_none_not_an_exception():
    from ecom_core.events import record_field

    assert record_field(DEEP_RECORD, "event_id") is None  # RecursionError inside
    assert record_field(b"[" * 50_000 + b"]" * 50_000, "event_id") is None
    assert record_field(b"\xff\xfe", "event_id") is None and record_field(b"[1]", "event_id") is None
    assert record_field(b'{"event_id": "e-1", "InvoiceNo": 536365}', "InvoiceNo") == 536365
