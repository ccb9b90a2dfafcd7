"""Client authentication: verify the incoming request's own SigV4 signature.

Without it, anyone who can reach the proxy gets requests signed with the
proxy's credentials.  With client keys configured (`--client-key`,
`--client-keys-file`), a request must carry a valid SigV4 signature made with
one of those keys, either in an Authorization header or as a presigned URL,
before the proxy strips it and signs for the store.  The answers mirror S3's:

* no signature at all: 403 AccessDenied;
* an access key the proxy does not know: 403 InvalidAccessKeyId;
* a signature that does not match: 403 SignatureDoesNotMatch;
* an x-amz-date more than 15 minutes from the proxy's clock: 403
  RequestTimeTooSkewed;
* a presigned URL past its X-Amz-Expires: 403 AccessDenied "Request has
  expired".  Within its validity a presigned URL may be used again (that is
  S3's semantics: it is a bearer token until it expires).

A client's signed aws-chunked body (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) is
covered twice: the seed signature here, each chunk signature by
`VerifyingDecoder` while the body streams.

Pure: no I/O besides reading the keys file at start-up, and the time is an
argument.  Built from `signproxy.sigv4`'s canonical forms and key derivation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

from signproxy import chunked, errors, sigv4

logger = logging.getLogger(__name__)

MAX_CLOCK_SKEW = timedelta(minutes=15)  # what S3 allows
SECRET_ENV_PREFIX = "SIGNPROXY_CLIENT_SECRET_"  # noqa: S105 - a name prefix
_ACCESS_KEY = re.compile(r"[A-Za-z0-9_]{3,128}")
_SCOPE_TERMINATOR = "aws4_request"
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_MAX_SIGNERS = 16  # (region, service) pairs whose derived keys are cached


class ClientAuthError(errors.S3Error):
    """A request whose client signature is missing, wrong or stale (S3 XML 403)."""


def access_denied(message: str) -> ClientAuthError:
    return ClientAuthError(403, "AccessDenied", message)


def invalid_access_key(access_key: str) -> ClientAuthError:
    return ClientAuthError(
        403,
        "InvalidAccessKeyId",
        f"The access key id {access_key[:40]!r} is not one of this proxy's client keys",
    )


def signature_mismatch() -> ClientAuthError:
    return ClientAuthError(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you "
        "provided. Check your key and signing method.",
    )


def time_too_skewed(amz_date: str) -> ClientAuthError:
    return ClientAuthError(
        403,
        "RequestTimeTooSkewed",
        f"The difference between the request time {amz_date!r} and the "
        "proxy's time is more than 15 minutes",
    )


def request_expired() -> ClientAuthError:
    return ClientAuthError(403, "AccessDenied", "Request has expired")


def malformed(code: str, message: str) -> ClientAuthError:
    # S3 answers malformed authorization with 400; a refused request either way.
    return ClientAuthError(400, code, message)


# --- the keys ---------------------------------------------------------------


@dataclass(frozen=True)
class ClientKeys:
    """Access key -> secret key of the clients allowed to use the proxy."""

    secrets: Mapping[str, str] = field(repr=False)

    def __repr__(self) -> str:
        return f"ClientKeys({sorted(self.secrets)!r})"

    def __len__(self) -> int:
        return len(self.secrets)

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def secret(self, access_key: str) -> str | None:
        return self.secrets.get(access_key)


def secret_env_name(access_key: str) -> str:
    return SECRET_ENV_PREFIX + access_key


def load_client_keys(
    access_keys: Iterable[str] = (),
    keys_file: Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> ClientKeys:
    """The client keys from `--client-keys-file` and `--client-key` + env.

    Each `--client-key` takes its secret from SIGNPROXY_CLIENT_SECRET_<KEY>,
    or from the keys file if it is listed there.  Raises ValueError naming
    the option, the key or the file (never a secret).
    """
    found: dict[str, str] = {}
    if keys_file is not None:
        found.update(read_keys_file(keys_file))
    for access_key in access_keys:
        check_access_key(access_key, "--client-key")
        secret = environ.get(secret_env_name(access_key))
        if secret:
            found[access_key] = secret
        elif access_key not in found:
            raise ValueError(
                f"--client-key: no secret for {access_key!r}: set "
                f"{secret_env_name(access_key)} or list it in --client-keys-file"
            )
    return ClientKeys(found)


def check_access_key(access_key: str, label: str) -> None:
    if not _ACCESS_KEY.fullmatch(access_key):
        raise ValueError(
            f"{label}: invalid access key {access_key[:40]!r} (3 to 128 letters, "
            "digits or '_')"
        )


def read_keys_file(path: Path) -> dict[str, str]:
    """`{access_key: secret}` from a TOML or JSON file.

    The keys may sit at the top level or under a `client_keys` table.
    """
    label = f"--client-keys-file {str(path)!r}"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{label}: cannot read it ({error.strerror})") from None
    try:
        data = json.loads(text) if _looks_like_json(path, text) else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        # The parsers' messages quote the line; a secret may be on it.
        kind = type(error).__name__
        raise ValueError(f"{label}: not valid TOML or JSON ({kind})") from None
    if isinstance(data, dict) and isinstance(data.get("client_keys"), dict):
        data = data["client_keys"]
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{label}: want a table of access key = secret key")
    keys: dict[str, str] = {}
    for access_key, secret in data.items():
        check_access_key(str(access_key), label)
        if not isinstance(secret, str) or not secret:
            raise ValueError(
                f"{label}: the secret of {access_key!r} must be a non-empty string"
            )
        keys[access_key] = secret
    return keys


def _looks_like_json(path: Path, text: str) -> bool:
    return path.suffix.lower() == ".json" or text.lstrip().startswith("{")


# --- what a verified request gives --------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedClient:
    """Whose signature a request carries, and what it needs to check chunks."""

    access_key: str
    presigned: bool
    payload_hash: str
    amz_date: str
    scope: str
    signature: str = field(repr=False)
    signing_key: bytes = field(repr=False)

    def chunk_signer(self) -> chunked.ChunkSigner:
        """Recomputes the client's chunk signatures, seeded by its signature."""
        return chunked.ChunkSigner(
            self.signing_key, self.amz_date, self.scope, self.signature
        )


