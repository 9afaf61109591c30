"""The consultant's web form → a FHIR consult document Bundle (Composition 11488-4) that our intake accepts.

Each judgement on a referred Condition becomes a consult Condition whose Condition.evidence.detail points at the
referred one as "Condition/<id as sent>", which is how mappers/concordance.py (rule 1) recognises it:

| verdict  | consult Condition.code            | verificationStatus | concordance      |
|----------|-----------------------------------|--------------------|------------------|
| confirm  | the referred Condition's codings  | confirmed          | confirmed: R     |
| revise   | the consultant's new diagnosis    | confirmed          | revised: R → C   |
| refute   | the referred Condition's codings  | refuted            | refuted: R       |

New diagnoses carry no evidence link and verificationStatus provisional (found on review, to be confirmed):
concordance files them as new unless they share a code with a referred Condition. The recommended treatment and each
alternative are ServiceRequests with intent "proposal" (a suggestion, not an order: FHIR request-intent) listed in
the Plan of care section, which is how mappers/summary.py recognises alternatives.
"""

from dataclasses import dataclass, field
from datetime import datetime

from fhir.resources.R4B.bundle import Bundle, BundleEntry
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.composition import Composition, CompositionSection
from fhir.resources.R4B.condition import Condition, ConditionEvidence
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.practitioner import Practitioner, PractitionerQualification
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.servicerequest import ServiceRequest

from mappers import systems
from mappers.errors import MappingError
from mappers.ids import IdFactory
from mappers.narrative import concept_text, text_narrative
from mappers.validation import require_aware

VERDICTS = ("confirm", "revise", "refute")
CONSULTANT_SYSTEM = "urn:second-opinion:consultant"
SECTION_ANSWERS_TITLE = "Answers to the questions asked"
_VERDICT_STATUS = {"confirm": "confirmed", "revise": "confirmed", "refute": "refuted"}


@dataclass(frozen=True)
class Diagnosis:
    """A diagnosis the consultant names: chosen from the packet's codes (coding), or free text."""

    text: str
    coding: Coding | None = None


@dataclass(frozen=True)
class Judgement:
    """The consultant's verdict on one referred Condition (as it is in the packet)."""

    condition: Condition
    verdict: str  # confirm | revise | refute
    revised_to: Diagnosis | None = None  # required when verdict is revise
    note: str = ""


@dataclass(frozen=True)
class Consultant:
    """Who signs the consult (a configured consultant)."""

    id: str
    name: str
    specialty: str = ""


@dataclass(frozen=True)
class ConsultForm:
    """Everything the consult form collects."""

    judgements: list[Judgement] = field(default_factory=list)
    new_diagnoses: list[Diagnosis] = field(default_factory=list)
    recommendation: str = ""
    alternatives: list[str] = field(default_factory=list)
    answers: list[tuple[str, str]] = field(default_factory=list)  # (question, answer)
    assessment: str = ""


def build_consult_form_bundle(form: ConsultForm, *, patient: Patient, consultant: Consultant, now: datetime,
                              new_id: IdFactory) -> Bundle:
    """Build the consult document Bundle for a filled-in consult form (rules in the module docstring)."""
    require_aware(now)
    check_consult_form(form)
    patient_url, author_url = f"urn:uuid:{new_id()}", f"urn:uuid:{new_id()}"
    subject = Reference(reference=patient_url)
    conditions = [judged_condition(j, subject) for j in form.judgements]
    conditions += [new_condition(d, subject) for d in form.new_diagnoses]
    proposals = [proposal(text, subject) for text in _treatments(form)]
    condition_urls = [f"urn:uuid:{new_id()}" for _ in conditions]
    proposal_urls = [f"urn:uuid:{new_id()}" for _ in proposals]
    composition = Composition(
        status="final", date=now, title="Second-opinion consult",
        type=CodeableConcept(coding=[Coding(system=systems.LOINC, code=systems.LOINC_CONSULT_NOTE,
                                            display=systems.LOINC_CONSULT_NOTE_DISPLAY)]),
        subject=subject, author=[Reference(reference=author_url, display=consultant.name)],
        section=_sections(form, condition_urls, proposal_urls))
    entries = [BundleEntry(fullUrl=f"urn:uuid:{new_id()}", resource=composition),
               BundleEntry(fullUrl=patient_url, resource=patient.model_copy(deep=True)),
               BundleEntry(fullUrl=author_url, resource=consultant_practitioner(consultant))]
    entries += [BundleEntry(fullUrl=url, resource=c) for url, c in zip(condition_urls, conditions)]
    entries += [BundleEntry(fullUrl=url, resource=p) for url, p in zip(proposal_urls, proposals)]
    return Bundle(type="document", timestamp=now, entry=entries,
                  identifier=Identifier(system=systems.URN_IETF_RFC_3986, value=f"urn:uuid:{new_id()}"))


def check_consult_form(form: ConsultForm) -> None:
    """Refuse a form that cannot make a consult (MappingError names the first problem)."""
    for judgement in form.judgements:
        if judgement.verdict not in VERDICTS:
            raise MappingError(f"unknown verdict {judgement.verdict!r}: use one of {', '.join(VERDICTS)}")
        if not judgement.condition.id:
            raise MappingError("a judged Condition has no id, so the consult cannot point at it")
        if judgement.verdict == "revise" and (judgement.revised_to is None or not judgement.revised_to.text.strip()):
            raise MappingError("a revised diagnosis needs the new diagnosis")
    if not (form.judgements or form.new_diagnoses or form.assessment.strip() or form.recommendation.strip()
            or any(a.strip() for _, a in form.answers)):
        raise MappingError("the consult form is empty")


