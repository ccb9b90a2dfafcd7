"""Temporary credentials expiring and failing to refresh under a live proxy.

Real processes and servers: `signproxy run` with the local signer on
assume-role or assume-role-with-saml credentials, a fresh STS emulator per
test (over HTTP, its fault knobs set through `/_emulator/faults`), the
session's SeaweedFS behind a recording relay, boto3 with dummy keys.

No fake clock: the emulator issues 900 s credentials and the proxy is started
with refresh windows close to that (`--advisory-refresh 895` opens the
advisory window 5 s after each fetch, `--mandatory-refresh 890` the mandatory
one 10 s after).  Tests drive and observe by polling with deadlines: STS
call counts at `/_emulator/stats`, the proxy's metrics and log, and answers.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from signproxy.seaweed import LocalStore, free_port
from tests import polling
from tests.faults.helpers import s3_client
from tests.faults.relay import RecordingRelay
from tests.fixtures.emulator import EmulatorHandle
from tests.fixtures.proxy import USED_SECRETS, RunningProxy, StartProxy

DEADLINE = 40.0
poll = functools.partial(polling.poll, timeout=DEADLINE, interval=0.1)
WINDOWS = {"duration_seconds": 900, "advisory_refresh": 895}


@pytest.fixture
def relay(store: LocalStore) -> Iterator[RecordingRelay]:
    with RecordingRelay(store.ports["s3.port"]).run_in_thread() as running:
        yield running


@pytest.fixture
def sts(emulator_factory: Callable[..., EmulatorHandle]) -> EmulatorHandle:
    return emulator_factory()


# -- observing the emulator and the proxy --------------------------------------


def set_faults(sts: EmulatorHandle, **faults: object) -> None:
    answer = httpx.post(f"{sts.endpoint}/_emulator/faults", json=faults, timeout=10)
    assert answer.status_code == 200, answer.text


def sts_stats(sts: EmulatorHandle) -> dict[str, Any]:
    answer = httpx.get(f"{sts.endpoint}/_emulator/stats", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def sts_answers(sts: EmulatorHandle, operation: str, status: int) -> int:
    return sts_stats(sts)["responses"].get(operation, {}).get(str(status), 0)


def metrics_url(proxy: RunningProxy) -> str:
    return "http://" + proxy.args[proxy.args.index("--metrics-listen") + 1]


def metric(proxy: RunningProxy, sample: str) -> float:
    """One sample of the proxy's /metrics, e.g. `name{label="x"}`; 0 if absent."""
    text = httpx.get(metrics_url(proxy) + "/metrics", timeout=10).text
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def refreshes(proxy: RunningProxy, outcome: str) -> float:
    return metric(proxy, f'signproxy_credential_refreshes_total{{outcome="{outcome}"}}')


def readyz(proxy: RunningProxy) -> int:
    return httpx.get(metrics_url(proxy) + "/readyz", timeout=10).status_code


# -- the proxy under test -------------------------------------------------------


def start(
    start_proxy: StartProxy,
    relay: RecordingRelay,
    sts: EmulatorHandle,
    **options: object,
) -> tuple[RunningProxy, BaseClient, str]:
    proxy = start_proxy(
        upstream=relay.endpoint,
        sts_endpoint=sts.endpoint,
        static_keys=False,
        env=sts.env(),
        signer="local",
        role_indicator=sts.role_indicator,
        metrics_listen=f"127.0.0.1:{free_port()}",
        **{**WINDOWS, **options},
    )
    s3 = s3_client(proxy.endpoint)
    bucket = f"c-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=bucket)
    return proxy, s3, bucket


def body_of(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest() * 64


def put(s3: BaseClient, bucket: str, key: str) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body_of(key))


def refused(s3: BaseClient, bucket: str, key: str) -> ClientError | None:
    """A PUT that the proxy answered with an S3 XML error, or None if stored."""
    try:
        put(s3, bucket, key)
    except ClientError as error:
        headers = error.response["ResponseMetadata"]["HTTPHeaders"]
        assert headers.get("content-type", "").startswith("application/xml"), headers
        assert headers.get("server") == "signproxy", headers
        return error
    return None


def assert_unavailable(error: ClientError) -> None:
    metadata = error.response["ResponseMetadata"]
    assert metadata["HTTPStatusCode"] == 503, error.response
    assert error.response["Error"]["Code"] == "ServiceUnavailable"
    assert int(metadata["HTTPHeaders"]["retry-after"]) >= 1
    assert error.response["Error"]["Message"], error.response


def unready(proxy: RunningProxy, s3: BaseClient, bucket: str, key: str) -> bool:
    """A PUT refused with 503 and /readyz saying 503 right after it."""
    error = refused(s3, bucket, key)
    if error is None:
        raise AssertionError(f"{key} was stored while STS could not refresh")
    assert_unavailable(error)
    return readyz(proxy) == 503


