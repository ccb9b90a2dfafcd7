"""Metric names, label sets and the management port over real HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from signproxy import __version__
from signproxy.metrics import (
    DURATION_BUCKETS,
    METHODS,
    OUTCOMES,
    PAYLOAD_MODES,
    STATUS_CLASSES,
    STS_OPERATIONS,
    STS_OUTCOMES,
    ManagementServer,
    Metrics,
    method_label,
    status_class,
)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def families(text: str) -> dict[str, object]:
    """Metric families by name, without prometheus-client's `_created` gauges."""
    return {
        family.name: family
        for family in text_string_to_metric_families(text)
        if not family.name.endswith("_created")
    }


# -- names, types and label sets -----------------------------------------------

EXPECTED_FAMILIES = {
    # name (as the parser reports it): (type, label names)
    "signproxy_requests": ("counter", {"method", "outcome", "status_class"}),
    "signproxy_request_duration_seconds": ("histogram", {"method"}),
    "signproxy_upstream_duration_seconds": ("histogram", {"method"}),
    "signproxy_signing_duration_seconds": ("histogram", {"signer"}),
    "signproxy_sts_requests": ("counter", {"operation", "outcome"}),
    "signproxy_sts_request_duration_seconds": ("histogram", {"operation"}),
    "signproxy_auth_cache_lookups": ("counter", {"result"}),
    "signproxy_credentials_expiry_timestamp_seconds": ("gauge", set()),
    "signproxy_credential_refreshes": ("counter", {"outcome"}),
    "signproxy_payload_requests": ("counter", {"mode"}),
    "signproxy_payload_bytes": ("counter", {"mode"}),
    "signproxy_build_info": ("gauge", {"version", "python", "mitmproxy"}),
    "signproxy_draining": ("gauge", set()),
    "signproxy_ready": ("gauge", set()),
}


def test_every_family_has_its_type_and_label_set(metrics: Metrics) -> None:
    found = families(metrics.exposition().decode())

    assert set(found) == set(EXPECTED_FAMILIES)
    for name, (kind, label_names) in EXPECTED_FAMILIES.items():
        family = found[name]
        assert family.type == kind, name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == label_names, sample


def test_names_follow_prometheus_conventions(metrics: Metrics) -> None:
    for family in families(metrics.exposition().decode()).values():
        assert family.name.startswith("signproxy_")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds")


def test_histogram_buckets_span_sub_millisecond_to_a_minute(metrics: Metrics) -> None:
    assert DURATION_BUCKETS[0] <= 0.0001
    assert DURATION_BUCKETS[-1] >= 60
    bounds = [
        float(s.labels["le"])
        for s in families(metrics.exposition().decode())[
            "signproxy_signing_duration_seconds"
        ].samples
        if s.name.endswith("_bucket") and s.labels["signer"] == "local"
    ]
    assert bounds[:-1] == list(DURATION_BUCKETS)
    assert bounds[-1] == float("inf")


# -- known series at zero ------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("klass", STATUS_CLASSES)
def test_request_series_exist_at_zero(
    metrics: Metrics, method: str, outcome: str, klass: str
) -> None:
    labels = {"method": method, "outcome": outcome, "status_class": klass}
    assert value(metrics, "signproxy_requests_total", **labels) == 0


def test_other_series_exist_at_zero(metrics: Metrics) -> None:
    for operation in STS_OPERATIONS:
        for outcome in STS_OUTCOMES:
            assert (
                value(
                    metrics,
                    "signproxy_sts_requests_total",
                    operation=operation,
                    outcome=outcome,
                )
                == 0
            )
        assert (
            value(
                metrics,
                "signproxy_sts_request_duration_seconds_count",
                operation=operation,
            )
            == 0
        )
    for mode in PAYLOAD_MODES:
        assert value(metrics, "signproxy_payload_requests_total", mode=mode) == 0
        assert value(metrics, "signproxy_payload_bytes_total", mode=mode) == 0
    for signer in ("local", "remote", "cache"):
        assert (
            value(metrics, "signproxy_signing_duration_seconds_count", signer=signer)
            == 0
        )
    for result in ("hit", "miss"):
        assert value(metrics, "signproxy_auth_cache_lookups_total", result=result) == 0
    for outcome in ("ok", "error"):
        assert (
            value(metrics, "signproxy_credential_refreshes_total", outcome=outcome) == 0
        )
    assert value(metrics, "signproxy_credentials_expiry_timestamp_seconds") == 0
    assert value(metrics, "signproxy_draining") == 0