def judged_condition(judgement: Judgement, subject: Reference) -> Condition:
    """A consult Condition stating the verdict on a referred Condition, linked to it by evidence.detail."""
    referred = judgement.condition
    if judgement.verdict == "revise":
        assert judgement.revised_to is not None  # check_consult_form
        code = diagnosis_concept(judgement.revised_to)
    else:
        code = CodeableConcept(coding=[c.model_copy(deep=True) for c in (referred.code.coding or [])] or None,
                               text=concept_text(referred.code) or None) if referred.code else None
    status = _VERDICT_STATUS[judgement.verdict]
    return Condition(
        clinicalStatus=None if status == "refuted" else _concept(systems.CONDITION_CLINICAL, "active"),
        verificationStatus=_concept(systems.CONDITION_VER_STATUS, status),
        code=code, subject=subject,
        evidence=[ConditionEvidence(detail=[Reference(reference=f"Condition/{referred.id}",
                                                      display=concept_text(referred.code) or None)])],
        note=[{"text": judgement.note.strip()}] if judgement.note.strip() else None)


def new_condition(diagnosis: Diagnosis, subject: Reference) -> Condition:
    """A diagnosis the referral did not name (provisional: found on review)."""
    return Condition(clinicalStatus=_concept(systems.CONDITION_CLINICAL, "active"),
                     verificationStatus=_concept(systems.CONDITION_VER_STATUS, "provisional"),
                     code=diagnosis_concept(diagnosis), subject=subject)


def diagnosis_concept(diagnosis: Diagnosis) -> CodeableConcept:
    """The CodeableConcept of a diagnosis: its coding when chosen from the list, its text always."""
    text = diagnosis.text.strip() or (diagnosis.coding.display if diagnosis.coding else "") or ""
    coding = [diagnosis.coding.model_copy(deep=True)] if diagnosis.coding is not None else None
    return CodeableConcept(coding=coding, text=text or None)


def proposal(text: str, subject: Reference) -> ServiceRequest:
    """A recommended treatment or alternative: a proposal, not an order."""
    return ServiceRequest(status="active", intent="proposal", subject=subject, code=CodeableConcept(text=text))


def consultant_practitioner(consultant: Consultant) -> Practitioner:
    """The consultant as the document's author."""
    qualification = [PractitionerQualification(code=CodeableConcept(text=consultant.specialty))] \
        if consultant.specialty else None
    return Practitioner(identifier=[Identifier(system=CONSULTANT_SYSTEM, value=consultant.id)],
                        name=[HumanName(text=consultant.name)], qualification=qualification)


def _treatments(form: ConsultForm) -> list[str]:
    """The recommended treatment first, then each alternative (blank lines dropped)."""
    items = [form.recommendation.strip(), *(a.strip() for a in form.alternatives)]
    return [i for i in items if i]


def _sections(form: ConsultForm, condition_urls: list[str], proposal_urls: list[str]) -> list[CompositionSection]:
    """Assessment (the verdicts and the free text), plan of care (treatments) and answers."""
    sections = [CompositionSection(
        title="Assessment", code=_loinc(systems.SECTION_ASSESSMENT),
        text=text_narrative([form.assessment, *_verdict_lines(form)]),
        entry=[Reference(reference=u) for u in condition_urls] or None)]
    treatments = _treatments(form)
    if treatments:
        lines = [f"Recommended: {form.recommendation.strip()}"] if form.recommendation.strip() else []
        lines += [f"Alternative: {a.strip()}" for a in form.alternatives if a.strip()]
        sections.append(CompositionSection(title="Recommendations", code=_loinc(systems.SECTION_PLAN),
                                           text=text_narrative(lines),
                                           entry=[Reference(reference=u) for u in proposal_urls]))
    answered = [(q, a.strip()) for q, a in form.answers if a.strip()]
    if answered:
        sections.append(CompositionSection(title=SECTION_ANSWERS_TITLE,
                                           text=text_narrative([f"{q} — {a}" for q, a in answered])))
    return sections


def _verdict_lines(form: ConsultForm) -> list[str]:
    """One sentence per judgement and new diagnosis, for the Assessment narrative."""
    lines = []
    for j in form.judgements:
        referred = concept_text(j.condition.code) or "a referred diagnosis"
        if j.verdict == "confirm":
            lines.append(f"Confirmed: {referred}.")
        elif j.verdict == "refute":
            lines.append(f"Not supported: {referred}.")
        else:
            assert j.revised_to is not None
            lines.append(f"Revised: {referred} to {diagnosis_concept(j.revised_to).text}.")
        if j.note.strip():
            lines.append(j.note.strip())
    lines += [f"New: {diagnosis_concept(d).text}." for d in form.new_diagnoses]
    return lines


def _concept(system: str, code: str) -> CodeableConcept:
    return CodeableConcept(coding=[Coding(system=system, code=code)])


def _loinc(section: tuple[str, str]) -> CodeableConcept:
    return CodeableConcept(coding=[Coding(system=systems.LOINC, code=section[0], display=section[1])])
