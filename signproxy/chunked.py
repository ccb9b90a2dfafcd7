"""aws-chunked framing: chunk and trailer signatures, encode, decode, re-sign.

An aws-chunked body is a series of chunks, each `hex(size)` plus, when
signed, `;chunk-signature=<64 hex>`, CRLF, the data and CRLF; then a final
zero-size chunk, optional trailer lines `name:value` CRLF (with
`x-amz-trailer-signature:<64 hex>` when signed) and a closing CRLF.  Each
chunk signature chains from the previous one, starting at the request's seed
signature (its Authorization header signature).

Like `sigv4`, nothing here does I/O or reads a clock.  Every streaming class
keeps memory bounded by the chunk size, whatever the size of the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import zlib
from collections.abc import Sequence

from signproxy.sigv4 import EMPTY_SHA256

CHUNK_ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"
TRAILER_ALGORITHM = "AWS4-HMAC-SHA256-TRAILER"
SIGNATURE_HEX_LENGTH = 64
TRAILER_SIGNATURE_NAME = "x-amz-trailer-signature"
_CHUNK_SIGNATURE_EXT = ";chunk-signature="
_CRLF = b"\r\n"

# Base64 lengths of x-amz-checksum-* values, fixed per algorithm: with them the
# encoded length of a body with checksum trailers is known before it is sent.
CHECKSUM_VALUE_LENGTHS = {
    "x-amz-checksum-crc32": 8,
    "x-amz-checksum-crc32c": 8,
    "x-amz-checksum-crc64nvme": 12,
    "x-amz-checksum-sha1": 28,
    "x-amz-checksum-sha256": 44,
}

_HEX_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
_TRAILER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_SIGNATURE = re.compile(rb"[0-9a-f]{64}")


class ChunkedFormatError(ValueError):
    """An aws-chunked body (or a trailer) that breaks the framing rules."""


# --- lengths ----------------------------------------------------------------


def _chunk_overhead(size: int, signed: bool) -> int:
    """Bytes a chunk of `size` adds besides its data: header line and CRLFs."""
    header = len(f"{size:x}")
    if signed:
        header += len(_CHUNK_SIGNATURE_EXT) + SIGNATURE_HEX_LENGTH
    return header + 2 + (2 if size else 0)


def encoded_length(
    decoded_length: int,
    chunk_size: int,
    *,
    signed: bool,
    trailer: Sequence[tuple[str, int]] = (),
) -> int:
    """The exact Content-Length of an aws-chunked body.

    `decoded_length` bytes cut into `chunk_size` pieces, the final zero-size
    chunk, and `trailer` given as (header name, value length) pairs.
    """
    if decoded_length < 0:
        raise ChunkedFormatError(f"decoded length must be >= 0, got {decoded_length}")
    if chunk_size < 1:
        raise ChunkedFormatError(f"chunk size must be >= 1, got {chunk_size}")
    full, rest = divmod(decoded_length, chunk_size)
    total = decoded_length + full * _chunk_overhead(chunk_size, signed)
    if rest:
        total += _chunk_overhead(rest, signed)
    total += _chunk_overhead(0, signed)
    for name, value_length in trailer:
        total += len(name) + 1 + value_length + 2
    if trailer and signed:
        total += len(TRAILER_SIGNATURE_NAME) + 1 + SIGNATURE_HEX_LENGTH + 2
    return total + 2  # the CRLF that closes the (possibly empty) trailer


def checksum_trailer_lengths(trailer_names: Sequence[str]) -> list[tuple[str, int]]:
    """(name, value length) pairs for checksum trailer names, for encoded_length."""
    pairs = []
    for name in trailer_names:
        lname = name.strip().lower()
        if lname not in CHECKSUM_VALUE_LENGTHS:
            raise ChunkedFormatError(
                f"trailer {name!r} has no fixed value length; known: "
                + ", ".join(sorted(CHECKSUM_VALUE_LENGTHS))
            )
        pairs.append((lname, CHECKSUM_VALUE_LENGTHS[lname]))
    return pairs


# --- signatures ---------------------------------------------------------------


def chunk_string_to_sign(
    amz_date: str, scope: str, previous_signature: str, chunk_sha256_hex: str
) -> str:
    """The string to sign for one chunk of a signed aws-chunked body."""
    return (
        f"{CHUNK_ALGORITHM}\n{amz_date}\n{scope}\n{previous_signature}\n"
        f"{EMPTY_SHA256}\n{chunk_sha256_hex}"
    )


def trailer_block(trailers: Sequence[tuple[str, str]]) -> bytes:
    """The trailer lines as the trailer signature covers them (LF-terminated)."""
    return "".join(f"{name}:{value}\n" for name, value in trailers).encode()


class ChunkSigner:
    """Signs successive chunks, each signature chained to the one before."""

    def __init__(
        self, signing_key: bytes, amz_date: str, scope: str, seed_signature: str
    ):
        self._key = signing_key
        self._chunk_prefix = f"{CHUNK_ALGORITHM}\n{amz_date}\n{scope}\n"
        self._trailer_prefix = f"{TRAILER_ALGORITHM}\n{amz_date}\n{scope}\n"
        self.previous_signature = seed_signature

    def __repr__(self) -> str:
        return "ChunkSigner(...)"

    def _sign(self, string_to_sign: str) -> str:
        signature = hmac.digest(self._key, string_to_sign.encode(), "sha256").hex()
        self.previous_signature = signature
        return signature

    def sign_chunk(self, data: bytes | memoryview) -> str:
        digest = hashlib.sha256(data).hexdigest()
        return self._sign(
            f"{self._chunk_prefix}{self.previous_signature}\n{EMPTY_SHA256}\n{digest}"
        )

    def sign_trailer(self, trailer_block: bytes) -> str:
        digest = hashlib.sha256(trailer_block).hexdigest()
        return self._sign(f"{self._trailer_prefix}{self.previous_signature}\n{digest}")


# --- checksums computed while streaming -------------------------------------


class _Checksum:
    """A running x-amz-checksum-* value for the algorithms the stdlib has."""

    def __init__(self, name: str):
        self.name = name
        self._crc = 0
        self._hash = None
        if name == "x-amz-checksum-sha1":
            self._hash = hashlib.sha1()  # noqa: S324 - S3 checksum, not security
        elif name == "x-amz-checksum-sha256":
            self._hash = hashlib.sha256()
        elif name != "x-amz-checksum-crc32":
            raise ChunkedFormatError(
                f"cannot compute trailer {name!r} here; supply its value with "
                "set_trailers()"
            )

    def update(self, data: bytes | memoryview) -> None:
        if self._hash is not None:
            self._hash.update(data)
        else:
            self._crc = zlib.crc32(data, self._crc)

    def value(self) -> str:
        raw = self._hash.digest() if self._hash else self._crc.to_bytes(4, "big")
        return base64.b64encode(raw).decode()


# --- encoding -------------------------------------------------------------


class StreamEncoder:
    """Raw bytes in, aws-chunked bytes out, in constant memory.

    Call it with successive pieces of the body and finally with b"" (the
    shape of a mitmproxy stream callable).  `signer=None` gives unsigned
    framing.  Trailer values come from `set_trailers()` before the final
    call; x-amz-checksum-crc32/-sha1/-sha256 are computed here if not given.
    """

    def __init__(
        self,
        chunk_size: int,
        signer: ChunkSigner | None,
        trailer_names: Sequence[str] = (),
    ):
        if chunk_size < 1:
            raise ChunkedFormatError(f"chunk size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.signer = signer
        self.trailer_names = [name.strip().lower() for name in trailer_names]
        for name in self.trailer_names:
            if not _TRAILER_NAME.fullmatch(name):
                raise ChunkedFormatError(f"invalid trailer name {name!r}")
        self._pending = bytearray()
        self._trailers: dict[str, str] = {}
        self._checksums: list[_Checksum] | None = None
        self.decoded_length = 0
        self.finished = False

    def set_trailers(self, trailers: Sequence[tuple[str, str]]) -> None:
        """Trailer values to send after the final chunk."""
        for name, value in trailers:
            lname = name.strip().lower()
            if lname not in self.trailer_names:
                raise ChunkedFormatError(
                    f"trailer {name!r} was not declared (declared: "
                    f"{', '.join(self.trailer_names) or 'none'})"
                )
            if any(c in value for c in "\r\n\0"):
                raise ChunkedFormatError(
                    f"trailer {lname!r} value contains CR, LF or NUL"
                )
            expected = CHECKSUM_VALUE_LENGTHS.get(lname)
            if expected is not None and len(value) != expected:
                raise ChunkedFormatError(
                    f"trailer {lname!r} value has {len(value)} characters, "
                    f"want {expected}"
                )
            self._trailers[lname] = value

    def __call__(self, data: bytes) -> bytes:
        if self.finished:
            if data:
                raise ChunkedFormatError("data after the end of the aws-chunked body")
            return b""
        if not data:
            return self._finish()
        self.decoded_length += len(data)
        self._observe(data)
        out: list[bytes] = []
        view = memoryview(data)
        if self._pending:
            need = self.chunk_size - len(self._pending)
            self._pending += view[:need]
            view = view[need:]
            if len(self._pending) < self.chunk_size:
                return b""
            out.append(self._frame(bytes(self._pending)))
            self._pending.clear()
        while len(view) >= self.chunk_size:
            out.append(self._frame(view[: self.chunk_size]))
            view = view[self.chunk_size :]
        self._pending += view
        return b"".join(out)

    def _observe(self, data: bytes) -> None:
        if self._checksums is None:
            self._checksums = [
                _Checksum(name)
                for name in self.trailer_names
                if name.startswith("x-amz-checksum-") and name not in self._trailers
            ]
        for checksum in self._checksums:
            checksum.update(data)

    def _frame(self, data: bytes | memoryview) -> bytes:
        size = f"{len(data):x}"
        if self.signer is None:
            head = f"{size}\r\n"
        else:
            head = f"{size}{_CHUNK_SIGNATURE_EXT}{self.signer.sign_chunk(data)}\r\n"
        if not len(data):
            return head.encode()
        return b"".join((head.encode(), data, _CRLF))

    def _finish(self) -> bytes:
        self.finished = True
        if self._checksums is None:
            self._observe(b"")
        for checksum in self._checksums or ():
            self._trailers.setdefault(checksum.name, checksum.value())
        missing = [name for name in self.trailer_names if name not in self._trailers]
        if missing:
            raise ChunkedFormatError(f"no value for trailer(s) {', '.join(missing)}")

        out = []
        if self._pending:
            out.append(self._frame(bytes(self._pending)))
            self._pending.clear()
        out.append(self._frame(b""))
        trailers = [(name, self._trailers[name]) for name in self.trailer_names]
        for name, value in trailers:
            out.append(f"{name}:{value}\r\n".encode())
        if trailers and self.signer is not None:
            signature = self.signer.sign_trailer(trailer_block(trailers))
            out.append(f"{TRAILER_SIGNATURE_NAME}:{signature}\r\n".encode())
        out.append(_CRLF)
        return b"".join(out)


# --- decoding -------------------------------------------------------------

_HEADER, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


class StreamDecoder:
    """aws-chunked bytes in (signed or not, trailers or not), payload out.

    Memory stays bounded: chunk data is passed on as it arrives, and chunk
    header lines and trailers have size limits.  Chunk signatures are checked
    for form only (the proxy re-signs; it cannot know the client's key).

    Subclasses that need to see chunk boundaries (to verify chunk signatures,
    say) override the hooks `chunk_started`, `chunk_data` and `chunk_ended`,
    which do nothing here; a hook may raise ChunkedFormatError to stop the
    body.
    """

    def __init__(
        self,
        *,
        max_chunk_header: int = 4096,
        max_trailer: int = 16384,
        max_chunk_size: int = 1 << 32,
    ):
        self.max_chunk_header = max_chunk_header
        self.max_trailer = max_trailer
        self.max_chunk_size = max_chunk_size
        self.trailers: list[tuple[str, str]] = []
        self.trailer_signature: str | None = None
        self.chunk_signatures = 0
        self.decoded_length = 0
        self.done = False
        self._state = _HEADER
        self._buffer = bytearray()
        self._remaining = 0
        self._trailer_bytes = 0
        self._chunk_size = 0
        self._signature: str | None = None

    # -- hooks --------------------------------------------------------------

    def chunk_started(self, size: int, signature: str | None) -> None:
        """A chunk header was read: its size (0 for the final chunk) and its
        chunk-signature, or None when it has none."""

    def chunk_data(self, piece: bytes) -> None:
        """A piece of the current chunk's data, as it is decoded."""

    def chunk_ended(self, size: int, signature: str | None) -> None:
        """The current chunk is complete: its data and CRLF were read (the
        final, empty chunk ends as soon as its header is read)."""

    # -- decoding -----------------------------------------------------------

    def feed(self, data: bytes) -> list[bytes]:
        """Decoded payload pieces found in `data` (possibly none)."""
        if self._state == _DONE:
            if data:
                raise ChunkedFormatError(
                    f"{len(data)} unexpected byte(s) after the end of the body"
                )
            return []
        self._buffer += data
        out: list[bytes] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> None:
        """Raise if the body ended before its final chunk and trailer."""
        if self._state != _DONE:
            raise ChunkedFormatError(
                "truncated aws-chunked body: ended "
                + ("inside a chunk" if self._state in (_DATA, _DATA_END) else "early")
                + f" after {self.decoded_length} decoded byte(s)"
            )

    def _step(self, out: list[bytes]) -> bool:
        """Advance the state machine once; False when more input is needed."""
        if self._state == _HEADER:
            return self._read_header()
        if self._state == _DATA:
            return self._read_data(out)
        if self._state == _DATA_END:
            return self._read_data_end()
        if self._state == _TRAILER:
            return self._read_trailer_line()
        return False

    def _take_line(self, limit: int, what: str) -> bytes | None:
        end = self._buffer.find(_CRLF, 0, limit + 2)
        if end < 0:
            if len(self._buffer) > limit + 1:
                raise ChunkedFormatError(f"{what} longer than {limit} bytes")
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    def _read_header(self) -> bool:
        line = self._take_line(self.max_chunk_header, "chunk header")
        if line is None:
            return False
        size_field, _, extensions = line.partition(b";")
        if not _HEX_SIZE.fullmatch(size_field):
            raise ChunkedFormatError(f"malformed chunk size {size_field[:20]!r}")
        size = int(size_field, 16)
        if size > self.max_chunk_size:
            raise ChunkedFormatError(
                f"chunk size {size} exceeds the limit of {self.max_chunk_size}"
            )
        signature = self._check_extensions(extensions) if extensions else None
        self._chunk_size = size
        self._signature = signature
        self.chunk_started(size, signature)
        if size == 0:
            self._state = _TRAILER
            self.chunk_ended(0, signature)
        else:
            self._remaining = size
            self._state = _DATA
        return True

    def _check_extensions(self, extensions: bytes) -> str:
        name, _, value = extensions.partition(b"=")
        if name != b"chunk-signature" or not _SIGNATURE.fullmatch(value):
            raise ChunkedFormatError(
                f"malformed chunk extension {extensions[:100]!r}: want "
                "chunk-signature=<64 lower-case hex>"
            )
        self.chunk_signatures += 1
        return value.decode("ascii")

    def _read_data(self, out: list[bytes]) -> bool:
        if not self._buffer:
            return False
        piece = bytes(self._buffer[: self._remaining])
        del self._buffer[: len(piece)]
        self._remaining -= len(piece)
        self.decoded_length += len(piece)
        self.chunk_data(piece)
        out.append(piece)
        if self._remaining == 0:
            self._state = _DATA_END
        return True

    def _read_data_end(self) -> bool:
        if len(self._buffer) < 2:
            return False
        if self._buffer[:2] != _CRLF:
            raise ChunkedFormatError("chunk data is not followed by CRLF")
        del self._buffer[:2]
        self._state = _HEADER
        self.chunk_ended(self._chunk_size, self._signature)
        return True

    def _read_trailer_line(self) -> bool:
        budget = self.max_trailer - self._trailer_bytes
        line = self._take_line(max(budget, 0), "trailer")
        if line is None:
            return False
        self._trailer_bytes += len(line) + 2
        if not line:
            self._state = _DONE
            self.done = True
            if self._buffer:
                raise ChunkedFormatError(
                    f"{len(self._buffer)} unexpected byte(s) after the end of the body"
                )
            return False
        self._parse_trailer(line)
        return True

    def _parse_trailer(self, line: bytes) -> None:
        try:
            text = line.decode("ascii")
        except UnicodeDecodeError:
            raise ChunkedFormatError("trailer line is not ASCII") from None
        name, colon, value = text.partition(":")
        name = name.strip().lower()
        if not colon or not _TRAILER_NAME.fullmatch(name):
            raise ChunkedFormatError(f"malformed trailer line {text[:100]!r}")
        value = value.strip()
        if name == TRAILER_SIGNATURE_NAME:
            if not _SIGNATURE.fullmatch(value.encode()):
                raise ChunkedFormatError("malformed x-amz-trailer-signature")
            self.trailer_signature = value
        else:
            self.trailers.append((name, value))


# --- re-signing -----------------------------------------------------------


class Resigner:
    """A client's aws-chunked body in, the same payload re-signed out.

    The payload is re-framed into `chunk_size` chunks signed by `signer`
    (unsigned framing when `signer` is None), and the client's trailers are
    carried over (with a trailer signature when signed).  The output length
    equals `encoded_length(expected_length, chunk_size, signed=...,
    trailer=checksum_trailer_lengths(trailer_names))`, so the Content-Length
    can be set before the body flows; `expected_length` (the
    x-amz-decoded-content-length) is enforced if given.
    """

    def __init__(
        self,
        chunk_size: int,
        signer: ChunkSigner | None,
        trailer_names: Sequence[str] = (),
        *,
        expected_length: int | None = None,
        decoder: StreamDecoder | None = None,
    ):
        self.decoder = decoder or StreamDecoder()
        self.encoder = StreamEncoder(chunk_size, signer, trailer_names)
        self.expected_length = expected_length

    def __call__(self, data: bytes) -> bytes:
        if not data:
            return self._finish()
        out = [self.encoder(piece) for piece in self.decoder.feed(data)]
        if (
            self.expected_length is not None
            and self.decoder.decoded_length > self.expected_length
        ):
            raise ChunkedFormatError(
                f"body is longer than x-amz-decoded-content-length "
                f"{self.expected_length}"
            )
        return b"".join(out)

    def _finish(self) -> bytes:
        if self.encoder.finished:
            return b""
        self.decoder.finish()
        length = self.decoder.decoded_length
        if self.expected_length is not None and length != self.expected_length:
            raise ChunkedFormatError(
                f"body has {length} decoded byte(s), x-amz-decoded-content-length "
                f"says {self.expected_length}"
            )
        declared = set(self.encoder.trailer_names)
        extra = [name for name, _ in self.decoder.trailers if name not in declared]
        if extra:
            raise ChunkedFormatError(
                f"trailer(s) {', '.join(extra)} not declared in x-amz-trailer"
            )
        self.encoder.set_trailers(self.decoder.trailers)
        return self.encoder(b"")
