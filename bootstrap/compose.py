"""The docker-compose stack (LocalStack + Postgres 15 + the local Redshift Data API): chosen by
`ecom up --stack compose`, or by default when a Docker engine answers. Same endpoints as the
embedded stack (4566, 5433, 4569)."""

from __future__ import annotations

import shutil
import subprocess

from ecom_core import config

COMPOSE_FILE = config.PROJECT_ROOT / "docker-compose.yml"
# What `ecom up --stack compose` starts (the file's `ministack` profile is the opt-in alternative).
SERVICES = ("localstack", "postgres", "redshift-data")


class ComposeError(RuntimeError):
    pass


def docker_engine_available(timeout: float = 5) -> bool:
    """True when a Docker engine answers (a docker client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, timeout=timeout
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose(requested: str | None) -> tuple[str, str]:
    """(stack, why). `requested` is embedded, compose, or auto/None."""
    requested = (requested or "auto").lower()
    if requested == "embedded":
        return "embedded", "asked for"
    if requested == "compose":
        if not docker_engine_available():
            raise ComposeError(
                "STACK=compose needs a running Docker engine (`docker info` failed); "
                "start Docker, or use the embedded stack: make up STACK=embedded"
            )
        return "compose", "asked for"
    if requested != "auto":
        raise ComposeError(f"unknown stack {requested!r}; use embedded, compose or auto")
    if docker_engine_available():
        return "compose", "a Docker engine answers"
    return "embedded", "no Docker engine answers"


def _compose(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), *args], capture_output=True, text=True, timeout=timeout
    )


def up() -> None:
    # --build: the Data API's image is built from this checkout (bootstrap/local/redshift_data), so
    # a changed server is rebuilt rather than an old image reused.
    out = _compose("up", "-d", "--build", "--wait", *SERVICES)
    if out.returncode != 0:
        raise ComposeError(f"docker compose up failed:\n{out.stdout}{out.stderr}")


def down() -> None:
    out = _compose("down")  # volumes are kept: `docker compose down -v` to drop the data too
    if out.returncode != 0:
        raise ComposeError(f"docker compose down failed:\n{out.stdout}{out.stderr}")
