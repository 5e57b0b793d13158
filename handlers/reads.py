"""Lambda `customer-reads`: GET /customers/{customerId}/invoices and GET /invoices/{invoiceNo}.

Access is checked here even though the API Gateway authorizer already checked it: the handler
re-verifies the bearer credential itself (the authorizer's answer is cached per token and the
Lambda can be invoked by other paths than the gateway) and applies the ownership rule that only
the data can decide (whose invoice is this?).

Rules (docs/read-api.md):
- a customer token (sub = customer id) reads that customer's invoice list and the invoices it owns
  (an invoice belongs to the customer its first line named: handlers/stream_trigger quarantines a
  later line naming anyone else); another customer's list is 403; another customer's invoice, a
  guest invoice and an unknown invoice are the same 404, at the same cost (no way to probe which
  invoice numbers exist);
- the operator key reads everything.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from ecom_core import aws, config
from handlers.auth import CUSTOMER_ID, OPERATOR, AuthError, Principal, authenticate, b64url_decode, b64url_encode
from handlers.events import GUEST, INVOICE_NO
from handlers.http import Request, parse_request, response

RESOURCES = config.resources()
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_CURSOR_CHARS = 512
_LIMIT = re.compile(r"[0-9]{1,4}")
CUSTOMERS_ROUTE = "/customers/{customerId}/invoices"
INVOICE_ROUTE = "/invoices/{invoiceNo}"


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def dynamodb() -> aws.Client:
    # The document client (de)serialises plain Python values (Decimal, int, str) for us.
    return aws.shared_document_client("dynamodb")


# ---------------------------------------------------------------- values and cursors
def number(value: Decimal | int | None) -> int | float | None:
    """A DynamoDB number as JSON: integers stay integers; decimals print exactly (shortest repr)."""
    if value is None:
        return None
    value = Decimal(value)
    return int(value) if value == value.to_integral_value() else float(value)


def invoice_kind(invoice_no: str) -> str:
    return {"C": "cancellation", "A": "adjustment"}.get(invoice_no[:1], "sale")


def encode_cursor(scope: str, key: list[str]) -> str:
    """Opaque to clients; bound to the listing it came from (scope) so it cannot be replayed elsewhere."""
    return b64url_encode(json.dumps({"v": 1, "s": scope, "k": key}, separators=(",", ":")).encode("utf-8"))


def decode_cursor(token: str, scope: str, parts: int) -> list[str]:
    if len(token) > MAX_CURSOR_CHARS:
        raise HttpError(400, "next token is too long")
    try:
        value = json.loads(b64url_decode(token).decode("utf-8"))
    except (AuthError, UnicodeDecodeError, ValueError, RecursionError):
        raise HttpError(400, "next token is not valid; pass the `next` value of the previous page unchanged") from None
    if (
        not isinstance(value, dict)
        or value.get("v") != 1
        or value.get("s") != scope
        or not isinstance(value.get("k"), list)
        or len(value["k"]) != parts
        or not all(isinstance(k, str) and 0 < len(k) <= 128 and k.isprintable() for k in value["k"])
    ):
        raise HttpError(400, "next token does not belong to this listing")
    return value["k"]


def page_limit(query: dict[str, str]) -> int:
    raw = query.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise HttpError(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


# ---------------------------------------------------------------- queries
def query_page(
    kwargs: dict[str, Any], limit: int, client: aws.Client | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` items and whether more exist. Asks for one extra item so the last page never
    announces a `next` that turns out empty; follows LastEvaluatedKey across 1 MB result pages."""
    client = client or dynamodb()
    items: list[dict[str, Any]] = []
    kwargs = dict(kwargs)
    while True:
        result = client.query(Limit=limit + 1 - len(items), **kwargs)
        items.extend(result.get("Items", []))
        if len(items) > limit:
            return items[:limit], True
        if "LastEvaluatedKey" not in result:
            return items, False
        kwargs["ExclusiveStartKey"] = result["LastEvaluatedKey"]


def invoice_lines(
    invoice_no: str, client: aws.Client | None = None, *, consistent: bool = False
) -> list[dict[str, Any]]:
    client = client or dynamodb()
    return list(
        aws.items(
            client.query,
            TableName=RESOURCES.invoice_table,
            KeyConditionExpression="InvoiceNo = :n",
            ExpressionAttributeValues={":n": invoice_no},
            ConsistentRead=consistent,
        )
    )


