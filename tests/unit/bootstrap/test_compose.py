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


def test_ecom_up_starts_every_service_outside_a_profile():
    assert set(compose.SERVICES) == {name for name, service in SERVICES.items() if "profiles" not in service}


def test_the_data_api_service_reaches_the_compose_postgres_and_emulator(monkeypatch):
    for name in ("ECOM_REDSHIFT_DATA_PORT", "ECOM_PG_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    service = SERVICES["redshift-data"]
    assert service["build"] == "bootstrap/local/redshift_data"
    args = dict(arg.removeprefix("--").split("=", 1) for arg in service["command"])
    pg = SERVICES["postgres"]["environment"]
    assert args == {
        "host": "0.0.0.0",  # inside its container; published on loopback only (above)
        "port": "4569",
        "dsn": f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}",
        "s3-endpoint": "http://aws:4566",
    }
    # The same port as the embedded stack's, so the CLI's endpoint is the same on both.
    cfg = config.Stack(target="compose")
    assert service["ports"] == [f"127.0.0.1:{cfg.redshift_data_port}:4569"]
    assert cfg.endpoint_for("redshift-data") == "http://127.0.0.1:4569"
    assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "http://127.0.0.1:4569/health" in " ".join(service["healthcheck"]["test"])
    # `aws` is whichever emulator runs (LocalStack, or MiniStack's profile).
    for emulator in ("localstack", "ministack"):
        assert SERVICES[emulator]["networks"]["default"]["aliases"] == ["aws"]
    # The functions reach it by its service name: LocalStack's function containers get the variable
    # through its docker flags (they are on the compose network); MiniStack's workers inherit it.
    endpoint = "AWS_ENDPOINT_URL_REDSHIFT_DATA=http://redshift-data:4569"
    assert SERVICES["localstack"]["environment"]["LAMBDA_DOCKER_FLAGS"] == f"-e {endpoint}"
    assert SERVICES["ministack"]["environment"]["AWS_ENDPOINT_URL_REDSHIFT_DATA"] == "http://redshift-data:4569"


def test_the_data_api_image_pins_what_the_project_pins():
    """The image installs the versions the tests ran: the translation's pins (tests/unit/bootstrap/
    local/redshift_data) hold for the sqlglot it gets."""
    import tomllib

    from packaging.requirements import Requirement

    def pins(lines):
        return {r.name.lower(): str(r.specifier) for r in map(Requirement, lines)}

    project = pins(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    image_dir = ROOT / "bootstrap" / "local" / "redshift_data"
    image = pins(
        line
        for line in (image_dir / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert {"sqlglot", "psycopg2-binary", "boto3", "uvicorn"} <= set(image)
    assert all(spec.startswith("==") for spec in image.values())
    assert {name: project.get(name) for name in image} == image
    dockerfile = (image_dir / "Dockerfile").read_text()
    assert "pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt" in dockerfile
    assert "FROM python:3.11-slim" in dockerfile  # the Python the project's CI runs
