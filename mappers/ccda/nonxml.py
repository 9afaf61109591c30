"""nonXMLBody (Unstructured Document, 2.16.840.1.113883.10.20.22.1.10) → a "Document" section with a DocumentReference.

The body is attached as DocumentReference.content.attachment (contentType from text/@mediaType, data = the
base64 as sent, checked by decoding it; size and SHA-1 hash of the decoded bytes), the way C-CDA on FHIR and
US Core carry a document that is not structured. Plain text (representation TXT) is base64-encoded with a UTF-8
charset; an http(s) reference becomes attachment.url (never fetched).
"""

import base64
import binascii
import hashlib

from fhir.resources.R4B.attachment import Attachment
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.composition import CompositionSection
from fhir.resources.R4B.documentreference import DocumentReference, DocumentReferenceContent
from lxml import etree

from mappers.ccda import ccda
from mappers.ccda.context import EntryContext, ref
from mappers.ccda.sections import SectionReport, SectionResult, empty_reason
from mappers.ccda.text import generated_narrative
from mappers.errors import MappingError

SECTION_TITLE = "Document"


def map_nonxml_body(body: etree._Element, ctx: EntryContext, doc_type: CodeableConcept | None,
                    title: str | None) -> SectionResult:
    """Map a nonXMLBody to a section "Document" whose entry is a DocumentReference with the attachment."""
    text = ccda.first(body, "hl7:text")
    attachment = _attachment(text, title)
    if attachment is None:
        ctx.warn("nonXMLBody has no content: recorded as an empty section")
        section = CompositionSection(title=SECTION_TITLE, emptyReason=empty_reason(None), text=generated_narrative(
            [], heading="No information (the source document body is empty)."))
        return SectionResult(section=section, reports=[_report("empty", 0)])
    if (text.get("compression") or "").strip():
        ctx.warn("nonXMLBody is compressed: attached as sent")
    reference = DocumentReference(
        id=ctx.new_id(),
        status="current",
        docStatus="final",
        type=doc_type,
        subject=ctx.subject,
        content=[DocumentReferenceContent(attachment=attachment)],
    )
    described = f"{attachment.contentType or 'unknown type'}, {attachment.size} bytes" if attachment.size is not None \
        else f"{attachment.contentType or 'unknown type'}, by reference"
    section = CompositionSection(
        title=SECTION_TITLE,
        text=generated_narrative([], heading=f"The source document body is attached ({described})."),
        entry=[ref(reference)],
    )
    return SectionResult(section=section, resources=[reference], reports=[_report("structured", 1)])


def _attachment(text: etree._Element | None, title: str | None) -> Attachment | None:
    """Build the Attachment from nonXMLBody/text (B64 data, inline text, or an http(s) reference)."""
    if ccda.is_null(text):
        return None
    media_type = ccda.clean(text.get("mediaType")) or "text/plain"
    representation = (text.get("representation") or "TXT").strip().upper()
    raw = "".join(text.xpath("text()"))
    if representation == "B64":
        data = "".join(raw.split())
        decoded = _decode(data) if data else None
    elif raw.strip():
        decoded = raw.encode("utf-8")
        data = base64.b64encode(decoded).decode("ascii")
        media_type = media_type if "charset" in media_type else f"{media_type}; charset=utf-8"
    else:
        return _referenced(text, media_type, title)
    if not decoded:
        return _referenced(text, media_type, title)
    digest = base64.b64encode(hashlib.sha1(decoded).digest()).decode("ascii")  # noqa: S324 - FHIR hash is SHA-1
    return Attachment(contentType=media_type, data=data, size=len(decoded), hash=digest, title=title)


def _decode(data: str) -> bytes:
    """Decode base64 strictly (422 when it is not valid base64)."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MappingError("the nonXMLBody is declared base64 (B64) but is not valid base64", status=422) from exc


def _referenced(text: etree._Element, media_type: str, title: str | None) -> Attachment | None:
    """Return a by-reference Attachment for an http(s) text/reference, else None."""
    url = ccda.attr(text, "hl7:reference", "value")
    if url and url.lower().startswith(("http://", "https://")):
        return Attachment(contentType=media_type, url=url, title=title)
    return None


def _report(status: str, entries: int) -> SectionReport:
    """Return the report of the Document section."""
    return SectionReport(code=None, title=SECTION_TITLE, template=None, status=status, entries=entries)
