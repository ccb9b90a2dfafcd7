"""The local store helper: it serves S3 and refuses a wrong key."""

from __future__ import annotations

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from signproxy.seaweed import Identity, LocalStore


def _client(store: LocalStore, access_key: str, secret_key: str):
    return boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )


def test_store_round_trip(store: LocalStore, store_identity: Identity, bucket_name):
    client = _client(store, store_identity.access_key, store_identity.secret_key)
    client.create_bucket(Bucket=bucket_name)
    client.put_object(Bucket=bucket_name, Key="k", Body=b"payload")
    body = client.get_object(Bucket=bucket_name, Key="k")["Body"].read()
    assert body == b"payload"


def test_store_refuses_wrong_secret(store: LocalStore, store_identity: Identity):
    client = _client(store, store_identity.access_key, "not-the-secret")
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        client.list_buckets()


def test_store_repr_shows_no_secret(store: LocalStore, store_identity: Identity):
    # pytest prints fixture values when a test fails: they must not leak keys.
    assert store_identity.secret_key not in repr(store)
    assert store_identity.access_key in repr(store)
