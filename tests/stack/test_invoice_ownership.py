"""An invoice belongs to the customer its first line named (issue 34, finding 4): a producer-key
holder who POSTs a line with the owner's InvoiceNo and another (or no) CustomerID cannot hide the
invoice from its owner, and a foreign reader's 404 costs what a missing invoice's does, whatever
the invoice's size (finding 6)."""

from __future__ import annotations

import json
import statistics
import time
from itertools import islice

import pytest
import requests

from ecom_core import config
from handlers.auth import mint
from handlers.stream_trigger import FOREIGN_LINE
from replay import deadletters
from replay.client import Sender
from replay.source import read_rows
from warehouse.status import wait_for_drain

pytestmark = pytest.mark.stack


def _post(stack_env, events: list[dict]) -> dict[str, str]:
    response, _ = Sender(stack_env["api_url"], stack_env["api_key"]).post(events)
    assert response.status_code == 200, response.text[:300]
    return response.json()["shards"]


def _get(stack_env, path: str, customer: int) -> requests.Response:
    return requests.get(stack_env["api_url"] + path, headers={"Authorization": f"Bearer {mint(customer)}"}, timeout=60)


def test_a_later_line_naming_another_customer_cannot_take_the_invoice(stack_env, clean_stores):
    cfg = stack_env["cfg"]
    rows = [row.event for row in islice(read_rows(config.FULL_FILE), 200)]
    invoice, owner = rows[0]["InvoiceNo"], rows[0]["CustomerID"]
    own = [e for e in rows if e["InvoiceNo"] == invoice]
    assert owner is not None and len(own) >= 2
    high_water = _post(stack_env, own)
    assert wait_for_drain(high_water, cfg, timeout=120)
    before = _get(stack_env, f"/invoices/{invoice}", owner)
    assert before.status_code == 200 and before.json()["lineCount"] == len(own)

    # Another producer: one line claiming the invoice for someone else, one with no customer at all
    # (new event ids: the API assigns them when a producer sends none).
    template = {k: v for k, v in own[0].items() if k != "event_id"}
    intruder = owner + 1
    high_water = _post(
        stack_env,
        [{**template, "CustomerID": intruder, "Quantity": 999}, {**template, "CustomerID": None, "Quantity": 998}],
    )
    assert wait_for_drain(high_water, cfg, timeout=120)

    after = _get(stack_env, f"/invoices/{invoice}", owner)
    assert after.status_code == 200, after.text[:300]
    assert after.json() == before.json()  # the owner's reads are unchanged
    assert _get(stack_env, f"/invoices/{invoice}", intruder).status_code == 404
    listing = _get(stack_env, f"/customers/{owner}/invoices", owner).json()
    assert [(i["invoiceNo"], i["lineCount"]) for i in listing["invoices"]] == [(invoice, len(own))]
    assert _get(stack_env, f"/customers/{intruder}/invoices", intruder).json()["invoices"] == []
    # Both foreign lines quarantined with the reason, findable and counted.
    foreign = [letter for letter in deadletters.letters(cfg) if letter.kind == FOREIGN_LINE]
    assert sorted(json.loads(letter.data)["Quantity"] for letter in foreign) == [998, 999]
    assert all(f"invoice {invoice} belongs to another customer" in letter.reason for letter in foreign)


def test_a_foreign_readers_404_costs_what_a_missing_invoices_does(stack_env, clean_stores):
    """Before, the handler read every line of the invoice before deciding: a 10,000-line invoice's
    404 to a foreign reader was 60x slower than a missing invoice's (a timing oracle). Now both are
    one GetItem of the owner record."""
    cfg = stack_env["cfg"]
    template = {k: v for k, v in next(read_rows(config.FULL_FILE)).event.items() if k != "event_id"}
    invoice, owner = "599999", 12346
    lines = [{**template, "InvoiceNo": invoice, "CustomerID": owner, "StockCode": f"S{n:05d}"} for n in range(3000)]
    high_water: dict[str, str] = {}
    for start in range(0, len(lines), 500):
        high_water.update(_post(stack_env, lines[start : start + 500]))
    assert wait_for_drain(high_water, cfg, timeout=300)
    page = _get(stack_env, f"/invoices/{invoice}?limit=5", owner).json()
    assert page["lineCount"] == 3000 and page["count"] == 5 and page["next"]

    def median_seconds(path: str) -> float:
        times = []
        for _ in range(15):
            clock = time.perf_counter()
            assert _get(stack_env, path, owner + 1).status_code == 404
            times.append(time.perf_counter() - clock)
        return statistics.median(times)

    missing, foreign = median_seconds("/invoices/599998"), median_seconds(f"/invoices/{invoice}")
    owners_page = statistics.median(
        _timed(lambda: _get(stack_env, f"/invoices/{invoice}?limit=20", owner)) for _ in range(7)
    )
    print(
        f"404 medians: missing {missing * 1000:.1f} ms, foreign 3,000-line invoice {foreign * 1000:.1f} ms; "
        f"owner's page of 20: {owners_page * 1000:.1f} ms"
    )
    assert foreign < 2 * missing + 0.02
    assert owners_page < 0.5  # one page and the entry's totals, not 3,000 lines


def _timed(call) -> float:
    clock = time.perf_counter()
    response = call()
    assert response.status_code == 200, response.text[:300]
    return time.perf_counter() - clock
