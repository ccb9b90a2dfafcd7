"""No secret reaches a log: scanned across every proxy run of the session.

Named to sort last, so pytest runs it after the other test files; it also
makes its own traffic (good and bad keys, presigned URLs, a failing STS), so
it proves something when run alone.  Secrets: every secret-bearing variable
and SAML assertion handed to a proxy (tests/fixtures/proxy.py registers them)
and the store's and client keys' secrets; plus anything that looks like a
SigV4 signature or an Authorization value.
"""

from __future__ import annotations

import re

import httpx
import pytest
from botocore.exceptions import ClientError

from signproxy.seaweed import Identity
from tests.fixtures import proxy as proxy_fixture
from tests.fixtures.emulator import EmulatorHandle
from tests.fixtures.proxy import StartProxy
from tests.s3clients import s3_client

CLIENT_KEY = "LOGSCANCLIENT1"
CLIENT_SECRET = "log-scan-client-secret-Qw3rty/+="
SIGNATURE = re.compile(r"Signature=[0-9a-f]{64}|X-Amz-Signature=[0-9a-f]{64}")
AUTHORIZATION = re.compile(r"(?i)authorization[\"']?\s*[:=]\s*[\"']?AWS4-HMAC")


def s3(endpoint: str, key: str, secret: str):
    return s3_client(
        endpoint, access_key=key, secret_key=secret, signature_version="s3v4"
    )


@pytest.fixture
def own_traffic(
    start_proxy: StartProxy,
    emulator: EmulatorHandle,
    bucket_name: str,
) -> None:
    """Debug-level proxy runs with client keys and with STS credentials."""
    guarded = start_proxy(
        extra_args=["--client-key", CLIENT_KEY],
        env={f"SIGNPROXY_CLIENT_SECRET_{CLIENT_KEY}": CLIENT_SECRET},
    )
    client = s3(guarded.endpoint, CLIENT_KEY, CLIENT_SECRET)
    client.create_bucket(Bucket=bucket_name)
    client.put_object(Bucket=bucket_name, Key="a", Body=b"x" * 2000)
    url = client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket_name, "Key": "a"}
    )
    assert httpx.get(url, timeout=30).status_code == 200
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        s3(guarded.endpoint, CLIENT_KEY, "wrong-" + CLIENT_SECRET).list_buckets()
    assumed = start_proxy(
        signer="local",
        role_indicator=emulator.role_indicator,
        sts_endpoint=emulator.endpoint,
        static_keys=False,
        env=emulator.env(),
    )
    dummy = s3(assumed.endpoint, "AKIDDUMMY", "dummy-secret-value")
    dummy.put_object(Bucket=bucket_name, Key="b", Body=b"y" * 3000)
    assert dummy.get_object(Bucket=bucket_name, Key="b")["Body"].read() == b"y" * 3000


def test_no_secret_in_any_proxy_log(own_traffic, store_identity: Identity) -> None:
    secrets = {s for s in proxy_fixture.USED_SECRETS if len(s) >= 8}
    secrets |= {store_identity.secret_key, CLIENT_SECRET}
    logs = [path for path in proxy_fixture.RUN_LOGS if path.exists()]
    assert len(logs) >= 2
    hits = []
    for path in logs:
        text = path.read_text(errors="replace")
        for secret in secrets:
            if secret in text:
                hits.append(f"{path}: a registered secret ({secret[:3]}...)")
        for pattern in (SIGNATURE, AUTHORIZATION):
            for match in pattern.finditer(text):
                hits.append(f"{path}: {match.group(0)[:24]}...")
    assert not hits, "\n".join(hits[:20])
