"""What the second opinion concluded, as data (concordance) and as a Composition section "Second-opinion summary".

Concordance is mappers.concordance.assess_concordance over the packet's Conditions (what the referral sent) and the
consult document's Conditions. A consult Condition's link to a referred one arrives as a logical reference (see
mappers/consult.py: identifier urn:ietf:rfc:3986 = the Condition's EHR URL or its packet fullUrl); such links, and
literal references to a referred Condition's packet fullUrl, are read back as "Condition/<id>" so that rule 1
(Condition.evidence.detail) sees them.

Alternatives (recommended treatments) are the consult's ServiceRequest, MedicationRequest and CarePlan resources
that are recommendations: intent proposal, plan or option (FHIR request-intent), or listed in a plan section
(LOINC 18776-5 Plan of care note, 51847-2 Assessment and plan) whatever their intent; status not completed,
revoked or entered-in-error; and not already a treatment in the packet (a MedicationRequest/MedicationStatement
drug, ServiceRequest, Procedure or CarePlan activity with the same system|code, or, for uncoded items, the same
text): repeating the current treatment is not an alternative. Items: {"resource": <fullUrl in the consult>,
"type", "intent", "code": "system|code" | None, "display"}.

The section (LOINC 55110-1 Conclusions) comes first in the consult Composition; its narrative lists each class and
its entries reference every consult Condition and every alternative.
"""

from collections.abc import Callable
from dataclasses import dataclass

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.composition import Composition, CompositionSection
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.narrative import Narrative
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.servicerequest import ServiceRequest
from lxml import etree

from mappers import systems
from mappers.concordance import assess_concordance, coding_key
from mappers.errors import MappingError
from mappers.narrative import XHTML_NS, concept_text, medication_concept, xml_text

SUMMARY_TITLE = "Second-opinion summary"
PLAN_SECTIONS = frozenset({systems.SECTION_PLAN[0], "51847-2"})  # Plan of care note; Assessment and plan
RECOMMENDING_INTENTS = frozenset({"proposal", "plan", "option"})
NOT_RECOMMENDED_STATUSES = frozenset({"completed", "revoked", "entered-in-error"})
CONCORDANCE_CLASSES = (("confirmed", "Confirmed"), ("revised", "Revised"), ("refuted", "Refuted"),
                       ("new", "New diagnoses"), ("not_addressed", "Not addressed"),
                       ("alternatives", "Recommended alternatives"))


Resolver = Callable[[str], Resource | None]


@dataclass(frozen=True)
class Summary:
    """The concordance object and the consult resources it rests on (Conditions, then alternatives)."""

    concordance: dict
    entries: list[str]


def summarise_consult(document: Bundle, packet: Bundle) -> Summary:
    """Compare a consult document with the packet it answers (rules in the module docstring)."""
    referred = _resources(packet, Condition)
    packet_urls = {url: f"Condition/{c.id}" for url, c in referred if c.id}
    consult_conditions = [(url, _with_links_read(c, packet_urls, {c.id for _, c in referred if c.id}))
                          for url, c in _resources(document, Condition)]
    concordance = assess_concordance([c for _, c in referred], [c for _, c in consult_conditions]).as_dict()
    alternatives = _alternatives(document, packet)
    concordance["alternatives"] = alternatives
    entries = [url for url, _ in consult_conditions] + [item["resource"] for item in alternatives]
    return Summary(concordance=concordance, entries=list(dict.fromkeys(entries)))


def build_summary_section(summary: Summary) -> CompositionSection:
    """The "Second-opinion summary" section: a narrative per class, entries → the consult's resources."""
    return CompositionSection(
        title=SUMMARY_TITLE,
        code=CodeableConcept(coding=[Coding(system=systems.LOINC, code=systems.SECTION_SECOND_OPINION_SUMMARY[0],
                                            display=systems.SECTION_SECOND_OPINION_SUMMARY[1])]),
        text=Narrative(status="generated", div=_narrative(summary.concordance)),
        entry=[Reference(reference=url) for url in summary.entries] or None,
    )


def add_summary_section(document: Bundle, packet: Bundle) -> tuple[Bundle, Summary]:
    """A copy of the consult document with the summary section first in its Composition, and the summary."""
    entries = document.entry or []
    if not entries or not isinstance(entries[0].resource, Composition):
        raise MappingError("Bundle.entry[0] is not a Composition")
    summary = summarise_consult(document, packet)
    composition = entries[0].resource
    composed = composition.model_copy(update={"section": [build_summary_section(summary),
                                                         *(composition.section or [])]})
    first = entries[0].model_copy(update={"resource": composed})
    return document.model_copy(update={"entry": [first, *entries[1:]]}), summary


# --- conditions ----------------------------------------------------------------------------------------


def _with_links_read(condition: Condition, packet_urls: dict[str, str], referred_ids: set[str]) -> Condition:
    """The Condition with evidence links to referred Conditions written as "Condition/<id>" (a copy if changed)."""
    def target(ref: Reference) -> str | None:
        if ref.reference:
            return packet_urls.get(ref.reference.strip())
        value = ref.identifier.value if ref.identifier is not None and ref.identifier.value else ""
        if value in packet_urls:
            return packet_urls[value]
        tail = value.rsplit("/", 2)[-2:]
        if len(tail) == 2 and tail[0] == "Condition" and tail[1] in referred_ids:
            return "/".join(tail)
        return None

    details = [ref for evidence in condition.evidence or [] for ref in evidence.detail or []]
    if not any(target(ref) for ref in details):
        return condition
    copy = condition.model_copy(deep=True)
    for evidence in copy.evidence or []:
        for ref in evidence.detail or []:
            found = target(ref)
            if found:
                ref.reference = found
    return copy


