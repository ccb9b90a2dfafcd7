"""aws-chunked framing: AWS's worked example, lengths, round trips, bad input."""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signproxy.chunked import (
    CHECKSUM_VALUE_LENGTHS,
    ChunkedFormatError,
    ChunkSigner,
    Resigner,
    StreamDecoder,
    StreamEncoder,
    checksum_trailer_lengths,
    chunk_string_to_sign,
    encoded_length,
    trailer_block,
)
from signproxy.sigv4 import Credentials, Signer

EXAMPLE = json.loads(
    (Path(__file__).parent / "vectors" / "s3" / "chunked-put-object.json").read_text()
)
DOC_CREDENTIALS = Credentials(
    "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)
DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
SIGNING_KEY = Signer("us-east-1").signing_key(DOC_CREDENTIALS, "20130524")
SEED = EXAMPLE["expected"]["signature"]


def example_signer() -> ChunkSigner:
    return ChunkSigner(SIGNING_KEY, DATE, SCOPE, SEED)


def feed_in_pieces(callable_, data: bytes, step: int) -> bytes:
    out = [callable_(data[i : i + step]) for i in range(0, len(data), step)]
    out.append(callable_(b""))
    return b"".join(out)


def decode_all(body: bytes, step: int = 1 << 20) -> tuple[bytes, StreamDecoder]:
    decoder = StreamDecoder()
    pieces = []
    for i in range(0, len(body), step):
        pieces += decoder.feed(body[i : i + step])
    decoder.finish()
    return b"".join(pieces), decoder


# --- AWS's published example ---------------------------------------------


def test_example_chunk_strings_to_sign_and_signatures() -> None:
    previous = SEED
    signer = example_signer()
    for chunk in EXAMPLE["expected"]["chunks"]:
        data = chunk["fill"].encode() * chunk["size"]
        expected_sts = "\n".join(chunk["string_to_sign"])
        assert (
            chunk_string_to_sign(
                DATE, SCOPE, previous, hashlib.sha256(data).hexdigest()
            )
            == expected_sts
        )
        assert signer.sign_chunk(data) == chunk["signature"]
        previous = chunk["signature"]


@pytest.mark.parametrize("step", [66560, 65536, 1000, 7])
def test_example_body_encodes_to_documented_length(step: int) -> None:
    encoder = StreamEncoder(EXAMPLE["chunk_size"], example_signer())
    body = feed_in_pieces(encoder, b"a" * EXAMPLE["decoded_length"], step)
    assert len(body) == EXAMPLE["encoded_length"]
    assert (
        encoded_length(EXAMPLE["decoded_length"], EXAMPLE["chunk_size"], signed=True)
        == EXAMPLE["encoded_length"]
    )
    signatures = [c["signature"] for c in EXAMPLE["expected"]["chunks"]]
    assert body.startswith(f"10000;chunk-signature={signatures[0]}\r\n".encode())
    assert f"\r\n400;chunk-signature={signatures[1]}\r\n".encode() in body
    assert body.endswith(f"\r\n0;chunk-signature={signatures[2]}\r\n\r\n".encode())


# --- lengths -----------------------------------------------------------------

TRAILER_NAMES = st.lists(st.sampled_from(sorted(CHECKSUM_VALUE_LENGTHS)), max_size=2)


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(0, 5000),
    chunk_size=st.integers(1, 700),
    signed=st.booleans(),
    names=TRAILER_NAMES,
    step=st.integers(1, 3000),
)
def test_encoded_length_matches_output(
    length: int, chunk_size: int, signed: bool, names: list[str], step: int
) -> None:
    names = list(dict.fromkeys(names))
    encoder = StreamEncoder(chunk_size, example_signer() if signed else None, names)
    encoder.set_trailers([(n, "A" * CHECKSUM_VALUE_LENGTHS[n]) for n in names])
    data = bytes(range(256)) * (length // 256) + bytes(length % 256)
    body = feed_in_pieces(encoder, data, step)
    trailer = checksum_trailer_lengths(names)
    assert len(body) == encoded_length(
        length, chunk_size, signed=signed, trailer=trailer
    )

    decoded, decoder = decode_all(body, step)
    assert decoded == data
    assert decoder.trailers == [(n, "A" * CHECKSUM_VALUE_LENGTHS[n]) for n in names]
    assert (decoder.trailer_signature is not None) == (signed and bool(names))


def test_encoded_length_rejects_nonsense() -> None:
    with pytest.raises(ChunkedFormatError, match="decoded length must be >= 0, got -1"):
        encoded_length(-1, 10, signed=True)
    with pytest.raises(ChunkedFormatError, match="chunk size must be >= 1, got 0"):
        encoded_length(1, 0, signed=False)
    with pytest.raises(ChunkedFormatError, match="trailer 'x-amz-meta-a' has no fixed"):
        checksum_trailer_lengths(["x-amz-meta-a"])


# --- trailers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x-amz-checksum-crc32", zlib.crc32(b"hello world").to_bytes(4, "big")),
        ("x-amz-checksum-sha1", hashlib.sha1(b"hello world").digest()),  # noqa: S324
        ("x-amz-checksum-sha256", hashlib.sha256(b"hello world").digest()),
    ],
)
def test_checksum_computed_inside_the_encoder(name: str, expected: bytes) -> None:
    encoder = StreamEncoder(4, None, [name])
    body = feed_in_pieces(encoder, b"hello world", 3)
    _, decoder = decode_all(body)
    assert decoder.trailers == [(name, base64.b64encode(expected).decode())]