def assert_read_back(s3: BaseClient, bucket: str, keys: list[str]) -> None:
    for key in keys:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).digest() == hashlib.sha256(body_of(key)).digest()


def assert_listed_intact(s3: BaseClient, bucket: str, keys: list[str]) -> None:
    """Every key is in the store with the MD5 (single-part ETag) of its body."""
    listed: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            listed[item["Key"]] = item["ETag"].strip('"')
    for key in keys:
        assert listed.get(key) == hashlib.md5(body_of(key)).hexdigest(), key  # noqa: S324


def assert_never_stored(s3: BaseClient, bucket: str, keys: list[str]) -> None:
    for key in keys:
        with pytest.raises(ClientError, match=r"404|Not Found|NoSuchKey"):
            s3.head_object(Bucket=bucket, Key=key)


def assert_unharmed(proxy: RunningProxy, relay: RecordingRelay, pid: int) -> None:
    assert proxy.process.poll() is None
    assert proxy.process.pid == pid
    assert relay.errors == []
    assert relay.heads
    assert relay.unsigned() == []


@dataclass
class Load:
    """boto3 PUTs in a thread, one after the other, until stopped or `limit`."""

    s3: BaseClient
    bucket: str
    limit: int = 2000
    acknowledged: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        for number in range(self.limit):
            if self.stop.is_set():
                return
            key = f"load/{number:05d}"
            try:
                put(self.s3, self.bucket, key)
            except Exception as error:  # every failure is a finding
                self.failures.append(f"{key}: {error}")
            else:
                self.acknowledged.append(key)

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self.run, name="load", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(timeout=120)
        assert not self._thread.is_alive(), "the load thread did not finish"


# -- the tests ----------------------------------------------------------------


def test_credentials_expiring_under_load_are_refreshed_without_a_failure(
    start_proxy: StartProxy, relay: RecordingRelay, sts: EmulatorHandle
) -> None:
    # The advisory window opens 3 s after each fetch, the mandatory one at 5 s.
    proxy, s3, bucket = start(
        start_proxy, relay, sts, advisory_refresh=897, mandatory_refresh=895
    )
    pid = proxy.process.pid
    assert sts_answers(sts, "assume_role", 200) == 1
    # A slow STS: the advisory refresh started at +3 s is still running when
    # the mandatory window opens at +5 s, so requests then wait for it.
    set_faults(sts, latency=4.0)
    with Load(s3, bucket) as load:
        poll(
            lambda: (
                "in their mandatory window" in proxy.log_text()
                and refreshes(proxy, "ok") >= 2
            ),
            "requests to wait in the mandatory window for a refresh",
        )
        set_faults(sts, latency=0.0)
        seen = len(load.acknowledged)
        poll(lambda: len(load.acknowledged) > seen + 5, "more requests after it")
    assert load.failures == []
    assert sts_answers(sts, "assume_role", 200) >= 2
    assert refreshes(proxy, "error") == 0
    assert readyz(proxy) == 200
    assert_listed_intact(s3, bucket, load.acknowledged)
    assert_unharmed(proxy, relay, pid)


def test_sts_failing_in_the_mandatory_window_gets_503_then_recovers_alone(
    start_proxy: StartProxy, relay: RecordingRelay, sts: EmulatorHandle
) -> None:
    proxy, s3, bucket = start(start_proxy, relay, sts, mandatory_refresh=890)
    pid = proxy.process.pid
    put(s3, bucket, "healthy")
    set_faults(sts, error_rate=1.0, error_status=503)

    keys = iter(f"during-outage/{number:04d}" for number in range(100_000))
    attempted: list[str] = []

    def next_refusal() -> ClientError | None:
        key = next(keys)
        attempted.append(key)
        return refused(s3, bucket, key)

    error = poll(next_refusal, "a 503 once the mandatory window opens")
    assert_unavailable(error)
    assert re.search(
        r"unable to refresh assume-role credentials|assume-role credentials "
        r"unavailable: assume_role: 503",
        error.response["Error"]["Message"],
    )
    assert sts_stats(sts)["injected_errors"] >= 1
    poll(lambda: unready(proxy, s3, bucket, "refused-again"), "/readyz 503")
    refused_keys = [attempted[-1], "refused-again"]

    set_faults(sts, error_rate=0.0)
    poll(lambda: refused(s3, bucket, "after-recovery") is None, "recovery")
    assert readyz(proxy) == 200
    assert refreshes(proxy, "error") >= 1
    assert sts_answers(sts, "assume_role", 200) >= 2
    assert_read_back(s3, bucket, ["healthy", "after-recovery"])
    assert_never_stored(s3, bucket, refused_keys)
    assert_unharmed(proxy, relay, pid)


