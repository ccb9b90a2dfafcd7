"""The addon: its pure helpers, and the answers it gives through a real proxy."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

from signproxy import errors
from signproxy.addon import host_allowed, strip_presign_params, virtual_host_bucket
from signproxy.seaweed import free_port
from tests.fixtures.proxy import RunningProxy, wait_listening

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
DUMMY = {"authorization": "AWS4-HMAC-SHA256 Credential=AKIDUMMY/x, Signature=00"}


# --- pure helpers -------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "allowed", "expected"),
    [
        ("s3.example.com", 443, ("s3.example.com",), True),
        ("S3.Example.com.", 443, ("s3.example.com",), True),
        ("bucket.s3.example.com", 443, ("*.s3.example.com",), True),
        ("s3.example.com", 443, ("*.s3.example.com",), False),
        ("evil-s3.example.com", 443, ("*.s3.example.com",), False),
        ("s3.example.com", 8443, ("s3.example.com:443",), False),
        ("s3.example.com", 443, ("s3.example.com:443",), True),
        ("other.com", 80, ("s3.example.com",), False),
    ],
)
def test_host_allowed(host, port, allowed, expected):
    assert host_allowed(host, port, allowed) is expected


@pytest.mark.parametrize(
    ("host", "bucket"),
    [
        (b"my-bucket.localhost:8080", "my-bucket"),
        (b"My.Dotted.Bucket.localhost", "My.Dotted.Bucket"),
        (b"localhost:8080", None),
        (b"127.0.0.1:8080", None),
        (b"[::1]:8080", None),
        (b"bucket.elsewhere:8080", None),
    ],
)
def test_virtual_host_bucket(host, bucket):
    assert virtual_host_bucket([(b"Host", host)], ("localhost",)) == bucket


V4_QUERY = (
    "list-type=2&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F20260102%2F"
    "us-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260102T030000Z&X-Amz-Expires=600"
    "&X-Amz-SignedHeaders=host&X-Amz-Signature=abc&prefix=a%2Fb"
)


def test_strip_presign_params_keeps_the_rest_raw():
    assert strip_presign_params(V4_QUERY, NOW) == "list-type=2&prefix=a%2Fb"
    v2 = "AWSAccessKeyId=AKID&Signature=x%2By&Expires=1900000000&versionId=3"
    assert strip_presign_params(v2, NOW) == "versionId=3"


def test_strip_presign_params_leaves_ordinary_queries():
    assert strip_presign_params("prefix=X-Amz-Date", NOW) == "prefix=X-Amz-Date"
    assert strip_presign_params("Signature=only", NOW) == "Signature=only"
    assert strip_presign_params("", NOW) == ""


def test_strip_presign_params_refuses_expired_and_malformed():
    expired = V4_QUERY.replace("X-Amz-Expires=600", "X-Amz-Expires=60")
    with pytest.raises(errors.S3Error, match=r"Request has expired"):
        strip_presign_params(expired, NOW)
    with pytest.raises(errors.S3Error, match=r"Request has expired"):
        strip_presign_params("AWSAccessKeyId=A&Signature=s&Expires=1000", NOW)
    malformed = V4_QUERY.replace("X-Amz-Date=20260102T030000Z", "X-Amz-Date=yesterday")
    with pytest.raises(errors.S3Error, match=r"X-Amz-Date or X-Amz-Expires"):
        strip_presign_params(malformed, NOW)


# --- answers through a real proxy -----------------------------------------------


def assert_proxy_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/xml"
    assert f"<Code>{code}</Code>".encode() in response.content
    assert b"<RequestId>" in response.content
    assert b"Traceback" not in response.content


def test_unreachable_upstream_is_502_xml(start_proxy):
    proxy = start_proxy(upstream=f"http://127.0.0.1:{free_port()}")
    response = httpx.get(f"{proxy.endpoint}/bucket/key", headers=DUMMY)
    assert_proxy_error(response, 502, "BadGateway")
    assert b"could not reach the object store" in response.content


def test_unreachable_upstream_during_upload_is_502_xml(start_proxy):
    proxy = start_proxy(upstream=f"http://127.0.0.1:{free_port()}", hash_limit="64KiB")
    body = os.urandom(256 * 1024)
    response = httpx.put(f"{proxy.endpoint}/bucket/key", content=body, headers=DUMMY)
    assert_proxy_error(response, 502, "BadGateway")


@pytest.fixture
def forward_proxy(start_proxy, store) -> RunningProxy:
    store_port = int(store.endpoint.rsplit(":", 1)[1])
    return start_proxy(
        mode="forward", upstream=None, allow_hosts=f"127.0.0.1:{store_port}"
    )


def test_forward_mode_refuses_hosts_not_allowed(forward_proxy):
    with httpx.Client(proxy=forward_proxy.endpoint) as client:
        response = client.get("http://127.0.0.2:9/bucket/key", headers=DUMMY)
    assert_proxy_error(response, 403, "AccessDenied")
    assert b"not on the allow list" in response.content


def test_forward_mode_refuses_connect_to_hosts_not_allowed(forward_proxy):
    with socket.create_connection((forward_proxy.host, forward_proxy.port)) as sock:
        sock.sendall(
            b"CONNECT example.invalid:443 HTTP/1.1\r\nHost: example.invalid\r\n\r\n"
        )
        answer = b""
        while b"</Error>" not in answer:
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
    assert answer.startswith(b"HTTP/1.1 403")
    assert b"<Code>AccessDenied</Code>" in answer


def test_forward_mode_signs_allowed_hosts(forward_proxy, store, bucket_name):
    s3 = boto3.client(
        "s3",
        endpoint_url=store.endpoint,
        aws_access_key_id="AKIDUMMY",
        aws_secret_access_key="dummy",
        region_name="us-east-1",
        config=Config(
            proxies={"http": forward_proxy.endpoint},
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
        ),
    )
    s3.create_bucket(Bucket=bucket_name)
    s3.put_object(Bucket=bucket_name, Key="via forward proxy", Body=b"forwarded")
    got = s3.get_object(Bucket=bucket_name, Key="via forward proxy")
    assert got["Body"].read() == b"forwarded"


def test_loads_the_mitmproxy_way(store, store_identity, bucket_name, tmp_path: Path):
    port = free_port()
    addon = Path(__file__).parents[1] / "signproxy" / "addon.py"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SIGNPROXY_", "SCP_"))
    }
    env |= {
        "SCP_ACCESS_KEY": store_identity.access_key,
        "SCP_SECRET_KEY": store_identity.secret_key,
        "SIGNPROXY_SIGNER": "local",
    }
    log_path = tmp_path / "mitmdump.log"
    mitmdump = Path(sys.executable).parent / "mitmdump"
    args = [str(mitmdump), "-q", "-s", str(addon),
            "--set", f"signproxy_upstream={store.endpoint}",
            "--set", f"signproxy_listen=127.0.0.1:{port}",
            "--set", f"confdir={tmp_path / 'mitmproxy'}",
            # mitmdump binds its own default before the script sets ours.
            "--listen-host", "127.0.0.1", "--listen-port", "0"]  # fmt: skip
    with open(log_path, "wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_listening("127.0.0.1", port, process, log_path)
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            aws_access_key_id="AKIDUMMY",
            aws_secret_access_key="dummy",
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        s3.create_bucket(Bucket=bucket_name)
        s3.put_object(Bucket=bucket_name, Key="k", Body=b"via mitmdump")
        assert (
            s3.get_object(Bucket=bucket_name, Key="k")["Body"].read() == b"via mitmdump"
        )
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_mitmdump_refuses_a_bad_option(tmp_path: Path):
    addon = Path(__file__).parents[1] / "signproxy" / "addon.py"
    mitmdump = Path(sys.executable).parent / "mitmdump"
    done = subprocess.run(
        [str(mitmdump), "-s", str(addon),
         "--set", "signproxy_upstream=http://127.0.0.1:1",
         "--set", "signproxy_payload=foo",
         "--set", f"confdir={tmp_path}", "--set", "listen_port=0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "signproxy_payload: invalid value 'foo'" in done.stdout + done.stderr


def test_metrics_and_readiness_on_the_management_port(start_proxy, bucket_name):
    metrics_port = free_port()
    proxy = start_proxy(metrics_listen=f"127.0.0.1:{metrics_port}")
    management = f"http://127.0.0.1:{metrics_port}"
    assert (
        httpx.put(f"{proxy.endpoint}/{bucket_name}", headers=DUMMY).status_code == 200
    )
    with httpx.Client(proxy=None) as client:
        expired = "X-Amz-Signature=s&X-Amz-Date=20000101T000000Z&X-Amz-Expires=1"
        refused = client.get(f"{proxy.endpoint}/{bucket_name}/k?{expired}")
        assert refused.status_code == 403

        ready = client.get(f"{management}/readyz")
        exposition = client.get(f"{management}/metrics").text

    assert ready.status_code == 200
    forwarded = [
        line
        for line in exposition.splitlines()
        if line.startswith("signproxy_requests_total{")
        and 'outcome="forwarded"' in line
        and 'method="PUT"' in line
    ]
    assert forwarded
    assert float(forwarded[0].rsplit(" ", 1)[1]) >= 1.0
    assert any(
        line.startswith("signproxy_requests_total{")
        and 'outcome="refused"' in line
        and float(line.rsplit(" ", 1)[1]) >= 1.0
        for line in exposition.splitlines()
    )
    assert 'signproxy_payload_requests_total{mode="empty"}' in exposition
