"""Which payload hash a request is signed with, and how its body flows.

The decision is made from the request's headers alone, before any body byte
has arrived, because a body that streams must be signed before its headers
go upstream.  `decide()` is a pure function of the headers, the payload
policy (`--payload`), the hash limit and whether the signer can stream (give
a signing key for aws-chunked chunk signatures); it returns a `PayloadPlan`.

In order:

* the client sent aws-chunked with STREAMING-UNSIGNED-PAYLOAD-TRAILER: only
  the seed (the request's signature) changes; the body and its checksum
  trailer pass through;
* the client sent aws-chunked with signed chunks (dummy key): the chunk
  signatures are rewritten (local signer only);
* `--payload unsigned`: UNSIGNED-PAYLOAD;
* no body: the SHA-256 of nothing;
* the client sent a real hex SHA-256: reused (the store checks it), the body
  streams;
* a body up to the hash limit, or of unknown length: buffered, hashed, and
  signed once it has arrived;
* a larger body with the local signer: streamed as signed aws-chunked;
* a larger body with the remote signer: UNSIGNED-PAYLOAD, unless
  `--payload sign` refuses it.

A body of unknown length (`Transfer-Encoding: chunked` without aws-chunked)
must be buffered to learn the length S3 requires; the caller refuses it with
411 once it proves larger than the hash limit.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from signproxy import errors, sigv4

POLICIES = ("auto", "sign", "unsigned")
HEX_SHA256 = re.compile(r"[0-9a-f]{64}")

# Bodies at least this large are hashed in a worker thread, so the event
# loop keeps serving other connections meanwhile.
THREAD_HASH_THRESHOLD = 1024 * 1024


class Body(enum.Enum):
    """How the body travels from client to store."""

    NONE = "none"  # there is no body
    BUFFER = "buffer"  # wait for all of it, hash it, then sign
    STREAM = "stream"  # stream it through unchanged
    ENCODE = "encode"  # stream it as signed aws-chunked (chunked.StreamEncoder)
    RESIGN = "resign"  # stream the client's aws-chunked, chunk signatures rewritten


@dataclass(frozen=True, slots=True)
class BodyInfo:
    """What the request's headers say about its body."""

    method: str
    content_length: int | None  # None: unknown (Transfer-Encoding: chunked)
    client_sha256: str | None = None  # x-amz-content-sha256 as the client sent it
    aws_chunked: bool = False  # Content-Encoding includes aws-chunked
    decoded_length: int | None = None  # x-amz-decoded-content-length
    trailer: tuple[str, ...] = ()  # x-amz-trailer names


@dataclass(frozen=True, slots=True)
class PayloadPlan:
    """The outcome of `decide()`.

    `payload_hash` is None when the body must be buffered and hashed first
    (`Body.BUFFER`); then the request is signed once the body is in.
    Otherwise the request is signed as soon as its headers arrive.
    """

    mode: str  # metrics label: empty, client_hash, hashed, unsigned, chunked_*
    body: Body
    payload_hash: str | None
    decoded_length: int | None = None  # the length of the object data

    @property
    def sign_early(self) -> bool:
        return self.payload_hash is not None


EMPTY = PayloadPlan("empty", Body.NONE, sigv4.EMPTY_SHA256)


def decide(
    info: BodyInfo, policy: str, hash_limit: int, can_stream: bool
) -> PayloadPlan:
    """Choose the payload hash and body flow; raises errors.S3Error to refuse."""
    if policy not in POLICIES:
        raise ValueError(f"unknown payload policy {policy!r}")
    declared = info.client_sha256 or ""
    if info.aws_chunked or declared.startswith("STREAMING-"):
        return _client_chunked(info, declared, policy, can_stream)

    length = info.content_length
    if policy == "unsigned":
        body = Body.NONE if length == 0 else Body.STREAM
        return PayloadPlan("unsigned", body, sigv4.UNSIGNED_PAYLOAD, length)
    if length == 0:
        return EMPTY
    if HEX_SHA256.fullmatch(declared):
        return PayloadPlan("client_hash", Body.STREAM, declared, length)
    if length is None or length <= hash_limit:
        return PayloadPlan("hashed", Body.BUFFER, None, length)
    if can_stream:
        return PayloadPlan(
            "chunked_signed", Body.ENCODE, sigv4.STREAMING_SIGNED, length
        )
    if policy == "auto":
        return PayloadPlan("unsigned", Body.STREAM, sigv4.UNSIGNED_PAYLOAD, length)
    raise errors.unsigned_payload_refused(
        f"a {length}-byte body is larger than the hash limit ({hash_limit} "
        "bytes) and the signer cannot sign aws-chunked uploads"
    )


