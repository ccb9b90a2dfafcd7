"""botocore as a second implementation: thousands of generated requests.

botocore is a test dependency only.  Its clock is frozen by patching
`botocore.auth.get_current_datetime`; the payload hash is fed through a small
subclass so every kind of hash (hex and the streaming constants) is covered.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime
from unittest import mock
from urllib.parse import parse_qsl, quote, urlsplit

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from signproxy.sigv4 import (
    PAYLOAD_CONSTANTS,
    Credentials,
    Signer,
    is_signed_header,
    sign_url,
)

# Characters that make keys and query strings awkward.
AWKWARD = " +%=&~/?#._-!$'()*,;:@[]\\\"<>^`{|}é한글ሴ\u00a0"
TEXT = st.text(alphabet=string.ascii_letters + string.digits + AWKWARD, max_size=24)
SEGMENT = st.text(
    alphabet=string.ascii_letters + string.digits + AWKWARD.replace("/", ""),
    max_size=12,
)
# botocore signs a few headers we do not (content-length, via, forwarded,
# x-forwarded-*): generated names stay within what both sign.
HEADER_NAME = st.one_of(
    st.sampled_from(
        [
            "content-type",
            "content-md5",
            "range",
            "if-match",
            "if-none-match",
            "cache-control",
            "content-disposition",
            "content-encoding",
            "x-amz-acl",
            "x-amz-meta-a",
            "X-Amz-Meta-Mixed-Case",
            "x-amz-storage-class",
        ]
    ),
    st.from_regex(r"x-amz-meta-[a-z0-9-]{1,10}", fullmatch=True),
    st.from_regex(r"x-[a-z]{1,8}", fullmatch=True),
).filter(lambda name: is_signed_header(name.lower()) and name.lower() != "x-amz-date")
HEADER_VALUE = st.text(
    alphabet=string.ascii_letters
    + string.digits
    + " \t\x0b\x0c\xa0\x85!\"#$%&'()*+,-./:;<=>?@[]^_`{|}~é",
    max_size=30,
)
HEADERS = st.lists(st.tuples(HEADER_NAME, HEADER_VALUE), max_size=6)
PAYLOAD_HASH = st.one_of(
    st.sampled_from(sorted(PAYLOAD_CONSTANTS)),
    st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
)
TOKEN = st.one_of(
    st.none(), st.text(alphabet=string.ascii_letters + "+/=%", min_size=1, max_size=60)
)
SECRET = st.text(alphabet=string.ascii_letters + string.digits + "+/=", min_size=1)
MOMENT = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2099, 12, 31),
    timezones=st.just(UTC),
).map(lambda moment: moment.replace(microsecond=0))
ENDPOINT = st.sampled_from(
    [
        "https://bucket.s3.kr-west-1.example.com",
        "http://127.0.0.1:8333",
        "https://s3.example.com:8443",
        "http://localhost",
    ]
)


def key_path(segments: list[str]) -> str:
    """The path botocore's serializer would produce for a key."""
    return "/bucket/" + quote("/".join(segments), safe="/~")


def query_string(pairs: list[tuple[str, str | None]]) -> str:
    """A query as clients send it: each part encoded, '=' only when valued."""
    parts = []
    for key, value in pairs:
        encoded = quote(key, safe="-_.~")
        parts.append(
            encoded if value is None else f"{encoded}={quote(value, safe='-_.~')}"
        )
    return "&".join(part for part in parts if part)


class FixedPayloadAuth(S3SigV4Auth):
    """S3SigV4Auth whose payload hash is whatever the test chose."""

    def __init__(self, credentials: BotoCredentials, payload_hash: str):
        super().__init__(credentials, "s3", "kr-west-1")
        self._payload_hash = payload_hash

    def payload(self, request: AWSRequest) -> str:
        return self._payload_hash


def frozen(moment: datetime) -> mock._patch:
    return mock.patch(
        "botocore.auth.get_current_datetime",
        return_value=moment.replace(tzinfo=None),
    )


def boto_credentials(
    access_key: str, secret: str, token: str | None
) -> BotoCredentials:
    return BotoCredentials(access_key, secret, token)


@settings(max_examples=1500, deadline=None)
@given(
    method=st.sampled_from(["GET", "PUT", "HEAD", "DELETE", "POST"]),
    endpoint=ENDPOINT,
    segments=st.lists(SEGMENT, min_size=1, max_size=4),
    pairs=st.lists(st.tuples(TEXT, st.one_of(st.none(), TEXT)), max_size=5),
    headers=HEADERS,
    payload_hash=PAYLOAD_HASH,
    secret=SECRET,
    token=TOKEN,
    moment=MOMENT,
)
def test_authorization_matches_botocore(
    method: str,
    endpoint: str,
    segments: list[str],
    pairs: list[tuple[str, str | None]],
    headers: list[tuple[str, str]],
    payload_hash: str,
    secret: str,
    token: str | None,
    moment: datetime,
) -> None:
    query = query_string(pairs)
    url = endpoint + key_path(segments) + (f"?{query}" if query else "")

    request = AWSRequest(method=method, url=url)
    for name, value in headers:
        request.headers[name] = value  # repeated names are kept, in order
    with frozen(moment):
        FixedPayloadAuth(
            boto_credentials("AKIDEXAMPLE", secret, token), payload_hash
        ).add_auth(request)

    ours = sign_url(
        Signer("kr-west-1"),
        method,
        url,
        headers,
        payload_hash,
        Credentials("AKIDEXAMPLE", secret, token),
        moment,
    )
    assert ours.authorization == request.headers["Authorization"]
    assert dict(ours.headers)["x-amz-date"] == request.headers["X-Amz-Date"]


@settings(max_examples=1000, deadline=None)
@given(
    method=st.sampled_from(["GET", "PUT", "HEAD", "DELETE"]),
    endpoint=ENDPOINT,
    segments=st.lists(SEGMENT, min_size=1, max_size=4),
    params=st.dictionaries(
        TEXT.filter(lambda key: key and not key.startswith("X-Amz-")), TEXT, max_size=4
    ),
    secret=SECRET,
    token=TOKEN,
    moment=MOMENT,
    expires=st.integers(1, 604800),
)
def test_presigned_url_matches_botocore(
    method: str,
    endpoint: str,
    segments: list[str],
    params: dict[str, str],
    secret: str,
    token: str | None,
    moment: datetime,
    expires: int,
) -> None:
    # botocore's presigner parses the query with parse_qs, which merges
    # repeated keys and reads '+' as a space: keys are unique and every
    # character is percent-encoded, so both read the same parameters.
    query = query_string(list(params.items()))
    url = endpoint + key_path(segments) + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url)
    with frozen(moment):
        S3SigV4QueryAuth(
            boto_credentials("AKIDEXAMPLE", secret, token), "s3", "kr-west-1", expires
        ).add_auth(request)
    boto_url = urlsplit(request.url)

    parts = urlsplit(url)
    host = boto_url.netloc
    ours = Signer("kr-west-1").presign(
        method,
        parts.path,
        parts.query,
        [("host", host_for(parts.scheme, host))],
        Credentials("AKIDEXAMPLE", secret, token),
        moment,
        expires,
    )
    boto_params = parse_qsl(boto_url.query, keep_blank_values=True)
    our_params = parse_qsl(ours.query, keep_blank_values=True)
    assert sorted(our_params) == sorted(boto_params)
    assert ours.signature == dict(boto_params)["X-Amz-Signature"]
    assert ours.path == boto_url.path


def host_for(scheme: str, netloc: str) -> str:
    default = {"http": ":80", "https": ":443"}[scheme]
    return netloc.removesuffix(default)
