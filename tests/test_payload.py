"""payload.decide: which payload hash each request gets and how its body flows."""

from __future__ import annotations

import pytest

from signproxy import errors, payload, sigv4
from signproxy.payload import Body, BodyInfo

MiB = 1024 * 1024
LIMIT = 8 * MiB
HEX = "ab" * 32


def info(length: int | None, **kwargs: object) -> BodyInfo:
    return BodyInfo(method="PUT", content_length=length, **kwargs)  # type: ignore[arg-type]


CHUNKED_UNSIGNED = {
    "client_sha256": sigv4.STREAMING_UNSIGNED_TRAILER,
    "aws_chunked": True,
    "decoded_length": 5 * MiB,
    "trailer": ("x-amz-checksum-crc32",),
}
CHUNKED_SIGNED = {
    "client_sha256": sigv4.STREAMING_SIGNED,
    "aws_chunked": True,
    "decoded_length": 5 * MiB,
}

# (case, body info, policy, can_stream) -> (mode, body flow, payload hash)
DECISIONS = [
    # no body
    ("empty GET", info(0), "auto", True, ("empty", Body.NONE, sigv4.EMPTY_SHA256)),
    ("empty, remote", info(0), "sign", False, ("empty", Body.NONE, sigv4.EMPTY_SHA256)),
    ("empty, unsigned policy", info(0), "unsigned", True,
     ("unsigned", Body.NONE, sigv4.UNSIGNED_PAYLOAD)),
    # the client's own hash
    ("client hex sha256", info(20 * MiB, client_sha256=HEX), "auto", False,
     ("client_hash", Body.STREAM, HEX)),
    ("upper-case hex is not trusted", info(100, client_sha256=HEX.upper()), "auto",
     True, ("hashed", Body.BUFFER, None)),
    ("client UNSIGNED-PAYLOAD, small: hashed anyway",
     info(100, client_sha256=sigv4.UNSIGNED_PAYLOAD), "auto", True,
     ("hashed", Body.BUFFER, None)),
    # small and unknown-length bodies are buffered
    ("small body", info(LIMIT), "auto", True, ("hashed", Body.BUFFER, None)),
    ("small body, remote, sign", info(100), "sign", False,
     ("hashed", Body.BUFFER, None)),
    ("unknown length", info(None), "auto", True, ("hashed", Body.BUFFER, None)),
    # large bodies
    ("large, local", info(LIMIT + 1), "auto", True,
     ("chunked_signed", Body.ENCODE, sigv4.STREAMING_SIGNED)),
    ("large, local, sign", info(LIMIT + 1), "sign", True,
     ("chunked_signed", Body.ENCODE, sigv4.STREAMING_SIGNED)),
    ("large, remote, auto", info(LIMIT + 1), "auto", False,
     ("unsigned", Body.STREAM, sigv4.UNSIGNED_PAYLOAD)),
    ("unsigned policy beats a client hash", info(10, client_sha256=HEX), "unsigned",
     True, ("unsigned", Body.STREAM, sigv4.UNSIGNED_PAYLOAD)),
    # the client's aws-chunked
    ("unsigned trailer passes", info(6 * MiB, **CHUNKED_UNSIGNED), "auto", False,
     ("chunked_resigned", Body.STREAM, sigv4.STREAMING_UNSIGNED_TRAILER)),
    ("unsigned trailer, unsigned policy", info(6 * MiB, **CHUNKED_UNSIGNED), "unsigned",
     True, ("chunked_resigned", Body.STREAM, sigv4.STREAMING_UNSIGNED_TRAILER)),
    ("unsigned trailer, sign policy: signed", info(6 * MiB, **CHUNKED_UNSIGNED), "sign",
     True, ("chunked_resigned", Body.RESIGN, sigv4.STREAMING_SIGNED_TRAILER)),
    ("signed chunks re-signed", info(6 * MiB, **CHUNKED_SIGNED), "auto", True,
     ("chunked_resigned", Body.RESIGN, sigv4.STREAMING_SIGNED)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "policy", "can_stream", "expected"),
    [case[1:] for case in DECISIONS],
    ids=[case[0] for case in DECISIONS],
)
def test_decide(body, policy, can_stream, expected):
    plan = payload.decide(body, policy, LIMIT, can_stream)
    assert (plan.mode, plan.body, plan.payload_hash) == expected
    assert plan.sign_early == (expected[2] is not None)


REFUSALS = [
    ("large, remote, sign", info(LIMIT + 1), "sign", False, 501,
     r"forbids UNSIGNED-PAYLOAD"),
    ("signed chunks, remote", info(6 * MiB, **CHUNKED_SIGNED), "auto", False, 501,
     r"needs the local signer"),
    ("unsigned trailer, remote, sign", info(6 * MiB, **CHUNKED_UNSIGNED), "sign", False,
     501, r"forbids UNSIGNED-PAYLOAD"),
    ("aws-chunked without decoded length",
     info(100, client_sha256=sigv4.STREAMING_SIGNED, aws_chunked=True), "auto", True,
     400, r"x-amz-decoded-content-length"),
    ("streaming constant without aws-chunked",
     info(100, client_sha256=sigv4.STREAMING_SIGNED), "auto", True, 400,
     r"Content-Encoding: aws-chunked"),
    ("unknown streaming variant",
     info(100, client_sha256="STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
          aws_chunked=True, decoded_length=10),
     "auto", True, 400, r"unsupported x-amz-content-sha256"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "policy", "can_stream", "status", "message"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_decide_refuses(body, policy, can_stream, status, message):
    with pytest.raises(errors.S3Error, match=message) as refused:
        payload.decide(body, policy, LIMIT, can_stream)
    assert refused.value.status == status


def test_decide_rejects_unknown_policy():
    with pytest.raises(ValueError, match=r"unknown payload policy 'maybe'"):
        payload.decide(info(0), "maybe", LIMIT, True)


def test_body_info_reads_raw_fields():
    fields = [
        (b"Host", b"example"),
        (b"Content-Length", b"1234"),
        (b"X-Amz-Content-SHA256", b"STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        (b"Content-Encoding", b"gzip, aws-chunked"),
        (b"x-amz-decoded-content-length", b"1000"),
        (b"X-Amz-Trailer", b"x-amz-checksum-CRC32"),
    ]
    assert payload.body_info("PUT", fields) == BodyInfo(
        method="PUT",
        content_length=1234,
        client_sha256="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        aws_chunked=True,
        decoded_length=1000,
        trailer=("x-amz-checksum-crc32",),
    )


def test_body_info_without_length_is_empty_and_chunked_transfer_unknown():
    assert payload.body_info("GET", [(b"host", b"h")]).content_length == 0
    chunked = [(b"transfer-encoding", b"chunked"), (b"content-length", b"5")]
    assert payload.body_info("PUT", chunked).content_length is None


def test_body_info_refuses_bad_length():
    with pytest.raises(errors.S3Error, match=r"Content-Length must be a number"):
        payload.body_info("PUT", [(b"content-length", b"12x")])


def test_sha256_hex():
    assert payload.sha256_hex(b"") == sigv4.EMPTY_SHA256