def test_sts_failing_in_the_advisory_window_only_keeps_serving(
    start_proxy: StartProxy, relay: RecordingRelay, sts: EmulatorHandle
) -> None:
    # The mandatory window opens at +20 s; this test is over well before.
    proxy, s3, bucket = start(start_proxy, relay, sts, mandatory_refresh=880)
    pid = proxy.process.pid
    set_faults(sts, error_rate=1.0, error_status=500)
    stored: list[str] = []

    def failed_refresh_while_serving() -> bool:
        key = f"advisory/{len(stored):04d}"
        put(s3, bucket, key)  # raises if the proxy refuses
        stored.append(key)
        return refreshes(proxy, "error") >= 1

    poll(failed_refresh_while_serving, "a failed background refresh")
    assert re.search(
        r"WARNING signproxy\.credentials: unable to refresh assume-role credentials",
        proxy.log_text(),
    )
    put(s3, bucket, "after-the-failure")
    stored.append("after-the-failure")
    assert readyz(proxy) == 200
    assert sts_answers(sts, "assume_role", 200) == 1

    set_faults(sts, error_rate=0.0)
    poll(
        lambda: put(s3, bucket, "retrying") or refreshes(proxy, "ok") >= 2,
        "the background refresh to succeed once STS is back",
    )
    stored.append("retrying")
    assert sts_answers(sts, "assume_role", 200) >= 2
    assert_read_back(s3, bucket, stored)
    assert_unharmed(proxy, relay, pid)


def test_saml_assertion_file_replaced_broken_removed_and_restored(
    start_proxy: StartProxy,
    relay: RecordingRelay,
    sts: EmulatorHandle,
    tmp_path: Path,
) -> None:
    assertion = tmp_path / "assertion.b64"
    assertion.write_text(sts.saml_assertion(subject="alice@example.test"))
    proxy, s3, bucket = start(
        start_proxy,
        relay,
        sts,
        advisory_refresh=896,  # windows open 4 s and 9 s after each fetch
        mandatory_refresh=891,
        principal_indicator=sts.principal_indicator,
        saml_assertion_file=assertion,
    )
    pid = proxy.process.pid
    operation = "assume_role_with_saml"
    assert "accepted for subject alice@example.test" in proxy.log_text()
    put(s3, bucket, "as-alice")

    # A new valid assertion: the next refresh (advisory, at +4 s) uses it.
    replace(assertion, sts.saml_assertion(subject="bob@example.test"))
    stored = keep_putting(
        s3,
        bucket,
        "as-bob",
        lambda: "accepted for subject bob@example.test" in proxy.log_text(),
        "a refresh with the new assertion",
    )
    assert sts_answers(sts, operation, 200) >= 2

    # The file removed: refreshes fail, requests are still signed meanwhile.
    assertion.unlink()
    stored += keep_putting(
        s3,
        bucket,
        "no-file",
        lambda: "unable to read SAML assertion file" in proxy.log_text(),
        "a refresh failing on the missing file",
    )
    # A wrong-role assertion: STS refuses it.
    replace(assertion, sts.saml_assertion("wrong_role"))
    stored += keep_putting(
        s3,
        bucket,
        "wrong-role",
        lambda: sts_answers(sts, operation, 403) >= 1,
        "STS to refuse the wrong-role assertion",
    )

    # Then the mandatory window: 503 XML, nothing forwarded.
    refused_keys: list[str] = []
    stored += keep_putting(
        s3,
        bucket,
        "until-mandatory",
        lambda: False,
        "503 once the mandatory window opens",
        until_refused=refused_keys,
    )
    poll(lambda: unready(proxy, s3, bucket, "in-mandatory"), "/readyz 503")
    refused_keys.append("in-mandatory")

    # The valid assertion back: the same proxy recovers by itself.
    replace(assertion, sts.saml_assertion(subject="carol@example.test"))
    poll(lambda: refused(s3, bucket, "restored") is None, "recovery")
    assert "accepted for subject carol@example.test" in proxy.log_text()
    assert readyz(proxy) == 200
    assert_read_back(s3, bucket, ["as-alice", *stored, "restored"])
    assert_never_stored(s3, bucket, refused_keys)
    assert_unharmed(proxy, relay, pid)


def replace(path: Path, text: str) -> None:
    """Replace a file the way a credential helper would: write, then rename."""
    USED_SECRETS.add(text)  # for the session's scan of every proxy log
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    fresh.replace(path)


def keep_putting(
    s3: BaseClient,
    bucket: str,
    prefix: str,
    done: Callable[[], bool],
    what: str,
    *,
    until_refused: list[str] | None = None,
) -> list[str]:
    """PUT objects (each must succeed) until `done()`, or with `until_refused`
    until one is refused with 503 XML (its key is appended there); the keys
    stored."""
    stored: list[str] = []

    def step() -> bool:
        key = f"{prefix}/{len(stored):04d}"
        if until_refused is not None:
            error = refused(s3, bucket, key)
            if error is not None:
                assert_unavailable(error)
                until_refused.append(key)
                return True
        else:
            put(s3, bucket, key)
        stored.append(key)
        return done()

    poll(step, what)
    return stored