def test_build_info_names_versions(metrics: Metrics) -> None:
    [sample] = [
        s
        for s in families(metrics.exposition().decode())["signproxy_build_info"].samples
    ]
    assert sample.value == 1
    assert sample.labels["version"] == __version__
    assert sample.labels["python"].startswith("3.")
    assert sample.labels["mitmproxy"].startswith("12.")


def test_each_instance_has_a_fresh_registry() -> None:
    first, second = Metrics(), Metrics()
    first.auth_cache(hit=True)

    assert value(first, "signproxy_auth_cache_lookups_total", result="hit") == 1
    assert value(second, "signproxy_auth_cache_lookups_total", result="hit") == 0


# -- recording -----------------------------------------------------------------


def test_request_done_counts_by_method_outcome_and_class(metrics: Metrics) -> None:
    metrics.request_done("get", "forwarded", 200, 0.02, 0.015)
    metrics.request_done("PATCH", "refused", 403, 0.001, None)
    metrics.request_done("PUT", "upstream_error", 502, 1.5, None)

    assert (
        value(
            metrics,
            "signproxy_requests_total",
            method="GET",
            outcome="forwarded",
            status_class="2xx",
        )
        == 1
    )
    assert (
        value(
            metrics,
            "signproxy_requests_total",
            method="OTHER",
            outcome="refused",
            status_class="4xx",
        )
        == 1
    )
    assert (
        value(
            metrics,
            "signproxy_requests_total",
            method="PUT",
            outcome="upstream_error",
            status_class="5xx",
        )
        == 1
    )
    assert value(
        metrics, "signproxy_request_duration_seconds_sum", method="PUT"
    ) == pytest.approx(1.5)
    assert (
        value(metrics, "signproxy_upstream_duration_seconds_count", method="GET") == 1
    )
    assert (
        value(metrics, "signproxy_upstream_duration_seconds_count", method="PUT") == 0
    )
    assert (
        value(
            metrics,
            "signproxy_request_duration_seconds_bucket",
            method="GET",
            le="0.025",
        )
        == 1
    )
    assert (
        value(
            metrics,
            "signproxy_request_duration_seconds_bucket",
            method="GET",
            le="0.01",
        )
        == 0
    )


@pytest.mark.parametrize(
    ("method", "label"),
    [("GET", "GET"), ("delete", "DELETE"), ("OPTIONS", "OTHER"), ("BREW", "OTHER")],
)
def test_method_label_is_bounded(method: str, label: str) -> None:
    assert method_label(method) == label


@pytest.mark.parametrize(
    ("status", "klass"),
    [
        (200, "2xx"),
        (206, "2xx"),
        (304, "3xx"),
        (404, "4xx"),
        (503, "5xx"),
        (0, "other"),
    ],
)
def test_status_class(status: int, klass: str) -> None:
    assert status_class(status) == klass


def test_signing_sts_cache_refresh_and_payload(metrics: Metrics) -> None:
    metrics.signing("cache", 0.00005)
    metrics.sts_call("object_store_authorization", "unavailable", 3.0)
    metrics.auth_cache(hit=False)
    metrics.credential_refresh("error")
    metrics.payload("hashed", 1024)
    metrics.payload("chunked_resigned", None)

    assert (
        value(
            metrics,
            "signproxy_signing_duration_seconds_bucket",
            signer="cache",
            le="0.0001",
        )
        == 1
    )
    assert (
        value(
            metrics,
            "signproxy_sts_requests_total",
            operation="object_store_authorization",
            outcome="unavailable",
        )
        == 1
    )
    assert value(
        metrics,
        "signproxy_sts_request_duration_seconds_sum",
        operation="object_store_authorization",
    ) == pytest.approx(3.0)
    assert value(metrics, "signproxy_auth_cache_lookups_total", result="miss") == 1
    assert value(metrics, "signproxy_credential_refreshes_total", outcome="error") == 1
    assert value(metrics, "signproxy_payload_bytes_total", mode="hashed") == 1024
    assert (
        value(metrics, "signproxy_payload_requests_total", mode="chunked_resigned") == 1
    )
    assert value(metrics, "signproxy_payload_bytes_total", mode="chunked_resigned") == 0


