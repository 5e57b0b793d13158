"""The token key and the operator key, wherever they live.

Deployed functions get only the secrets' names (ECOM_JWT_SECRET_ID, ECOM_OPERATOR_KEY_SECRET_ID)
and read the values from Secrets Manager at cold start, cached for `secret_cache_seconds` so a
rotation reaches warm functions without a redeploy. The CLI and unit tests, which have no secret
id, use the configured values (local-development defaults unless set).
"""

from __future__ import annotations

import hashlib
import secrets as _random
import threading
import time

from ecom_core import aws, config

_cache: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


def secret_value(secret_id: str, max_age: float) -> str:
    now = time.monotonic()
    with _lock:
        cached = _cache.get(secret_id)
        if cached and now - cached[0] < max_age:
            return cached[1]
    value = aws.shared_client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    with _lock:
        _cache[secret_id] = (now, value)
    return value


def jwt_secret(auth: config.Auth | None = None) -> str:
    auth = auth or config.auth()
    if auth.jwt_secret_id:
        return secret_value(auth.jwt_secret_id, auth.secret_cache_seconds)
    return auth.jwt_secret


def operator_key(auth: config.Auth | None = None) -> str:
    auth = auth or config.auth()
    if auth.operator_key_secret_id:
        return secret_value(auth.operator_key_secret_id, auth.secret_cache_seconds)
    return auth.operator_key


def operator_key_sha256(auth: config.Auth | None = None) -> str:
    return hashlib.sha256(operator_key(auth).encode("utf-8")).hexdigest()


def new_secret_value() -> str:
    """A fresh random key (384 bits, URL-safe): what bootstrap writes on AWS and rotation writes."""
    return _random.token_urlsafe(48)
