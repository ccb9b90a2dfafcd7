"""A trimmed, embedded mitmproxy that runs the signing addon.

`mitmdump` loads some thirty addons and spends about 3 ms of CPU per request;
the proxy needs four of them (see performance-notes.md: trimmed is ~2x
faster):

* `core.Core` - option checks and the `set` command; no request hooks;
* `proxyserver.Proxyserver` - the listening sockets and connection handlers;
* `next_layer.NextLayer` - decides each connection's protocol layers (without
  it no request is ever parsed);
* `tlsconfig.TlsConfig` - TLS towards an https:// upstream, and the
  interception certificates of forward mode.

Left out on purpose: the dumper and termlog (we log ourselves), script
loading, save/replay, map/modify, blocklist, anticache and the rest, and
`errorcheck` / `keepserving` (start-up failures and the life cycle are
handled here).

One process serves one core; `--workers N` runs N of them on one port
(`signproxy.workers`), each binding with SO_REUSEPORT (`share_listening_port`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mitmproxy import addonmanager, exceptions, hooks
from mitmproxy import http as mitm_http
from mitmproxy import options as mitm_options
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.proxy import mode_servers
from mitmproxy.utils import asyncio_utils

from signproxy.addon import SignedOnly, SigningAddon
from signproxy.options import ProxyConfig

if TYPE_CHECKING:
    from signproxy.metrics import ManagementServer, Metrics
    from signproxy.signers import RequestSigner

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 20.0  # default of --drain-seconds


class StartupError(RuntimeError):
    """The proxy could not start (e.g. the port is taken)."""


def mitmproxy_options(config: ProxyConfig) -> mitm_options.Options:
    """mitmproxy's own options for a config; fixed ones are not user choices."""
    host, port = config.listen
    mode = f"reverse:{config.upstream}" if config.mode == "reverse" else "regular"
    opts = mitm_options.Options()
    # Options declared by the addons must exist before they can be set, so
    # the addons are added first (see ProxyServer.start).
    opts.update_defer(
        mode=[mode],
        listen_host=host,
        listen_port=port,
        confdir=config.confdir,
        # We need the client's Host to recognise virtual-host-style requests;
        # the addon sets the upstream's Host itself.
        keep_host_header=True,
        # Connect upstream when a request needs it, so an unreachable store
        # is answered per request (502) instead of dropping the connection.
        connection_strategy="lazy",
        store_streamed_bodies=False,
        # --idle-timeout: a connection with no bytes either way is closed.
        tcp_timeout=config.idle_timeout,
    )
    return opts


