"""What a deployment to real AWS (bootstrap/deploy.py) refuses before its first call: weak secrets.
No stack; the deployment path on the running stack: tests/stack/bootstrap/test_deploy.py."""

from __future__ import annotations

import os
import secrets

import pytest

from bootstrap.deploy import RefusedForAws, deploy
from ecom_core import aws, config


class ReachedAws(Exception):
    """The deployment got past its refusals to its first AWS call."""


@pytest.fixture
def aws_cfg(monkeypatch):
    """The aws target with no secret, DSN or fault injection set, and no AWS call possible."""

    def first_call(*args, **kwargs):
        raise ReachedAws()

    monkeypatch.setattr(aws, "client", first_call)
    for name in [*config.DEV_DEFAULTS, "WAREHOUSE_DSN", "ECOM_FAULTS"]:
        monkeypatch.delenv(name, raising=False)
    return config.Stack(target="aws", aws_endpoint_url=None)


@pytest.mark.parametrize("variable", sorted(config.DEV_DEFAULTS))
def test_aws_deploy_refuses_a_weak_secret_before_any_call(aws_cfg, monkeypatch, variable):
    """A secret given for AWS has at least 32 bytes and is not trivially weak; the refusal names
    the variable and the rule, never the value."""
    strong = secrets.token_urlsafe(30)
    for value, rule in [
        ("a", "shorter than 32 bytes"),
        (strong[:31], "shorter than 32 bytes"),
        ("a" * 40, "fewer than 8 distinct characters"),
        ("0123456789abcdef" * 3, "repetition of a shorter string"),
        ("".join(map(chr, range(ord("A"), ord("A") + 40))), "run of consecutive characters"),
    ]:
        monkeypatch.setenv(variable, value)
        with pytest.raises(RefusedForAws, match=f"{variable} [^;]*{rule}") as info:
            deploy(aws_cfg)
        message = str(info.value)
        assert "at least 32 bytes" in message
        if len(value) > 1:
            assert value not in message and value[:8] not in message, "the refusal echoes the secret"
    assert len(strong[:31].encode()) == 31


def test_aws_deploy_accepts_a_strong_secret_or_none(aws_cfg, monkeypatch):
    """Unset, the stack generates the secrets (Secrets Manager, API Gateway); set, a random 40-character
    value passes. Either way the deployment goes on to AWS."""
    with pytest.raises(ReachedAws):
        deploy(aws_cfg)
    for variable in config.DEV_DEFAULTS:
        monkeypatch.setenv(variable, secrets.token_urlsafe(30))  # 40 characters
    assert all(len(os.environ[v]) == 40 for v in config.DEV_DEFAULTS)
    with pytest.raises(ReachedAws):
        deploy(aws_cfg)
    monkeypatch.setenv("ECOM_JWT_SECRET", "")  # empty is unset for config: generated as well
    with pytest.raises(ReachedAws):
        deploy(aws_cfg)
