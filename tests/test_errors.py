"""S3 XML error answers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from signproxy import errors


def parse(body: bytes) -> dict[str, str]:
    root = ET.fromstring(body)  # noqa: S314 - our own document
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def test_error_document_fields_and_escaping():
    body = errors.error_document(
        "AccessDenied", "host 'a<b>&c' refused", "REQ1", "/b/k"
    )
    assert parse(body) == {
        "Code": "AccessDenied",
        "Message": "host 'a<b>&c' refused",
        "Resource": "/b/k",
        "RequestId": "REQ1",
    }


def test_request_ids_are_distinct_hex():
    ids = {errors.new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.host_not_allowed("evil.example"), 403, "AccessDenied"),
        (errors.upstream_unreachable("refused"), 502, "BadGateway"),
        (errors.signing_unavailable("STS down", 7), 503, "ServiceUnavailable"),
        (errors.missing_content_length(1024), 411, "MissingContentLength"),
        (errors.unsigned_payload_refused("too big"), 501, "NotImplemented"),
        (errors.request_expired(), 403, "AccessDenied"),
        (errors.signing_failed("x"), 500, "InternalError"),
    ],
)
def test_constructors_choose_status_and_code(error, status, code):
    assert (error.status, error.code) == (status, code)
    assert parse(error.body("R"))["Code"] == code


def test_retry_after_only_when_given():
    unavailable = dict(errors.signing_unavailable("STS down", 7).headers("R"))
    assert unavailable["retry-after"] == "7"
    assert unavailable["content-type"] == "application/xml"
    assert unavailable["x-amz-request-id"] == "R"
    assert "retry-after" not in dict(errors.host_not_allowed("h").headers("R"))


def test_error_str_names_status_and_code():
    with pytest.raises(errors.S3Error, match=r"^403 AccessDenied: .*'evil'"):
        raise errors.host_not_allowed("evil")