def test_signed_trailer_signature_chains_from_final_chunk() -> None:
    signer = example_signer()
    encoder = StreamEncoder(5, signer, ["x-amz-checksum-crc32"])
    body = feed_in_pieces(encoder, b"0123456789ab", 4)
    _, decoder = decode_all(body)

    replay = example_signer()
    for piece in (b"01234", b"56789", b"ab", b""):
        replay.sign_chunk(piece)
    expected = replay.sign_trailer(trailer_block(decoder.trailers))
    assert decoder.trailer_signature == expected
    assert trailer_block(decoder.trailers).endswith(b"\n")


def test_trailer_values_are_checked() -> None:
    encoder = StreamEncoder(5, None, ["x-amz-checksum-crc32c"])
    with pytest.raises(ChunkedFormatError, match="has 3 characters, want 8"):
        encoder.set_trailers([("x-amz-checksum-crc32c", "abc")])
    with pytest.raises(
        ChunkedFormatError, match="'x-amz-checksum-sha1' was not declared"
    ):
        encoder.set_trailers([("x-amz-checksum-sha1", "A" * 28)])
    with pytest.raises(ChunkedFormatError, match="cannot compute trailer"):
        encoder(b"data")


def test_encoder_refuses_data_after_the_end() -> None:
    encoder = StreamEncoder(5, None)
    encoder(b"")
    assert encoder(b"") == b""
    with pytest.raises(ChunkedFormatError, match="data after the end"):
        encoder(b"x")


# --- decoder: malformed input ------------------------------------------------

SIG = "0" * 64


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # sizes
        (b"zz\r\n", "malformed chunk size b'zz'"),
        (b"-5\r\n", "malformed chunk size b'-5'"),
        (b"\r\n", "malformed chunk size b''"),
        (b"11111111111111111\r\n", "malformed chunk size"),
        (b"ffffffffffff\r\n", "exceeds the limit"),
        (b" 5\r\n", "malformed chunk size"),
        # headers
        (b"5" * 5000, "chunk header longer than 4096 bytes"),
        (b"5;chunk-signature=abc\r\n", "malformed chunk extension"),
        (b"5;foo=bar\r\n", "malformed chunk extension"),
        # data framing
        (b"3\r\nabcXY", "chunk data is not followed by CRLF"),
        # trailers
        (b"0\r\nno-colon\r\n\r\n", "malformed trailer line 'no-colon'"),
        (b"0\r\nbad name:v\r\n\r\n", "malformed trailer line"),
        (b"0\r\nx-amz-trailer-signature:xyz\r\n\r\n", "malformed x-amz-trailer-sig"),
        (b"0\r\nx:" + b"v" * 20000 + b"\r\n", "trailer longer than 16384 bytes"),
        (b"0\r\nx:\xff\r\n\r\n", "trailer line is not ASCII"),
        # after the end
        (b"0\r\n\r\nextra", "unexpected byte"),
    ],
)
def test_decoder_rejects_malformed(body: bytes, message: str) -> None:
    decoder = StreamDecoder()
    with pytest.raises(ChunkedFormatError, match=message):
        decoder.feed(body)


@pytest.mark.parametrize(
    "body",
    [b"", b"5\r\nab", b"5\r\nabcde", b"5\r\nabcde\r\n", b"0\r\n", b"0\r\nx:1\r\n"],
)
def test_decoder_reports_truncation(body: bytes) -> None:
    decoder = StreamDecoder()
    decoder.feed(body)
    with pytest.raises(ChunkedFormatError, match="truncated aws-chunked body"):
        decoder.finish()


def test_decoder_memory_is_bounded_by_limits() -> None:
    decoder = StreamDecoder()
    # a 64 MiB chunk fed in 1 MiB pieces never accumulates in the decoder
    decoder.feed(b"4000000\r\n")
    for _ in range(64):
        pieces = decoder.feed(b"x" * (1 << 20))
        assert sum(map(len, pieces)) == 1 << 20
        assert len(decoder._buffer) == 0
    decoder.feed(b"\r\n0\r\n\r\n")
    decoder.finish()
    assert decoder.decoded_length == 64 << 20


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(1, 50), max_size=20))
def test_decoder_never_hangs_on_garbage(data: bytes, cuts: list[int]) -> None:
    decoder = StreamDecoder(max_chunk_header=64, max_trailer=256)
    try:
        start = 0
        for cut in [*cuts, len(data)]:
            decoder.feed(data[start : start + cut])
            start += cut
        decoder.finish()
    except ChunkedFormatError:
        return
    assert decoder.done