def test_credentials_expiry_is_unix_seconds(metrics: Metrics) -> None:
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=9)))
    metrics.credentials_expiry(expires)
    assert value(metrics, "signproxy_credentials_expiry_timestamp_seconds") == (
        expires.timestamp()
    )

    metrics.credentials_expiry(None)
    assert value(metrics, "signproxy_credentials_expiry_timestamp_seconds") == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.request_done("GET", "ok", 200, 0.1, None), "outcome 'ok'"),
        (lambda m: m.signing("botocore", 0.1), "signer 'botocore'"),
        (lambda m: m.sts_call("get_token", "ok", 0.1), "operation 'get_token'"),
        (
            lambda m: m.sts_call("assume_role", "timeout", 0.1),
            "outcome 'timeout'",
        ),
        (lambda m: m.credential_refresh("maybe"), "outcome 'maybe'"),
        (lambda m: m.payload("raw", 1), "mode 'raw'"),
        (lambda m: m.payload("hashed", -1), "payload size -1"),
        (
            lambda m: m.credentials_expiry(datetime(2030, 1, 1)),
            "no time zone",
        ),
    ],
)
def test_unbounded_or_bad_values_are_refused(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(Metrics())


def test_no_label_can_carry_a_bucket_key_or_access_key(metrics: Metrics) -> None:
    secretish = "AKIDEXAMPLE1234567890"
    metrics.request_done(f"GET /{secretish}/bucket/key", "forwarded", 200, 0.1, 0.1)
    metrics.request_done("PUT", "forwarded", 200, 0.1, 0.1)

    text = metrics.exposition().decode()
    assert secretish not in text
    assert "bucket/key" not in text
    allowed = {
        "method",
        "outcome",
        "status_class",
        "signer",
        "operation",
        "result",
        "mode",
        "version",
        "python",
        "mitmproxy",
        "le",
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert set(sample.labels) <= allowed, sample


# -- the management port -------------------------------------------------------


class Readiness:
    def __init__(self) -> None:
        self.answer: tuple[bool, str] = (False, "credentials not fetched yet")
        self.raises = False

    def __call__(self) -> tuple[bool, str]:
        if self.raises:
            raise RuntimeError("boom")
        return self.answer


@pytest.fixture
async def management(metrics: Metrics):
    readiness = Readiness()
    server = ManagementServer("127.0.0.1", 0, metrics, readiness)
    await server.start()
    try:
        yield server, readiness
    finally:
        await server.stop()


async def test_metrics_endpoint_serves_parsable_exposition(management) -> None:
    server, _ = management
    server.metrics.request_done("HEAD", "forwarded", 200, 0.01, 0.005)
    assert server.port != 0
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = families(response.text)
    [sample] = [
        s
        for s in found["signproxy_requests"].samples
        if s.name == "signproxy_requests_total"
        and s.labels
        == {"method": "HEAD", "outcome": "forwarded", "status_class": "2xx"}
    ]
    assert sample.value == 1
    assert found["signproxy_ready"].samples[0].value == 0


async def test_healthz_is_alive_even_when_not_ready(management) -> None:
    server, _ = management
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.text == "ok\n"


async def test_readyz_follows_readiness_and_draining(management) -> None:
    server, readiness = management
    async with httpx.AsyncClient(base_url=server.url) as client:
        not_ready = await client.get("/readyz")
        readiness.answer = (True, "")
        ready = await client.get("/readyz")
        server.metrics.set_draining(True)
        draining = await client.get("/readyz")
        server.metrics.set_draining(False)
        readiness.raises = True
        broken = await client.get("/readyz")

    assert (not_ready.status_code, not_ready.text) == (
        503,
        "credentials not fetched yet\n",
    )
    assert (ready.status_code, ready.text) == (200, "ready\n")
    assert (draining.status_code, draining.text) == (503, "draining\n")
    assert (broken.status_code, broken.text) == (503, "readiness check failed\n")


async def test_ready_gauge_follows_readyz(management) -> None:
    server, readiness = management
    readiness.answer = (True, "")
    async with httpx.AsyncClient(base_url=server.url) as client:
        await client.get("/readyz")
    assert value(server.metrics, "signproxy_ready") == 1


async def test_unknown_paths_and_methods(management) -> None:
    server, _ = management
    async with httpx.AsyncClient(base_url=server.url) as client:
        missing = await client.get("/admin")
        posted = await client.post("/metrics", content=b"x")
        head = await client.head("/healthz")

    assert missing.status_code == 404
    assert posted.status_code == 405
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == "3"


async def test_garbage_does_not_stop_the_server(management) -> None:
    server, _ = management
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"NONSENSE\r\n\r\n")
    await writer.drain()
    assert await reader.read() == b""
    writer.close()
    await writer.wait_closed()

    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200


async def test_binds_loopback_and_stops() -> None:
    server = ManagementServer("127.0.0.1", 0, Metrics(), lambda: (True, ""))
    await server.start()
    port = server.port
    await server.stop()

    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/healthz")


def test_exposition_timestamp_for_a_utc_expiry(metrics: Metrics) -> None:
    expires = datetime(2031, 5, 6, tzinfo=UTC)
    metrics.credentials_expiry(expires)
    found = families(metrics.exposition().decode())
    [sample] = found["signproxy_credentials_expiry_timestamp_seconds"].samples
    assert sample.value == expires.timestamp()
