"""Logging set-up: text or JSON lines, secrets redacted, one access line format.

`configure_logging()` installs one handler on the root logger.  Its
`RedactingFilter` hands that handler a redacted copy of every record: values of
Authorization headers, SigV4 signatures and credentials, session tokens, secret
keys and SAML assertions, and any string passed to `register_secret()`, become
`<redacted>`, in the message, in its arguments, in exception text and in
structured extras alike.  The original record is left as it was for any other
handler (mitmproxy's formatter, for one, needs its tuple extras intact).

Secrets come in two kinds: fixed ones registered at start-up (the SCP secret
key, client secrets), of which the latest 256 are kept, and rotating ones
registered under a slot (`register_secret(value, slot="...")`: refreshed
credentials), of which each slot keeps only its current and previous value, so
a long-running proxy neither forgets its fixed secrets nor grows the set.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import parse_qsl

REDACTED = "<redacted>"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

_SECRET_MIN_LENGTH = 4
_SECRETS_KEPT = 256
_SLOTS_KEPT = 64
_SLOT_VALUES_KEPT = 2  # the current value and the previous one

# A whole Authorization value runs to the end of the quoted string or line.
_AUTHORIZATION = re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)([^\"'\r\n]+)")
# Parts of a SigV4 Authorization value or presigned URL, wherever they appear.
_SIGV4_PARTS = re.compile(r"(?i)(\b(?:x-amz-)?(?:signature|credential)=)([^\s,&\"';]+)")
# `name: value`, `name=value`, `"name": "value"` for secret-bearing names.
_SECRET_FIELDS = re.compile(
    r"(?i)(\b(?:x-amz-security-token|security[-_]?token|session[-_]?token"
    r"|secret[-_]?(?:access[-_]?)?key|saml[-_]?(?:assertion|response)"
    r"|password)[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;)}]+)"
)

# Mapping keys (header names, extras) whose whole value is secret.
_SECRET_KEY = re.compile(
    r"(?i)authorization|token|secret|signature|credential|saml|password"
)

_secrets: OrderedDict[str, None] = OrderedDict()
_slots: OrderedDict[str, tuple[str, ...]] = OrderedDict()
_known: tuple[str, ...] = ()  # every secret above, longest first
_secrets_lock = threading.Lock()


def register_secret(value: str | None, *, slot: str | None = None) -> None:
    """Redact `value` from every log record from now on.

    Values shorter than four characters are ignored (they would mangle ordinary
    text).  Without `slot`, the most recent 256 values are kept.  With `slot`
    (a name for one rotating secret, e.g. one provider's session token), the
    slot keeps its current and previous value only; the 64 most recently used
    slots are kept.
    """
    if not value or len(value) < _SECRET_MIN_LENGTH:
        return
    global _known
    with _secrets_lock:
        if slot is None:
            _secrets[value] = None
            _secrets.move_to_end(value)
            while len(_secrets) > _SECRETS_KEPT:
                _secrets.popitem(last=False)
        else:
            kept = tuple(v for v in _slots.pop(slot, ()) if v != value)
            _slots[slot] = (*kept, value)[-_SLOT_VALUES_KEPT:]
            while len(_slots) > _SLOTS_KEPT:
                _slots.popitem(last=False)
        _known = _all_secrets()


def _all_secrets() -> tuple[str, ...]:
    values = set(_secrets)
    for kept in _slots.values():
        values.update(kept)
    return tuple(sorted(values, key=len, reverse=True))


def registered_secret_count() -> int:
    """How many distinct secrets are redacted now (bounded; for tests)."""
    return len(_known)


def forget_secrets() -> None:
    """Drop every registered secret (for tests)."""
    global _known
    with _secrets_lock:
        _secrets.clear()
        _slots.clear()
        _known = ()


def redact(text: str) -> str:
    """`text` with every secret it may carry replaced by `<redacted>`."""
    for secret in _known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _AUTHORIZATION.sub(rf"\1{REDACTED}", text)
    text = _SIGV4_PARTS.sub(rf"\1{REDACTED}", text)
    return _SECRET_FIELDS.sub(rf"\1{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Gives its handler a redacted copy of each record (Python 3.12 filters
    may return a replacement record); the shared original is not touched, so
    other handlers see the record, its args and extras, as logged."""

    def filter(self, record: logging.LogRecord) -> logging.LogRecord:
        clean = logging.makeLogRecord(record.__dict__)
        clean.msg = redact(_message(record))
        clean.args = None
        exc_text = record.exc_text
        if record.exc_info and not exc_text:
            exc_text = logging.Formatter().formatException(record.exc_info)
        clean.exc_text = redact(exc_text) if exc_text else exc_text
        # The traceback is now in exc_text; formatters must not re-render it.
        clean.exc_info = None
        if record.stack_info:
            clean.stack_info = redact(record.stack_info)
        for name in _extra_names(record):
            setattr(clean, name, _redact_value(getattr(record, name)))
        return clean


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except (TypeError, ValueError):
        # A bad format string must not hide the record; show its parts.
        return f"{record.msg!s} {record.args!r}"


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if isinstance(key, str) and _SECRET_KEY.search(key)
            else _redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_value(item) for item in value]
    if isinstance(value, tuple):
        items = [_redact_value(item) for item in value]
        if hasattr(value, "_fields"):  # a named tuple
            return type(value)(*items)
        return tuple(items)
    return value


