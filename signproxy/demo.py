"""`signproxy demo`: the whole chain on one machine, no account needed.

Starts, in this order and in one process (the store is a child process):

1. a local SeaweedFS (`seaweed.LocalStore`) with one identity whose key pair
   is fresh and random for every run;
2. the SCP STS emulator, whose one account holds that same key pair, a role
   and a SAML provider, so the credentials it issues work on the store;
3. the signing proxy in reverse mode in front of the store, signing with
   temporary credentials from `assume-role` (`--signer local`) or with
   `object-store-authorization` answers (`--signer remote`).

Then it checks a round trip through the proxy itself (create a bucket, put an
object with Content-MD5, read it back, compare), prints the endpoint, the dummy
keys a client may use and a ready `aws s3 cp` line, and serves until SIGINT or
SIGTERM, when it stops everything it started.

The real key pair is never printed: clients only ever need the dummy keys,
because the proxy throws their signature away.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from signproxy import logs, options

# The store, the emulator and httpx are imported where they are used, so that
# `signproxy --help` (which reads this module's option lists) stays fast.
if TYPE_CHECKING:
    from signproxy.emulator import Account, EmulatorServer
    from signproxy.metrics import Metrics
    from signproxy.seaweed import Identity, LocalStore
    from signproxy.server import ProxyServer

logger = logging.getLogger(__name__)

# Any values work: the proxy replaces the client's signature.  These are what
# the demo prints for clients that insist on having keys.
DUMMY_ACCESS_KEY = "signproxy-demo"
DUMMY_SECRET_KEY = "any-secret-works"  # noqa: S105 - deliberately not a secret
DEMO_BUCKET = "demo"
ROUND_TRIP_KEY = "signproxy-round-trip.txt"

ROLE_NAME = "demo-role"
SAML_PROVIDER = "demo-idp"
OFFERING = "demo"
SIGNERS = ("local", "remote")

# The `run` options that mean nothing here: the demo wires these itself.
WIRED_OPTIONS = frozenset(
    {
        "upstream",
        "listen",
        "mode",
        "allow_hosts",
        "confdir",
        "signer",
        "sts_endpoint",
        "api_version",
        "role_indicator",
        "principal_indicator",
        "saml_assertion_file",
        "scp_config",
    }
)
DEMO_OPTIONS = tuple(o for o in options.OPTIONS if o.name not in WIRED_OPTIONS)


class DemoError(RuntimeError):
    """A part of the demo could not start, or the round trip failed."""


@dataclass(frozen=True)
class DemoSettings:
    """What `signproxy demo` was asked for."""

    listen: str = "127.0.0.1:8080"
    signer: str = "local"
    # Text values of the `run` options the demo accepts (see DEMO_OPTIONS).
    proxy_options: Mapping[str, str] = field(default_factory=dict)
    data_dir: Path | None = None

    def check(self) -> None:
        if self.signer not in SIGNERS:
            raise options.OptionError(
                "--signer", self.signer, "choose " + ", ".join(SIGNERS)
            )
        unknown = set(self.proxy_options) - {o.name for o in DEMO_OPTIONS}
        if unknown:
            name = sorted(unknown)[0]
            raise options.OptionError(
                "--" + name.replace("_", "-"),
                self.proxy_options[name],
                "the demo sets this itself",
            )


def fresh_identity() -> Identity:
    """The store's one identity: a random key pair that lives for one run."""
    from signproxy.seaweed import Identity

    return Identity(
        name="demo",
        access_key="AKDEMO" + secrets.token_hex(7).upper(),
        secret_key=secrets.token_urlsafe(30),
    )


def demo_account(identity: Identity) -> Account:
    """The emulated SCP account holding the store identity's key pair."""
    from signproxy.emulator import Account

    return Account(
        access_key=identity.access_key,
        secret_key=identity.secret_key,
        account_id=secrets.token_hex(16) + "d",
        roles=(ROLE_NAME,),
        saml_providers=(SAML_PROVIDER,),
    )


def role_indicator(account: Account) -> str:
    return f"{OFFERING}:{account.account_id}:{ROLE_NAME}"


def check_options(settings: DemoSettings) -> options.ProxyConfig:
    """Parse the user's options before anything starts; OptionError if bad.

    The wiring is a placeholder here; `proxy_config` fills in the real one.
    """
    from signproxy.seaweed import Identity

    settings.check()
    placeholder = "http://127.0.0.1:1"
    account = demo_account(Identity("demo", "AKDEMOPLACEHOLDER", "placeholder"))
    return proxy_config(settings, placeholder, placeholder, account)


