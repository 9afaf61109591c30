"""A parsed C-CDA document → a FHIR consult document Bundle (Composition 11488-4 "Consult note").

The output Composition always has type LOINC 11488-4, since what we file is the consultant's answer; the source
document's own type code (e.g. 34133-9 for a CCD) is kept in Composition.category, and Composition.relatesTo
(code "transforms", R4 Composition) carries the source ClinicalDocument/id. With a ConsultContext the Patient
is a copy of the EHR's (after checking both are the same person) and the referral's ServiceRequest identifier
is added as an OrderExtension; without one (CLI use) the Patient comes from recordTarget.
"""

from dataclasses import dataclass
from datetime import datetime

from fhir.resources.R4B.bundle import Bundle, BundleEntry
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.composition import Composition
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.reference import Reference
from lxml import etree

from mappers import systems
from mappers.ccda import ccda, header
from mappers.ccda.context import EntryContext
from mappers.ccda.datatypes import NarrativeIndex, codeable_concept
from mappers.ccda.nonxml import map_nonxml_body
from mappers.ccda.parser import CcdaDocument
from mappers.ccda.sections import SectionReport, SectionResult, map_sections
from mappers.consult_context import ConsultContext
from mappers.errors import MappingError
from mappers.ids import IdFactory

CONSULT_NOTE = ("11488-4", "Consult note")
CONSULT_KINDS = {"consultation-note"}

__all__ = ["CcdaMapping", "SectionReport", "map_ccda_consult"]


@dataclass(frozen=True)
class CcdaMapping:
    """The consult document Bundle, what kind of document the source was, warnings and per-section reports."""

    bundle: Bundle
    document_kind: str
    warnings: list[str]
    sections: list[SectionReport]


def map_ccda_consult(doc: CcdaDocument, context: ConsultContext | None, *, now: datetime,
                     new_id: IdFactory) -> CcdaMapping:
    """Map a parsed C-CDA document to a consult document Bundle (MappingError 422 when it cannot be mapped)."""
    root = doc.root
    warnings = list(doc.warnings)
    kind, kind_warnings = header.document_kind(root)
    warnings.extend(kind_warnings)
    if kind not in CONSULT_KINDS:
        warnings.append(f"the source document is a {kind}, not a consultation note")
    composition_id, bundle_id = new_id(), new_id()
    patient, patient_url = _patient(root, context, new_id)
    ctx = EntryContext(subject=Reference(reference=patient_url), new_id=new_id, narrative=NarrativeIndex(root),
                       warnings=warnings)
    participants = header.Participants(new_id)
    try:
        composition = _composition(root, ctx, participants, context, now, composition_id)
        results = _body(root, ctx, composition.category[0] if composition.category else None, composition.title)
        composition.section = [r.section for r in results] or None
        entries = [(f"urn:uuid:{composition.id}", composition), (patient_url, patient),
                   *[(f"urn:uuid:{r.id}", r) for r in participants.resources],
                   *[(f"urn:uuid:{r.id}", r) for result in results for r in result.resources]]
        bundle = Bundle(
            type="document",
            identifier=Identifier(system=systems.URN_IETF_RFC_3986, value=f"urn:uuid:{bundle_id}"),
            timestamp=now,
            entry=[BundleEntry(fullUrl=url, resource=resource) for url, resource in entries],
        )
    except ValueError as exc:
        if isinstance(exc, MappingError):
            raise
        raise MappingError(f"the C-CDA header could not be mapped ({_fields(exc)})", status=422) from exc
    reports = [report for result in results for report in result.reports]
    return CcdaMapping(bundle=bundle, document_kind=kind, warnings=ctx.warnings, sections=reports)


def _patient(root: etree._Element, context: ConsultContext | None, new_id: IdFactory) -> tuple[Patient, str]:
    """Return the Patient for the Bundle and its fullUrl (the EHR's Patient, checked, when a context is given)."""
    try:
        mapped = header.map_patient(root, new_id)
    except ValueError as exc:
        if isinstance(exc, MappingError):
            raise
        raise MappingError(f"the C-CDA patient could not be mapped ({_fields(exc)})", status=422) from exc
    if context is None:
        return mapped, f"urn:uuid:{mapped.id}"
    header.check_same_patient(mapped, context.patient)
    return context.patient.model_copy(deep=True), f"urn:uuid:{new_id()}"


def _composition(root: etree._Element, ctx: EntryContext, participants: header.Participants,
                 context: ConsultContext | None, now: datetime, composition_id: str) -> Composition:
    """Build the Composition from the header (sections are added afterwards)."""
    date = ccda.ts(root, "hl7:effectiveTime")
    if date is None:
        ctx.warn("the document has no usable effectiveTime: Composition.date is the mapping time")
    elif ccda.later_than(date, now):
        ctx.warn("the document is dated after the mapping time (Bundle.timestamp precedes Composition.date)")
    authors = header.map_authors(root, participants)
    if not authors:
        ctx.warn("the document names no usable author")
        authors = [Reference(display="Unknown author (not given in the source document)")]
    source_type = codeable_concept(ccda.first(root, "hl7:code"))
    return Composition(
        id=composition_id,
        extension=header.map_order_extensions(
            root, context.service_request_identifier if context else None) or None,
        status="final",
        type=CodeableConcept(coding=[Coding(system=systems.LOINC, code=CONSULT_NOTE[0], display=CONSULT_NOTE[1])]),
        category=[source_type] if source_type else None,
        subject=ctx.subject,
        date=date or now,
        author=authors,
        title=ccda.text_of(ccda.first(root, "hl7:title")) or (source_type.text if source_type else None)
        or CONSULT_NOTE[1],
        confidentiality=header.confidentiality(root),
        language=header.language(root),
        attester=header.map_attesters(root, participants) or None,
        custodian=header.map_custodian(root, participants),
        relatesTo=header.map_relates_to(root) or None,
        event=header.map_events(root) or None,
    )


def _body(root: etree._Element, ctx: EntryContext, doc_type: CodeableConcept | None,
          title: str | None) -> list[SectionResult]:
    """Map the structuredBody sections, or the nonXMLBody, or nothing (header-only document)."""
    structured = ccda.first(root, "hl7:component/hl7:structuredBody")
    if structured is not None:
        results = map_sections(structured, ctx)
        if not results:
            ctx.warn("the document has no sections (empty structuredBody)")
        return results
    unstructured = ccda.first(root, "hl7:component/hl7:nonXMLBody")
    if unstructured is not None:
        return [map_nonxml_body(unstructured, ctx, doc_type, title)]
    ctx.warn("the document has no body (header only)")
    return []


def _fields(exc: ValueError) -> str:
    """Name the fields of a validation error without echoing input values."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return type(exc).__name__
    return ", ".join(sorted({".".join(str(p) for p in e.get("loc", ())) for e in errors()})) or "invalid value"

