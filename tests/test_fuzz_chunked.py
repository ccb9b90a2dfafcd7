"""Fuzz and property tests for the aws-chunked decoder, encoder and re-signer.

Hostile bodies (malformed sizes, oversized chunk headers, truncation, bad
trailers, random bytes, random mutations) must end in a clean
ChunkedFormatError, never another exception, never a hang (inputs are
bounded and every feed returns), and with the decoder's buffer bounded by its
line limits whatever the input.
"""

from __future__ import annotations

import contextlib
import re
import tracemalloc
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from signproxy import chunked, sigv4
from signproxy.chunked import (
    ChunkedFormatError,
    ChunkSigner,
    Resigner,
    StreamDecoder,
    StreamEncoder,
    encoded_length,
)
from signproxy.clientauth import ClientKeys, ClientVerifier, VerifyingDecoder

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
HEADER_LIMIT = 256
TRAILER_LIMIT = 512
CREDENTIALS = sigv4.Credentials("AKIDCHUNKFUZZ", "chunk-fuzz-secret")
NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)


def small_decoder() -> StreamDecoder:
    return StreamDecoder(
        max_chunk_header=HEADER_LIMIT, max_trailer=TRAILER_LIMIT, max_chunk_size=1 << 20
    )


def buffer_bound() -> int:
    return max(HEADER_LIMIT, TRAILER_LIMIT) + 2


def seed_signer() -> tuple[ChunkSigner, sigv4.SignedRequest]:
    signed = sigv4.Signer("us-east-1").sign(
        "PUT",
        "/b/k",
        "",
        [("host", "h"), ("x-amz-trailer", "x-amz-checksum-crc32")],
        sigv4.STREAMING_SIGNED_TRAILER,
        CREDENTIALS,
        NOW,
    )
    signer = ChunkSigner(
        signed.signing_key, signed.amz_date, signed.scope, signed.signature
    )
    return signer, signed


def encode(
    data: bytes, chunk_size: int, signed: bool, trailer: bool, step: int
) -> bytes:
    signer = seed_signer()[0] if signed else None
    names = ("x-amz-checksum-crc32",) if trailer else ()
    encoder = StreamEncoder(chunk_size, signer, names)
    out = [encoder(data[i : i + step]) for i in range(0, len(data), step)]
    out.append(encoder(b""))
    return b"".join(out)


def feed_all(decoder: StreamDecoder, body: bytes, step: int) -> bytes:
    """Decode `body` in `step` pieces, checking the buffer bound after each."""
    out = []
    for i in range(0, len(body), step):
        out += decoder.feed(body[i : i + step])
        assert len(decoder._buffer) <= max(buffer_bound(), step + 2)
    decoder.finish()
    return b"".join(out)


bodies = st.binary(max_size=3000)
steps = st.integers(min_value=1, max_value=700)
chunk_sizes = st.integers(min_value=1, max_value=1024)


@FUZZ
@given(bodies, chunk_sizes, st.booleans(), st.booleans(), steps, steps)
def test_encode_decode_round_trip_with_exact_length(
    data: bytes, chunk_size: int, signed: bool, trailer: bool, step: int, step2: int
) -> None:
    body = encode(data, chunk_size, signed, trailer, step)
    lengths = chunked.checksum_trailer_lengths(
        ("x-amz-checksum-crc32",) if trailer else ()
    )
    assert len(body) == encoded_length(
        len(data), chunk_size, signed=signed, trailer=lengths
    )
    decoder = small_decoder()
    assert feed_all(decoder, body, step2) == data
    assert decoder.done


@FUZZ
@given(st.binary(max_size=2000), steps)
@example(b"zz\r\n", 10)
@example(b"10000000000000000\r\n", 50)  # 17 hex digits
@example(b"fffffffff\r\n", 50)  # beyond max_chunk_size
@example(b"5;chunk-signature=abc\r\nhello\r\n", 5)
@example(b"3\r\nabcXY", 8)  # data not followed by CRLF
@example(b"0\r\n\xff\xfe:x\r\n\r\n", 4)  # non-ASCII trailer
@example(b"0\r\nno-colon-here\r\n\r\n", 4)
@example(b"0\r\n\r\ntrailing garbage", 3)
def test_random_bytes_decode_or_fail_cleanly(data: bytes, step: int) -> None:
    decoder = small_decoder()
    try:
        feed_all(decoder, data, step)
    except ChunkedFormatError:
        return
    assert decoder.done


@FUZZ
@given(st.integers(min_value=HEADER_LIMIT + 2, max_value=5000), steps)
def test_oversized_chunk_header_is_refused(length: int, step: int) -> None:
    # A header line may be HEADER_LIMIT long, plus the CR of its CRLF.
    header = b"1" + b";" * (length - 1)  # no CRLF in sight
    with pytest.raises(ChunkedFormatError, match="chunk header longer than"):
        feed_all(small_decoder(), header, step)


@FUZZ
@given(st.integers(min_value=TRAILER_LIMIT + 1, max_value=5000))
def test_oversized_trailer_is_refused(length: int) -> None:
    body = b"0\r\n" + b"x-amz-checksum-crc32:" + b"A" * length + b"\r\n\r\n"
    with pytest.raises(ChunkedFormatError, match="trailer longer than"):
        feed_all(small_decoder(), body, 97)


@FUZZ
@given(st.text("0123456789abcdefABCDEFxyz-+ ", min_size=1, max_size=20))
def test_chunk_sizes_are_strict_hex(size: str) -> None:
    body = size.encode() + b"\r\n\r\n"
    if re.fullmatch(r"0{1,16}", size):
        assert feed_all(small_decoder(), body, 64) == b""
        return
    with pytest.raises(
        ChunkedFormatError, match=r"malformed chunk size|truncated|exceeds|CRLF"
    ):
        feed_all(small_decoder(), body, 64)


