"""A patient's record → the referral packet: a FHIR document (Composition 57133-1 Referral note).

The EHR's resources keep their ids (so they can be traced) and get urn:uuid fullUrls; every reference inside
resolves to an entry or is made display-only and reported.

The EHR's resources travel as the EHR sent them: their JSON (`sources`, decimals exact) with the references
rewritten, never a re-serialised model (which would change data: `100.00`→`100.0`, fractional seconds). The
models, which validated that JSON, are read to choose, summarise and assess; the resources we make ourselves
(Composition, ServiceRequest) are built as models and dumped once.
"""

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.composition import Composition, CompositionSection
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.narrative import Narrative
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from mappers import fhirjson, systems
from mappers.errors import MappingError
from mappers.ids import IdFactory
from mappers.narrative import DocumentView, Row, section_narrative, text_narrative, without_invalid_narrative
from mappers.readiness import ReadinessItem, assess_readiness
from mappers.record import PatientRecord
from mappers.references import (Located, json_reference_paths, reference_key, resource_key, rewrite_json_references,
                                rewrite_references)
from mappers.referral import build_service_request, build_task
from mappers.validation import require_aware

COMPOSITION_TITLE = "Second-opinion referral"
DEFAULT_AUTHOR = "Second-opinion referral service"
# Resources that go in only because something in the packet points at them (DESIGN.md "What we pull"),
# plus the Goals and CareTeams a CarePlan names when the record has them.
SUPPORTING_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization", "Encounter", "Medication",
                              "Location", "Specimen", "Goal", "CareTeam"})


@dataclass(frozen=True)
class ReferralRequest:
    """What the clinician asks and what they chose to leave out."""

    referral_id: str  # our id (uuid string)
    question: str  # the clinical question
    patient_questions: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)  # "Type/id" keys (EHR ids) the clinician left out
    requester_display: str | None = None
    consultant_display: str | None = None


@dataclass(frozen=True)
class Packet:
    """The referral document and the EHR-side order that goes with it."""

    document: dict  # the document Bundle as FHIR JSON (the EHR's resources as it sent them)
    service_request: ServiceRequest  # EHR-side order (references "Patient/<EHR id>")
    task: Task  # EHR-side Task, status "draft" (the service moves it later)
    counts: dict[str, int]  # entries per section code, e.g. {"11450-4": 3, ...}
    excluded: list[str]  # the "Type/id" keys left out (those asked for that were present)
    dropped_references: list[str]  # references that could not be resolved inside the bundle (made display-only)
    readiness: list[ReadinessItem] = field(default_factory=list)  # what the consultant needs, against the packet

    @cached_property
    def json(self) -> str:
        """The document as compact FHIR JSON, decimals exactly as the EHR wrote them."""
        return fhirjson.dumps(self.document)

    @cached_property
    def bundle(self) -> Bundle:
        """The document as an R4B model (validated on first use; its dump is not byte-for-byte the JSON)."""
        return Bundle.model_validate(fhirjson.loads(self.json))

    @property
    def identifier(self) -> str:
        """The document's identifier value (urn:uuid:...)."""
        return self.document["identifier"]["value"]


@dataclass(frozen=True)
class _Section:
    """One section as selected: its LOINC code and display, title and the EHR resources it lists."""

    code: tuple[str, str]
    title: str
    resources: list[Resource]


@dataclass(frozen=True)
class _Selection:
    """What goes into the packet: sections, every member resource in entry order, what was left out."""

    sections: list[_Section]
    members: list[Resource]
    left_out: frozenset[str]  # asked-for exclusions plus the results of excluded reports


