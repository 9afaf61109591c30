"""A consultant's FHIR answer → our consult document (Composition 11488-4 Consult note) about the EHR's patient."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime

from fhir.resources.R4B.bundle import Bundle, BundleEntry
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.composition import Composition, CompositionSection
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource

from mappers import systems
from mappers.consult_context import ConsultContext
from mappers.errors import MappingError
from mappers.ids import IdFactory
from mappers.narrative import check_narrative, concept_text, drop_invalid_narrative
from mappers.references import iter_references, reference_key, reference_type, rest_base, rewrite_references
from mappers.validation import instant_before, require_aware


@dataclass(frozen=True)
class _Source:
    """One resource of the consultant's input: the names it can be referenced by, and its server base."""

    resource: Resource
    aliases: tuple[str, ...]
    base_url: str = ""


@dataclass(frozen=True)
class _Input:
    """The consultant's Composition and every other resource that came with it."""

    composition: Composition
    composition_source: _Source
    others: list[_Source]
    bare: bool  # a Composition on its own (resources contained)


def build_consult_bundle(source: Bundle | Composition, context: ConsultContext, *, now: datetime,
                         new_id: IdFactory) -> Bundle:
    """Build our consult document from a document Bundle, a collection Bundle or a bare Composition.

    The Composition keeps the consultant's title, date, author, attester, sections and text, and becomes a
    LOINC 11488-4 Consult note about the EHR's patient, linked to the referral ServiceRequest by identifier
    (C-CDA on FHIR OrderExtension). Its status is kept when it is preliminary, final or amended: we do not
    claim a finality the author did not (composition-status); entered-in-error is refused.

    References to the referral's own Conditions (by their packet fullUrl, "Condition/<EHR id>" or the EHR's URL),
    e.g. a revised diagnosis's Condition.evidence.detail, are not in the consult: they become logical references
    (type Condition, identifier urn:ietf:rfc:3986 = the Condition's URL on the EHR) so the link survives the
    document's "everything referenced is inside" rule (FHIR R4 references.html#logical).
    """
    require_aware(now)
    consult = _read(source)
    _check_composition(consult.composition, now)
    patients = [s for s in consult.others if isinstance(s.resource, Patient)]
    _check_same_patients([s.resource for s in patients], context.patient)
    others = [s for s in consult.others if not isinstance(s.resource, Patient)]
    identifier = Identifier(system=systems.URN_IETF_RFC_3986, value=f"urn:uuid:{new_id()}")
    composition_url, patient_url = f"urn:uuid:{new_id()}", f"urn:uuid:{new_id()}"
    urls = {id(s): f"urn:uuid:{new_id()}" for s in others}
    mapping = _mapping(consult, patients, others, urls, composition_url, patient_url)
    _check_section_entries(consult, mapping)
    links = _referred_links(context)
    composition = _composition(consult, mapping, composition_url, patient_url, context, links)
    entries = [BundleEntry(fullUrl=composition_url, resource=composition),
               BundleEntry(fullUrl=patient_url, resource=_patient(context.patient, mapping))]
    entries += [BundleEntry(fullUrl=urls[id(s)], resource=_entry_resource(s, mapping, urls[id(s)], links))
                for s in others]
    return Bundle(identifier=identifier, type="document", timestamp=now, entry=entries)


# --- reading the input ---------------------------------------------------------------------------------


def _read(source: Bundle | Composition) -> _Input:
    """Find the Composition and the other resources in any of the three input forms."""
    if isinstance(source, Composition):
        return _read_bare(source)
    if source.type == "document":
        return _read_bundle(source, _document_composition_index(source))
    if source.type == "collection":
        return _read_bundle(source, _collection_composition_index(source))
    raise MappingError(f"a consult Bundle must be a document or a collection, not {source.type}")


def _document_composition_index(bundle: Bundle) -> int:
    """A document's Composition is its first entry."""
    entries = bundle.entry or []
    if not entries or not isinstance(entries[0].resource, Composition):
        raise MappingError("Bundle.entry[0] is not a Composition")
    return 0


def _collection_composition_index(bundle: Bundle) -> int:
    """A collection must hold exactly one Composition (anywhere)."""
    found = [i for i, e in enumerate(bundle.entry or []) if isinstance(e.resource, Composition)]
    if len(found) != 1:
        raise MappingError(f"the collection Bundle holds {len(found)} Compositions; a consult needs exactly one")
    return found[0]


def _read_bundle(bundle: Bundle, composition_index: int) -> _Input:
    """Read a Bundle's entries with the names each can be referenced by (a fullUrl must not repeat)."""
    entries = bundle.entry or []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if entry.fullUrl in seen:
            raise MappingError(f"Bundle.entry[{index}].fullUrl repeats Bundle.entry[{seen[entry.fullUrl]}].fullUrl")
        if entry.fullUrl:
            seen[entry.fullUrl] = index
    composition = entries[composition_index].resource
    assert isinstance(composition, Composition)  # found by the caller
    others = [_entry_source(e) for i, e in enumerate(entries) if i != composition_index and e.resource is not None]
    return _Input(composition, _entry_source(entries[composition_index]), others, bare=False)


