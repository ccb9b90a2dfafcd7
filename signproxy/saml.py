"""SAML 2.0 responses: the little the STS emulator reads, and a builder for tests.

The role attribute follows the shape identity providers already emit for
AWS: an `Attribute` named `ROLE_ATTRIBUTE` whose values are pairs
"role_indicator,principal_indicator" (SCP indicators in place of ARNs; the
two halves may come in either order, as AWS allows).  SCP does not document
what its IdP integration expects; this is an inference, kept in one constant.

Safety: the XML is parsed with the standard library only after refusing any
document type declaration, so no entity expansion or external entity can be
triggered.  XML signatures are NOT verified (see `parse_saml_response`).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

PROTOCOL_NS = "urn:oasis:names:tc:SAML:2.0:protocol"
ASSERTION_NS = "urn:oasis:names:tc:SAML:2.0:assertion"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
ROLE_ATTRIBUTE = "https://aws.amazon.com/SAML/Attributes/Role"
SESSION_NAME_ATTRIBUTE = "https://aws.amazon.com/SAML/Attributes/RoleSessionName"
NAMEID_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
MAX_DOCUMENT_BYTES = 256 * 1024

_P = f"{{{PROTOCOL_NS}}}"
_A = f"{{{ASSERTION_NS}}}"


class SamlError(ValueError):
    """A SAML response that cannot be read; the message never quotes it."""


@dataclass(frozen=True, slots=True)
class SamlAssertion:
    """What the STS reads from a SAML response."""

    issuer: str
    audience: str  # Recipient of SubjectConfirmationData, else the Audience
    subject: str  # NameID
    subject_type: str  # NameID Format
    not_before: datetime | None
    not_on_or_after: datetime
    status: str
    roles: tuple[tuple[str, str], ...]  # (role_indicator, principal_indicator)
    session_name: str | None = None

    def names(self, role_indicator: str, principal_indicator: str) -> bool:
        """True when the role attribute grants this role through this IdP."""
        return (role_indicator, principal_indicator) in self.roles


# -- reading -----------------------------------------------------------------


def _decode(saml_assertion: str) -> bytes:
    try:
        document = base64.b64decode(saml_assertion.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SamlError("saml_assertion is not valid base64") from None
    if len(document) > MAX_DOCUMENT_BYTES:
        raise SamlError(f"saml_assertion is larger than {MAX_DOCUMENT_BYTES} bytes")
    # Refuse DTDs outright: no entity expansion, no external entities.
    if b"<!DOCTYPE" in document.upper() or b"<!ENTITY" in document.upper():
        raise SamlError("saml_assertion contains a DTD, which is not allowed")
    return document


def _instant(value: str | None, what: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SamlError(f"{what} is not an ISO 8601 instant") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _text(element: ET.Element | None, what: str) -> str:
    if element is None or not (element.text or "").strip():
        raise SamlError(f"the SAML response has no {what}")
    return (element.text or "").strip()


def _role_pairs(assertion: ET.Element) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for attribute in assertion.iter(f"{_A}Attribute"):
        if attribute.get("Name") != ROLE_ATTRIBUTE:
            continue
        for value in attribute.iter(f"{_A}AttributeValue"):
            parts = [part.strip() for part in (value.text or "").split(",")]
            if len(parts) != 2 or not all(parts):
                raise SamlError(
                    "a Role attribute value is not 'role_indicator,principal_indicator'"
                )
            # Either order, as AWS allows: keep both readings.
            first, second = parts
            pairs.append((first, second))
            pairs.append((second, first))
    return tuple(pairs)


def _session_name(assertion: ET.Element) -> str | None:
    for attribute in assertion.iter(f"{_A}Attribute"):
        if attribute.get("Name") == SESSION_NAME_ATTRIBUTE:
            value = attribute.find(f"{_A}AttributeValue")
            if value is not None and value.text:
                return value.text.strip()
    return None


def parse_saml_response(saml_assertion: str) -> SamlAssertion:
    """Read a base64 SAML Response.  SamlError when it is malformed.

    NotImplemented: the XML signature of the response or assertion is NOT
    verified.  The emulator trusts whoever can produce a well-formed response;
    a real service must verify it against the IdP's registered certificate.
    """
    document = _decode(saml_assertion)
    try:
        root = ET.fromstring(document)  # noqa: S314 - DTDs refused in _decode
    except ET.ParseError:
        raise SamlError("saml_assertion is not well-formed XML") from None
    if root.tag != f"{_P}Response":
        raise SamlError("saml_assertion is not a SAML 2.0 protocol Response")
    status_code = root.find(f"{_P}Status/{_P}StatusCode")
    status = status_code.get("Value", "") if status_code is not None else ""
    assertion = root.find(f"{_A}Assertion")
    if assertion is None:
        raise SamlError("the SAML response has no Assertion")

    issuer = _text(assertion.find(f"{_A}Issuer"), "Issuer")
    name_id = assertion.find(f"{_A}Subject/{_A}NameID")
    subject = _text(name_id, "Subject NameID")
    assert name_id is not None
    subject_type = name_id.get("Format", "")
    confirmation = assertion.find(
        f"{_A}Subject/{_A}SubjectConfirmation/{_A}SubjectConfirmationData"
    )
    conditions = assertion.find(f"{_A}Conditions")
    audience_element = assertion.find(
        f"{_A}Conditions/{_A}AudienceRestriction/{_A}Audience"
    )
    recipient = confirmation.get("Recipient") if confirmation is not None else None
    audience = recipient or (
        audience_element.text.strip()
        if audience_element is not None and audience_element.text
        else ""
    )
    if not audience:
        raise SamlError("the SAML response has no Recipient or Audience")

    limits = [
        _instant(element.get("NotOnOrAfter"), "NotOnOrAfter")
        for element in (confirmation, conditions)
        if element is not None
    ]
    deadlines = [moment for moment in limits if moment is not None]
    if not deadlines:
        raise SamlError("the SAML response has no NotOnOrAfter")
    not_before = (
        _instant(conditions.get("NotBefore"), "NotBefore")
        if conditions is not None
        else None
    )
    roles = _role_pairs(assertion)
    if not roles:
        raise SamlError(f"the SAML response has no {ROLE_ATTRIBUTE} attribute")
    return SamlAssertion(
        issuer=issuer,
        audience=audience,
        subject=subject,
        subject_type=subject_type,
        not_before=not_before,
        not_on_or_after=min(deadlines),
        status=status,
        roles=roles,
        session_name=_session_name(assertion),
    )


# -- building (tests, demo) ---------------------------------------------------


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_saml_response(
    *,
    issuer: str,
    audience: str,
    subject: str,
    roles: list[tuple[str, str]],
    issued_at: datetime,
    not_on_or_after: datetime,
    subject_type: str = NAMEID_PERSISTENT,
    status: str = STATUS_SUCCESS,
    session_name: str | None = None,
) -> str:
    """An unsigned SAML 2.0 Response, base64-encoded, as an IdP would post it.

    `roles` are (role_indicator, principal_indicator) pairs.
    """
    ET.register_namespace("samlp", PROTOCOL_NS)
    ET.register_namespace("saml", ASSERTION_NS)
    response = ET.Element(
        f"{_P}Response",
        {
            "ID": "_" + uuid.uuid4().hex,
            "Version": "2.0",
            "IssueInstant": _stamp(issued_at),
            "Destination": audience,
        },
    )
    ET.SubElement(response, f"{_A}Issuer").text = issuer
    status_element = ET.SubElement(response, f"{_P}Status")
    ET.SubElement(status_element, f"{_P}StatusCode", {"Value": status})

    assertion = ET.SubElement(
        response,
        f"{_A}Assertion",
        {
            "ID": "_" + uuid.uuid4().hex,
            "Version": "2.0",
            "IssueInstant": _stamp(issued_at),
        },
    )
    ET.SubElement(assertion, f"{_A}Issuer").text = issuer
    subject_element = ET.SubElement(assertion, f"{_A}Subject")
    ET.SubElement(
        subject_element, f"{_A}NameID", {"Format": subject_type}
    ).text = subject
    confirmation = ET.SubElement(
        subject_element, f"{_A}SubjectConfirmation", {"Method": BEARER}
    )
    ET.SubElement(
        confirmation,
        f"{_A}SubjectConfirmationData",
        {"NotOnOrAfter": _stamp(not_on_or_after), "Recipient": audience},
    )
    conditions = ET.SubElement(
        assertion,
        f"{_A}Conditions",
        {"NotBefore": _stamp(issued_at), "NotOnOrAfter": _stamp(not_on_or_after)},
    )
    restriction = ET.SubElement(conditions, f"{_A}AudienceRestriction")
    ET.SubElement(restriction, f"{_A}Audience").text = audience

    statement = ET.SubElement(assertion, f"{_A}AttributeStatement")
    role_attribute = ET.SubElement(
        statement, f"{_A}Attribute", {"Name": ROLE_ATTRIBUTE}
    )
    for role_indicator, principal_indicator in roles:
        ET.SubElement(
            role_attribute, f"{_A}AttributeValue"
        ).text = f"{role_indicator},{principal_indicator}"
    if session_name is not None:
        name_attribute = ET.SubElement(
            statement, f"{_A}Attribute", {"Name": SESSION_NAME_ATTRIBUTE}
        )
        ET.SubElement(name_attribute, f"{_A}AttributeValue").text = session_name
    document = ET.tostring(response, encoding="utf-8", xml_declaration=True)
    return base64.b64encode(document).decode("ascii")
