"""The proxy's indexed addon manager behaves as mitmproxy's own.

`signproxy.server.IndexedAddonManager` looks the hooks of each event up once
instead of asking every addon on every event; these tests hold it to
mitmproxy's semantics: chain order, sync and async hooks, an addon's error
logged without stopping the others, `AddonHalt`, `update` events when (and
only when) some addon handles them, and a fresh look-up after the chain
changes.
"""

from __future__ import annotations

import logging

import pytest
from mitmproxy import exceptions, http, options
from mitmproxy.master import Master
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import tflow

from signproxy.server import IndexedAddonManager, use_hook_index


class Recorder:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name = name
        self.calls = calls


class SyncHook(Recorder):
    def request(self, flow: http.HTTPFlow) -> None:
        self.calls.append(self.name)


class AsyncHook(Recorder):
    async def request(self, flow: http.HTTPFlow) -> None:
        self.calls.append(self.name)


class Failing(Recorder):
    def request(self, flow: http.HTTPFlow) -> None:
        self.calls.append(self.name)
        raise ValueError("boom in a hook")


class Halting(Recorder):
    def request(self, flow: http.HTTPFlow) -> None:
        self.calls.append(self.name)
        raise exceptions.AddonHalt


class Updates(Recorder):
    def update(self, flows: list) -> None:
        self.calls.append(f"{self.name}:update:{len(flows)}")


class Parent(Recorder):
    """An addon with sub-addons: mitmproxy calls the children after it."""

    def __init__(self, name: str, calls: list[str], children: list) -> None:
        super().__init__(name, calls)
        self.addons = children

    def request(self, flow: http.HTTPFlow) -> None:
        self.calls.append(self.name)


@pytest.fixture
async def master() -> Master:
    master = Master(options.Options())
    use_hook_index(master)
    assert isinstance(master.addons, IndexedAddonManager)
    return master


async def test_hooks_run_in_chain_order_and_errors_do_not_stop_the_rest(
    master: Master, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    master.addons.add(
        SyncHook("first", calls),
        Failing("failing", calls),
        Parent("parent", calls, [AsyncHook("child", calls)]),
        AsyncHook("last", calls),
    )
    with caplog.at_level(logging.ERROR):
        await master.addons.handle_lifecycle(HttpRequestHook(tflow.tflow()))

    assert calls == ["first", "failing", "parent", "child", "last"]
    assert "Addon error: boom in a hook" in caplog.text


async def test_addon_halt_stops_the_chain(master: Master) -> None:
    calls: list[str] = []
    master.addons.add(
        SyncHook("first", calls), Halting("halt", calls), SyncHook("never", calls)
    )
    await master.addons.handle_lifecycle(HttpRequestHook(tflow.tflow()))
    assert calls == ["first", "halt"]


async def test_update_events_only_when_handled_and_after_chain_changes(
    master: Master,
) -> None:
    calls: list[str] = []
    master.addons.add(SyncHook("first", calls))
    flow = tflow.tflow()
    await master.addons.handle_lifecycle(HttpRequestHook(flow))
    assert calls == ["first"]

    # A new addon is seen at once: the index is rebuilt when the chain changes.
    updates = Updates("ui", calls)
    master.addons.add(updates, AsyncHook("second", calls))
    await master.addons.handle_lifecycle(HttpRequestHook(flow))
    assert calls == ["first", "first", "second", "ui:update:1"]

    master.addons.remove(updates)
    await master.addons.handle_lifecycle(HttpRequestHook(flow))
    assert calls[4:] == ["first", "second"]


@pytest.mark.parametrize(
    "name",
    ["content-length", "Content-Length", b"X-AMZ-META-A", "x-amz-meta-a", "absent"],
)
def test_header_look_ups_answer_as_mitmproxy_does(name: str | bytes) -> None:
    from mitmproxy.coretypes.multidict import MultiDict

    from signproxy.server import skip_mitmproxy_overheads

    skip_mitmproxy_overheads()
    headers = http.Headers(
        [
            (b"Content-Length", b"12"),
            (b"x-amz-meta-a", b"one"),
            (b"X-Amz-Meta-A", b"two \xff"),  # repeated, and not UTF-8
            (b"host", b"example"),
        ]
    )
    key = name.encode() if isinstance(name, str) else name
    expected = [
        value.decode("utf-8", "surrogateescape")
        for value in MultiDict.get_all(headers, key)  # mitmproxy's own look-up
    ]
    assert headers.get_all(name) == expected
    assert headers.get(name) == (", ".join(expected) if expected else None)
    assert (name in headers) is bool(expected)