def build_referral_bundle(record: PatientRecord, request: ReferralRequest, *, now: datetime,
                          new_id: IdFactory, sources: Mapping[int, dict] | None = None,
                          references: Mapping[int, Located] | None = None,
                          rows: Mapping[int, tuple[Resource, Row]] | None = None) -> Packet:
    """Build the referral packet (a document Bundle), its ServiceRequest and draft Task.

    sources: the EHR's JSON of the record's resources, by id() of their model; a resource without one goes in as
    its model's dump. references: where the references in that JSON are (json_reference_paths), and rows: the
    narrative rows that depend on no other resource (narrative.standalone_row), both by id() of the model, when
    the caller worked them out already (the fetch does, while it waits on the network).
    """
    require_aware(now)
    patient_key = _patient_key(record)
    index = _index(record)
    asked = _normalised_exclusions(request.exclude, record.base_url, patient_key)
    member_json = _MemberJson(sources or {}, references or {})
    selection = _select(record, index, _with_report_results(asked, index, record), member_json)
    identifier = Identifier(system=systems.URN_IETF_RFC_3986, value=f"urn:uuid:{new_id()}")
    composition_id = new_id()
    conditions = next(s.resources for s in selection.sections if s.code == systems.SECTION_PROBLEMS)
    service_request = build_service_request(
        patient_key, request, condition_refs=[f"Condition/{c.id}" for c in conditions if c.id],
        packet_identifier=identifier, now=now, new_id=new_id)
    order_url = f"urn:uuid:{new_id()}"
    task = build_task(patient_key, order_url, request, now=now, new_id=new_id)
    urls, mapping = _full_urls(selection.members, new_id)
    rewritten, dropped = _rewrite_all(selection.members, urls, mapping, record.base_url, selection.left_out,
                                      member_json)
    entries = {urls[id(m)]: data for m, data in zip(selection.members, rewritten)}
    order = _dump(_packet_service_request(service_request, order_url, mapping))
    entries = _after_first(entries, order_url, order)
    readiness = assess_readiness(PatientRecord(record.patient, selection.members, record.base_url))
    view = DocumentView({key: m for m in selection.members if (key := resource_key(m))}, base_url=record.base_url,
                        redacted=selection.left_out, rows=rows)
    sections = [_reason_section(request, order_url)]
    sections += [_clinical_section(s, [urls[id(r)] for r in s.resources], view) for s in selection.sections]
    sections.append(_readiness_section(readiness))
    composition = _composition(composition_id, mapping[patient_key], request, sections, now)
    document = _document(identifier, composition, entries, now)
    codes = [systems.SECTION_REASON_FOR_REFERRAL[0], *(s.code[0] for s in selection.sections),
             systems.SECTION_READINESS[0]]
    counts = {code: len(section.entry or []) for code, section in zip(codes, sections)}
    return Packet(document, service_request, task, counts, [k for k in asked if k in index], dropped, readiness)


def _document(identifier: Identifier, composition: Composition, entries: dict[str, dict], now: datetime) -> dict:
    """The document Bundle's JSON: the Composition first, then every resource under its fullUrl."""
    document = _dump(Bundle(identifier=identifier, type="document", timestamp=now))
    document["entry"] = [{"fullUrl": f"urn:uuid:{composition.id}", "resource": _composition_json(composition)},
                         *({"fullUrl": url, "resource": data} for url, data in entries.items())]
    return document


def _composition_json(composition: Composition) -> dict:
    """The Composition's JSON, its sections' entries written directly: they are the bare References _section makes
    (hundreds of them), and fhir_core's serializer walks every model in Python (6-7 ms for a large record)."""
    sections = composition.section or []
    bare = composition.model_copy(update={"section": [s.model_copy(update={"entry": None}) for s in sections]})
    data = _dump(bare if sections else composition)
    for section, written in zip(sections, data.get("section", [])):
        if section.entry:
            written["entry"] = [{"reference": entry.reference} for entry in section.entry]
    return data


def _dump(model: Resource) -> dict:
    """A model we built (or one without the EHR's JSON) as FHIR JSON."""
    return model.model_dump(mode="json", exclude_none=True)


# --- selection -----------------------------------------------------------------------------------------


def _patient_key(record: PatientRecord) -> str:
    """ "Patient/<id>" of the record's patient (it must have an id)."""
    if not record.patient.id:
        raise MappingError("the record's Patient has no id")
    return f"Patient/{record.patient.id}"


def _index(record: PatientRecord) -> dict[str, Resource]:
    """The record's resources by "Type/id" (the first of any duplicates wins)."""
    index: dict[str, Resource] = {}
    for resource in record.resources:
        key = resource_key(resource)
        if key and key not in index:
            index[key] = resource
    return index


def _normalised_exclusions(exclude: Iterable[str], base_url: str, patient_key: str) -> list[str]:
    """The clinician's exclusions as "Type/id" keys, in order, without duplicates."""
    keys = list(dict.fromkeys(reference_key(x, base_url) or x for x in exclude))
    if patient_key in keys:
        raise MappingError("the Patient cannot be left out of a referral packet")
    return keys


def _with_report_results(asked: list[str], index: dict[str, Resource], record: PatientRecord) -> frozenset[str]:
    """The exclusions plus the results of excluded reports that no included report shares.

    A left-out report's values would otherwise reappear as stand-alone Results rows.
    """
    excluded = set(asked)
    kept_results: set[str] = set()
    dropped_results: set[str] = set()
    for report in _unique(record.of_type("DiagnosticReport")):
        target = dropped_results if resource_key(report) in excluded else kept_results
        target.update(_result_keys(report, record.base_url))
    return frozenset(excluded | (dropped_results - kept_results))


