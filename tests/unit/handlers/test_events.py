"""Validation and normalisation of events: pure logic, no stack."""

from __future__ import annotations

import pytest

from handlers.events import InvalidEvent, normalize_batch, normalize_event
from tests.support.hostile import GOOD as ROW


def errors_of(raw, **kwargs):
    with pytest.raises(InvalidEvent) as info:
        normalize_event(raw, **kwargs)
    return {(e.field, e.message) for e in info.value.errors}


def test_pandas_shaped_row_is_normalised():
    event = normalize_event(dict(ROW, event_id="e-1"))
    assert event == {
        "event_id": "e-1",
        "InvoiceNo": "536365",
        "StockCode": "85123A",
        "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
        "Quantity": 6,
        "InvoiceDate": "2010-12-01T08:26:00",
        "UnitPrice": 2.55,
        "CustomerID": 17850,
        "Country": "United Kingdom",
    }


def test_numbers_from_an_all_digit_slice_become_codes():
    event = normalize_event(dict(ROW, InvoiceNo=541258, StockCode=22423, event_id="e"))
    assert (event["InvoiceNo"], event["StockCode"]) == ("541258", "22423")


@pytest.mark.parametrize(
    "text,iso",
    [
        ("12/1/2010 8:26", "2010-12-01T08:26:00"),  # month first, no padding
        ("1/16/2011 15:30", "2011-01-16T15:30:00"),
        ("12/9/2011 12:50", "2011-12-09T12:50:00"),
        ("2011-06-05T10:07:00", "2011-06-05T10:07:00"),
        ("2011-06-05T10:07:00+01:00", "2011-06-05T09:07:00"),
        ("2011-06-05T09:07:00Z", "2011-06-05T09:07:00"),
    ],
)
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
    years, hours, minutes = (
        ["0000", "0001", "2010", "2012", "2100", "9999"],
        ["0", "00", "9", "09", "23", "24", "99"],
        ["00", "07", "59", "60", "99"],
    )
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
    bad = dict(ROW, Quantity=1.5, UnitPrice="2.55", CustomerID=-3, Country="", InvoiceDate="13/45/2010 8:26", Extra=1)
    del bad["StockCode"]
    assert {f for f, _ in errors_of(bad)} == {
        "Quantity",
        "UnitPrice",
        "CustomerID",
        "Country",
        "InvoiceDate",
        "Extra",
        "StockCode",
    }


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
    from tests.unit.handlers.test_stream_trigger import _sample_events

    for raw in _sample_events(200):
        shuffled = dict(reversed(list(raw.items())))
        assert tuple(normalize_event(shuffled)) == EVENT_FIELDS


# ---------------------------------------------------------------- bytes the warehouse could not keep as sent
def _gateway_event(raw: bytes, *, binary: bool) -> dict:
    """The proxy event API Gateway makes of a POST body: base64 for a binary media type; otherwise
    text, the bytes decoded as UTF-8 with every invalid sequence replaced by U+FFFD (AWS does, and
    MiniStack's apigateway_v1 does the same: `body.decode("utf-8", errors="replace")`)."""
    import base64

    if binary:
        return {"httpMethod": "POST", "body": base64.b64encode(raw).decode("ascii"), "isBase64Encoded": True}
    return {"httpMethod": "POST", "body": raw.decode("utf-8", errors="replace"), "isBase64Encoded": False}


def _row_bytes(**fields) -> bytes:
    import json

    return json.dumps(dict(ROW, **fields), ensure_ascii=False).encode("utf-8")


def test_invalid_utf8_in_a_text_body_is_a_400_naming_the_field():
    """Latin-1 bytes (the source file's encoding: £ is 0xA3) sent as if UTF-8: the gateway hands the
    handler U+FFFD where the bytes were. Refused, naming the field; before, stored as '\ufffd20.00'."""
    import json

    from handlers.http import parse_request
    from handlers.ingestion import ingest, read_events

    raw = _row_bytes(Description="Dotcomgiftshop Gift Voucher £20.00").replace("£".encode(), b"\xa3")
    request = parse_request(_gateway_event(raw, binary=False))
    with pytest.raises(InvalidEvent) as info:
        read_events(request)
    [error] = info.value.errors
    assert error.field == "Description" and "U+FFFD" in error.message and "UTF-8" in error.message
    answer = ingest(request)  # refused before anything is put on the stream
    assert answer["statusCode"] == 400
    assert [e["field"] for e in json.loads(answer["body"])["errors"]] == ["Description"]
    # Every text field: the replacement character is never stored.
    for field in ("InvoiceNo", "StockCode", "Country"):
        assert field in {f for f, _ in errors_of(dict(ROW, **{field: "A\ufffdB"}))}
    # The real £, as UTF-8, is fine.
    good = parse_request(_gateway_event(_row_bytes(Description="Gift Voucher £20.00"), binary=False))
    assert read_events(good)[0]["Description"] == "Gift Voucher £20.00"


