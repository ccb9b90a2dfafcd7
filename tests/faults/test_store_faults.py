"""The store fails under the proxy; the proxy keeps its promises.

Real processes: `signproxy run`, a SeaweedFS of this module's own (stopped and
restarted mid-transfer), boto3 and raw HTTP clients (slow, or hanging up
half-way), and a recording relay between proxy and store.  Afterwards:

* every object whose upload was acknowledged reads back with its checksum;
* every request that reached the store carried a signature;
* every failed request was answered with an S3 XML error (or, when the
  client itself hung up, with nothing: there was nobody left to answer);
* the same proxy process serves on, without a restart.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError

from signproxy.seaweed import Identity, LocalStore
from tests.faults.helpers import md5_b64, payload, raw_put, s3_client
from tests.faults.relay import RecordingRelay, RequestParser
from tests.fixtures.proxy import RunningProxy, StartProxy

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def fault_identity() -> Identity:
    return Identity(
        name="faults",
        access_key="AKFT" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_urlsafe(30),
    )


@pytest.fixture(scope="module")
def fault_store(
    fault_identity: Identity, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStore]:
    """A store of this module's own: the tests stop and restart it."""
    with LocalStore(
        [fault_identity], data_dir=tmp_path_factory.mktemp("fault-store")
    ) as running:
        yield running


@pytest.fixture
def relay(fault_store: LocalStore) -> Iterator[RecordingRelay]:
    with RecordingRelay(fault_store.ports["s3.port"]).run_in_thread() as running:
        yield running


@pytest.fixture
def fault_proxy(
    start_proxy: StartProxy, relay: RecordingRelay, fault_identity: Identity
) -> RunningProxy:
    return start_proxy(
        upstream=relay.endpoint,
        hash_limit="1MiB",  # 8 MiB uploads stream as signed aws-chunked
        static_keys=False,
        env={
            "SCP_ACCESS_KEY": fault_identity.access_key,
            "SCP_SECRET_KEY": fault_identity.secret_key,
        },
    )


@pytest.fixture
def s3(fault_proxy: RunningProxy) -> BaseClient:
    return s3_client(fault_proxy.endpoint)


@pytest.fixture
def bucket(s3: BaseClient) -> str:
    name = f"f-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=name)
    return name


@dataclass
class Ledger:
    """What clients were told: acknowledged objects and failure answers."""

    acknowledged: dict[str, str] = field(default_factory=dict)  # key -> md5 hex
    failures: list[str] = field(default_factory=list)  # S3 error codes
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, key: str, data: bytes) -> None:
        with self.lock:
            self.acknowledged[key] = hashlib.md5(data).hexdigest()  # noqa: S324

    def failed(self, code: str) -> None:
        with self.lock:
            self.failures.append(code)


def put_small(s3: BaseClient, bucket: str, key: str, data: bytes, ledger: Ledger):
    """A boto3 upload whose outcome goes in the ledger.

    A failure must be an S3 XML error: botocore reports a body it cannot
    parse as an error with a bare numeric code, and a connection that
    broke without an answer as a BotoCoreError; both fail the test.
    """
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentMD5=md5_b64(data))
    except ClientError as error:
        code = error.response["Error"]["Code"]
        content_type = error.response["ResponseMetadata"]["HTTPHeaders"].get(
            "content-type", ""
        )
        assert not code.isdigit(), f"non-XML answer: {error.response}"  # noqa: PT017
        assert content_type.startswith("application/xml"), error.response  # noqa: PT017
        ledger.failed(code)
        return
    except BotoCoreError as error:
        raise AssertionError(f"{key}: no answer at all: {error!r}") from error
    ledger.ack(key, data)


def check_aftermath(
    s3: BaseClient,
    bucket: str,
    ledger: Ledger,
    proxy: RunningProxy,
    relay: RecordingRelay,
    pid: int,
) -> None:
    """Acknowledged objects intact, nothing unsigned, same proxy serving."""
    assert proxy.process.poll() is None
    assert proxy.process.pid == pid
    for key, digest in ledger.acknowledged.items():
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.md5(body).hexdigest() == digest, key  # noqa: S324
    assert relay.errors == []
    assert relay.heads, "the relay saw no request at all"
    unsigned = relay.unsigned()
    assert unsigned == [], f"unsigned requests reached the store: {unsigned[:3]}"
    assert "Traceback" not in proxy.log_text()


def test_relay_would_see_an_unsigned_request(relay: RecordingRelay) -> None:
    """The recording hop can fail the check: an unsigned request shows up."""
    answer = raw_put("127.0.0.1", relay.port, "/nobucket/x", b"abc")
    assert answer.status == 403
    assert [head.method for head in relay.unsigned()] == ["PUT"]


def test_parser_follows_keep_alive_and_chunked_bodies() -> None:
    parser = RequestParser()
    stream = (
        b"PUT /a HTTP/1.1\r\nContent-Length: 5\r\nAuthorization: AWS4-HMAC-SHA256 "
        b"Credential=x, Signature=ab\r\n\r\nhello"
        b"POST /b?X-Amz-Signature=cd HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
        b"GET /c HTTP/1.1\r\n\r\n"
    )
    for i in range(0, len(stream), 7):
        parser.feed(stream[i : i + 7])
    assert [(h.method, h.target, h.signed) for h in parser.heads] == [
        ("PUT", "/a", True),
        ("POST", "/b?X-Amz-Signature=cd", True),
        ("GET", "/c", False),
    ]
    assert parser.errors == []