def _entry_source(entry: BundleEntry) -> _Source:
    """One Bundle entry: aliases are its fullUrl and "Type/id"; a RESTful fullUrl gives the base."""
    resource = entry.resource
    assert resource is not None  # entries without a resource are skipped by the caller
    aliases = [a for a in (entry.fullUrl, _type_id(resource)) if a]
    return _Source(resource, tuple(dict.fromkeys(aliases)), rest_base(entry.fullUrl))


def _read_bare(composition: Composition) -> _Input:
    """A bare Composition: its contained resources are the other resources, referenced as #id."""
    others = [_Source(c, (f"#{c.id}",) if c.id else ()) for c in composition.contained or []]
    return _Input(composition, _Source(composition, ("#",)), others, bare=True)


def _type_id(resource: Resource) -> str | None:
    """ "Type/id" of a resource with an id."""
    return f"{resource.get_resource_type()}/{resource.id}" if resource.id else None


# --- checks --------------------------------------------------------------------------------------------


def _check_composition(composition: Composition, now: datetime) -> None:
    """Refuse a Composition that cannot be a consult: no author, no content, withdrawn or future-dated."""
    if composition.status == "entered-in-error":
        raise MappingError("Composition.status is entered-in-error")
    if not composition.author:
        raise MappingError("Composition.author is missing")
    has_text = composition.text is not None and bool(composition.text.div)
    if not composition.section and not has_text:
        raise MappingError("the Composition has no sections and no text")
    for path, section in _sections(composition.section or []):
        if section.text is None and not section.entry and not section.section:
            raise MappingError(f"Composition.{path} has no text, entries or sections (cmp-1)")
    if composition.date is not None and instant_before(now, composition.date):
        raise MappingError("Composition.date is later than the time the consult was received")
    _check_composition_narratives(composition)


def _check_composition_narratives(composition: Composition) -> None:
    """The document's own narrative (text and sections) must be allowed XHTML (txt-1, txt-2)."""
    texts = [("Composition.text", composition.text)]
    texts += [(f"Composition.{path}.text", s.text) for path, s in _sections(composition.section or [])]
    for where, text in texts:
        problems = check_narrative(text.div) if text is not None and text.div is not None else []
        if problems:
            raise MappingError(f"{where} is not allowed narrative: {problems[0]}")


def _sections(sections: list[CompositionSection], prefix: str = "") -> Iterator[tuple[str, CompositionSection]]:
    """Sections and nested sections with their paths: section[2], section[2].section[0]…"""
    for i, section in enumerate(sections):
        path = f"{prefix}section[{i}]"
        yield path, section
        yield from _sections(section.section or [], f"{path}.")


def _check_same_patients(theirs: list[Resource], ours: Patient) -> None:
    """Check every Patient that came with the consult against ours."""
    for patient in theirs:
        if isinstance(patient, Patient):
            _check_same_patient(patient, ours)


def _check_same_patient(theirs: Patient, ours: Patient) -> None:
    """Refuse a consult whose Patient contradicts ours (identifier of a shared system, or birth date).

    The message names the field, never the values.
    """
    our_ids = _identifiers_by_system(ours)
    for system, values in _identifiers_by_system(theirs).items():
        if system in our_ids and not values & our_ids[system]:
            raise MappingError("the consult is about a different patient: Patient.identifier differs")
    if theirs.birthDate and ours.birthDate and not _same_date(theirs.birthDate, ours.birthDate):
        raise MappingError("the consult is about a different patient: Patient.birthDate differs")


def _identifiers_by_system(patient: Patient) -> dict[str, set[str]]:
    """A patient's identifier values grouped by system."""
    grouped: dict[str, set[str]] = {}
    for identifier in patient.identifier or []:
        if identifier.system and identifier.value:
            grouped.setdefault(identifier.system, set()).add(identifier.value)
    return grouped


def _same_date(a: object, b: object) -> bool:
    """Whether two FHIR dates agree at the precision they share (1970 agrees with 1970-05-01)."""
    left, right = _iso(a), _iso(b)
    length = min(len(left), len(right))
    return left[:length] == right[:length]


def _iso(value: object) -> str:
    """A date as ISO text."""
    return value.isoformat() if isinstance(value, date) else str(value)


def _check_section_entries(consult: _Input, mapping: dict[str, str]) -> None:
    """Every section entry must point at a resource that came with the consult."""
    where = "contained in the Composition" if consult.bare else "in the Bundle"
    base = consult.composition_source.base_url
    for path, section in _sections(consult.composition.section or []):
        for j, entry in enumerate(section.entry or []):
            literal = entry.reference
            if literal and _target(literal, mapping, base) is None:
                raise MappingError(f"Composition.{path}.entry[{j}] refers to {literal} which is not {where}")


# --- mapping and building ------------------------------------------------------------------------------


