"""`signproxy sts`: the SCP STS operations, as scpcli offers them.

    signproxy sts assume-role --role-session-name NAME --role-indicator IND
        [--duration-seconds N]
    signproxy sts assume-role-with-saml --saml-assertion VALUE|@FILE
        --role-indicator IND --principal-indicator IND [--duration-seconds N]
    signproxy sts object-store-authorization --x-amz-date D
        --x-amz-content-sha256 H --url URL --method M [--region R] [--service S]

scpcli's underscore spellings (--role_session_name, ...) work too.  The
output is the response JSON; `--output env` prints shell exports of the
credentials (assume commands).  Credentials come from SCP_ACCESS_KEY,
SCP_SECRET_KEY and SCP_ACCOUNT_ID, or from `--config FILE` (TOML, an [scp]
table with access_key, secret_key, account_id), never from the command line.
The endpoint is --endpoint, else SCP_STS_ENDPOINT, else
https://sts.{SCP_ENV}.samsungsdscloud.com.

Exit status: 0 ok; 2 usage or a request refused locally; 1 service error
(the SCP error code and request id on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_SERVICE_ERROR = 1
EXIT_USAGE = 2


def _option(parser: Any, name: str, **kwargs: Any) -> None:
    """--name-with-dashes plus scpcli's --name_with_underscores."""
    dashed = f"--{name.replace('_', '-')}"
    spellings = [dashed] if "_" not in name else [dashed, f"--{name}"]
    parser.add_argument(*spellings, dest=name, **kwargs)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    _option(group, "endpoint", metavar="URL", help="STS base URL")
    _option(
        group,
        "api_version",
        default="1.1",
        metavar="V",
        help="Scp-Api-Version to send (default 1.1)",
    )
    _option(
        group,
        "force_deprecated",
        action="store_true",
        help="send a deprecated version even after its Not Before date",
    )
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file with the SCP access key pair (else SCP_* variables)",
    )
    group.add_argument(
        "--timeout", type=float, default=10.0, metavar="SECONDS", help="per call"
    )
    _option(
        group,
        "max_retries",
        type=int,
        default=3,
        metavar="N",
        help="retries on connection errors, 429 and 5xx (default 3)",
    )
    _option(
        group,
        "log_level",
        default="warning",
        metavar="LEVEL",
        help="debug, info, warning (default) or error",
    )
    return common


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output",
        choices=("json", "env"),
        default="json",
        help="json (default) or env: shell exports of the credentials",
    )


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sts",
        help="call SCP STS: assume-role, assume-role-with-saml, "
        "object-store-authorization",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    operations = parser.add_subparsers(dest="operation", metavar="OPERATION")
    operations.required = True
    common = _common()

    assume = operations.add_parser(
        "assume-role", parents=[common], help="acquire temporary role credentials"
    )
    _option(assume, "role_session_name", required=True, metavar="NAME")
    _option(assume, "role_indicator", required=True, metavar="OFFERING:ACCOUNT:ROLE")
    _option(assume, "duration_seconds", type=int, metavar="N")
    _output(assume)
    assume.set_defaults(func=run, call=_assume_role)

    with_saml = operations.add_parser(
        "assume-role-with-saml",
        parents=[common],
        help="acquire temporary role credentials from a SAML assertion",
    )
    _option(
        with_saml,
        "saml_assertion",
        required=True,
        metavar="VALUE|@FILE",
        help="the base64 SAML response, or @FILE to read it from a file",
    )
    _option(with_saml, "role_indicator", required=True, metavar="OFFERING:ACCOUNT:ROLE")
    _option(
        with_saml,
        "principal_indicator",
        required=True,
        metavar="OFFERING:ACCOUNT:PROVIDER",
    )
    _option(with_saml, "duration_seconds", type=int, metavar="N")
    _output(with_saml)
    with_saml.set_defaults(func=run, call=_assume_role_with_saml)

    authorization = operations.add_parser(
        "object-store-authorization",
        parents=[common],
        help="get the SigV4 Authorization value for an object storage request",
    )
    _option(authorization, "x_amz_date", required=True, metavar="YYYYMMDDTHHMMSSZ")
    _option(authorization, "x_amz_content_sha256", required=True, metavar="HASH")
    _option(authorization, "url", required=True, metavar="URL")
    _option(authorization, "method", required=True, metavar="METHOD")
    _option(authorization, "region", metavar="R", help="default kr-west1")
    _option(authorization, "service", metavar="S", help="default s3")
    authorization.set_defaults(
        func=run, call=_object_store_authorization, output="json"
    )


# -- the operations -----------------------------------------------------------


def _assume_role(client: Any, args: argparse.Namespace) -> Any:
    return client.assume_role(
        args.role_indicator, args.role_session_name, args.duration_seconds
    )


def _assume_role_with_saml(client: Any, args: argparse.Namespace) -> Any:
    return client.assume_role_with_saml(
        args.role_indicator,
        args.principal_indicator,
        _read_assertion(args.saml_assertion),
        args.duration_seconds,
    )


def _object_store_authorization(client: Any, args: argparse.Namespace) -> Any:
    return {
        "Authorization": client.object_store_authorization(
            args.method,
            args.url,
            args.x_amz_date,
            args.x_amz_content_sha256,
            args.region,
            args.service,
        )
    }


class UsageError(Exception):
    """Bad input found before any call; exit status 2."""


def _read_assertion(value: str) -> str:
    if not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise UsageError(
            f"--saml-assertion: unable to read {str(path)!r}: {exc.strerror}"
        ) from None


# -- running ------------------------------------------------------------------


def _credentials(args: argparse.Namespace) -> Any:
    from signproxy.sts import ScpCredentials

    try:
        if args.config is not None:
            return ScpCredentials.from_file(args.config)
        return ScpCredentials.from_env(os.environ)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _print_result(result: Any, output: str) -> None:
    if isinstance(result, dict):
        print(json.dumps(result, indent=2))
        return
    if output == "env":
        credentials = result.credentials.to_wire()
        for name, key in (
            ("AWS_ACCESS_KEY_ID", "access_key_id"),
            ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
            ("AWS_SESSION_TOKEN", "session_token"),
            ("AWS_CREDENTIAL_EXPIRATION", "expiration"),
        ):
            print(f"export {name}={shlex.quote(credentials[key])}")
        return
    print(json.dumps(result.to_wire(), indent=2))


def run(args: argparse.Namespace) -> int:
    from signproxy.logs import configure_logging
    from signproxy.sts import (
        StsError,
        StsRequestInvalid,
        SyncStsClient,
        resolve_endpoint,
    )

    prog = f"signproxy sts {args.operation}"
    try:
        configure_logging(args.log_level)
        endpoint = resolve_endpoint(args.endpoint)
        credentials = _credentials(args)
        client = SyncStsClient(
            endpoint,
            credentials,
            api_version=args.api_version,
            force_deprecated=args.force_deprecated,
            timeout=args.timeout,
            max_retries=args.max_retries,
        )
    except (UsageError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = args.call(client, args)
    except (UsageError, StsRequestInvalid) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StsError as exc:
        print(
            f"{prog}: {exc.code} (status {exc.status or 'none'}, request id "
            f"{exc.request_id or 'none'}): {exc}",
            file=sys.stderr,
        )
        return EXIT_SERVICE_ERROR
    finally:
        client.close()
    _print_result(result, args.output)
    return EXIT_OK