@FUZZ
@given(bodies.filter(bool), chunk_sizes, st.booleans(), st.data())
def test_every_truncation_is_refused(
    data: bytes, chunk_size: int, signed: bool, draw: st.DataObject
) -> None:
    body = encode(data, chunk_size, signed, False, 4096)
    cut = draw.draw(st.integers(min_value=0, max_value=len(body) - 1))
    with pytest.raises(ChunkedFormatError, match=r"truncated|CRLF"):
        feed_all(small_decoder(), body[:cut], 333)


@FUZZ
@given(bodies, chunk_sizes, st.booleans(), st.data())
def test_mutated_body_decodes_or_fails_cleanly(
    data: bytes, chunk_size: int, signed: bool, draw: st.DataObject
) -> None:
    body = bytearray(encode(data, chunk_size, signed, True, 4096))
    index = draw.draw(st.integers(min_value=0, max_value=len(body) - 1))
    body[index] = draw.draw(st.integers(min_value=0, max_value=255))
    with contextlib.suppress(ChunkedFormatError):
        feed_all(small_decoder(), bytes(body), 211)


@FUZZ
@given(bodies, chunk_sizes, chunk_sizes, st.booleans(), steps)
def test_resigner_output_has_the_promised_length_and_payload(
    data: bytes, client_chunk: int, our_chunk: int, signed: bool, step: int
) -> None:
    client_body = encode(data, client_chunk, signed, True, 4096)
    signer = seed_signer()[0]
    resigner = Resigner(
        our_chunk, signer, ("x-amz-checksum-crc32",), expected_length=len(data)
    )
    out = [
        resigner(client_body[i : i + step]) for i in range(0, len(client_body), step)
    ]
    out.append(resigner(b""))
    body = b"".join(out)
    trailer = chunked.checksum_trailer_lengths(("x-amz-checksum-crc32",))
    assert len(body) == encoded_length(
        len(data), our_chunk, signed=True, trailer=trailer
    )
    assert feed_all(small_decoder(), body, 1000) == data


@FUZZ
@given(bodies, chunk_sizes, st.data())
def test_resigner_refuses_mutated_or_mislabelled_bodies_cleanly(
    data: bytes, chunk_size: int, draw: st.DataObject
) -> None:
    client_body = bytearray(encode(data, chunk_size, True, False, 4096))
    index = draw.draw(st.integers(min_value=0, max_value=len(client_body) - 1))
    client_body[index] ^= draw.draw(st.integers(min_value=1, max_value=255))
    claimed = len(data) + draw.draw(st.sampled_from([0, 0, 1, -1]))
    resigner = Resigner(64, seed_signer()[0], (), expected_length=max(claimed, 0))
    with contextlib.suppress(ChunkedFormatError):
        resigner(bytes(client_body))
        resigner(b"")


# --- chunk signatures of an authenticated client --------------------------------


def client_stream(data: bytes, chunk_size: int) -> tuple[bytes, VerifyingDecoder]:
    signed = seed_signer()[1]
    headers = [
        ("host", "h"),
        ("x-amz-trailer", "x-amz-checksum-crc32"),
        *signed.headers,
    ]
    verifier = ClientVerifier(
        ClientKeys({CREDENTIALS.access_key: CREDENTIALS.secret_key})
    )
    client = verifier.verify("PUT", "/b/k", "", headers, NOW)
    body = encode(data, chunk_size, True, True, 4096)
    decoder = VerifyingDecoder(
        client, max_chunk_header=HEADER_LIMIT, max_trailer=TRAILER_LIMIT
    )
    return body, decoder


@FUZZ
@given(bodies, chunk_sizes, steps)
def test_verified_stream_round_trips(data: bytes, chunk_size: int, step: int) -> None:
    body, decoder = client_stream(data, chunk_size)
    assert feed_all(decoder, body, step) == data
    assert decoder.verified_chunks == -(-len(data) // chunk_size) + 1


@FUZZ
@given(bodies, chunk_sizes, st.data())
def test_verified_stream_never_accepts_altered_bytes(
    data: bytes, chunk_size: int, draw: st.DataObject
) -> None:
    body, decoder = client_stream(data, chunk_size)
    altered = bytearray(body)
    index = draw.draw(st.integers(min_value=0, max_value=len(body) - 1))
    altered[index] ^= draw.draw(st.integers(min_value=1, max_value=255))
    try:
        decoded = feed_all(decoder, bytes(altered), 300)
    except ChunkedFormatError:
        return
    # Only a change that leaves the meaning intact may pass (e.g. the case of
    # a hex digit in a chunk size): the payload must be exactly the original.
    assert decoded == data


# --- memory stays bounded by the chunk size, whatever the body size -----------


def test_resigning_a_large_stream_keeps_memory_bounded() -> None:
    piece = bytes(range(256)) * 256  # 64 KiB
    total = 48 * 1024 * 1024
    signer = seed_signer()[0]
    encoder = StreamEncoder(64 * 1024, signer, ("x-amz-checksum-crc32",))
    resigner = Resigner(
        128 * 1024, seed_signer()[0], ("x-amz-checksum-crc32",), expected_length=total
    )
    decoder = small_decoder()
    decoded = 0
    tracemalloc.start()
    try:
        for _ in range(total // len(piece)):
            for out in decoder.feed(resigner(encoder(piece))):
                decoded += len(out)
        for out in decoder.feed(resigner(encoder(b""))):
            decoded += len(out)
        for out in decoder.feed(resigner(b"")):
            decoded += len(out)
        decoder.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded == total
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes for a {total} byte body"
