"""Bearer tokens for the read API: HS256 JWTs (RFC 7519) and the operator key. Standard library only.

Verification is deliberately strict and small:
- the header must name exactly the algorithm we expect (`HS256`); `none`, `HS512`, `RS256`, ... are
  refused before any key is looked at, so an attacker cannot choose the algorithm (the classic
  `alg: none` and RS256->HS256 key-confusion attacks);
- every segment must be canonical unpadded base64url (one spelling per byte string), and the
  signature is compared in constant time over the exact bytes received;
- `exp` and `iat` are required, `nbf` is honoured, and a token may not live longer than
  `max_token_ttl_seconds` (exp - iat), whoever minted it; `iss` and `aud` must match configuration;
- a customer token's `sub` must be a customer id (positive integer, as text, matched whole);
- anything malformed (a list where a string belongs, JSON nested too deeply) is a 401, never an error.

RS256/JWKS-ready: `verify` looks the key up through `KeyResolver.key_for(header)`. For RS256 a
resolver would fetch the issuer's JWKS (cached, selected by `kid`) and `_ALGORITHMS` would gain an
RSA verifier; the standard library has no RSA, so on AWS that means shipping `cryptography` in a
layer, or letting a Cognito/JWT authorizer verify at the gateway while the handler keeps the
ownership check. See docs/read-api.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Literal, overload

from ecom_core import config, secrets

MAX_TOKEN_CHARS = 4096
CUSTOMER_ID = re.compile(r"[1-9][0-9]{0,11}")  # always matched whole (fullmatch: "$" would let "\n" in)
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
OPERATOR = "operator"
CUSTOMER = "customer"


class AuthError(Exception):
    """The credential is missing or not acceptable. `status` is 401 (who are you?) or 403."""

    def __init__(self, message: str, status: int = 401):
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class Principal:
    role: str  # "customer" or "operator"
    subject: str  # the customer id for customers, "operator" for the operator key
    customer_id: int | None = None
    expires_at: int | None = None

    def can_read_customer(self, customer_id: int) -> bool:
        return self.role == OPERATOR or (self.role == CUSTOMER and self.customer_id == customer_id)

    def as_context(self) -> dict[str, str]:
        """What the authorizer passes to the integration (API Gateway stringifies values anyway)."""
        return {
            "role": self.role,
            "sub": self.subject,
            "customerId": "" if self.customer_id is None else str(self.customer_id),
        }


def b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Canonical unpadded base64url only (RFC 7515 section 2): the url-safe alphabet, no '=', and
    the one spelling of the bytes. The last character of a segment whose length is not a multiple
    of 4 carries 2 or 4 bits beyond the bytes; base64 decoders ignore them, so up to 16 spellings
    decode alike (a signature whose last character was changed would still verify). Only the
    spelling `b64url_encode` gives back is accepted."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise AuthError("token is not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise AuthError("token is not base64url") from exc
    if b64url_encode(raw) != text:
        raise AuthError("token is not canonical base64url (unused bits set in a segment's last character)")
    return raw


def _hs256(key: bytes, signing_input: bytes) -> bytes:
    return hmac.new(key, signing_input, hashlib.sha256).digest()


# alg -> (sign, verify). Only what we issue; the header cannot add to this.
_ALGORITHMS = {"HS256": _hs256}


class KeyResolver:
    """Which key verifies a token. HS256: the shared secret from configuration."""

    def __init__(self, auth: config.Auth):
        self.auth = auth

    def key_for(self, header: dict[str, Any]) -> bytes:
        return secrets.jwt_secret(self.auth).encode("utf-8")


def mint(
    subject: str | int,
    *,
    ttl_seconds: int = 3600,
    role: str = CUSTOMER,
    now: float | None = None,
    auth: config.Auth | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """A signed HS256 token (used by `ecom token` and the tests)."""
    auth = auth or config.auth()
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": auth.jwt_issuer,
        "aud": auth.jwt_audience,
        "sub": str(subject),
        "role": role,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_seconds),
        **(extra or {}),
    }
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = (
        b64url_encode(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = _hs256(secrets.jwt_secret(auth).encode("utf-8"), signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


def _json_segment(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(text).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AuthError(f"token {what} is not JSON") from None
    if not isinstance(value, dict):
        raise AuthError(f"token {what} is not a JSON object")
    return value


@overload
def _int_claim(claims: dict[str, Any], name: str, required: Literal[True]) -> int: ...
@overload
def _int_claim(claims: dict[str, Any], name: str, required: bool) -> int | None: ...
def _int_claim(claims: dict[str, Any], name: str, required: bool) -> int | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise AuthError(f"token has no {name} claim")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) > 1e11:
        raise AuthError(f"token {name} claim is not a number of seconds")
    return int(value)


def verify_jwt(
    token: str, *, auth: config.Auth | None = None, now: float | None = None, resolver: KeyResolver | None = None
) -> Principal:
    auth = auth or config.auth()
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthError("token is too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("token is not a JWT (header.payload.signature)")
    header = _json_segment(parts[0], "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _ALGORITHMS:
        # Checked before anything else: `none` and any algorithm we did not issue are refused.
        raise AuthError(f"token algorithm {ascii(alg)[:20]} is not accepted; use HS256")
    if "crit" in header:
        raise AuthError("token header has critical extensions we do not understand")
    key = (resolver or KeyResolver(auth)).key_for(header)
    expected = _ALGORITHMS[alg](key, (parts[0] + "." + parts[1]).encode("ascii"))
    if not hmac.compare_digest(expected, b64url_decode(parts[2])):
        raise AuthError("token signature is not valid")
    claims = _json_segment(parts[1], "payload")
    clock = time.time() if now is None else now
    leeway = auth.clock_leeway_seconds
    exp = _int_claim(claims, "exp", required=True)
    if clock > exp + leeway:
        raise AuthError("token has expired")
    nbf = _int_claim(claims, "nbf", required=False)
    if nbf is not None and clock + leeway < nbf:
        raise AuthError("token is not valid yet")
    iat = _int_claim(claims, "iat", required=True)
    if clock + leeway < iat:
        raise AuthError("token was issued in the future")
    if exp - iat > auth.max_token_ttl_seconds:
        raise AuthError(f"token lives longer than {auth.max_token_ttl_seconds} seconds (exp - iat)")
    if claims.get("iss") != auth.jwt_issuer:
        raise AuthError("token issuer is not accepted")
    aud = claims.get("aud")
    if not (aud == auth.jwt_audience or (isinstance(aud, list) and auth.jwt_audience in aud)):
        raise AuthError("token audience is not accepted")
    subject = claims.get("sub")
    if not isinstance(subject, str) or not CUSTOMER_ID.fullmatch(subject):
        raise AuthError("token subject is not a customer id")
    if claims.get("role", CUSTOMER) != CUSTOMER:
        # Operators use the operator key; a token cannot promote itself.
        raise AuthError("token role is not accepted", status=403)
    return Principal(role=CUSTOMER, subject=subject, customer_id=int(subject), expires_at=exp)


def verify_operator_key(key: str, *, auth: config.Auth | None = None) -> Principal:
    auth = auth or config.auth()
    if len(key) > MAX_TOKEN_CHARS:
        raise AuthError("operator key is too long")
    digest = hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).hexdigest()
    if not hmac.compare_digest(digest, secrets.operator_key_sha256(auth)):
        raise AuthError("operator key is not valid")
    return Principal(role=OPERATOR, subject=OPERATOR)


def authenticate(authorization: str | None, *, auth: config.Auth | None = None, now: float | None = None) -> Principal:
    """`Authorization: Bearer <JWT>` (a customer) or `Authorization: Operator <key>`."""
    if not authorization or not authorization.strip():
        raise AuthError("missing Authorization header; send 'Bearer <token>'")
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if not credential:
        raise AuthError("Authorization header has no credential; send 'Bearer <token>'")
    if scheme.lower() == "bearer":
        return verify_jwt(credential, auth=auth, now=now)
    if scheme.lower() == "operator":
        return verify_operator_key(credential, auth=auth)
    raise AuthError("Authorization scheme must be Bearer (or Operator)")
