"""Property tests for URL and header canonicalization (signproxy.sigv4).

What must hold for any input: canonical forms are fixed points, decode back
to what the client meant (decoded exactly once), use only the SigV4 alphabet,
and hostile header values are refused with SigningError, never signed.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime
from urllib.parse import quote, unquote_to_bytes

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from signproxy import sigv4

CANONICAL_PATH_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~/]|%[0-9A-F]{2})*")
CANONICAL_QUERY_CHARS = re.compile(r"(?:[A-Za-z0-9\-._~=&]|%[0-9A-F]{2})*")

# Raw paths as clients send them: printable ASCII with stray and valid escapes.
raw_path_chars = st.sampled_from(
    [*"abcXYZ019-._~!$&'()*+,;=:@/% ", "%2F", "%41", "%e2%82%ac", "%zz", "//"]
)
raw_paths = st.lists(raw_path_chars, max_size=40).map(
    lambda parts: "/" + "".join(parts)
)
key_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=60,
)
query_atoms = st.lists(
    st.sampled_from([*"abAB09-_.~+ %=/?:@!$'()*,;", "%2B", "%20", "é", "ключ"]),
    max_size=6,
).map("".join)

FAST = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])


def segments_decoded(path: str) -> list[bytes]:
    return [unquote_to_bytes(segment) for segment in path.split("/")]


@FAST
@given(raw_paths)
@example("/a%2Fb/c")
@example("/double//slash/./../")
def test_canonical_path_is_a_fixed_point(path: str) -> None:
    once = sigv4.canonical_path(path)
    assert sigv4.canonical_path(once) == once
    assert CANONICAL_PATH_CHARS.fullmatch(once)


@FAST
@given(raw_paths)
def test_canonical_path_decodes_once_to_what_was_sent(path: str) -> None:
    # Nothing is normalized: same segments, each decoded exactly once.
    assert segments_decoded(sigv4.canonical_path(path)) == segments_decoded(path)


@FAST
@given(key_text)
def test_object_key_round_trips_through_canonical_path(key: str) -> None:
    path = "/bucket/" + quote(key, safe="/~")
    canonical = sigv4.canonical_path(path)
    decoded = b"/".join(segments_decoded(canonical)).decode()
    assert decoded == "/bucket/" + key


@FAST
@given(st.lists(st.tuples(query_atoms, query_atoms), max_size=8))
def test_canonical_query_is_sorted_fixed_point_of_the_same_pairs(
    pairs: list[tuple[str, str]],
) -> None:
    raw = "&".join(
        f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs if k or v
    )
    once = sigv4.canonical_query(raw)
    assert sigv4.canonical_query(once) == once
    assert CANONICAL_QUERY_CHARS.fullmatch(once)
    out = [p.partition("=") for p in once.split("&")] if once else []
    out_pairs = [(unquote_to_bytes(k), unquote_to_bytes(v)) for k, _, v in out]
    assert out_pairs == sorted(
        out_pairs, key=lambda kv: (quote(kv[0], safe=""), quote(kv[1], safe=""))
    )
    want = Counter((k.encode(), v.encode()) for k, v in pairs if k or v)
    assert Counter(out_pairs) == want


@FAST
@given(st.text(st.sampled_from(list("ab=&+%20x")), max_size=30))
def test_canonical_query_of_raw_text_is_stable(raw: str) -> None:
    once = sigv4.canonical_query(raw)
    assert sigv4.canonical_query(once) == once
    assert "+" not in once  # a literal plus is a plus sign, encoded


def test_plus_is_a_plus_not_a_space() -> None:
    assert sigv4.canonical_query("prefix=a+b") == "prefix=a%2Bb"
    assert sigv4.canonical_path("/b/a+b") == "/b/a%2Bb"


header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\t "),
    max_size=40,
)


@FAST
@given(st.lists(st.tuples(header_names, header_values), max_size=10))
def test_canonical_headers_are_lower_trimmed_and_idempotent(
    headers: list[tuple[str, str]],
) -> None:
    canonical = sigv4.canonical_headers(headers)
    for name, value in canonical.items():
        assert name == name.lower()
        assert value == value.strip()
        assert "  " not in value
        assert "\t" not in value
    again = sigv4.canonical_headers(list(canonical.items()))
    assert again == canonical


@FAST
@given(
    st.lists(
        st.tuples(header_names, header_values),
        max_size=10,
        unique_by=lambda h: h[0].lower(),
    )
)
def test_header_order_and_case_do_not_change_the_signature(
    headers: list[tuple[str, str]],
) -> None:  # fmt: skip
    credentials = sigv4.Credentials("AKIDFUZZ", "fuzz-secret")
    now = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    signer = sigv4.Signer("us-east-1")
    base = [("host", "h"), *headers]
    reordered = [(n.upper(), v) for n, v in reversed(base)]
    first = signer.sign("GET", "/b/k", "", base, sigv4.EMPTY_SHA256, credentials, now)
    second = signer.sign(
        "GET", "/b/k", "", reordered, sigv4.EMPTY_SHA256, credentials, now
    )
    assert first.signature == second.signature


@FAST
@given(header_values, st.sampled_from(["\r", "\n", "\0", "\r\n"]), header_values)
def test_header_values_that_could_split_lines_are_refused(
    head: str, breaker: str, tail: str
) -> None:
    with pytest.raises(sigv4.SigningError, match="contains CR, LF or NUL"):
        sigv4.canonical_headers([("x-amz-meta-a", head + breaker + tail)])


@FAST
@given(
    st.text(max_size=20).filter(
        lambda n: not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9a-zA-Z]+", n)
    )
)
def test_bad_header_names_are_refused(name: str) -> None:  # fmt: skip
    with pytest.raises(sigv4.SigningError, match="invalid header name"):
        sigv4.canonical_headers([(name, "v")])


@settings(max_examples=150, deadline=None)
@given(key_text, st.lists(st.tuples(query_atoms, query_atoms), max_size=4))
def test_signature_equals_botocore_for_any_key_and_query(
    key: str, pairs: list[tuple[str, str]]
) -> None:
    """Our canonical forms agree with an independent implementation."""
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs)
    url = "http://127.0.0.1:9000/bucket/" + quote(key, safe="/~")
    if query:
        url += "?" + query
    request = AWSRequest(method="GET", url=url, headers={})
    S3SigV4Auth(BotoCredentials("AKIDFUZZ", "fuzz-secret"), "s3", "us-east-1").add_auth(
        request
    )
    headers = dict(request.headers.items())
    amz_date = headers["X-Amz-Date"]
    path, _, raw_query = url.removeprefix("http://127.0.0.1:9000").partition("?")
    ours = sigv4.Signer("us-east-1").sign(
        "GET",
        path,
        raw_query,
        [("host", "127.0.0.1:9000")],
        headers["X-Amz-Content-SHA256"],
        sigv4.Credentials("AKIDFUZZ", "fuzz-secret"),
        sigv4.parse_amz_date(amz_date),
    )
    assert headers["Authorization"].endswith("Signature=" + ours.signature)
