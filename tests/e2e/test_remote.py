"""The remote signer end to end, and the error answers clients must get.

Through `signproxy run` to SeaweedFS, with the STS emulator:

* remote alone (no role): what a remote signature covers is signed by
  object-store-authorization and accepted by the store; a request with extra
  x-amz-* headers is refused in XML and never forwarded; with a role, the
  same request is signed locally instead;
* a large body with the remote signer travels as UNSIGNED-PAYLOAD under
  `--payload auto` (Content-MD5 still guards it) and is refused with the
  documented 501 under `--payload sign`;
* STS failing or unreachable: 503 with Retry-After, in S3 XML;
* forward mode: a host off the allow list is refused with 403 XML, a host on
  it is signed and forwarded.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import uuid
import xml.etree.ElementTree as ET

import httpx
import pytest
from botocore.exceptions import ClientError

from signproxy.seaweed import LocalStore, free_port
from tests.fixtures.emulator import EmulatorHandle
from tests.fixtures.proxy import RunningProxy, StartProxy
from tests.s3clients import s3_client


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324


def xml_error(response: httpx.Response) -> dict[str, str]:
    """Code, Message and RequestId of an S3 XML error answered by signproxy."""
    assert response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.content)  # noqa: S314 - our own proxy's answer
    assert root.tag == "Error"
    fields = {child.tag: child.text or "" for child in root}
    assert fields["RequestId"]
    return fields


def signed_by(metrics_endpoint: str) -> dict[str, float]:
    text = httpx.get(metrics_endpoint + "/metrics").text
    pattern = r'^signproxy_signing_duration_seconds_count\{signer="(\w+)"\} (\S+)$'
    return {n: float(c) for n, c in re.findall(pattern, text, re.MULTILINE)}


class Remote:
    """A proxy with the remote signer and its metrics port."""

    def __init__(self, proxy: RunningProxy, metrics: str) -> None:
        self.proxy = proxy
        self.metrics = metrics
        self.endpoint = proxy.endpoint

    def signed_by(self) -> dict[str, float]:
        return signed_by(self.metrics)


def start_remote(
    start_proxy: StartProxy,
    emulator: EmulatorHandle,
    *,
    role: bool = False,
    **options: object,
) -> Remote:
    metrics_port = free_port()
    proxy = start_proxy(
        signer="remote",
        sts_endpoint=emulator.endpoint,
        role_indicator=emulator.role_indicator if role else None,
        metrics_listen=f"127.0.0.1:{metrics_port}",
        **options,
    )
    return Remote(proxy, f"http://127.0.0.1:{metrics_port}")


@pytest.fixture
def bucket(store: LocalStore, start_proxy: StartProxy) -> str:
    """A bucket made through a local-signer proxy (static keys)."""
    name = f"r-{uuid.uuid4().hex[:16]}"
    maker = start_proxy()
    assert httpx.put(f"{maker.endpoint}/{name}").status_code == 200
    return name


def test_remote_alone_signs_what_it_covers(start_proxy, emulator_reset, bucket):
    remote = start_remote(start_proxy, emulator_reset)
    # boto3 told to add only what S3 requires: no x-amz-checksum headers.
    s3 = s3_client(
        remote.endpoint,
        path_style=False,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    body = os.urandom(100_000)
    key = "remote/a b+ü=%.bin"
    s3.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5_b64(body))

    got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest()
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="remote/", Delimiter="/")
    assert [o["Key"] for o in listed["Contents"]] == [key]
    counts = remote.signed_by()
    assert counts.get("remote", 0) >= 3, counts
    assert counts.get("local", 0) == 0, counts
    assert emulator_reset.server.calls("object_store_authorization") >= 3


def test_remote_alone_refuses_headers_it_cannot_sign(
    start_proxy, emulator_reset, bucket
):
    remote = start_remote(start_proxy, emulator_reset)
    url = f"{remote.endpoint}/{bucket}/refused.txt"
    response = httpx.put(
        url,
        content=b"never stored",
        headers={"x-amz-meta-owner": "alice", "content-md5": md5_b64(b"never stored")},
    )

    assert response.status_code == 400
    assert response.headers["server"] == "signproxy"
    error = xml_error(response)
    assert error["Code"] == "InvalidRequest"
    assert "x-amz-meta-owner" in error["Message"]
    assert emulator_reset.server.calls("object_store_authorization") == 0
    assert httpx.head(url).status_code == 404  # nothing reached the store


def test_remote_with_a_role_signs_those_headers_locally(
    start_proxy, emulator_reset, bucket
):
    remote = start_remote(start_proxy, emulator_reset, role=True)
    url = f"{remote.endpoint}/{bucket}/fallback.txt"
    body = b"signed by the local fallback"
    response = httpx.put(
        url,
        content=body,
        headers={"x-amz-meta-owner": "alice", "content-md5": md5_b64(body)},
    )
    assert response.status_code == 200, response.text
    assert remote.signed_by().get("local") == 1

    got = httpx.get(url)  # no extra header: the remote signer's
    assert got.content == body
    assert got.headers["x-amz-meta-owner"] == "alice"
    assert remote.signed_by().get("remote") == 1


LARGE = 3 * 1024 * 1024


def test_remote_large_body_is_unsigned_payload_under_auto(
    start_proxy, emulator_reset, bucket
):
    remote = start_remote(start_proxy, emulator_reset, hash_limit="1MiB")
    body = os.urandom(LARGE)
    url = f"{remote.endpoint}/{bucket}/large-unsigned.bin"
    response = httpx.put(url, content=body, headers={"content-md5": md5_b64(body)})
    assert response.status_code == 200, response.text
    assert httpx.get(url).content == body

    # Content-MD5 is what guards an UNSIGNED-PAYLOAD body: a wrong one fails.
    bad = httpx.put(url, content=body, headers={"content-md5": md5_b64(b"other")})
    assert bad.status_code == 400
    assert re.search(rb"<Code>(BadDigest|InvalidDigest)</Code>", bad.content)


def test_remote_large_body_is_refused_under_payload_sign(
    start_proxy, emulator_reset, bucket
):
    remote = start_remote(
        start_proxy, emulator_reset, hash_limit="1MiB", payload="sign"
    )
    body = os.urandom(LARGE)
    url = f"{remote.endpoint}/{bucket}/large-refused.bin"
    response = httpx.put(url, content=body, headers={"content-md5": md5_b64(body)})

    assert response.status_code == 501
    error = xml_error(response)
    assert error["Code"] == "NotImplemented"
    assert "--payload sign" in error["Message"]
    assert "UNSIGNED-PAYLOAD" in error["Message"]
    assert emulator_reset.server.calls("object_store_authorization") == 0
    assert httpx.head(url).status_code == 404


@pytest.mark.parametrize(
    "faults",
    [{"error_rate": 1.0}, {"drop_rate": 1.0}],
    ids=["sts-answers-503", "sts-drops-connections"],
)
def test_sts_down_is_503_with_retry_after(
    start_proxy, emulator_factory, bucket, faults
):
    emulator = emulator_factory()
    remote = start_remote(start_proxy, emulator)
    url = f"{remote.endpoint}/{bucket}"
    assert httpx.get(url).status_code == 200  # STS up: signed and listed

    emulator.server.set_faults(**faults)
    response = httpx.get(url + "?list-type=2&prefix=x", timeout=60)

    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    error = xml_error(response)
    assert error["Code"] == "ServiceUnavailable"
    assert "<ListBucketResult" not in response.text

    emulator.server.set_faults(error_rate=0.0, drop_rate=0.0)
    assert httpx.get(url + "?list-type=2&prefix=y").status_code == 200


def test_boto3_sees_sts_down_as_a_retryable_error(start_proxy, emulator_factory):
    emulator = emulator_factory()
    remote = start_remote(start_proxy, emulator)
    emulator.server.set_faults(error_rate=1.0)
    s3 = s3_client(remote.endpoint, path_style=False)
    with pytest.raises(ClientError, match=r"ServiceUnavailable"):
        s3.list_buckets()


def test_forward_mode_refuses_hosts_off_the_allow_list(store, start_proxy, bucket):
    store_host = httpx.URL(store.endpoint).host  # 127.0.0.1
    proxy = start_proxy(mode="forward", allow_hosts=store_host, upstream=None)
    with httpx.Client(proxy=proxy.endpoint) as client:
        allowed = client.get(f"{store.endpoint}/{bucket}")
        store_port = httpx.URL(store.endpoint).port
        refused = client.get(f"http://localhost:{store_port}/{bucket}")

    assert allowed.status_code == 200, allowed.text
    assert b"<ListBucketResult" in allowed.content
    assert refused.status_code == 403
    assert refused.headers["server"] == "signproxy"
    error = xml_error(refused)
    assert error["Code"] == "AccessDenied"
    assert "'localhost'" in error["Message"]
    assert "allow list" in error["Message"]