def _select(record: PatientRecord, index: dict[str, Resource], left_out: frozenset[str],
            member_json: "_MemberJson") -> _Selection:
    """Choose the sections' resources, the report results and the supporting resources."""

    def kept(resource_type: str) -> list[Resource]:
        return [r for r in _unique(record.of_type(resource_type)) if resource_key(r) not in left_out]

    reports = kept("DiagnosticReport")
    all_results = {k for r in record.of_type("DiagnosticReport") for k in _result_keys(r, record.base_url)}
    results = [index[k] for k in dict.fromkeys(k for r in reports for k in _result_keys(r, record.base_url))
               if k in index and k not in left_out and k.startswith("Observation/")]
    standalone = [o for o in kept("Observation") if resource_key(o) not in all_results]
    sections = [
        _Section(systems.SECTION_PROBLEMS, "Problems", kept("Condition")),
        _Section(systems.SECTION_PROCEDURES, "Procedures", kept("Procedure")),
        _Section(systems.SECTION_RESULTS, "Results", reports + standalone),
        _Section(systems.SECTION_MEDICATIONS, "Medications", kept("MedicationStatement") + kept("MedicationRequest")),
        _Section(systems.SECTION_ALLERGIES, "Allergies and intolerances", kept("AllergyIntolerance")),
        _Section(systems.SECTION_PLAN, "Plan of treatment", kept("CarePlan")),
        _Section(systems.SECTION_DOCUMENTS, "Documents", kept("DocumentReference")),
    ]
    listed = [record.patient, *(r for s in sections for r in s.resources), *results]
    members = _unique(listed)
    members += _supporting(members, index, left_out, record.base_url, member_json)
    return _Selection(sections, members, left_out)


def _result_keys(report: Resource, base_url: str) -> list[str]:
    """The "Type/id" keys of a DiagnosticReport's results."""
    return [k for ref in getattr(report, "result", None) or [] if (k := reference_key(ref.reference, base_url))]


def _supporting(members: list[Resource], index: dict[str, Resource], left_out: frozenset[str],
                base_url: str, member_json: "_MemberJson") -> list[Resource]:
    """Practitioners, Organizations, Encounters, Medications… that members point at (transitively)."""
    seen = {resource_key(m) for m in members}
    found: list[Resource] = []
    queue = deque(members)
    while queue:
        for literal in member_json.literals(queue.popleft()):
            if literal in seen:  # most references: a member's "Type/id" as written (the patient, an encounter…)
                continue
            key = reference_key(literal, base_url)
            if key in index and key not in seen and key not in left_out and key.split("/")[0] in SUPPORTING_TYPES:
                seen.add(key)
                found.append(index[key])
                queue.append(index[key])
    return found


class _MemberJson:
    """Each member's JSON (the EHR's, else its model's dump) and where its references are, each found once."""

    def __init__(self, sources: Mapping[int, dict], references: Mapping[int, Located]) -> None:
        self._sources, self._references = sources, references
        self._dumps: dict[int, dict] = {}
        self._found: dict[int, Located] = {}

    def data(self, resource: Resource) -> dict:
        key = id(resource)
        if key in self._sources:
            return self._sources[key]
        if key not in self._dumps:
            self._dumps[key] = _dump(resource)
        return self._dumps[key]

    def located(self, resource: Resource) -> Located:
        key = id(resource)
        if key in self._sources and key in self._references:
            return self._references[key]
        if key not in self._found:
            self._found[key] = json_reference_paths(self.data(resource))
        return self._found[key]

    def literals(self, resource: Resource) -> list[str]:
        """The literal references inside a resource."""
        return [ref["reference"] for _, ref in self.located(resource) if ref["reference"]]


def _unique(resources: Iterable[Resource]) -> list[Resource]:
    """Drop repeated resources (same "Type/id", or the same object), keeping the first."""
    seen: set[object] = set()
    unique = []
    for resource in resources:
        key = resource_key(resource) or id(resource)
        if key not in seen:
            seen.add(key)
            unique.append(resource)
    return unique


# --- rewriting -----------------------------------------------------------------------------------------


def _full_urls(members: list[Resource], new_id: IdFactory) -> tuple[dict[int, str], dict[str, str]]:
    """A urn:uuid fullUrl per member (by object), and the "Type/id" → fullUrl mapping for rewriting."""
    urls: dict[int, str] = {}
    mapping: dict[str, str] = {}
    for member in members:
        url = f"urn:uuid:{new_id()}"
        urls[id(member)] = url
        mapping[resource_key(member) or f"{member.get_resource_type()}/{url.removeprefix('urn:uuid:')}"] = url
    return urls, mapping