def summarize(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Line count and exact total of a set of lines (Decimal arithmetic, no float drift)."""
    total = sum((Decimal(line["Quantity"]) * Decimal(line["UnitPrice"]) for line in lines), Decimal(0))
    return {"LineCount": len(lines), "Total": total}


def list_customer_invoices(
    customer_id: int, limit: int, cursor: str | None, client: aws.Client | None = None
) -> dict[str, Any]:
    client = client or dynamodb()
    scope = f"c:{customer_id}"
    kwargs: dict[str, Any] = {
        "TableName": RESOURCES.customer_table,
        "IndexName": "ByDate",
        "ScanIndexForward": False,
        "KeyConditionExpression": "CustomerID = :c",
        "ExpressionAttributeValues": {":c": customer_id},
    }
    if cursor:
        date, invoice_no = decode_cursor(cursor, scope, 2)
        kwargs["ExclusiveStartKey"] = {"CustomerID": customer_id, "InvoiceDate": date, "InvoiceNo": invoice_no}
    items, more = query_page(kwargs, limit, client)
    # Entries written before the stream trigger kept LineCount/Total get them computed here.
    missing = [i for i in items if "LineCount" not in i or "Total" not in i]
    if missing:
        with ThreadPoolExecutor(max_workers=min(8, len(missing))) as pool:
            computed = pool.map(
                lambda i: summarize(
                    [line for line in invoice_lines(i["InvoiceNo"], client) if line.get("CustomerID") == customer_id]
                ),
                missing,
            )
            for item, summary in zip(missing, computed, strict=True):
                item.update(summary)
    invoices = [
        {
            "invoiceNo": i["InvoiceNo"],
            "invoiceDate": i["InvoiceDate"],
            "country": i.get("Country"),
            "kind": invoice_kind(i["InvoiceNo"]),
            "lineCount": number(i["LineCount"]),
            "total": number(i["Total"]),
        }
        for i in items
    ]
    next_token = encode_cursor(scope, [items[-1]["InvoiceDate"], items[-1]["InvoiceNo"]]) if more else None
    return {"customerId": customer_id, "count": len(invoices), "invoices": invoices, "next": next_token}


def invoice_owner(lines: list[dict[str, Any]]) -> int | None:
    """The one CustomerID every line carries, or None (guest lines, or lines that disagree)."""
    owners = {line.get("CustomerID") for line in lines}
    if len(owners) != 1:
        return None
    owner = owners.pop()
    return None if owner is None else int(owner)


def recorded_owner(invoice_no: str, client: aws.Client) -> int | str | None:
    """The customer the invoice's first line named (GUEST for none); None when no owner is recorded."""
    item = client.get_item(TableName=RESOURCES.invoice_owner_table, Key={"InvoiceNo": invoice_no}).get("Item")
    if item is None:
        return None
    return int(item["CustomerID"]) if "CustomerID" in item else GUEST


def get_invoice(
    invoice_no: str, principal: Principal, limit: int, cursor: str | None, client: aws.Client | None = None
) -> dict[str, Any]:
    """One page of an invoice's lines with its line count and total.

    Whose it is comes first, from the invoice's owner record (one GetItem, whoever asks): another
    customer's invoice, a guest invoice and an unknown one are the same 404 at the same cost,
    whatever the invoice's size. For its owner (or the operator) the page is one Query of `limit`
    lines and the totals come from the customer entry, so the answer takes the same time for two
    lines or ten thousand. Every line is read only where no entry has the totals (a guest invoice,
    which only the operator reads, or an entry not yet written), or for an invoice stored before
    owners were recorded (its owner is then the one CustomerID all its lines carry)."""
    client = client or dynamodb()
    scope = f"i:{invoice_no}"
    after = decode_cursor(cursor, scope, 1)[0] if cursor else None
    owner = recorded_owner(invoice_no, client)
    if owner is None:
        return _whole_invoice(invoice_no, principal, limit, after, scope, client)
    if principal.role != OPERATOR and owner != principal.customer_id:
        raise HttpError(404, f"invoice {invoice_no} not found")
    entry = (
        None
        if owner == GUEST
        else client.get_item(
            TableName=RESOURCES.customer_table, Key={"CustomerID": owner, "InvoiceNo": invoice_no}
        ).get("Item")
    )
    if entry is None or "LineCount" not in entry or "Total" not in entry:
        return _whole_invoice(invoice_no, principal, limit, after, scope, client, owner=owner)
    # Only the owner's lines: a line naming anyone else is quarantined by the trigger, and this keeps
    # lines stored before owners were recorded out of the owner's view.
    kwargs: dict[str, Any] = {
        "TableName": RESOURCES.invoice_table,
        "ConsistentRead": False,
        "KeyConditionExpression": "InvoiceNo = :n" + (" AND LineId > :after" if after is not None else ""),
        "FilterExpression": "CustomerID = :c",
        "ExpressionAttributeValues": {
            ":n": invoice_no,
            ":c": owner,
            **({":after": after} if after is not None else {}),
        },
    }
    page, more = query_page(kwargs, limit, client)
    return _document(
        invoice_no,
        owner,
        entry.get("Country"),
        entry["InvoiceDate"],
        entry["LineCount"],
        entry["Total"],
        page,
        more,
        scope,
    )


def _whole_invoice(
    invoice_no: str,
    principal: Principal,
    limit: int,
    after: str | None,
    scope: str,
    client: aws.Client,
    owner: int | str | None = None,
) -> dict[str, Any]:
    """The page cut from every line of the invoice, totals computed from them (bounded: the largest
    invoice of the file, 573585, has 1,114 lines, ~300 KB)."""
    lines = invoice_lines(invoice_no, client)
    if owner is None:
        # No owner recorded: the lines decide, as before owners were recorded (none: a 404 below).
        customer = invoice_owner(lines)
        if not lines or (principal.role != OPERATOR and (customer is None or customer != principal.customer_id)):
            raise HttpError(404, f"invoice {invoice_no} not found")
        owner = GUEST if customer is None else customer
    lines = [
        line
        for line in lines
        if (owner == GUEST and line.get("CustomerID") is None)
        or (owner != GUEST and line.get("CustomerID") is not None and int(line["CustomerID"]) == owner)
    ]
    if not lines:
        raise HttpError(404, f"invoice {invoice_no} not found")
    lines.sort(key=lambda line: line["LineId"])
    remaining = [line for line in lines if after is None or line["LineId"] > after]
    first = min(lines, key=lambda line: (line["InvoiceDate"], line["LineId"]))
    summary = summarize(lines)
    return _document(
        invoice_no,
        owner,
        first.get("Country"),
        first["InvoiceDate"],
        summary["LineCount"],
        summary["Total"],
        remaining[:limit],
        len(remaining) > limit,
        scope,
    )


def _document(
    invoice_no: str,
    owner: int | str,
    country: str | None,
    invoice_date: str,
    line_count: Any,
    total: Any,
    page: list[dict[str, Any]],
    more: bool,
    scope: str,
) -> dict[str, Any]:
    return {
        "invoiceNo": invoice_no,
        "customerId": None if owner == GUEST else owner,
        "country": country,
        "invoiceDate": invoice_date,
        "kind": invoice_kind(invoice_no),
        "cancelled": invoice_kind(invoice_no) == "cancellation",
        "lineCount": number(line_count),
        "total": number(total),
        "count": len(page),
        "lines": [
            {
                "lineId": line["LineId"],
                "stockCode": line["StockCode"],
                "description": line.get("Description"),
                "quantity": number(line["Quantity"]),
                "unitPrice": number(line["UnitPrice"]),
                "amount": number(Decimal(line["Quantity"]) * Decimal(line["UnitPrice"])),
            }
            for line in page
        ],
        "next": encode_cursor(scope, [page[-1]["LineId"]]) if more else None,
    }


# ---------------------------------------------------------------- HTTP
def principal_for(request: Request, event: dict[str, Any]) -> Principal:
    principal = authenticate((request.headers or {}).get("authorization"))
    # When the gateway ran the authorizer, its verdict must name the same principal.
    context = (event.get("requestContext") or {}).get("authorizer") or {}
    if context.get("sub") is not None and (
        context.get("sub") != principal.subject or context.get("role") != principal.role
    ):
        raise AuthError("credential does not match the gateway's authorization", status=403)
    return principal


def route(request: Request, event: dict[str, Any]) -> tuple[int, dict[str, Any], Principal | None]:
    if request.method != "GET":
        raise HttpError(405, f"method {ascii(request.method)[:20]} not allowed; use GET")
    resource = event.get("resource") or ""
    params = request.path_parameters or {}
    query = request.query or {}
    try:
        principal = principal_for(request, event)
    except AuthError as exc:
        raise HttpError(exc.status, str(exc)) from None
    except (BotoCoreError, ClientError):
        raise  # the secret store failed: ours, a 500
    except Exception:  # noqa: BLE001 - a credential we cannot even read is the client's, never a 5xx
        raise HttpError(401, "credential could not be read") from None
    limit = page_limit(query)
    cursor = query.get("next") or None
    if resource == CUSTOMERS_ROUTE:
        raw = str(params.get("customerId", ""))
        if not CUSTOMER_ID.fullmatch(raw):
            raise HttpError(400, "customerId must be a positive integer (at most 12 digits, no leading zero)")
        customer_id = int(raw)
        if not principal.can_read_customer(customer_id):
            raise HttpError(403, "this token may read only its own customer's invoices")
        return 200, list_customer_invoices(customer_id, limit, cursor), principal
    if resource == INVOICE_ROUTE:
        invoice_no = str(params.get("invoiceNo", ""))
        if not INVOICE_NO.fullmatch(invoice_no):
            raise HttpError(400, "invoiceNo must be 1-32 characters of letters, digits and ._- (e.g. 536365, C536379)")
        return 200, get_invoice(invoice_no, principal, limit, cursor), principal
    route = ascii(resource)[:80] if resource else "(unknown)"
    raise HttpError(404, f"no route for {ascii(request.method)[:20]} {route}")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    started = time.perf_counter()
    principal = None
    try:
        request = parse_request(event)
        status, payload, principal = route(request, event)
    except HttpError as exc:
        status, payload = exc.status, {"error": str(exc), "status": exc.status}
    except Exception as exc:  # noqa: BLE001 - one clear 500 instead of the runtime's error shape
        status, payload = 500, {"error": "internal error", "status": 500}
        print(json.dumps({"fn": RESOURCES.reads_function, "unhandled": type(exc).__name__, "detail": str(exc)[:300]}))
    # One log line per invocation (the emulator also waits for output). Never the credential.
    print(
        json.dumps(
            {
                "fn": RESOURCES.reads_function,
                "resource": event.get("resource"),
                "status": status,
                "role": principal.role if principal else None,
                "ms": round((time.perf_counter() - started) * 1000, 1),
            }
        )
    )
    return response(status, payload)
