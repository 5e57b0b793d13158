"""Reproducible Lambda zip: the same source always gives the same bytes (and CodeSha256).

Sorted entries, a fixed timestamp and fixed permissions, so re-running bootstrap on unchanged
code never redeploys a function.
"""
from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

from ecom_core.config import PROJECT_ROOT

FIXED_DATE = (1980, 1, 1, 0, 0, 0)
# What each zip holds. "handlers": the request/stream functions plus the ground package they stand
# on (config, client factory, event type, column contract, faults); nothing else of ours, the import
# contract keeps handlers from reaching up. "etl": the scheduled job, which also needs the ETL and
# the warehouse layers (and the SQL files); its Postgres dialect needs psycopg2 (present where the
# emulator runs functions), its Redshift dialect only boto3.
PACKAGES = {
    "handlers": [("handlers", "*.py"), ("ecom_core", "*.py")],
    "etl": [("ecom_core", "*.py"), ("etl", "*.py"), ("warehouse", "*.py"), ("warehouse", "*.sql")],
}


def lambda_sources(root: Path = PROJECT_ROOT, package: str = "handlers") -> list[Path]:
    files: set[Path] = set()
    for folder, pattern in PACKAGES[package]:
        files.update(p for p in (root / folder).glob(pattern) if p.is_file())
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def build_zip(root: Path = PROJECT_ROOT, package: str = "handlers") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for path in lambda_sources(root, package):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=FIXED_DATE)
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def code_sha256(blob: bytes) -> str:
    """The form Lambda reports as CodeSha256: base64 of the SHA-256 digest."""
    return base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")
