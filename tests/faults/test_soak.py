"""A short soak in CI: a proxy under steady load keeps its fds and RSS flat."""

from __future__ import annotations

from signproxy.soak import FD_SLACK, RSS_GROWTH_LIMIT, Sample, SoakReport, soak
from tests.fixtures.proxy import StartProxy


def test_proxy_resources_stay_flat_under_load(start_proxy: StartProxy) -> None:
    proxy = start_proxy(log_level="info")
    report = soak(proxy.endpoint, proxy.process.pid, 20.0, interval=1.0)
    summary = report.summary()
    assert report.failures == 0, summary
    assert report.requests > 100, summary
    assert len(report.samples) >= 15, summary
    assert report.fd_growth <= FD_SLACK, summary
    assert report.rss_growth <= RSS_GROWTH_LIMIT, summary
    assert report.flat
    assert proxy.process.poll() is None


def test_verdict_catches_a_leak() -> None:
    leaking = SoakReport(
        8.0, requests=10, samples=[Sample(i, 100_000_000, 20 + 5 * i) for i in range(8)]
    )
    assert leaking.fd_growth == 15
    assert not leaking.flat
    growing = SoakReport(
        8.0,
        requests=10,
        samples=[Sample(i, 10**8 + i * 2 * 10**7, 20) for i in range(8)],
    )
    assert not growing.flat
    steady = SoakReport(
        8.0, requests=10, samples=[Sample(i, 10**8, 20) for i in range(8)]
    )
    assert steady.flat