# --- alternatives --------------------------------------------------------------------------------------


def _alternatives(document: Bundle, packet: Bundle) -> list[dict]:
    """The consult's recommended treatments that the packet does not already hold."""
    listed_in_plan = _plan_section_entries(document)
    consult_resolve = bundle_resolver(document)
    current = _treatment_keys(packet)
    items = []
    for url, resource in _resources(document, ServiceRequest, MedicationRequest, CarePlan):
        if resource.status in NOT_RECOMMENDED_STATUSES:
            continue
        if resource.intent not in RECOMMENDING_INTENTS and url not in listed_in_plan:
            continue
        concept = _treatment_concept(resource, consult_resolve)
        keys = _concept_keys(concept)
        if keys & current:
            continue
        coding = next((c for c in (concept.coding or []) if c.code), None) if concept else None
        items.append({"resource": url, "type": resource.get_resource_type(), "intent": resource.intent,
                      "code": f"{coding.system or ''}|{coding.code}" if coding else None,
                      "display": _treatment_text(resource, concept) or None})
    return items


def _plan_section_entries(document: Bundle) -> set[str]:
    """fullUrls listed as entries of plan sections (at any depth) of the consult's Composition."""
    composition = document.entry[0].resource if document.entry else None
    found: set[str] = set()
    stack = list(getattr(composition, "section", None) or [])
    while stack:
        section = stack.pop()
        codes = {c.code for c in (section.code.coding or [])} if section.code else set()
        if codes & PLAN_SECTIONS:
            found.update(e.reference for e in section.entry or [] if e.reference)
        stack.extend(section.section or [])
    return found


def _treatment_keys(packet: Bundle) -> set[tuple[str, str]]:
    """What the packet already treats with: coding keys and ("text", name) of its treatments."""
    resolve = bundle_resolver(packet)
    keys: set[tuple[str, str]] = set()
    types = (MedicationRequest, MedicationStatement, ServiceRequest, Procedure, CarePlan)
    for _, resource in _resources(packet, *types):
        if isinstance(resource, CarePlan):
            for activity in resource.activity or []:
                keys |= _concept_keys(activity.detail.code if activity.detail else None)
        else:
            keys |= _concept_keys(_treatment_concept(resource, resolve))
    return keys


def _treatment_concept(resource: Resource, resolve: Resolver) -> CodeableConcept | None:
    """The code of a treatment: its drug (inline or referenced Medication), its code, or its CarePlan category."""
    if isinstance(resource, MedicationRequest | MedicationStatement):
        return medication_concept(resource, resolve)
    if isinstance(resource, CarePlan):
        codes = [a.detail.code for a in resource.activity or [] if a.detail and a.detail.code]
        return codes[0] if codes else None
    return getattr(resource, "code", None)


def _treatment_text(resource: Resource, concept: CodeableConcept | None) -> str:
    """A readable name for a recommendation."""
    if isinstance(resource, CarePlan) and (resource.title or resource.description):
        return resource.title or resource.description or ""
    return concept_text(concept)


def _concept_keys(concept: CodeableConcept | None) -> set[tuple[str, str]]:
    """Coding keys of a concept, or ("text", its normalised text) when it has no usable coding."""
    if concept is None:
        return set()
    keys = {key for key in (coding_key(c) for c in concept.coding or []) if key}
    if not keys:
        text = " ".join(concept_text(concept).split()).casefold()
        if text:
            keys.add(("text", text))
    return keys


# --- shared helpers ------------------------------------------------------------------------------------


def _resources(bundle: Bundle, *types: type) -> list[tuple[str, Resource]]:
    """(fullUrl, resource) of the Bundle's entries of the given types, in order."""
    return [(e.fullUrl or "", e.resource) for e in bundle.entry or [] if isinstance(e.resource, types)]


def bundle_resolver(bundle: Bundle) -> Resolver:
    """Look a resource up by its fullUrl."""
    index = {e.fullUrl: e.resource for e in bundle.entry or [] if e.fullUrl and e.resource is not None}
    return index.get


# --- narrative -----------------------------------------------------------------------------------------


def _narrative(concordance: dict) -> str:
    """The section's XHTML: a one-line tally, then each class as a list ("None" when empty)."""
    div = etree.Element(f"{{{XHTML_NS}}}div", nsmap={None: XHTML_NS})
    tally = ", ".join(f"{label.lower()} {len(concordance[key])}" for key, label in CONCORDANCE_CLASSES)
    _sub(div, "p", f"Referred diagnoses and the second opinion: {tally}.")
    for key, label in CONCORDANCE_CLASSES:
        _sub(div, "h3", label)
        items = concordance[key]
        if not items:
            _sub(div, "p", "None")
            continue
        ul = _sub(div, "ul")
        for item in items:
            _sub(ul, "li", concordance_item_text(key, item))
    return etree.tostring(div, encoding="unicode")


def concordance_item_text(kind: str, item: dict) -> str:
    """One list line: "display (code)", "from → to" for revisions."""
    if kind == "revised":
        return f"{_described(item['from'])} \u2192 {_described(item['to'])}"
    return _described(item)


def _described(item: dict) -> str:
    """ "Display (ICD-10-CM E78.5)" with whichever parts are known."""
    display, code = item.get("display"), item.get("code")
    code_text = None
    if code:
        system, _, value = code.rpartition("|")
        code_text = f"{systems.SYSTEM_NAMES[system]} {value}" if system in systems.SYSTEM_NAMES else value
    if display and code_text:
        return f"{display} ({code_text})"
    return display or code_text or "Unnamed"


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    """Append an XHTML child with escaped text."""
    child = etree.SubElement(parent, f"{{{XHTML_NS}}}{tag}")
    if text is not None:
        child.text = xml_text(text)
    return child