def proxy_config(
    settings: DemoSettings,
    store_endpoint: str,
    sts_endpoint: str,
    account: Account,
    environ: Mapping[str, str] = os.environ,
) -> options.ProxyConfig:
    """The proxy's configuration: the user's options plus the demo's wiring.

    Both signers get the role: `local` signs with its assume-role
    credentials; `remote` asks object-store-authorization and leaves to them
    only what a remote signature cannot cover (extra x-amz-* headers, signed
    aws-chunked bodies).
    """
    given = dict(settings.proxy_options)
    given.update(
        upstream=store_endpoint,
        listen=settings.listen,
        mode="reverse",
        signer=settings.signer,
        sts_endpoint=sts_endpoint,
        role_indicator=role_indicator(account),
    )
    accepted = {o.env for o in DEMO_OPTIONS}
    user_environ = {k: v for k, v in environ.items() if k in accepted}
    return options.resolve(given, user_environ)


def scp_environ(account: Account) -> dict[str, str]:
    """What the signer would read from the environment for the account."""
    return {
        "SCP_ACCESS_KEY": account.access_key,
        "SCP_SECRET_KEY": account.secret_key,
        "SCP_ACCOUNT_ID": account.account_id,
    }


def md5_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324


async def round_trip(endpoint: str, bucket: str = DEMO_BUCKET) -> int:
    """Create `bucket`, put an object, read it back; the object's size.

    The requests carry no signature at all: the proxy signs each one.  The
    upload carries Content-MD5, so the store checks the bytes it received.
    """
    import httpx

    body = f"signproxy demo round trip {secrets.token_hex(16)}\n".encode()
    url = f"{endpoint}/{bucket}/{ROUND_TRIP_KEY}"
    async with httpx.AsyncClient(timeout=30.0) as client:
        made = await client.put(f"{endpoint}/{bucket}")
        if made.status_code not in (200, 409):
            raise DemoError(
                f"creating bucket {bucket!r} through the proxy answered "
                f"{made.status_code}: {made.text[:500]}"
            )
        put = await client.put(
            url,
            content=body,
            headers={"content-md5": md5_base64(body), "content-type": "text/plain"},
        )
        if put.status_code != 200:
            raise DemoError(
                f"PUT {ROUND_TRIP_KEY} through the proxy answered "
                f"{put.status_code}: {put.text[:500]}"
            )
        got = await client.get(url)
        if got.status_code != 200 or got.content != body:
            raise DemoError(
                f"GET {ROUND_TRIP_KEY} through the proxy answered {got.status_code} "
                f"with {len(got.content)} bytes, expected the {len(body)} put"
            )
    return len(body)


def ready_text(endpoint: str, settings: DemoSettings, signed_by: str) -> str:
    """What the user reads once everything works (no real key in it)."""
    env = (
        f"AWS_ACCESS_KEY_ID={DUMMY_ACCESS_KEY} "
        f"AWS_SECRET_ACCESS_KEY={DUMMY_SECRET_KEY} AWS_DEFAULT_REGION=us-east-1"
    )
    return "\n".join(
        [
            f"signproxy demo: ready endpoint={endpoint} "
            f"access_key={DUMMY_ACCESS_KEY} secret_key={DUMMY_SECRET_KEY} "
            f"bucket={DEMO_BUCKET} signer={settings.signer}",
            "",
            f"  endpoint     {endpoint}  (S3, path-style or BUCKET.localhost)",
            f"  access key   {DUMMY_ACCESS_KEY}",
            f"  secret key   {DUMMY_SECRET_KEY}"
            "  (any keys work: signproxy replaces the signature)",
            f"  bucket       {DEMO_BUCKET}  (round trip checked, {signed_by})",
            "",
            "Try it:",
            "",
            f"  {env} aws s3 cp README.md s3://{DEMO_BUCKET}/README.md "
            f"--endpoint-url {endpoint}",
            f"  {env} aws s3 ls s3://{DEMO_BUCKET}/ --endpoint-url {endpoint}",
            "",
            "Press Ctrl-C to stop (the store and its data go with it).",
        ]
    )