# --- Resigner ----------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    length=st.integers(0, 4000),
    client_chunk=st.integers(1, 900),
    chunk_size=st.integers(1, 900),
    client_signed=st.booleans(),
    signed=st.booleans(),
    with_crc=st.booleans(),
    step=st.integers(1, 2000),
)
def test_resigner_length_is_known_up_front(
    length: int,
    client_chunk: int,
    chunk_size: int,
    client_signed: bool,
    signed: bool,
    with_crc: bool,
    step: int,
) -> None:
    names = ["x-amz-checksum-crc32"] if with_crc else []
    data = (b"payload-" * (length // 8 + 1))[:length]
    client = StreamEncoder(
        client_chunk, example_signer() if client_signed else None, names
    )
    client_body = feed_in_pieces(client, data, 4096)

    resigner = Resigner(
        chunk_size,
        ChunkSigner(SIGNING_KEY, DATE, SCOPE, "1" * 64) if signed else None,
        names,
        expected_length=length,
    )
    out = feed_in_pieces(resigner, client_body, step)
    assert len(out) == encoded_length(
        length, chunk_size, signed=signed, trailer=checksum_trailer_lengths(names)
    )
    decoded, decoder = decode_all(out)
    assert decoded == data
    if with_crc:
        crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        assert decoder.trailers == [("x-amz-checksum-crc32", crc)]


def test_resigner_checks_the_declared_length() -> None:
    client_body = feed_in_pieces(StreamEncoder(4, None), b"123456", 100)
    with pytest.raises(ChunkedFormatError, match="says 7"):
        feed_in_pieces(Resigner(4, None, expected_length=7), client_body, 100)
    with pytest.raises(ChunkedFormatError, match="longer than x-amz-decoded-content"):
        feed_in_pieces(Resigner(4, None, expected_length=5), client_body, 100)


def test_resigner_refuses_undeclared_trailers() -> None:
    client = StreamEncoder(4, None, ["x-amz-checksum-crc32"])
    client_body = feed_in_pieces(client, b"123456", 100)
    with pytest.raises(ChunkedFormatError, match="not declared in x-amz-trailer"):
        feed_in_pieces(Resigner(4, None), client_body, 100)


def test_chunk_signer_repr_hides_key() -> None:
    assert SIGNING_KEY.hex() not in repr(example_signer())
    assert "ChunkSigner" in repr(example_signer())


# --- public per-chunk hooks ------------------------------------------------


class RecordingDecoder(StreamDecoder):
    """Records what the hooks see; `stop_at` raises at that chunk's end."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        self.events: list[tuple[str, int, str | None]] = []
        self.data = bytearray()
        self.stop_at = stop_at

    def chunk_started(self, size: int, signature: str | None) -> None:
        self.events.append(("started", size, signature))

    def chunk_data(self, piece: bytes) -> None:
        self.data += piece

    def chunk_ended(self, size: int, signature: str | None) -> None:
        self.events.append(("ended", size, signature))
        if self.stop_at is not None and len(self.events) // 2 == self.stop_at:
            raise ChunkedFormatError(f"stopped at chunk {self.stop_at}")


def test_hooks_see_every_chunk_its_signature_and_data_in_any_feed_size() -> None:
    data = bytes(range(256)) * 100  # 25600 bytes: chunks of 10000, 10000, 5600
    body = feed_in_pieces(StreamEncoder(10000, example_signer()), data, 4096)
    replay = example_signer()
    signatures = [replay.sign_chunk(data[i : i + 10000]) for i in (0, 10000, 20000)]
    signatures.append(replay.sign_chunk(b""))
    for step in (1, 7, 10002, len(body)):
        decoder = RecordingDecoder()
        decoded = b"".join(
            b"".join(decoder.feed(body[i : i + step]))
            for i in range(0, len(body), step)
        )
        decoder.finish()
        assert decoded == bytes(decoder.data) == data
        sizes = [10000, 10000, 5600, 0]
        assert decoder.events == [
            event
            for size, signature in zip(sizes, signatures, strict=True)
            for event in (("started", size, signature), ("ended", size, signature))
        ]


def test_hooks_see_unsigned_chunks_as_none() -> None:
    decoder = RecordingDecoder()
    assert decoder.feed(b"3\r\nabc\r\n0\r\n\r\n") == [b"abc"]
    assert decoder.events == [
        ("started", 3, None),
        ("ended", 3, None),
        ("started", 0, None),
        ("ended", 0, None),
    ]


def test_a_hook_raising_stops_the_body() -> None:
    body = b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"
    decoder = RecordingDecoder(stop_at=1)
    with pytest.raises(ChunkedFormatError, match=r"stopped at chunk 1"):
        decoder.feed(body)
    assert not decoder.done
