"""Nothing leaves the proxy unsigned, even when the signing addon breaks."""

from __future__ import annotations

import pytest
from mitmproxy import hooks
from mitmproxy.proxy.layers.http import HttpRequestHeadersHook, HttpRequestHook
from mitmproxy.test import taddons, tflow

from signproxy.addon import SIGNED_KEY, SignedOnly, SigningAddon
from signproxy.server import IndexedAddonManager

# mitmproxy's own addon manager, and the indexed one `signproxy run` uses.
both_managers = pytest.mark.parametrize(
    "indexed", [False, True], ids=["stock", "indexed"]
)


class BrokenAddon(SigningAddon):
    """A signing addon whose hooks fail before any guard can catch it."""

    def _state(self, flow):
        raise AttributeError("a bug outside the guard")


async def _run(event: hooks.Hook, indexed: bool, *addons: object) -> None:
    with taddons.context(loadcore=False) as tctx:
        if indexed:
            tctx.master.addons.__class__ = IndexedAddonManager
        tctx.master.addons.add(*addons)
        await tctx.master.addons.handle_lifecycle(event)


def _assert_refused(flow) -> None:
    assert flow.response is not None, "an unsigned request was left to go upstream"
    assert flow.response.status_code == 500
    assert b"<Code>InternalError</Code>" in flow.response.content
    assert flow.request.stream is False


@both_managers
async def test_a_streamed_request_left_unsigned_is_answered_in_requestheaders(
    indexed: bool,
):
    flow = tflow.tflow()
    flow.request.stream = True
    await _run(HttpRequestHeadersHook(flow), indexed, BrokenAddon(), SignedOnly())
    _assert_refused(flow)


@both_managers
async def test_a_buffered_request_left_unsigned_is_answered_in_request(indexed: bool):
    flow = tflow.tflow()
    await _run(HttpRequestHeadersHook(flow), indexed, BrokenAddon(), SignedOnly())
    assert flow.response is None  # buffered: the body is not sent yet
    await _run(HttpRequestHook(flow), indexed, BrokenAddon(), SignedOnly())
    _assert_refused(flow)


def test_a_signed_request_passes_untouched():
    flow = tflow.tflow()
    flow.request.stream = True
    flow.metadata[SIGNED_KEY] = True
    headers_before = flow.request.headers.fields
    guard = SignedOnly()
    guard.requestheaders(flow)
    guard.request(flow)
    assert flow.response is None
    assert flow.request.headers.fields == headers_before


def test_an_answered_request_keeps_its_answer():
    flow = tflow.tflow(resp=True)
    status = flow.response.status_code
    SignedOnly().request(flow)
    assert flow.response.status_code == status
