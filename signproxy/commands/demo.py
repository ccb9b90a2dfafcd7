"""`signproxy demo`: SeaweedFS, the STS emulator and the proxy, wired together.

Accepts the `run` options that make sense for a local demo (payload policy,
hash limit, metrics port, log format, ...); the store, the STS endpoint, the
role and the keys are the demo's own.  Heavy imports wait until it runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from signproxy import options
from signproxy.commands.run import add_option_flags

EXIT_BAD_OPTION = 2


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from signproxy import demo

    parser = subparsers.add_parser(
        "demo",
        help="run a local store, the emulated SCP STS and the proxy together",
        description="Start a local SeaweedFS with a fresh random key pair, the "
        "SCP STS emulator and the signing proxy in front of the store; check a "
        "round trip, print the endpoint and dummy keys, and serve until Ctrl-C. "
        "No account is needed.",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="address the proxy listens on (default: 127.0.0.1:8080)",
    )
    parser.add_argument(
        "--signer",
        default="local",
        choices=demo.SIGNERS,
        help="local: SigV4 with assume-role credentials; remote: STS "
        "object-store-authorization per request, assume-role credentials for "
        "what it cannot cover (default: local)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the store's data here (default: a temporary directory, "
        "removed on exit)",
    )
    add_option_flags(parser, skip=demo.WIRED_OPTIONS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from signproxy import demo, logs

    given = {
        o.name: getattr(args, o.name)
        for o in demo.DEMO_OPTIONS
        if getattr(args, o.name, None)
    }
    settings = demo.DemoSettings(
        listen=args.listen,
        signer=args.signer,
        proxy_options=given,
        data_dir=args.data_dir,
    )
    try:
        config = demo.check_options(settings)
    except options.OptionError as error:
        print(f"signproxy demo: {error}", file=sys.stderr)
        return EXIT_BAD_OPTION
    logs.configure_logging(config.log_level, config.log_format)
    return demo.run(settings)
