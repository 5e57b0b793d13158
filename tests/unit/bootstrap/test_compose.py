"""The docker-compose path without a stack (bootstrap/compose.py, docker-compose.yml): pinned images,
loopback ports, health checks, the environment the platform needs, and the choice of stack. The
sample through LocalStack where Docker is: tests/stack/test_compose_localstack.py.
"""

from __future__ import annotations

import pytest
import yaml

from bootstrap import compose
from ecom_core import config

ROOT = config.PROJECT_ROOT
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_images_are_pinned():
    assert SERVICES["localstack"]["image"] == "${LOCALSTACK_IMAGE:-localstack/localstack:4.14.0}"
    assert SERVICES["postgres"]["image"] == "postgres:15"
    for name, service in SERVICES.items():
        image = service["image"].split(":-")[-1].rstrip("}")
        assert ":" in image and not image.endswith(":latest"), f"{name} image is not pinned: {image}"


def test_every_port_is_bound_to_loopback_only():
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    # The same ports as the embedded stack, so the same configuration reaches both.
    assert "127.0.0.1:4566:4566" in SERVICES["localstack"]["ports"]
    assert "127.0.0.1:5433:5432" in SERVICES["postgres"]["ports"]


def test_healthchecks():
    assert "/_localstack/health" in " ".join(SERVICES["localstack"]["healthcheck"]["test"])
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert "/_localstack/health" in " ".join(SERVICES["ministack"]["healthcheck"]["test"])


def test_localstack_environment_is_what_the_platform_needs():
    env = SERVICES["localstack"]["environment"]
    assert env["KINESIS_LATENCY"] == "0"
    services = set(env["SERVICES"].split(","))
    assert {"s3", "kinesis", "dynamodb", "lambda", "apigateway", "iam", "sts", "sqs", "secretsmanager"} <= services
    assert env["LAMBDA_DOCKER_NETWORK"] == f"{COMPOSE['name']}_default"
    assert "/var/run/docker.sock:/var/run/docker.sock" in SERVICES["localstack"]["volumes"]
    # The optional MiniStack profile is opt-in, so `docker compose up` starts LocalStack only.
    assert SERVICES["ministack"]["profiles"] == ["ministack"]


def test_postgres_matches_the_dsn_the_platform_uses(monkeypatch):
    for name in ("ECOM_PG_PORT", "ECOM_AWS_PORT", "ECOM_PG_PASSWORD", "AWS_ENDPOINT_URL", "WAREHOUSE_DSN"):
        monkeypatch.delenv(name, raising=False)  # the defaults are what compose must match
    env = SERVICES["postgres"]["environment"]
    cfg = config.Stack(target="compose")
    assert cfg.warehouse_dsn == (
        f"postgresql://{env['POSTGRES_USER']}:ecom-local-dev@127.0.0.1:5433/{env['POSTGRES_DB']}"
    )
    assert env["POSTGRES_PASSWORD"] == "${ECOM_PG_PASSWORD:-ecom-local-dev}"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in SERVICES["postgres"]["volumes"])
    assert cfg.endpoint_url == "http://127.0.0.1:4566"


def test_stack_choice():
    if compose.docker_engine_available():
        pytest.skip("a Docker engine answers here; this checks the no-engine choice")
    assert compose.choose("auto") == ("embedded", "no Docker engine answers")
    assert compose.choose("embedded") == ("embedded", "asked for")
    with pytest.raises(compose.ComposeError, match="needs a running Docker engine"):
        compose.choose("compose")
    with pytest.raises(compose.ComposeError, match="unknown stack"):
        compose.choose("kubernetes")
