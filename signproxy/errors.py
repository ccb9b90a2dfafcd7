"""S3-style XML error answers given by the proxy itself.

A request the proxy cannot sign, or cannot deliver, is answered the way an S3
store would answer it: an `<Error>` document with a `Code`, a `Message` and a
`RequestId`, under an honest HTTP status.  Bodies carry no tracebacks and no
secrets; messages are written here or by the caller from safe values only.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from xml.sax.saxutils import escape

XML_CONTENT_TYPE = "application/xml"


def new_request_id() -> str:
    """A short random id, in the upper-case hex S3 uses, that names one flow."""
    return secrets.token_hex(8).upper()


@dataclass(frozen=True)
class S3Error(Exception):
    """An error the proxy answers itself instead of forwarding the request."""

    status: int
    code: str
    message: str
    retry_after: int | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"

    def headers(self, request_id: str) -> list[tuple[str, str]]:
        """The response headers that go with `body()`."""
        headers = [
            ("content-type", XML_CONTENT_TYPE),
            ("x-amz-request-id", request_id),
            ("server", "signproxy"),
        ]
        if self.retry_after is not None:
            headers.append(("retry-after", str(self.retry_after)))
        return headers

    def body(self, request_id: str, resource: str | None = None) -> bytes:
        return error_document(self.code, self.message, request_id, resource)


def error_document(
    code: str, message: str, request_id: str, resource: str | None = None
) -> bytes:
    """`<Error><Code/><Message/>[<Resource/>]<RequestId/></Error>` as UTF-8."""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
        f"<Code>{escape(code)}</Code>",
        f"<Message>{escape(message)}</Message>",
    ]
    if resource is not None:
        parts.append(f"<Resource>{escape(resource)}</Resource>")
    parts.append(f"<RequestId>{escape(request_id)}</RequestId></Error>\n")
    return "".join(parts).encode()


# The errors the request path raises, one constructor each, so every status
# and code is chosen in one place.


def host_not_allowed(host: str) -> S3Error:
    return S3Error(
        403,
        "AccessDenied",
        f"signproxy does not sign or forward requests for host {host!r}; "
        "it is not on the allow list (--allow-hosts)",
    )


def upstream_unreachable(detail: str) -> S3Error:
    return S3Error(
        502, "BadGateway", f"signproxy could not reach the object store: {detail}"
    )


def signing_unavailable(message: str, retry_after: int) -> S3Error:
    return S3Error(503, "ServiceUnavailable", message, retry_after=retry_after)


def signing_failed(message: str) -> S3Error:
    return S3Error(
        500, "InternalError", f"signproxy could not sign the request: {message}"
    )


def missing_content_length(limit: int) -> S3Error:
    return S3Error(
        411,
        "MissingContentLength",
        "the request body has no Content-Length and is larger than "
        f"{limit} bytes, the most signproxy buffers to learn its length",
    )


def unsigned_payload_refused(reason: str) -> S3Error:
    return S3Error(
        501,
        "NotImplemented",
        f"{reason}; the payload policy (--payload sign) forbids UNSIGNED-PAYLOAD",
    )


def bad_request(code: str, message: str) -> S3Error:
    return S3Error(400, code, message)


def request_expired() -> S3Error:
    return S3Error(403, "AccessDenied", "Request has expired")