class ProxyServer:
    """One embedded mitmproxy with the signing addon, and its management port."""

    def __init__(
        self,
        config: ProxyConfig,
        signer: RequestSigner,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.signer = signer
        self.metrics = metrics
        self.addon = SigningAddon(config, signer, metrics)
        self.master: Master | None = None
        self.management: ManagementServer | None = None

    @property
    def listen_addrs(self) -> list[tuple[str, int]]:
        assert self.master is not None
        server = self.master.addons.get("proxyserver")
        return [(a[0], a[1]) for a in server.listen_addrs()]

    async def start(self) -> None:
        """Start the signer, then listen; raises StartupError on failure."""
        try:
            await self.signer.start()
        except Exception as error:
            raise StartupError(
                f"the {self.signer.name} signer could not start: {error}"
            ) from None
        self.master = Master(mitmproxy_options(self.config))
        use_hook_index(self.master)
        skip_mitmproxy_overheads()
        if self.config.workers > 1:
            share_listening_port()
        # No addon here listens to the deprecated `add_log` events; their
        # handler would only format every record a second time for nobody.
        # (It once crashed on records our redacting filter had rewritten;
        # that filter now leaves shared records alone.)
        self.master._legacy_log_events.uninstall()
        self.master.addons.add(
            core.Core(),
            proxyserver.Proxyserver(),
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
            self.addon,
            SignedOnly(),
        )
        self.master.options.process_deferred()
        server = self.master.addons.get("proxyserver")
        if not await server.setup_servers():
            failures = [s.last_exception for s in server.servers if s.last_exception]
            detail = "; ".join(str(f) for f in failures) or "see the log"
            await self.signer.close()
            raise StartupError(f"unable to listen on {self._listen_text()}: {detail}")
        await self.master.running()
        await self._start_management()

    async def _start_management(self) -> None:
        if self.config.metrics_listen is None:
            return
        from signproxy.metrics import ManagementServer, Metrics

        if self.metrics is None:
            self.metrics = self.addon.metrics = Metrics()
        host, port = self.config.metrics_listen
        self.management = ManagementServer(host, port, self.metrics, self.signer.ready)
        await self.management.start()

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, then shut down."""
        if self.master is None:
            return
        if self.metrics is not None:
            self.metrics.set_draining(True)
        server = self.master.addons.get("proxyserver")
        await server.servers.update([])
        if not await self.addon.wait_idle(self.config.drain_seconds):
            logger.warning("stopping with %d requests in flight", self.addon.in_flight)
        await _close_idle_connections(server)
        if self.management is not None:
            await self.management.stop()
        await self.master.done()
        await self.signer.close()
        self.master = None

    def _listen_text(self) -> str:
        return "{}:{}".format(*self.config.listen)

    async def serve(self, stop: asyncio.Event) -> None:
        """Start, log the start-up line, serve until `stop` is set, stop."""
        # Not mitmproxy's eager task factory (its Master.run() sets one): it
        # made small GETs ~15% cheaper, but a streamed PUT whose store went
        # away after `100 Continue` then got no answer at all (found by
        # tests/faults/test_store_faults.py::test_store_restart_mid_transfer).
        with asyncio_utils.install_exception_handler(_log_loop_exception):
            await self.start()
            try:
                addrs = ", ".join(f"{h}:{p}" for h, p in self.listen_addrs)
                logger.info(
                    "signproxy listening on %s: mode=%s upstream=%s signer=%s "
                    "payload=%s",
                    addrs,
                    self.config.mode,
                    self.config.upstream or ",".join(self.config.allow_hosts),
                    self.signer.name,
                    self.config.payload,
                )
                await stop.wait()
                logger.info("signproxy stopping")
            finally:
                await self.stop()


class IndexedAddonManager(addonmanager.AddonManager):
    """mitmproxy's addon manager with the addons of each event looked up once.

    mitmproxy calls every addon of the chain for every event, each inside a
    context manager, and follows each request event with an `update` event
    for its user interfaces: 8 events x 6 addons per proxied request, a
    fifth of the proxy's CPU.  Here each event name maps to the hooks that
    handle it, found once (and again whenever the chain changes), and
    `update` is skipped when no addon handles it.  Errors are handled as
    mitmproxy does (`safecall`: logged, the other addons still run).
    """

    def _handlers(self, name: str) -> tuple[Callable[..., Any], ...]:
        index: dict[str, tuple[Callable[..., Any], ...]] = self.__dict__.setdefault(
            "_index", {}
        )
        handlers = index.get(name)
        if handlers is None:
            handlers = index[name] = tuple(
                func
                for addon in addonmanager.traverse(self.chain)
                if callable(func := getattr(addon, name, None))
            )
        return handlers

    def register(self, addon: Any) -> Any:
        self.__dict__.pop("_index", None)
        return super().register(addon)

    def remove(self, addon: Any) -> None:
        self.__dict__.pop("_index", None)
        super().remove(addon)

    def clear(self) -> None:
        self.__dict__.pop("_index", None)
        super().clear()

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        if self._handlers(hooks.UpdateHook.name):
            await super().handle_lifecycle(event)  # the event, then `update`
        else:
            await self.trigger_event(event)

    async def trigger_event(self, event: hooks.Hook) -> None:
        handlers = self._handlers(event.name)
        if not handlers:
            return
        args = event.args()
        for func in handlers:
            try:
                with addonmanager.safecall():
                    result = func(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result
            except exceptions.AddonHalt:
                return


def share_listening_port() -> None:
    """Bind mitmproxy's TCP listeners with SO_REUSEPORT (`--workers`).

    mitmproxy 12 binds with `asyncio.start_server(handler, host, port)` and
    offers no option for SO_REUSEPORT; its listener is replaced here by the
    same call with `reuse_port=True`, so that every worker process can bind
    the one address (see `signproxy.workers`).  Pinned to mitmproxy 12.
    """
    instance = mode_servers.AsyncioServerInstance
    original = instance.listen
    if getattr(original, "_signproxy_reuse_port", False):
        return

    async def listen(self: Any, host: str, port: int) -> list[Any]:
        if self.mode.transport_protocol != "tcp" or port == 0:
            return await original(self, host, port)
        server = await asyncio.start_server(
            self.handle_stream, host, port, reuse_port=True
        )
        return [server]

    listen._signproxy_reuse_port = True  # type: ignore[attr-defined]
    instance.listen = listen  # type: ignore[method-assign]


def use_hook_index(master: Master) -> None:
    """Switch a fresh master to the indexed addon manager (before any add)."""
    assert not master.addons.chain
    master.addons.__class__ = IndexedAddonManager


def skip_mitmproxy_overheads() -> None:
    """Two per-request costs of mitmproxy 12 that change nothing it does.

    * It type-checks every field of every request and response it builds,
      in debug mode only (`python -O` skips it); its own parser made them,
      so the check is skipped here as under -O.
    * A header look-up (`headers["content-length"]`, ~18 per request, most
      of them mitmproxy's own) called two helper functions per header field;
      `_headers_get_all` gives the same answer in one pass.
    """
    mitm_http.MessageData.__post_init__ = _skip_debug_typecheck  # type: ignore[method-assign]
    mitm_http.Headers.get_all = _headers_get_all  # type: ignore[method-assign]


def _skip_debug_typecheck(self: Any) -> None:
    return None


def _headers_get_all(self: mitm_http.Headers, name: str | bytes) -> list[str]:
    """`Headers.get_all`: the values of `name`, any case, in order, decoded."""
    key = (
        name.encode("utf-8", "surrogateescape") if type(name) is str else name
    ).lower()
    return [
        value.decode("utf-8", "surrogateescape")
        for field, value in self.fields
        if field.lower() == key
    ]


async def _close_idle_connections(server: proxyserver.Proxyserver) -> None:
    """Close the client connections still open (idle keep-alive ones)."""
    for handler in list(server.connections.values()):
        transport = handler.transports.get(handler.client)
        if transport is not None and transport.handler is not None:
            transport.handler.cancel("signproxy is stopping")
    # Each handler now runs its own clean-up; give them a moment to finish.
    for _ in range(100):
        if not server.connections:
            return
        await asyncio.sleep(0.01)


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    error = context.get("exception")
    if error is None:
        logger.error("event loop: %s", context.get("message"))
    else:
        logger.error("event loop: unexpected %s", type(error).__name__, exc_info=error)


def run(
    config: ProxyConfig,
    make_signer: Callable[[], RequestSigner],
    metrics: Metrics | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop, 1 if start-up failed."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        server = ProxyServer(config, make_signer(), metrics)
        try:
            await server.serve(stop)
        except StartupError as error:
            logger.error("%s", error)
            return 1
        return 0

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # mitmproxy logs every connection at INFO; that is debug detail here.
        logging.getLogger("mitmproxy").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main())
    return 0
