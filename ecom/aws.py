"""boto3 clients pointed at the configured target (emulator endpoint, or real AWS when unset)."""
from __future__ import annotations

import os
from functools import lru_cache

import boto3
from botocore.config import Config

from ecom import config

# The emulators accept any credentials; these are local-development placeholders, not secrets.
LOCAL_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


@lru_cache(maxsize=None)
def _session(endpoint: str | None, region: str) -> boto3.session.Session:
    if endpoint and not os.environ.get("AWS_ACCESS_KEY_ID"):
        return boto3.session.Session(region_name=region, **LOCAL_CREDENTIALS)
    return boto3.session.Session(region_name=region)


def client(service: str, cfg: config.Stack | None = None, **kwargs):
    cfg = cfg or config.stack()
    botocore_config = Config(retries={"max_attempts": 8, "mode": "standard"}, max_pool_connections=32,
                             connect_timeout=5, read_timeout=kwargs.pop("read_timeout", 120))
    return _session(cfg.endpoint_url, cfg.region).client(service, endpoint_url=cfg.endpoint_url,
                                                         config=botocore_config, **kwargs)


def api_url(api_id: str, cfg: config.Stack | None = None, stage: str | None = None) -> str:
    cfg = cfg or config.stack()
    stage = stage or config.resources().api_stage
    if cfg.endpoint_url:
        # LocalStack-compatible path form, served by both MiniStack and LocalStack.
        return f"{cfg.endpoint_url}/restapis/{api_id}/{stage}/_user_request_"
    return f"https://{api_id}.execute-api.{cfg.region}.amazonaws.com/{stage}"
