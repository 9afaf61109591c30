"""Our consult document → a US Core DocumentReference for the EHR, and a standalone XHTML rendition of it."""

import base64
import hashlib
from datetime import datetime

from fhir.resources.R4B.attachment import Attachment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.composition import Composition, CompositionSection
from fhir.resources.R4B.documentreference import DocumentReference, DocumentReferenceContent, DocumentReferenceContext
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.practitionerrole import PractitionerRole
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from lxml import etree

from mappers import systems
from mappers.errors import MappingError
from mappers.narrative import (
    XHTML_NS,
    concept_text,
    format_date,
    human_name,
    reference_label,
    resource_label,
    sanitize_div,
    xml_text,
)
from mappers.validation import require_aware

FHIR_JSON = "application/fhir+json"  # JSON has no charset parameter (RFC 8259 §11); FHIR JSON is UTF-8
XHTML_UTF8 = "application/xhtml+xml;charset=utf-8"
_XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE html>\n'


def build_document_reference(consult: Bundle, document_json: bytes, *, patient_ref: str,
                             service_request_ref: str | None, identifier: Identifier, now: datetime,
                             xhtml: str | None = None) -> DocumentReference:
    """A US Core DocumentReference (clinical-note, 11488-4) carrying the consult document and its rendition.

    docStatus follows the Composition's status (preliminary / final / amended share the composition-status
    codes). Attachment.hash is SHA-1, base64 (FHIR R4 datatypes.html#Attachment).
    """
    require_aware(now)
    composition = consult_composition(consult)
    creation = composition.date
    content = [_content(document_json, FHIR_JSON, composition.title, creation)]
    if xhtml is not None:
        content.append(_content(xhtml.encode("utf-8"), XHTML_UTF8, composition.title, creation))
    return DocumentReference(
        identifier=[identifier.model_copy(deep=True)],
        masterIdentifier=consult.identifier.model_copy(deep=True) if consult.identifier is not None else None,
        status="current",
        docStatus=composition.status if composition.status in systems.COMPOSITION_STATUSES_KEPT else "final",
        type=_concept(systems.LOINC, systems.LOINC_CONSULT_NOTE, systems.LOINC_CONSULT_NOTE_DISPLAY),
        category=[_concept(systems.US_CORE_DOCREF_CATEGORY, *systems.US_CORE_CLINICAL_NOTE)],
        subject=Reference(reference=patient_ref),
        date=now,
        author=[Reference(display=name) for name in author_names(consult)] or None,
        description=composition.title,
        content=content,
        context=DocumentReferenceContext(related=[Reference(reference=service_request_ref)])
        if service_request_ref else None,
    )


def render_consult_xhtml(consult: Bundle) -> str:
    """A standalone XHTML document of the consult: header, then each section's title and narrative.

    Narrative comes from outside: it is re-parsed and stripped to what FHIR narrative allows (no scripts,
    styles, forms, event attributes or remote images); everything else is set as escaped text.
    """
    composition = consult_composition(consult)
    title = composition.title or systems.LOINC_CONSULT_NOTE_DISPLAY
    html = etree.Element(f"{{{XHTML_NS}}}html", nsmap={None: XHTML_NS})
    if composition.language:
        html.set("lang", xml_text(composition.language))
    head = _sub(html, "head")
    _sub(head, "meta").set("charset", "utf-8")
    _sub(head, "title", title)
    body = _sub(html, "body")
    _sub(body, "h1", title)
    for label, value in _header_lines(consult, composition):
        line = _sub(body, "p")
        _sub(line, "b", f"{label}: ").tail = xml_text(value)
    if composition.text is not None and composition.text.div:
        body.append(sanitize_div(composition.text.div))
    for section in composition.section or []:
        _render_section(body, section, level=2)
    return _XML_DECLARATION + etree.tostring(html, encoding="unicode")


def consult_composition(consult: Bundle) -> Composition:
    """The document's Composition (its first entry)."""
    entries = consult.entry or []
    if not entries or not isinstance(entries[0].resource, Composition):
        raise MappingError("Bundle.entry[0] is not a Composition")
    return entries[0].resource


def author_names(consult: Bundle) -> list[str]:
    """Display names of the Composition's authors (their display, else the resource they point at)."""
    composition = consult_composition(consult)
    resolve = _resolver(consult)
    return [name for ref in composition.author or [] if (name := _author_name(ref, composition, resolve))]


def _author_name(ref: Reference, composition: Composition, resolve: dict[str, Resource]) -> str:
    """One author's name; a PractitionerRole is named by its practitioner and role."""
    if ref.display:
        return ref.display
    target = resolve.get(ref.reference or "")
    if isinstance(target, PractitionerRole):
        who = reference_label(target.practitioner, target, resolve.get)
        role = "; ".join(concept_text(c) for c in target.code or [])
        return ", ".join(p for p in (who, role) if p) or "PractitionerRole"
    return resource_label(target) if target is not None else ""


def _resolver(consult: Bundle) -> dict[str, Resource]:
    """The consult's resources by fullUrl."""
    return {e.fullUrl: e.resource for e in consult.entry or [] if e.fullUrl and e.resource is not None}


def _header_lines(consult: Bundle, composition: Composition) -> list[tuple[str, str]]:
    """Patient, author(s), date and (when not final) status, as label/value pairs."""
    patient = _resolver(consult).get(composition.subject.reference or "") if composition.subject else None
    names = getattr(patient, "name", None) or []
    lines = [("Patient", human_name(names[0]) if names else ""), ("Author", "; ".join(author_names(consult))),
             ("Date", format_date(composition.date))]
    if composition.status != "final":
        lines.append(("Status", composition.status or ""))
    return [(label, value) for label, value in lines if value]


def _render_section(parent: etree._Element, section: CompositionSection, *, level: int) -> None:
    """A section's heading and sanitised narrative, then its sub-sections one level down."""
    _sub(parent, f"h{min(level, 6)}", section.title or concept_text(section.code) or "Section")
    if section.text is not None and section.text.div:
        parent.append(sanitize_div(section.text.div))
    elif section.emptyReason is not None:
        _sub(parent, "p", f"Empty: {concept_text(section.emptyReason)}")
    for sub in section.section or []:
        _render_section(parent, sub, level=level + 1)


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    """Append an XHTML child with escaped text."""
    child = etree.SubElement(parent, f"{{{XHTML_NS}}}{tag}")
    if text is not None:
        child.text = xml_text(text)
    return child


def _content(data: bytes, content_type: str, title: str | None, creation: object) -> DocumentReferenceContent:
    """One attachment: inline data with its size and SHA-1 hash; format "mime type sufficient"."""
    attachment = Attachment(
        contentType=content_type,
        data=base64.b64encode(data).decode("ascii"),
        size=len(data),
        hash=base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"),  # noqa: S324 - FHIR mandates SHA-1
        title=title,
        creation=creation,
    )
    return DocumentReferenceContent(attachment=attachment,
                                    format=Coding(system=systems.IHE_FORMAT_CODE,
                                                  code=systems.IHE_FORMAT_MIME_TYPE_SUFFICIENT[0],
                                                  display=systems.IHE_FORMAT_MIME_TYPE_SUFFICIENT[1]))


def _concept(system: str, code: str, display: str) -> CodeableConcept:
    """A CodeableConcept with one coding."""
    return CodeableConcept(coding=[Coding(system=system, code=code, display=display)])