@dataclass(frozen=True, slots=True)
class _Claim:
    """The signature parameters a request claims, from a header or the query."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str
    payload_hash: str
    query: str  # what the canonical query is built from
    presigned: bool
    expires: int | None = None

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{_SCOPE_TERMINATOR}"


# --- the verifier -----------------------------------------------------------


class ClientVerifier:
    """Checks SigV4 signatures made with the proxy's client keys."""

    def __init__(
        self, keys: ClientKeys, *, max_skew: timedelta = MAX_CLOCK_SKEW
    ) -> None:
        if not keys:
            raise ValueError("ClientVerifier needs at least one client key")
        self.keys = keys
        self.max_skew = max_skew
        self._signers: dict[tuple[str, str], sigv4.Signer] = {}

    def __repr__(self) -> str:
        return f"ClientVerifier({len(self.keys)} key(s))"

    def verify(
        self,
        method: str,
        path: str,
        query: str,
        headers: Sequence[tuple[str, str]],
        now: datetime,
    ) -> VerifiedClient:
        """Verify a request as received; raises ClientAuthError.

        `path` and `query` are raw as received; `headers` are the received
        ones (including Host and the client's Authorization).
        """
        claim = self._claim(query, headers)
        secret = self.keys.secret(claim.access_key)
        if secret is None:
            raise invalid_access_key(claim.access_key)
        self._check_time(claim, now)
        canonical_request = self._canonical_request(method, path, claim, headers)
        digest = hashlib.sha256(canonical_request.encode()).hexdigest()
        string_to_sign = f"{sigv4.ALGORITHM}\n{claim.amz_date}\n{claim.scope}\n{digest}"
        key = self._signer(claim.region, claim.service).signing_key(
            sigv4.Credentials(claim.access_key, secret), claim.date
        )
        expected = hmac.digest(key, string_to_sign.encode(), "sha256").hex()
        if not hmac.compare_digest(expected, claim.signature):
            logger.debug(
                "client signature mismatch for %s; canonical request was:\n%s",
                claim.access_key,
                canonical_request,
            )
            raise signature_mismatch()
        return VerifiedClient(
            access_key=claim.access_key,
            presigned=claim.presigned,
            payload_hash=claim.payload_hash,
            amz_date=claim.amz_date,
            scope=claim.scope,
            signature=claim.signature,
            signing_key=key,
        )

    # -- parsing the claim --

    def _claim(self, query: str, headers: Sequence[tuple[str, str]]) -> _Claim:
        authorization = header_value(headers, "authorization")
        params = query_params(query)
        if authorization is not None:
            return _header_claim(authorization, query, headers)
        if "X-Amz-Signature" in params or "X-Amz-Credential" in params:
            return _query_claim(params, query, headers)
        if "Signature" in params and "AWSAccessKeyId" in params:
            raise access_denied(
                "signproxy authenticates clients with Signature Version 4 only; "
                "this presigned URL uses Signature Version 2"
            )
        raise access_denied(
            "Anonymous access is refused: sign the request with one of this "
            "proxy's client keys"
        )

    def _check_time(self, claim: _Claim, now: datetime) -> None:
        try:
            signed_at = sigv4.parse_amz_date(claim.amz_date)
        except sigv4.SigningError:
            raise malformed(
                "AuthorizationHeaderMalformed" if not claim.presigned else
                "AuthorizationQueryParametersError",
                f"X-Amz-Date {claim.amz_date[:40]!r} is not YYYYMMDDTHHMMSSZ",
            ) from None  # fmt: skip
        if claim.amz_date[:8] != claim.date:
            raise malformed(
                "AuthorizationHeaderMalformed",
                f"the credential scope date {claim.date!r} is not the date of "
                f"X-Amz-Date {claim.amz_date!r}",
            )
        if claim.presigned:
            assert claim.expires is not None
            if now > signed_at + timedelta(seconds=claim.expires):
                raise request_expired()
            if signed_at - now > self.max_skew:
                raise time_too_skewed(claim.amz_date)
            return
        if abs(now - signed_at) > self.max_skew:
            raise time_too_skewed(claim.amz_date)

    def _canonical_request(
        self,
        method: str,
        path: str,
        claim: _Claim,
        headers: Sequence[tuple[str, str]],
    ) -> str:
        try:
            canonical_path = sigv4.canonical_path(path)
            canonical_query = sigv4.canonical_query(claim.query)
        except sigv4.SigningError as error:
            raise malformed("InvalidRequest", str(error)) from None
        values = signed_header_values(headers, claim.signed_headers)
        block = "".join(f"{name}:{values[name]}\n" for name in claim.signed_headers)
        return (
            f"{method}\n{canonical_path}\n{canonical_query}\n{block}\n"
            f"{';'.join(claim.signed_headers)}\n{claim.payload_hash}"
        )

    def _signer(self, region: str, service: str) -> sigv4.Signer:
        signer = self._signers.get((region, service))
        if signer is None:
            try:
                signer = sigv4.Signer(region, service)
            except sigv4.SigningError as error:
                raise malformed("AuthorizationHeaderMalformed", str(error)) from None
            if len(self._signers) >= _MAX_SIGNERS:
                self._signers.pop(next(iter(self._signers)))
            self._signers[(region, service)] = signer
        return signer


