"""Validation and normalisation of events: pure logic, no stack."""
from __future__ import annotations

import pytest

from handlers.events import InvalidEvent, normalize_batch, normalize_event

ROW = {"InvoiceNo": "536365", "StockCode": "85123A", "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
       "Quantity": 6, "InvoiceDate": "12/1/2010 8:26", "UnitPrice": 2.55, "CustomerID": 17850.0,
       "Country": "United Kingdom"}


def errors_of(raw, **kwargs):
    with pytest.raises(InvalidEvent) as info:
        normalize_event(raw, **kwargs)
    return {(e.field, e.message) for e in info.value.errors}


def test_pandas_shaped_row_is_normalised():
    event = normalize_event(dict(ROW, event_id="e-1"))
    assert event == {"event_id": "e-1", "InvoiceNo": "536365", "StockCode": "85123A",
                     "Description": "WHITE HANGING HEART T-LIGHT HOLDER", "Quantity": 6,
                     "InvoiceDate": "2010-12-01T08:26:00", "UnitPrice": 2.55, "CustomerID": 17850,
                     "Country": "United Kingdom"}


def test_numbers_from_an_all_digit_slice_become_codes():
    event = normalize_event(dict(ROW, InvoiceNo=541258, StockCode=22423, event_id="e"))
    assert (event["InvoiceNo"], event["StockCode"]) == ("541258", "22423")


@pytest.mark.parametrize("text,iso", [
    ("12/1/2010 8:26", "2010-12-01T08:26:00"),     # month first, no padding
    ("1/16/2011 15:30", "2011-01-16T15:30:00"),
    ("12/9/2011 12:50", "2011-12-09T12:50:00"),
    ("2011-06-05T10:07:00", "2011-06-05T10:07:00"),
    ("2011-06-05T10:07:00+01:00", "2011-06-05T09:07:00"),
    ("2011-06-05T09:07:00Z", "2011-06-05T09:07:00"),
])
def test_dates(text, iso):
    assert normalize_event(dict(ROW, InvoiceDate=text))["InvoiceDate"] == iso


def test_kaggle_dates_are_read_as_strptime_reads_them():
    """parse_invoice_date reads the file's M/D/YYYY H:MM without strptime; every such text gives
    strptime's datetime, or is refused where strptime refuses it."""
    import itertools
    from datetime import datetime

    from handlers.events import KAGGLE_DATE_FORMAT, parse_invoice_date

    def read(function, text):
        try:
            return function(text)
        except ValueError:
            return ValueError

    months = days = ["0", "00", "1", "01", "2", "9", "09", "12", "13", "28", "29", "30", "31", "32", "99"]
    years, hours, minutes = ["0000", "0001", "2010", "2012", "2100", "9999"], ["0", "00", "9", "09", "23", "24", "99"], \
        ["00", "07", "59", "60", "99"]
    refused = 0
    for month, day, year, hour, minute in itertools.product(months, days, years, hours, minutes):
        text = f"{month}/{day}/{year} {hour}:{minute}"
        ours = read(parse_invoice_date, text)
        assert ours == read(lambda t: datetime.strptime(t, KAGGLE_DATE_FORMAT), text), text
        refused += ours is ValueError
    assert 0 < refused < len(months) * len(days) * len(years) * len(hours) * len(minutes)


def test_guest_and_missing_description_are_null():
    event = normalize_event(dict(ROW, CustomerID=None, Description=None))
    assert event["CustomerID"] is None and event["Description"] is None


def test_trailing_spaces_and_pound_sign_are_kept():
    text = " Dotcomgiftshop Gift Voucher £20.00 "
    assert normalize_event(dict(ROW, Description=text))["Description"] == text


def test_every_bad_field_is_named():
    bad = dict(ROW, Quantity=1.5, UnitPrice="2.55", CustomerID=-3, Country="", InvoiceDate="13/45/2010 8:26",
               Extra=1)
    del bad["StockCode"]
    assert {f for f, _ in errors_of(bad)} == {"Quantity", "UnitPrice", "CustomerID", "Country", "InvoiceDate",
                                               "Extra", "StockCode"}


def test_booleans_are_not_numbers():
    assert {f for f, _ in errors_of(dict(ROW, Quantity=True, UnitPrice=False))} == {"Quantity", "UnitPrice"}


def test_event_id_required_on_the_stream():
    assert ("event_id", "is required") in errors_of(ROW, assign_id=False)


def test_batch_is_all_or_nothing_and_bounded():
    with pytest.raises(InvalidEvent) as info:
        normalize_batch([ROW, dict(ROW, Quantity="x"), ROW], 500)
    assert [(e.index, e.field) for e in info.value.errors] == [(1, "Quantity")]
    with pytest.raises(InvalidEvent, match="at most 500"):
        normalize_batch([ROW] * 501, 500)
    with pytest.raises(InvalidEvent, match="empty"):
        normalize_batch([], 500)
    with pytest.raises(InvalidEvent, match="appears twice"):
        normalize_batch([dict(ROW, event_id="a"), dict(ROW, event_id="a")], 500)
    assert len(normalize_batch([ROW] * 500, 500)) == 500


def test_uuid5_text_is_uuid5():
    """Event ids (the replay's per row, ingestion's bound id per event) are uuid5 texts: the fast
    form gives exactly uuid.uuid5's text, for ASCII and non-ASCII names, in both namespaces."""
    import uuid

    from ecom_core.events import BOUND_ID_NAMESPACE, uuid5_text
    from replay.source import EVENT_NAMESPACE

    names = [f"ecommerce-data.csv:{n}" for n in range(2000)] + ["", "CAFÉ “CRÈME” ☕\x1f\x00", "x" * 5000]
    for namespace in (BOUND_ID_NAMESPACE, EVENT_NAMESPACE, uuid.NAMESPACE_URL):
        assert [uuid5_text(namespace, name) for name in names] == [str(uuid.uuid5(namespace, name)) for name in names]


def test_the_canonical_event_has_the_fields_in_order():
    """normalize_event's event lists its fields in EVENT_FIELDS order (its JSON is the stream record
    and the raw line), whatever order the client sent them in."""
    from ecom_core.events import EVENT_FIELDS
    from tests.test_stream_trigger import _sample_events

    for raw in _sample_events(200):
        shuffled = dict(reversed(list(raw.items())))
        assert tuple(normalize_event(shuffled)) == EVENT_FIELDS