def _client_chunked(
    info: BodyInfo, declared: str, policy: str, can_stream: bool
) -> PayloadPlan:
    """The client already frames its body as aws-chunked.

    The plan's payload hash is what is forwarded: the client's own streaming
    constant, or the signed-trailer variant when `--payload sign` turns an
    unsigned-trailer body into a signed one.
    """
    if not info.aws_chunked and info.decoded_length is None:
        raise errors.bad_request(
            "InvalidRequest",
            f"x-amz-content-sha256 {declared!r} needs Content-Encoding: aws-chunked "
            "or x-amz-decoded-content-length",
        )
    if info.decoded_length is None:
        raise errors.bad_request(
            "MissingContentLength",
            "an aws-chunked upload needs x-amz-decoded-content-length",
        )
    if declared == sigv4.STREAMING_UNSIGNED_TRAILER and policy != "sign":
        # The chunks carry no signatures; only the seed (the request's own
        # signature) changes, and the checksum trailer guards the data.
        return PayloadPlan(
            "chunked_resigned", Body.STREAM, declared, info.decoded_length
        )
    if declared == sigv4.STREAMING_UNSIGNED_TRAILER:
        if not can_stream:
            raise errors.unsigned_payload_refused(
                f"the client sends {declared} and only the local signer can "
                "sign its chunks"
            )
        return PayloadPlan(
            "chunked_resigned",
            Body.RESIGN,
            sigv4.STREAMING_SIGNED_TRAILER,
            info.decoded_length,
        )
    if declared in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER):
        if not can_stream:
            raise errors.S3Error(
                501,
                "NotImplemented",
                f"the client signs its chunks ({declared}); rewriting chunk "
                "signatures needs the local signer, which is not available",
            )
        return PayloadPlan(
            "chunked_resigned", Body.RESIGN, declared, info.decoded_length
        )
    raise errors.bad_request(
        "InvalidRequest",
        f"unsupported x-amz-content-sha256 {declared[:80]!r} for an aws-chunked body",
    )


# --- reading the headers ----------------------------------------------------


def body_info(method: str, fields: list[tuple[bytes, bytes]] | tuple) -> BodyInfo:
    """BodyInfo from raw header fields ((name, value) bytes, as on the wire)."""
    content_length: int | None = 0
    declared: str | None = None
    encodings: list[str] = []
    decoded: int | None = None
    trailer: tuple[str, ...] = ()
    chunked_transfer = False
    for raw_name, raw_value in fields:
        name = raw_name.lower()
        if name == b"content-length":
            content_length = _length(raw_value, "Content-Length")
        elif name == b"transfer-encoding":
            chunked_transfer = chunked_transfer or b"chunked" in raw_value.lower()
        elif name == b"x-amz-content-sha256":
            declared = raw_value.decode("latin-1").strip()
        elif name == b"content-encoding":
            encodings += [e.strip() for e in raw_value.decode("latin-1").split(",")]
        elif name == b"x-amz-decoded-content-length":
            decoded = _length(raw_value, "x-amz-decoded-content-length")
        elif name == b"x-amz-trailer":
            trailer += tuple(
                t.strip().lower() for t in raw_value.decode("latin-1").split(",")
            )
    if chunked_transfer:
        content_length = None
    return BodyInfo(
        method=method,
        content_length=content_length,
        client_sha256=declared,
        aws_chunked="aws-chunked" in (e.lower() for e in encodings),
        decoded_length=decoded,
        trailer=tuple(t for t in trailer if t),
    )


def _length(raw: bytes, header: str) -> int:
    text = raw.strip()
    if not text.isdigit():
        raise errors.bad_request(
            "InvalidArgument", f"{header} must be a number, got {raw[:40]!r}"
        )
    return int(text)


# --- hashing buffered bodies --------------------------------------------------


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


BodyStream = Callable[[bytes], bytes]
