"""`signproxy run`: the proxy itself.

Every option of `signproxy.options.OPTIONS` is a flag here and also reads from
`SIGNPROXY_<NAME>`; a bad value stops start-up with exit status 2 and a
message naming the option and the value.  mitmproxy is imported only when
the command runs, so `signproxy --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from signproxy import options

if TYPE_CHECKING:
    from signproxy.clientauth import ClientKeys
    from signproxy.signers import SignerSettings

logger = logging.getLogger(__name__)

EXIT_BAD_OPTION = 2


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the signing proxy",
        description="Sign every S3 request for the real store and forward it. "
        "Each option may also be set as SIGNPROXY_<NAME> in the environment; "
        "keys come from --scp-config or SCP_ACCESS_KEY/SCP_SECRET_KEY.",
    )
    add_option_flags(parser)
    parser.set_defaults(func=run)


def add_option_flags(
    parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()
) -> None:
    """One flag per option; values stay text and are parsed by `options`."""
    for option in options.OPTIONS:
        if option.name in skip:
            continue
        default = "" if option.default is None else f" (default: {option.default})"
        parser.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            action="append" if option.repeatable else "store",
            metavar=option.metavar or ("{" + ",".join(option.choices) + "}"
                                       if option.choices else option.name.upper()),
            help=f"{option.help}{default}; env {option.env}",
        )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    try:
        config = options.resolve(
            {o.name: getattr(args, o.name, None) for o in options.OPTIONS}
        )
    except options.OptionError as error:
        print(f"signproxy run: {error}", file=sys.stderr)
        return EXIT_BAD_OPTION

    from signproxy import logs

    logs.configure_logging(config.log_level, config.log_format)
    try:
        settings = config.signer_settings()
        settings.check()
    except ValueError as error:
        print(f"signproxy run: {error}", file=sys.stderr)
        return EXIT_BAD_OPTION
    try:
        client_keys = config.client_keys()
    except ValueError as error:
        print(f"signproxy run: {error}", file=sys.stderr)
        return EXIT_BAD_OPTION
    register_startup_secrets(settings, client_keys)
    if client_keys:
        logger.info(
            "client authentication on: %d client key(s); unsigned or wrongly "
            "signed requests get 403",
            len(client_keys),
        )
    elif not options.listen_is_loopback(config):
        logger.warning(
            "listening on %s, not loopback, without client authentication: anyone "
            "who can reach it gets requests signed with these credentials "
            "(set --client-key or --client-keys-file)",
            config.listen[0],
        )

    from signproxy import server
    from signproxy.metrics import Metrics
    from signproxy.signers import create_signer

    metrics = Metrics()

    def make_signer():  # -> RequestSigner, imported lazily
        return create_signer(settings, metrics=metrics)

    try:
        if config.workers > 1:
            from signproxy import workers

            return workers.supervise(
                config, lambda own: server.run(own, make_signer, metrics)
            )
        return server.run(config, make_signer, metrics)
    except ValueError as error:
        # create_signer refuses settings it cannot use (e.g. no SCP keys).
        logger.error("signproxy run: %s", error)
        return EXIT_BAD_OPTION


def register_startup_secrets(
    settings: SignerSettings, client_keys: ClientKeys | None
) -> None:
    """Have the logs redact the SCP secret key and every client secret."""
    from signproxy import logs

    scp = settings.scp_credentials
    logs.register_secret(scp.secret_key if scp else os.environ.get("SCP_SECRET_KEY"))
    for secret in client_keys.secrets.values() if client_keys else ():
        logs.register_secret(secret)