# --- pure helpers -------------------------------------------------------------


def header_value(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    """The value of header `name` (lower case); repeats joined with ','."""
    found = [value for key, value in headers if key.lower() == name]
    if not found:
        return None
    return ",".join(found)


def query_params(query: str) -> dict[str, str]:
    """Decoded query parameters (the last of repeated names wins)."""
    params: dict[str, str] = {}
    for pair in query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            params[unquote(name)] = unquote(value)
    return params


def signed_header_values(
    headers: Sequence[tuple[str, str]], names: Sequence[str]
) -> dict[str, str]:
    """Canonical values of the signed headers: trimmed, spaces folded, joined.

    A signed header that the request does not carry cannot match: the client
    signed something else than what arrived.
    """
    wanted = set(names)
    values: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.lower()
        if lname in wanted:
            values.setdefault(lname, []).append(" ".join(value.split()))
    missing = [name for name in names if name not in values]
    if missing:
        logger.debug("signed header(s) missing from the request: %s", missing)
        raise signature_mismatch()
    return {name: ",".join(found) for name, found in values.items()}


def _parse_credential(credential: str, code: str) -> tuple[str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != _SCOPE_TERMINATOR or not all(parts[:4]):
        raise malformed(
            code,
            "the Credential must be ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request",
        )
    return parts[0], parts[1], parts[2], parts[3]


def _parse_signed_headers(value: str, code: str) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    if not value or any(not n or n != n.lower() for n in names) or "host" not in names:
        raise malformed(
            code,
            "SignedHeaders must be lower-case names separated by ';', including host",
        )
    if list(names) != sorted(names):
        raise malformed(code, "SignedHeaders must be sorted")
    return names


def _check_signature(signature: str, code: str) -> None:
    if not _SIGNATURE.fullmatch(signature):
        raise malformed(code, "the Signature must be 64 lower-case hex digits")


def _header_claim(
    authorization: str, query: str, headers: Sequence[tuple[str, str]]
) -> _Claim:
    code = "AuthorizationHeaderMalformed"
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != sigv4.ALGORITHM:
        if algorithm == "AWS":
            raise access_denied(
                "signproxy authenticates clients with Signature Version 4 only; "
                "this request uses Signature Version 2"
            )
        raise malformed(code, f"unsupported algorithm {algorithm[:40]!r}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, equals, value = part.strip().partition("=")
        if equals:
            fields[name] = value.strip()
    missing = [
        n for n in ("Credential", "SignedHeaders", "Signature") if n not in fields
    ]
    if missing:
        raise malformed(code, f"the Authorization header lacks {', '.join(missing)}")
    access_key, date, region, service = _parse_credential(fields["Credential"], code)
    signed_headers = _parse_signed_headers(fields["SignedHeaders"], code)
    _check_signature(fields["Signature"], code)
    amz_date = header_value(headers, "x-amz-date")
    if amz_date is None:
        raise access_denied("the request has no x-amz-date header")
    payload_hash = header_value(headers, "x-amz-content-sha256")
    if payload_hash is None:
        raise malformed(
            "InvalidRequest",
            "Missing required header for this request: x-amz-content-sha256",
        )
    return _Claim(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=signed_headers,
        signature=fields["Signature"],
        amz_date=amz_date.strip(),
        payload_hash=payload_hash.strip(),
        query=query,
        presigned=False,
    )


def _query_claim(
    params: Mapping[str, str], query: str, headers: Sequence[tuple[str, str]]
) -> _Claim:
    code = "AuthorizationQueryParametersError"
    needed = (
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-SignedHeaders",
        "X-Amz-Signature",
    )
    missing = [name for name in needed if name not in params]
    if missing:
        raise malformed(code, f"the presigned URL lacks {', '.join(missing)}")
    if params["X-Amz-Algorithm"] != sigv4.ALGORITHM:
        raise malformed(code, f"X-Amz-Algorithm must be {sigv4.ALGORITHM}")
    expires_text = params["X-Amz-Expires"]
    if not expires_text.isdigit() or not (
        1 <= int(expires_text) <= sigv4.MAX_PRESIGN_EXPIRES
    ):
        raise malformed(
            code,
            f"X-Amz-Expires must be a number of seconds in "
            f"1..{sigv4.MAX_PRESIGN_EXPIRES}",
        )
    access_key, date, region, service = _parse_credential(
        params["X-Amz-Credential"], code
    )
    signed_headers = _parse_signed_headers(params["X-Amz-SignedHeaders"], code)
    _check_signature(params["X-Amz-Signature"], code)
    # The canonical query is everything but the signature itself.
    unsigned_query = "&".join(
        pair
        for pair in query.split("&")
        if unquote(pair.partition("=")[0]) != "X-Amz-Signature"
    )
    payload_hash = header_value(headers, "x-amz-content-sha256")
    return _Claim(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=signed_headers,
        signature=params["X-Amz-Signature"],
        amz_date=params["X-Amz-Date"],
        payload_hash=(payload_hash or sigv4.UNSIGNED_PAYLOAD).strip(),
        query=unsigned_query,
        presigned=True,
        expires=int(expires_text),
    )


# --- chunk signatures of a client's signed aws-chunked body --------------------


class ChunkSignatureMismatch(chunked.ChunkedFormatError):
    """A chunk (or trailer) signature that the client's key did not make."""


class VerifyingDecoder(chunked.StreamDecoder):
    """A `chunked.StreamDecoder` that also checks every chunk signature.

    For STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER) bodies from an
    authenticated client: each chunk signature must chain from the client's
    seed signature, computed with the client key.  Raises
    ChunkSignatureMismatch (a ChunkedFormatError) at the first bad chunk;
    chunks before it may already have gone upstream, but the body never
    completes, so the store does not keep the object.

    It sees chunk boundaries through StreamDecoder's public hooks.
    """

    def __init__(self, client: VerifiedClient, **limits: int) -> None:
        super().__init__(**limits)
        self._key = client.signing_key
        self._amz_date = client.amz_date
        self._scope = client.scope
        self._previous = client.signature
        self._hash = hashlib.sha256()
        self.verified_chunks = 0

    def __repr__(self) -> str:
        return f"VerifyingDecoder(verified_chunks={self.verified_chunks})"

    def chunk_started(self, size: int, signature: str | None) -> None:
        if signature is None:
            raise ChunkSignatureMismatch(
                "a chunk of a signed aws-chunked body has no chunk-signature"
            )
        self._hash = hashlib.sha256()

    def chunk_data(self, piece: bytes) -> None:
        self._hash.update(piece)

    def chunk_ended(self, size: int, signature: str | None) -> None:
        string_to_sign = chunked.chunk_string_to_sign(
            self._amz_date, self._scope, self._previous, self._hash.hexdigest()
        )
        expected = hmac.digest(self._key, string_to_sign.encode(), "sha256").hex()
        if not hmac.compare_digest(expected, signature or ""):
            raise ChunkSignatureMismatch(
                f"chunk signature {self.verified_chunks + 1} does not match the "
                "client key"
            )
        self._previous = expected
        self.verified_chunks += 1

    def finish(self) -> None:
        super().finish()
        if self.trailers and self.trailer_signature is None:
            raise ChunkSignatureMismatch(
                "the trailer of a signed aws-chunked body has no "
                "x-amz-trailer-signature"
            )
        if self.trailer_signature is not None:
            signer = chunked.ChunkSigner(
                self._key, self._amz_date, self._scope, self._previous
            )
            expected = signer.sign_trailer(chunked.trailer_block(self.trailers))
            if not hmac.compare_digest(expected, self.trailer_signature):
                raise ChunkSignatureMismatch(
                    "the trailer signature does not match the client key"
                )
