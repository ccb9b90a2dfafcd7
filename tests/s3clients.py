"""boto3 S3 clients for tests: dummy keys, no retries, addressing chosen."""

from __future__ import annotations

import boto3
from botocore.client import BaseClient
from botocore.config import Config

# The proxy throws the client's signature away: any keys do.
DUMMY_KEY = "AKIDUMMYDUMMYDUMMY00"
DUMMY_SECRET = "dummy-secret-the-proxy-throws-away"


def s3_client(
    endpoint: str,
    *,
    access_key: str = DUMMY_KEY,
    secret_key: str = DUMMY_SECRET,
    path_style: bool = True,
    **config: object,
) -> BaseClient:
    """A client that fails on the first error, so tests see every answer."""
    if path_style:
        config.setdefault("s3", {"addressing_style": "path"})
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, **config),
    )
