"""STS fails under the proxy: slow, 5xx, refusing, dropping, unreachable.

Real processes and servers: `signproxy run` (remote signer, or local signer
with assume-role credentials), the STS emulator with its fault knobs (stopped
and started again on the same port for "unreachable"), the session's
SeaweedFS behind a recording relay, boto3 with dummy keys.  The proxy answers
what it cannot sign with an S3 XML error (503 + Retry-After while STS is
unavailable), never forwards anything unsigned, and recovers by itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator

import httpx
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from signproxy.emulator import Account, EmulatorServer
from signproxy.seaweed import LocalStore, free_port
from tests.faults.helpers import s3_client
from tests.faults.relay import RecordingRelay
from tests.fixtures.emulator import EmulatorHandle
from tests.fixtures.proxy import RunningProxy, StartProxy


class RestartableEmulator:
    """An STS emulator on a fixed port that can go away and come back."""

    def __init__(self, account: Account, store: LocalStore) -> None:
        self.account = account
        self.store = store
        self.port = free_port()
        self.server: EmulatorServer | None = None
        self._running: contextlib.ExitStack | None = None

    @property
    def handle(self) -> EmulatorHandle:
        assert self.server is not None
        return EmulatorHandle(self.server, self.account)

    def start(self) -> None:
        self.server = EmulatorServer([self.account], self.store.endpoint)
        self._running = contextlib.ExitStack()
        self._running.enter_context(self.server.run_in_thread(port=self.port))

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@pytest.fixture
def sts(emulator_account: Account, store: LocalStore) -> Iterator[RestartableEmulator]:
    emulator = RestartableEmulator(emulator_account, store)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def relay(store: LocalStore) -> Iterator[RecordingRelay]:
    with RecordingRelay(store.ports["s3.port"]).run_in_thread() as running:
        yield running


def start(
    start_proxy: StartProxy,
    relay: RecordingRelay,
    sts: RestartableEmulator,
    **options: object,
) -> tuple[RunningProxy, BaseClient, str]:
    proxy = start_proxy(
        upstream=relay.endpoint,
        sts_endpoint=sts.handle.endpoint,
        static_keys=False,
        env=sts.handle.env(),
        metrics_listen=f"127.0.0.1:{free_port()}",
        **options,
    )
    # The remote signer signs only host, x-amz-content-sha256 and x-amz-date:
    # no checksum headers, which S3 wants signed.
    s3 = s3_client(
        proxy.endpoint,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    bucket = f"s-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=bucket)
    return proxy, s3, bucket


def refused(s3: BaseClient, bucket: str, key: str) -> ClientError:
    """A PUT the proxy must answer with an S3 XML error."""
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    response = caught.value.response
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert headers.get("content-type", "").startswith("application/xml"), response
    assert headers.get("server") == "signproxy", response
    return caught.value


def stored(s3: BaseClient, bucket: str, key: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(key.encode()).digest()


def readyz(proxy: RunningProxy) -> int:
    host_port = proxy.args[proxy.args.index("--metrics-listen") + 1]
    return httpx.get(f"http://{host_port}/readyz", timeout=10).status_code


def assert_unharmed(proxy: RunningProxy, relay: RecordingRelay, pid: int) -> None:
    assert proxy.process.poll() is None
    assert proxy.process.pid == pid
    assert relay.errors == []
    assert relay.heads
    assert relay.unsigned() == []


def test_remote_signer_through_sts_faults_and_back(
    start_proxy: StartProxy, relay: RecordingRelay, sts: RestartableEmulator
) -> None:
    proxy, s3, bucket = start(start_proxy, relay, sts, signer="remote")
    pid = proxy.process.pid
    stored(s3, bucket, "healthy")

    # Slow STS: slower answers, still answers.
    sts.handle.server.set_faults(latency=0.5)
    stored(s3, bucket, "slow")

    # STS failing with 5xx: 503 + Retry-After, S3 XML.
    sts.handle.server.set_faults(latency=0.0, error_rate=1.0, error_status=503)
    error = refused(s3, bucket, "during-5xx")
    assert error.response["Error"]["Code"] == "ServiceUnavailable"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert int(error.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"]) >= 1

    # STS refusing the proxy (4xx): the proxy's own fault, 502, not retried.
    sts.handle.server.set_faults(error_rate=1.0, error_status=403)
    error = refused(s3, bucket, "during-403")
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 502
    assert error.response["Error"]["Code"] == "SigningServiceError"

    # STS dropping connections.
    sts.handle.server.set_faults(error_rate=0.0, drop_rate=1.0)
    error = refused(s3, bucket, "during-drop")
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 503

    # STS gone entirely, then back on the same port: the proxy recovers alone.
    sts.stop()
    error = refused(s3, bucket, "while-unreachable")
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "retry-after" in error.response["ResponseMetadata"]["HTTPHeaders"]
    sts.start()
    stored(s3, bucket, "after-recovery")
    for key in ("during-5xx", "during-403", "during-drop", "while-unreachable"):
        with pytest.raises(ClientError, match=r"404|Not Found|NoSuchKey"):
            s3.head_object(Bucket=bucket, Key=key)
    assert readyz(proxy) == 200
    assert_unharmed(proxy, relay, pid)


def test_local_signer_keeps_serving_while_credentials_are_valid(
    start_proxy: StartProxy, relay: RecordingRelay, sts: RestartableEmulator
) -> None:
    proxy, s3, bucket = start(
        start_proxy,
        relay,
        sts,
        signer="local",
        role_indicator=sts.handle.role_indicator,
    )
    pid = proxy.process.pid
    stored(s3, bucket, "healthy")
    sts.handle.server.set_faults(error_rate=1.0, error_status=500)
    stored(s3, bucket, "sts-failing")
    sts.stop()
    stored(s3, bucket, "sts-unreachable")
    assert readyz(proxy) == 200  # credentials still valid: still ready
    sts.start()
    stored(s3, bucket, "sts-back")
    assert_unharmed(proxy, relay, pid)