def _mapping(consult: _Input, patients: list[_Source], others: list[_Source], urls: dict[int, str],
             composition_url: str, patient_url: str) -> dict[str, str]:
    """Every name a source resource can be referenced by → its new fullUrl (source Patients → our Patient)."""
    mapping: dict[str, str] = {}
    for alias in consult.composition_source.aliases:
        mapping.setdefault(alias, composition_url)
    for source in patients:
        for alias in source.aliases:
            mapping.setdefault(alias, patient_url)
    for source in others:
        for alias in source.aliases:
            mapping.setdefault(alias, urls[id(source)])
    for source in [consult.composition_source, *others]:
        for ref in iter_references(source.resource):
            literal = ref.reference
            if literal and _target(literal, mapping, source.base_url) is None and reference_type(ref) == "Patient":
                mapping[literal] = patient_url  # the consult is about our patient, whatever its id there
    return mapping


def _target(literal: str, mapping: dict[str, str], base_url: str) -> str | None:
    """Where a source reference goes: looked up as written, then as "Type/id"."""
    key = reference_key(literal, base_url)
    return mapping.get(literal) or (mapping.get(key) if key else None)


def _composition(consult: _Input, mapping: dict[str, str], composition_url: str, patient_url: str,
                 context: ConsultContext, links: dict[str, Reference]) -> Composition:
    """The consultant's Composition as our Consult note: type 11488-4, our patient, the order extension."""
    original = consult.composition
    if consult.bare:
        original = original.model_copy(update={"contained": None})
    base_url = consult.composition_source.base_url
    original = _link_referred(original, links, mapping, base_url)
    composition, _ = rewrite_references(original, mapping, base_url=base_url)
    composition.id = composition_url.removeprefix("urn:uuid:")
    composition.type = CodeableConcept(coding=[Coding(system=systems.LOINC, code=systems.LOINC_CONSULT_NOTE,
                                                      display=systems.LOINC_CONSULT_NOTE_DISPLAY)])
    composition.subject = Reference(reference=patient_url)
    kept = [e for e in composition.extension or [] if e.url != systems.EXT_CCDA_ORDER]
    composition.extension = [*kept, _order_extension(context.service_request_identifier)]
    return composition


def _order_extension(identifier: Identifier) -> Extension:
    """C-CDA on FHIR OrderExtension: the referral ServiceRequest, by its business identifier only."""
    return Extension(url=systems.EXT_CCDA_ORDER,
                     valueReference=Reference(type="ServiceRequest", identifier=identifier.model_copy(deep=True)))


def _patient(patient: Patient, mapping: dict[str, str]) -> Patient:
    """Our copy of the EHR's Patient (its own references kept only if they resolve in the consult)."""
    copy, _ = rewrite_references(patient, mapping)
    drop_invalid_narrative(copy)
    return copy


def _entry_resource(source: _Source, mapping: dict[str, str], url: str, links: dict[str, Reference]) -> Resource:
    """A source resource with references rewritten and the id of its new fullUrl."""
    linked = _link_referred(source.resource, links, mapping, source.base_url)
    copy, _ = rewrite_references(linked, mapping, base_url=source.base_url)
    copy.id = url.removeprefix("urn:uuid:")
    drop_invalid_narrative(copy)
    return copy


# --- links to the referred Conditions ------------------------------------------------------------------


def _referred_links(context: ConsultContext) -> dict[str, Reference]:
    """Every name a referred Condition goes by (packet fullUrl, Condition/<id>, EHR URL) → its logical Reference."""
    links: dict[str, Reference] = {}
    base = (context.ehr_base_url or "").rstrip("/")
    for condition in context.referred_conditions:
        if not condition.id:
            continue
        key = f"Condition/{condition.id}"
        packet_url = context.referred_full_urls.get(key)
        ehr_url = f"{base}/{key}" if base else None
        uri = ehr_url or packet_url
        if uri is None:
            continue
        link = Reference(type="Condition", identifier=Identifier(system=systems.URN_IETF_RFC_3986, value=uri),
                         display=concept_text(condition.code) or None)
        for alias in (key, packet_url, ehr_url):
            if alias:
                links.setdefault(alias, link)
    return links


def _link_referred(resource: Resource, links: dict[str, Reference], mapping: dict[str, str],
                   base_url: str) -> Resource:
    """A copy in which references to referred Conditions that are not in the consult are logical references."""
    def link_of(ref: Reference) -> Reference | None:
        literal = (ref.reference or "").strip()
        if not literal or _target(literal, mapping, base_url) is not None:
            return None
        return links.get(literal) or links.get(reference_key(literal, base_url) or "")

    if not links or not any(link_of(ref) is not None for ref in iter_references(resource)):
        return resource
    copy = resource.model_copy(deep=True)
    for ref in iter_references(copy):
        link = link_of(ref)
        if link is not None:
            ref.reference = None
            ref.type = "Condition"
            ref.identifier = link.identifier.model_copy(deep=True)
            ref.display = ref.display or link.display
    return copy
