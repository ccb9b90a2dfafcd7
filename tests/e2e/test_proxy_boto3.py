"""boto3 with DUMMY keys, through `signproxy run`, to a real SeaweedFS.

The proxy signs with the store identity's keys (local signer, static keys).
SeaweedFS does not check x-amz-content-sha256 against the body, so every
upload also carries Content-MD5 or a checksum the store does check: a wrong
payload hash or a mangled body cannot pass unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterator

import httpx
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tests.fixtures.proxy import RunningProxy
from tests.s3clients import DUMMY_KEY, s3_client

AWKWARD_KEYS = [
    "with space.txt",
    "unicodé/ключ/キー.bin",
    "plus+sign",
    "percent%20literal",
    "equals=sign&amp",
    "double//slash",  # SeaweedFS keeps a trailing "/" key as a folder
    "tilde~star*(parens)",
]


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324


def make_client(endpoint: str, **config: object) -> BaseClient:
    return s3_client(endpoint, **config)


@pytest.fixture
def s3(proxy: RunningProxy) -> BaseClient:
    return make_client(proxy.endpoint)


@pytest.fixture
def bucket(s3: BaseClient, bucket_name: str) -> Iterator[str]:
    s3.create_bucket(Bucket=bucket_name)
    yield bucket_name
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket_name):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=bucket_name, Key=item["Key"])
    s3.delete_bucket(Bucket=bucket_name)


def test_dummy_keys_are_refused_by_the_store_directly(store, bucket_name):
    # The oracle: without the proxy, the same client is turned away.
    direct = make_client(store.endpoint)
    with pytest.raises(ClientError, match=r"InvalidAccessKeyId|AccessDenied|Signature"):
        direct.create_bucket(Bucket=bucket_name)


def test_small_put_with_content_md5_and_get(s3, bucket):
    body = b"hello through the proxy\n" * 10
    s3.put_object(Bucket=bucket, Key="small.txt", Body=body, ContentMD5=md5_b64(body))

    got = s3.get_object(Bucket=bucket, Key="small.txt")
    assert got["Body"].read() == body
    assert got["ETag"].strip('"') == hashlib.md5(body).hexdigest()  # noqa: S324


def test_put_with_wrong_content_md5_is_refused_by_the_store(s3, bucket):
    # Proves the store really checks what the client sends through us.
    with pytest.raises(ClientError, match=r"BadDigest|InvalidDigest"):
        s3.put_object(
            Bucket=bucket, Key="bad.txt", Body=b"abc", ContentMD5=md5_b64(b"abd")
        )


def test_put_with_default_checksums(s3, bucket, proxy):
    body = os.urandom(300 * 1024)
    s3.put_object(Bucket=bucket, Key="default-checksum", Body=body)

    assert s3.get_object(Bucket=bucket, Key="default-checksum")["Body"].read() == body
    head = s3.head_object(Bucket=bucket, Key="default-checksum")
    assert head["ContentLength"] == len(body)


def test_put_with_crc32_checksum_is_verified(s3, bucket):
    body = os.urandom(64 * 1024)
    s3.put_object(Bucket=bucket, Key="crc", Body=body, ChecksumAlgorithm="CRC32")
    assert s3.get_object(Bucket=bucket, Key="crc")["Body"].read() == body


def test_large_put_streams_and_ranged_get(s3, bucket, proxy):
    body = os.urandom(20 * 1024 * 1024 + 123)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=body, ContentMD5=md5_b64(body))

    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == body
    part = s3.get_object(Bucket=bucket, Key="big.bin", Range="bytes=1000-1999999")
    assert part["Body"].read() == body[1000:2000000]
    assert part["ContentRange"] == f"bytes 1000-1999999/{len(body)}"


def test_multipart_upload_file(s3, bucket, tmp_path):
    body = os.urandom(20 * 1024 * 1024)
    source = tmp_path / "source.bin"
    source.write_bytes(body)
    s3.upload_file(str(source), bucket, "multi/part.bin")

    target = tmp_path / "target.bin"
    s3.download_file(bucket, "multi/part.bin", str(target))
    assert target.read_bytes() == body


def test_list_v2_with_prefix_and_delimiter(s3, bucket):
    for key in ["a/1", "a/2", "a/b/3", "c/4", "top"]:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    listing = s3.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in listing["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["a/b/"]

    root = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in root["Contents"]] == ["top"]
    assert [p["Prefix"] for p in root["CommonPrefixes"]] == ["a/", "c/"]


def test_copy_and_delete(s3, bucket):
    body = b"copy me"
    s3.put_object(Bucket=bucket, Key="src", Body=body, ContentMD5=md5_b64(body))
    s3.copy_object(
        Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"}
    )
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == body

    s3.delete_object(Bucket=bucket, Key="src")
    with pytest.raises(ClientError, match=r"NoSuchKey|Not Found|404"):
        s3.head_object(Bucket=bucket, Key="src")


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_awkward_keys_round_trip(s3, bucket, key):
    body = f"content of {key}".encode()
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5_b64(body))

    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key)
    assert [o["Key"] for o in listed["Contents"]] == [key]


def test_copy_with_awkward_source_key(s3, bucket):
    key = "src dir/ünï+code=%.txt"
    body = b"awkward copy"
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5_b64(body))
    s3.copy_object(
        Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": key}
    )
    assert s3.get_object(Bucket=bucket, Key="copied")["Body"].read() == body


# boto3 presigns S3 URLs with SigV2 query parameters unless told s3v4.
PRESIGN_STYLES = ["s3", "s3v4"]


@pytest.mark.parametrize("signature_version", PRESIGN_STYLES)
def test_presigned_get_made_with_dummy_keys(s3, bucket, proxy, signature_version):
    key = "shared file+1.txt"
    body = b"presigned through the proxy"
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5_b64(body))
    presigner = make_client(proxy.endpoint, signature_version=signature_version)
    url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300
    )
    assert DUMMY_KEY in url

    response = httpx.get(url)
    assert response.status_code == 200, response.text
    assert response.content == body


@pytest.mark.parametrize("signature_version", PRESIGN_STYLES)
def test_expired_presigned_url_is_refused(bucket, proxy, signature_version):
    presigner = make_client(proxy.endpoint, signature_version=signature_version)
    url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "x"}, ExpiresIn=60
    )
    # Move the signing time into the past instead of waiting for expiry.
    if signature_version == "s3v4":
        url = re.sub(r"X-Amz-Date=\d{4}", "X-Amz-Date=2001", url)
    else:
        url = re.sub(r"Expires=\d+", "Expires=1000000000", url)

    response = httpx.get(url)
    assert response.status_code == 403
    assert response.headers["server"] == "signproxy"  # answered, not forwarded
    assert b"<Code>AccessDenied</Code>" in response.content
    assert b"Request has expired" in response.content


def test_virtual_host_style_becomes_path_style(proxy, bucket, s3):
    body = b"virtual host"
    s3.put_object(Bucket=bucket, Key="vh/key.txt", Body=body, ContentMD5=md5_b64(body))

    # What a virtual-host-style client sends; the name need not resolve, as
    # the connection goes to the proxy's address.
    response = httpx.get(
        f"http://127.0.0.1:{proxy.port}/vh/key.txt",
        headers={"Host": f"{bucket}.localhost:{proxy.port}"},
    )
    assert response.status_code == 200, response.text
    assert response.content == body