def test_store_restart_mid_transfer(
    s3: BaseClient,
    bucket: str,
    fault_proxy: RunningProxy,
    fault_store: LocalStore,
    relay: RecordingRelay,
) -> None:
    pid = fault_proxy.process.pid
    ledger = Ledger()
    stop = threading.Event()

    thread_errors: list[BaseException] = []

    def small_uploads() -> None:
        try:
            for index in range(10_000):
                if stop.is_set():
                    return
                data = payload(64 * 1024, index)
                put_small(s3, bucket, f"small/{index}", data, ledger)
        except BaseException as error:  # re-raised in the test's own thread
            thread_errors.append(error)

    background = threading.Thread(target=small_uploads)
    background.start()
    big = payload(8 * MIB, 999)

    def restart_after_two_mib(index: int) -> None:
        if index == 7:  # 2 MiB of 8 have gone through the proxy
            fault_store.restart()

    try:
        answer = raw_put(
            fault_proxy.host,
            fault_proxy.port,
            f"/{bucket}/big-during-restart",
            big,
            between=restart_after_two_mib,
        )
    finally:
        stop.set()
        background.join(timeout=120)
    assert not background.is_alive()
    if thread_errors:
        raise thread_errors[0]
    if answer.status == 200:
        ledger.ack("big-during-restart", big)
    elif answer.status is not None:
        ledger.failed(answer.s3_error_code())
    # else: the connection broke while the client was still sending; with the
    # request body half-sent there was no answer the client could read.

    # After the restart the same proxy uploads and reads back, big and small.
    retry = raw_put(fault_proxy.host, fault_proxy.port, f"/{bucket}/big-after", big)
    assert retry.status == 200, retry
    ledger.ack("big-after", big)
    put_small(s3, bucket, "small/after", b"after the restart", ledger)
    assert "small/after" in ledger.acknowledged
    assert len(ledger.acknowledged) >= 2
    check_aftermath(s3, bucket, ledger, fault_proxy, relay, pid)


def test_slow_client_does_not_hold_up_others(
    s3: BaseClient, bucket: str, fault_proxy: RunningProxy, relay: RecordingRelay
) -> None:
    pid = fault_proxy.process.pid
    ledger = Ledger()
    data = payload(6 * MIB, 7)
    served_meanwhile: list[int] = []

    def other_clients(index: int) -> None:
        # While the slow upload is in flight, others get whole answers.
        key = f"meanwhile/{index}"
        put_small(s3, bucket, key, key.encode() * 100, ledger)
        listing = s3.list_objects_v2(Bucket=bucket, Prefix="meanwhile/")
        served_meanwhile.append(listing["KeyCount"])

    answer = raw_put(
        fault_proxy.host,
        fault_proxy.port,
        f"/{bucket}/slow",
        data,
        piece=64 * 1024,
        between=lambda i: other_clients(i) if i % 16 == 0 else None,
    )
    assert answer.status == 200, answer
    ledger.ack("slow", data)
    assert served_meanwhile == list(range(1, len(served_meanwhile) + 1))
    assert len(served_meanwhile) == 6
    check_aftermath(s3, bucket, ledger, fault_proxy, relay, pid)


@pytest.mark.parametrize(
    ("size", "sent"),
    [(8 * MIB, 3 * MIB), (512 * 1024, 100 * 1024)],
    ids=["streamed", "buffered"],
)
def test_client_hangs_up_mid_upload(
    s3: BaseClient,
    bucket: str,
    fault_proxy: RunningProxy,
    relay: RecordingRelay,
    size: int,
    sent: int,
) -> None:
    pid = fault_proxy.process.pid
    data = payload(size, size)
    answer = raw_put(
        fault_proxy.host, fault_proxy.port, f"/{bucket}/half", data, send_only=sent
    )
    assert answer.status is None
    # Nothing half-written is visible, and the proxy answers the next client.
    with pytest.raises(ClientError, match=r"404|Not Found|NoSuchKey"):
        s3.head_object(Bucket=bucket, Key="half")
    ledger = Ledger()
    put_small(s3, bucket, "whole", data, ledger)
    assert list(ledger.acknowledged) == ["whole"]
    check_aftermath(s3, bucket, ledger, fault_proxy, relay, pid)


def test_store_down_is_502_xml_then_recovers(
    s3: BaseClient,
    bucket: str,
    fault_proxy: RunningProxy,
    fault_store: LocalStore,
    relay: RecordingRelay,
) -> None:
    pid = fault_proxy.process.pid
    ledger = Ledger()
    fault_store.stop()
    try:
        answer = raw_put(
            fault_proxy.host, fault_proxy.port, f"/{bucket}/while-down", b"x" * 1000
        )
        assert answer.status == 502
        assert answer.s3_error_code() == "BadGateway"
        put_small(s3, bucket, "while-down-2", b"y" * 1000, ledger)
        assert ledger.failures == ["BadGateway"]
    finally:
        fault_store.start()
    put_small(s3, bucket, "after-up", b"z" * 1000, ledger)
    assert list(ledger.acknowledged) == ["after-up"]
    check_aftermath(s3, bucket, ledger, fault_proxy, relay, pid)