_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName"}


def _extra_names(record: logging.LogRecord) -> list[str]:
    return [name for name in vars(record) if name not in _STANDARD_ATTRIBUTES]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _extra_names(record):
            entry[name] = getattr(record, name)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def parse_level(level: str | int) -> int:
    """A logging level from a name (any case) or number; ValueError otherwise."""
    if isinstance(level, int):
        return level
    name = level.strip().lower()
    if name not in LOG_LEVELS:
        raise ValueError(
            f"--log-level: {level!r} is not one of {', '.join(LOG_LEVELS)}"
        )
    return getattr(logging, name.upper())


def configure_logging(
    level: str | int = "info", fmt: str = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Send all logging to `stream` (stderr) as `text` or `json`, redacted.

    Calling it again replaces the handler it installed before.
    """
    if fmt not in LOG_FORMATS:
        raise ValueError(f"--log-format: {fmt!r} is not one of text, json")
    numeric = parse_level(level)

    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name("signproxy")
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else _text_formatter())

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "signproxy"]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler


def _text_formatter() -> logging.Formatter:
    formatter = logging.Formatter(TEXT_FORMAT)
    formatter.default_msec_format = "%s.%03d"
    return formatter


# -- access log ---------------------------------------------------------------

ACCESS_LOGGER = "signproxy.access"
PATH_CLASSES = ("service", "bucket", "object")
_MULTIPART_PARAMETERS = ("uploads", "uploadId", "partNumber")
_METHOD = re.compile(r"[A-Z]{1,16}")


def path_class(path: str, query: str = "", *, virtual_host: bool = False) -> str:
    """What a request addresses, without naming it.

    `service` (list buckets), `bucket` or `object`; `+multipart` is appended
    when the query speaks the multipart upload API.  `virtual_host` means the
    bucket is in the Host header, so the path holds only the key.
    """
    segments = [part for part in path.split("?", 1)[0].split("/") if part]
    depth = len(segments) + (1 if virtual_host else 0)
    if depth == 0:
        kind = "service"
    elif depth == 1:
        kind = "bucket"
    else:
        kind = "object"
    names = {name for name, _ in parse_qsl(query, keep_blank_values=True)}
    if names.intersection(_MULTIPART_PARAMETERS):
        kind += "+multipart"
    return kind


def access_log_fields(
    method: str,
    path: str,
    query: str,
    status: int,
    total_seconds: float,
    upstream_seconds: float | None = None,
    *,
    outcome: str | None = None,
    signer: str | None = None,
    virtual_host: bool = False,
) -> dict[str, Any]:
    """The fields of one access line; no bucket, key, query value or secret."""
    fields: dict[str, Any] = {
        "method": method if _METHOD.fullmatch(method) else "OTHER",
        "path_class": path_class(path, query, virtual_host=virtual_host),
        "status": status,
        "total_ms": round(total_seconds * 1000, 3),
        "upstream_ms": (
            None if upstream_seconds is None else round(upstream_seconds * 1000, 3)
        ),
    }
    if outcome is not None:
        fields["outcome"] = outcome
    if signer is not None:
        fields["signer"] = signer
    return fields


def access_log_line(
    method: str,
    path: str,
    query: str,
    status: int,
    total_seconds: float,
    upstream_seconds: float | None = None,
    *,
    outcome: str | None = None,
    signer: str | None = None,
    virtual_host: bool = False,
) -> str:
    """`key=value` text of one access line (see `access_log_fields`)."""
    return _join(
        access_log_fields(
            method,
            path,
            query,
            status,
            total_seconds,
            upstream_seconds,
            outcome=outcome,
            signer=signer,
            virtual_host=virtual_host,
        )
    )


def _join(fields: Mapping[str, Any]) -> str:
    return " ".join(
        f"{name}={'-' if value is None else value}" for name, value in fields.items()
    )


def log_access(
    method: str,
    path: str,
    query: str,
    status: int,
    total_seconds: float,
    upstream_seconds: float | None = None,
    *,
    outcome: str | None = None,
    signer: str | None = None,
    virtual_host: bool = False,
) -> None:
    """Log one access line at INFO on `signproxy.access`.

    The JSON format also gets the fields as keys (under `access`).
    """
    logger = logging.getLogger(ACCESS_LOGGER)
    if not logger.isEnabledFor(logging.INFO):
        return
    fields = access_log_fields(
        method,
        path,
        query,
        status,
        total_seconds,
        upstream_seconds,
        outcome=outcome,
        signer=signer,
        virtual_host=virtual_host,
    )
    logger.info("%s", _join(fields), extra={"access": fields})