def test_invalid_utf8_in_a_binary_body_is_a_400_naming_the_byte():
    """A body the gateway passes base64-encoded (a binary media type) reaches the handler as the
    client's bytes: invalid UTF-8 there is a 400 that says where."""
    import json

    from handlers.http import parse_request
    from handlers.ingestion import ingest

    raw = _row_bytes(Description="X").replace(b'"X"', b'"X\xff"')
    position = raw.index(b"\xff")
    answer = ingest(parse_request(_gateway_event(raw, binary=True)))
    assert answer["statusCode"] == 400
    message = json.loads(answer["body"])["error"]
    assert "UTF-8" in message or "utf-8" in message, message
    assert f"byte {position}" in message or f"position {position}" in message, message


def test_loads_request_names_the_first_byte_that_is_not_utf8():
    from ecom_core.json_codec import NotUTF8, loads_request

    for raw, position in [
        (b'{"a":"x\xff"}', 7),
        (b'{"a":"\xc3"}', 6),
        (b'"\xed\xa0\x80"', 1),  # a surrogate
        ('{"a":"é"}'.encode("utf-16"), 0),
        (b"[1]\xa3", 3),
    ]:
        with pytest.raises(NotUTF8, match=f"is not valid UTF-8 at byte {position} ") as info:
            loads_request(raw)
        assert info.value.position == position and isinstance(info.value, ValueError)
    assert loads_request(b'\xef\xbb\xbf{"a":"\xc2\xa3"}') == {"a": "£"}  # a UTF-8 byte order mark is ignored
    assert loads_request(_row_bytes()) == dict(ROW)


@pytest.mark.parametrize(
    "literal, message",
    [
        ("1e-400", "1e-400 is out of range"),  # 0.0 as a float
        ("-1e-400", "-1e-400 is out of range"),  # -0.0
        ("0.1e-400", "0.1e-400 is out of range"),
        ("1.2345e-320", "1.2345e-320 is out of range"),  # a subnormal float that lost digits (1.2347e-320)
        ("1e400", "1e400 is out of range"),  # inf
        ("-1e400", "-1e400 is out of range"),
        ("1.7976931348623159e308", "out of range"),  # just beyond the largest float
        ("NaN", "NaN is not a number"),  # not JSON, but json reads them
        ("Infinity", "Infinity is out of range"),
        ("-Infinity", "-Infinity is out of range"),
        (
            "2.55000000000000001",
            "2.55000000000000001 has more digits than can be stored exactly (it would be read as 2.55)",
        ),  # accepted as 2.55 before
    ],
)
def test_numbers_a_float_cannot_hold_are_refused_naming_the_field(literal, message):
    from ecom_core.json_codec import loads_request

    body = _row_bytes(UnitPrice=0).replace(b'"UnitPrice": 0', b'"UnitPrice": ' + literal.encode())
    with pytest.raises(InvalidEvent) as info:
        normalize_batch(loads_request(body), 500)
    assert [(e.field, message in e.message) for e in info.value.errors] == [("UnitPrice", True)], info.value.errors
    # The other numeric fields too (the codes, the quantity and the customer id).
    for field in ("Quantity", "CustomerID", "InvoiceNo", "StockCode"):
        text = _row_bytes().decode()
        start = text.index(f'"{field}": ') + len(field) + 4
        end = min(i for i in (text.find(",", start), text.find("}", start)) if i > 0)
        with pytest.raises(InvalidEvent) as info:
            normalize_batch(loads_request(text[:start] + literal + text[end:]), 500)
        assert [e.field for e in info.value.errors] == [field], (field, info.value.errors)


@pytest.mark.parametrize(
    "literal, value",
    [
        ("2.55", 2.55),
        ("2.550", 2.55),
        ("0.001", 0.001),
        ("-11062.06", -11062.06),
        ("38970", 38970),
        ("38970.0", 38970.0),
        ("0", 0),
        ("0.0", 0.0),
        ("0e-400", 0.0),
        ("0.000e999", 0.0),
        ("1E2", 100.0),
        ("999999999.999", 999_999_999.999),
        ("2.550000000000000000000", 2.55),
    ],
)
def test_numbers_as_sent_are_still_accepted(literal, value):
    """The file's prices (up to 3 decimals, -11,062.06 to 38,970) and quantities (|q| <= 80,995), in
    any spelling whose value a float holds exactly, zeros included."""
    from ecom_core.json_codec import loads_request

    body = _row_bytes(UnitPrice=0).replace(b'"UnitPrice": 0', b'"UnitPrice": ' + literal.encode())
    [event] = normalize_batch(loads_request(body), 500)
    assert event["UnitPrice"] == value and type(event["UnitPrice"]) is type(value)
    for quantity in (80995, -80995, 1, 6.0):
        [event] = normalize_batch(loads_request(_row_bytes(Quantity=quantity, InvoiceNo="C536379")), 500)
        assert event["Quantity"] == quantity


def test_the_ingestion_handler_refuses_an_underflowing_price():
    from handlers.http import parse_request
    from handlers.ingestion import read_events

    body = _row_bytes(UnitPrice=0).replace(b'"UnitPrice": 0', b'"UnitPrice": 1e-400')
    with pytest.raises(InvalidEvent) as info:
        read_events(parse_request(_gateway_event(body, binary=True)))
    assert [(e.field, e.message) for e in info.value.errors] == [("UnitPrice", "1e-400 is out of range")]
