"""A FHIR document Bundle (referral packet or consult) → what the rendition templates show, as plain data.

Everything is read from the structured resources, grouped by the Composition's sections, and summarised with
the same helpers that write the packet's generated narrative (mappers.narrative.resource_rows), so the HTML and
PDF say what the FHIR document says. The EHR's own narrative XHTML (text.div) is never used as markup. Text
that exists only as narrative (the readiness report, a consultant's prose, a C-CDA section) is shown as plain
text lines (service.render.narrative_text).
"""

from dataclasses import dataclass, field

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.composition import CompositionSection
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.servicerequest import ServiceRequest

from mappers import systems
from mappers.docref import author_names, consult_composition
from mappers.narrative import NONE_RECORDED, Resolver, Row, concept_text, format_date, human_name, resource_rows
from mappers.summary import CONCORDANCE_CLASSES, bundle_resolver, concordance_item_text
from service.render.narrative_text import narrative_lines

PATIENT_AUTHOR = "Patient"  # Annotation.authorString of the patient's own questions (mappers/referral.py)
# The date column's heading in each clinical section (what the row's date is for that kind of resource).
DATE_HEADINGS = {systems.SECTION_PROBLEMS[0]: "Onset", systems.SECTION_PROCEDURES[0]: "Performed",
                 systems.SECTION_MEDICATIONS[0]: "When", systems.SECTION_ALLERGIES[0]: "Onset",
                 systems.SECTION_PLAN[0]: "Period"}


@dataclass(frozen=True)
class ReasonView:
    """The reason for referral: the clinician's question, the patient's questions, who asks whom."""

    question: str
    patient_questions: list[str]
    requester: str = ""
    consultant: str = ""


@dataclass(frozen=True)
class ConcordanceGroup:
    """One class of the second opinion's conclusions (confirmed, revised, …) and its items as text."""

    key: str
    label: str
    items: list[str]


@dataclass(frozen=True)
class SectionView:
    """One Composition section as shown: heading, rows of resources, plain-text lines, sub-sections."""

    title: str
    code: str
    level: int
    date_heading: str = "Date"
    rows: list[Row] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    empty: str = ""  # why there is nothing to show ("None recorded", the emptyReason)
    reason: ReasonView | None = None
    concordance: list[ConcordanceGroup] = field(default_factory=list)
    sections: list["SectionView"] = field(default_factory=list)


@dataclass(frozen=True)
class RenderedDocument:
    """The whole document: header facts for people (and the PDF's running header), then the sections."""

    kind: str  # "packet" | "consult"
    title: str
    referral_id: str
    patient_name: str
    birth_date: str
    gender: str
    date: str
    status: str
    authors: list[str]
    identifier: str
    sections: list[SectionView]


def build_document_view(bundle: dict, *, kind: str, referral_id: str, concordance: dict | None = None,
                        prose: bool = False) -> RenderedDocument:
    """Read a document Bundle (FHIR JSON as a dict) into the view the templates render.

    prose: also show each section's narrative as plain text (a consultant writes prose; the packet's narratives
    are generated from its entries, so there they would only repeat the tables).
    """
    document = Bundle.model_validate(bundle)
    composition = consult_composition(document)
    resolve = bundle_resolver(document)
    patient = resolve(composition.subject.reference or "") if composition.subject else None
    patient = patient if isinstance(patient, Patient) else None
    reader = _SectionReader(resolve, concordance, prose)
    return RenderedDocument(
        kind=kind, title=composition.title or concept_text(composition.type) or "Document", referral_id=referral_id,
        patient_name=human_name(patient.name[0]) if patient is not None and patient.name else "",
        birth_date=format_date(patient.birthDate) if patient is not None else "",
        gender=(patient.gender or "") if patient is not None else "",
        date=format_date(composition.date), status=composition.status or "", authors=author_names(document),
        identifier=(document.identifier.value or "") if document.identifier is not None else "",
        sections=[reader.read(s, level=2) for s in composition.section or []],
    )


@dataclass(frozen=True)
class _SectionReader:
    """Reads sections against one document's resources."""

    resolve: Resolver
    concordance: dict | None
    prose: bool

    def read(self, section: CompositionSection, *, level: int) -> SectionView:
        """One section and its sub-sections."""
        code = _section_code(section)
        resources = [r for ref in section.entry or [] if (r := self.resolve(ref.reference or "")) is not None]
        reason = _reason(resources) if code == systems.SECTION_REASON_FOR_REFERRAL[0] else None
        groups = (_concordance_groups(self.concordance)
                  if code == systems.SECTION_SECOND_OPINION_SUMMARY[0] and self.concordance is not None else [])
        rows = [] if reason is not None or groups else resource_rows(resources, self.resolve)
        show_text = (self.prose and not groups) or not (resources or section.emptyReason is not None)
        lines = narrative_lines(section.text.div if section.text is not None else None) if show_text else []
        empty = ""
        if not (rows or lines or reason or groups):
            why = concept_text(section.emptyReason) if section.emptyReason is not None else ""
            empty = f"{NONE_RECORDED} ({why})" if why else NONE_RECORDED
        return SectionView(
            title=section.title or concept_text(section.code) or "Section", code=code, level=min(level, 6),
            date_heading=DATE_HEADINGS.get(code, "Date"), rows=rows, lines=lines, empty=empty, reason=reason,
            concordance=groups, sections=[self.read(s, level=level + 1) for s in section.section or []])


def _section_code(section: CompositionSection) -> str:
    """The section's LOINC code ("" when it has none)."""
    codings = (section.code.coding or []) if section.code is not None else []
    return next((c.code for c in codings if c.system == systems.LOINC and c.code), "")


def _reason(resources: list[Resource]) -> ReasonView:
    """The referral's question and the patient's questions, from the order the section points at.

    mappers/referral.py writes the clinical question as ServiceRequest.reasonCode.text (with v2-0336 "S") and
    each of the patient's questions as a note with authorString "Patient".
    """
    order = next((r for r in resources if isinstance(r, ServiceRequest)), None)
    if order is None:
        return ReasonView(question="", patient_questions=[])
    reasons = order.reasonCode or []
    second_opinion = [c for c in reasons if any(k.system == systems.V2_0336 for k in c.coding or [])]
    question = next((c.text for c in second_opinion + reasons if c.text), "")
    return ReasonView(
        question=question,
        patient_questions=[n.text for n in order.note or [] if n.text and n.authorString == PATIENT_AUTHOR],
        requester=(order.requester.display or "") if order.requester is not None else "",
        consultant="; ".join(p.display for p in order.performer or [] if p.display),
    )


def _concordance_groups(concordance: dict) -> list[ConcordanceGroup]:
    """The second opinion's conclusions per class, worded as the summary section's narrative words them."""
    return [ConcordanceGroup(key, label, [concordance_item_text(key, item) for item in concordance.get(key) or []])
            for key, label in CONCORDANCE_CLASSES]