def _rewrite_all(members: list[Resource], urls: dict[int, str], mapping: dict[str, str], base_url: str,
                 left_out: frozenset[str], member_json: _MemberJson) -> tuple[list[dict], list[str]]:
    """Every member's JSON with its references rewritten into the bundle; and the dropped references.

    A resource without an id gets its fullUrl's uuid as id; a narrative that breaks txt-1/txt-2 is left out.
    """
    rewritten: list[dict] = []
    dropped: dict[str, None] = {}
    targets = frozenset(mapping.values())
    for member in members:
        copy, lost = rewrite_json_references(member_json.data(member), mapping, located=member_json.located(member),
                                             base_url=base_url, redact=left_out, targets=targets)
        if not copy.get("id"):
            copy = {**copy, "id": urls[id(member)].removeprefix("urn:uuid:")}
        rewritten.append(without_invalid_narrative(copy))
        dropped.update(dict.fromkeys(lost))
    return rewritten, list(dropped)


def _after_first(entries: dict[str, dict], url: str, resource: dict) -> dict[str, dict]:
    """Insert an entry after the first one (the order goes right after the Patient)."""
    items = list(entries.items())
    return dict([*items[:1], (url, resource), *items[1:]])


def _packet_service_request(service_request: ServiceRequest, url: str, mapping: dict[str, str]) -> ServiceRequest:
    """The order as the packet carries it: subject and reasons pointing at the bundle's entries."""
    copy, _ = rewrite_references(service_request, mapping)
    copy.id = url.removeprefix("urn:uuid:")
    return copy


# --- sections and composition --------------------------------------------------------------------------


def _reason_section(request: ReferralRequest, service_request_url: str) -> CompositionSection:
    """Reason for referral: the clinical question and the patient's questions; entry → the order."""
    paragraphs = [f"Clinical question: {request.question}",
                  *(f"Patient's question: {q}" for q in request.patient_questions)]
    return _section(systems.SECTION_REASON_FOR_REFERRAL, "Reason for referral", text_narrative(paragraphs),
                    [service_request_url])


def _readiness_section(items: list[ReadinessItem]) -> CompositionSection:
    """Readiness: what a second opinion needs that the packet has or lacks (text only, no entries)."""
    gaps = [i for i in items if i.status != "ok"]
    lines = ([f"Missing: {i.message}" if i.status == "missing" else f"Partial: {i.message}" for i in gaps]
             or ["Nothing a second opinion usually needs is missing from this packet."])
    lines += [f"Present: {i.message}" for i in items if i.status == "ok"]
    code, display = systems.SECTION_READINESS
    return CompositionSection(title="Readiness for a second opinion",
                              code=CodeableConcept(coding=[Coding(system=systems.LOINC, code=code, display=display)]),
                              text=text_narrative(lines))


def _clinical_section(section: _Section, urls: list[str], view: DocumentView) -> CompositionSection:
    """A clinical section: a generated table of its resources (as the document carries them), entries → fullUrls."""
    narrative = section_narrative(section.title, section.resources, resolve=view)
    return _section(section.code, section.title, narrative, urls)


def _section(code: tuple[str, str], title: str, narrative: Narrative, urls: list[str]) -> CompositionSection:
    """A Composition section; an empty one says why (emptyReason nilknown)."""
    empty_reason = None
    if not urls:
        code_value, display = systems.EMPTY_REASON_NIL_KNOWN
        empty_reason = CodeableConcept(coding=[Coding(system=systems.LIST_EMPTY_REASON, code=code_value,
                                                      display=display)])
    return CompositionSection(
        title=title,
        code=CodeableConcept(coding=[Coding(system=systems.LOINC, code=code[0], display=code[1])]),
        text=narrative,
        entry=[Reference(reference=u) for u in urls] or None,
        emptyReason=empty_reason,
    )


def _composition(composition_id: str, patient_url: str, request: ReferralRequest,
                 sections: list[CompositionSection], now: datetime) -> Composition:
    """The packet's Composition: a final Referral note about the patient, authored by the requester."""
    return Composition(
        id=composition_id,
        status="final",
        type=CodeableConcept(coding=[Coding(system=systems.LOINC, code=systems.LOINC_REFERRAL_NOTE,
                                            display=systems.LOINC_REFERRAL_NOTE_DISPLAY)]),
        subject=Reference(reference=patient_url),
        date=now,
        author=[Reference(display=request.requester_display or DEFAULT_AUTHOR)],
        title=COMPOSITION_TITLE,
        section=sections,
    )