class Demo:
    """Store, emulator and proxy, started and stopped together."""

    def __init__(self, settings: DemoSettings) -> None:
        settings.check()
        self.settings = settings
        self.identity = fresh_identity()
        self.account = demo_account(self.identity)
        logs.register_secret(self.identity.secret_key)
        self.store: LocalStore | None = None
        self.emulator: EmulatorServer | None = None
        self.proxy: ProxyServer | None = None
        self.metrics: Metrics | None = None

    def __repr__(self) -> str:
        return f"Demo(signer={self.settings.signer!r}, listen={self.settings.listen!r})"

    @property
    def endpoint(self) -> str:
        assert self.proxy is not None
        host, port = self.proxy.listen_addrs[0]
        return f"http://{host}:{port}"

    async def start_store(self) -> None:
        from signproxy.seaweed import LocalStore

        self.store = LocalStore([self.identity], data_dir=self.settings.data_dir)
        try:
            await asyncio.to_thread(self.store.start)
        except RuntimeError as error:
            raise DemoError(f"SeaweedFS did not start: {error}") from None
        logger.info("SeaweedFS serving S3 on %s", self.store.endpoint)

    async def start_emulator(self) -> None:
        from signproxy.emulator import EmulatorServer

        assert self.store is not None
        self.emulator = EmulatorServer([self.account], self.store.endpoint)
        await self.emulator.start()
        logger.info("STS emulator on %s", self.emulator.endpoint)

    async def start_proxy(self) -> None:
        from signproxy.metrics import Metrics
        from signproxy.server import ProxyServer, StartupError
        from signproxy.signers import create_signer

        assert self.store is not None
        assert self.emulator is not None
        config = proxy_config(
            self.settings, self.store.endpoint, self.emulator.endpoint, self.account
        )
        environ = scp_environ(self.account)
        self.metrics = Metrics()
        signer = create_signer(
            config.signer_settings(environ), metrics=self.metrics, environ=environ
        )
        self.proxy = ProxyServer(config, signer, self.metrics)
        try:
            await self.proxy.start()
        except StartupError as error:
            self.proxy = None
            raise DemoError(str(error)) from None

    async def check(self) -> str:
        """The round trip through the proxy; says which STS path signed it."""
        assert self.emulator is not None
        before = dict(self.emulator.stats()["calls"])
        size = await round_trip(self.endpoint)
        after = self.emulator.stats()["calls"]
        remote_calls = after.get("object_store_authorization", 0) - before.get(
            "object_store_authorization", 0
        )
        if self.settings.signer == "remote" and remote_calls == 0:
            raise DemoError("the round trip did not use object-store-authorization")
        how = (
            f"{remote_calls} object-store-authorization calls"
            if self.settings.signer == "remote"
            else "assume-role credentials"
        )
        logger.info("round trip through the proxy: %d bytes, %s", size, how)
        return f"signed with {how}"

    async def stop(self) -> None:
        """Stop whatever was started, newest first; never raises."""
        if self.proxy is not None:
            with _logged("stopping the proxy"):
                await self.proxy.stop()
            self.proxy = None
        if self.emulator is not None:
            with _logged("stopping the STS emulator"):
                await self.emulator.stop()
            self.emulator = None
        if self.store is not None:
            with _logged("stopping SeaweedFS"):
                await asyncio.to_thread(self.store.close)
            self.store = None

    async def run(self, stop: asyncio.Event, out: TextIO) -> None:
        """Start, check, announce, serve until `stop`, then stop everything.

        Each start-up step runs to its end even when `stop` is set meanwhile
        (a half-started store could not be stopped cleanly); the demo then
        stops instead of serving.
        """
        steps: list[Callable[[], Awaitable[None]]] = [
            self.start_store,
            self.start_emulator,
            self.start_proxy,
        ]
        try:
            for step in steps:
                await step()
                if stop.is_set():
                    return
            signed_by = await self.check()
            print(ready_text(self.endpoint, self.settings, signed_by), file=out)
            out.flush()
            await stop.wait()
            logger.info("signproxy demo stopping")
        finally:
            await self.stop()


@contextlib.contextmanager
def _logged(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as error:
        logger.error("%s failed: %s", what, error)


def run(settings: DemoSettings, out: TextIO = sys.stdout) -> int:
    """Serve the demo until SIGINT or SIGTERM: 0 on a clean stop, 1 on failure."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        demo = Demo(settings)
        try:
            await demo.run(stop, out)
        except DemoError as error:
            logger.error("signproxy demo: %s", error)
            return 1
        return 0

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # Every connection and STS call would be an INFO line; debug detail here.
        logging.getLogger("mitmproxy").setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main())
    return 0
