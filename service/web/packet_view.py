"""A packet (FHIR document Bundle) as the pages show it: items grouped by section, each with its "Type/id" key."""

from dataclasses import dataclass, field

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.composition import Composition
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource

from mappers import systems
from mappers.narrative import Row, concept_text, human_name, summarise

# (section key, heading, resource types): the order the clinician reviews a packet in.
SECTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("problems", "Problems", ("Condition",)),
    ("procedures", "Procedures", ("Procedure",)),
    ("results", "Results", ("DiagnosticReport", "Observation")),
    ("reports", "Reports", ("DocumentReference",)),
    ("medications", "Medications", ("MedicationStatement", "MedicationRequest")),
    ("allergies", "Allergies", ("AllergyIntolerance",)),
    ("plan", "Plan of treatment", ("CarePlan",)),
)
SECTION_OF_TYPE = {t: key for key, _, types in SECTIONS for t in types}


@dataclass(frozen=True)
class Item:
    """One thing the packet holds (or left out): its key, a row to show, whether it is in."""

    key: str  # "Type/id" as in the EHR
    row: Row
    included: bool = True


@dataclass(frozen=True)
class Section:
    key: str
    heading: str
    items: list[Item] = field(default_factory=list)


@dataclass(frozen=True)
class PacketView:
    patient: Patient | None
    sections: list[Section]
    conditions: list[Condition]
    code_options: dict[str, dict]  # label → coding (JSON) of every diagnosis code in the packet


def read_packet(packet_json: str) -> Bundle:
    return Bundle.model_validate_json(packet_json)


def packet_view(packet: Bundle, excluded: list[Item] | None = None) -> PacketView:
    """Group the packet's section entries (and the items left out) into the review sections."""
    by_url = {e.fullUrl: e.resource for e in packet.entry or [] if e.fullUrl and e.resource is not None}
    by_key = {f"{r.get_resource_type()}/{r.id}": r for r in by_url.values() if r.id}

    def resolve(reference: str) -> Resource | None:
        return by_url.get(reference) or by_key.get(reference)

    composition = packet.entry[0].resource if packet.entry else None
    listed: dict[str, Resource] = {}
    if isinstance(composition, Composition):
        for section in composition.section or []:
            for ref in section.entry or []:
                resource = resolve(ref.reference or "")
                if resource is not None and resource.id and resource.get_resource_type() in SECTION_OF_TYPE:
                    listed.setdefault(f"{resource.get_resource_type()}/{resource.id}", resource)
    grouped: dict[str, list[Item]] = {key: [] for key, _, _ in SECTIONS}
    for key, resource in listed.items():
        grouped[SECTION_OF_TYPE[resource.get_resource_type()]].append(Item(key, summarise(resource, resolve)))
    for item in excluded or []:
        section = SECTION_OF_TYPE.get(item.key.split("/", 1)[0])
        if section is not None:
            grouped[section].append(item)
    patient = next((r for r in by_url.values() if isinstance(r, Patient)), None)
    conditions = [r for r in by_url.values() if isinstance(r, Condition)]
    return PacketView(patient=patient, sections=[Section(k, h, grouped[k]) for k, h, _ in SECTIONS],
                      conditions=conditions, code_options=code_options(by_url.values()))


def code_options(resources) -> dict[str, dict]:  # noqa: ANN001 - an iterable of resources
    """Every diagnosis code in the packet (Conditions, report conclusions), labelled for a <datalist>."""
    options: dict[str, dict] = {}
    for resource in resources:
        concepts = [getattr(resource, "code", None)] if isinstance(resource, Condition) else list(
            getattr(resource, "conclusionCode", None) or [])
        for concept in concepts:
            for coding in (concept.coding if concept is not None else None) or []:
                if coding.system and coding.code:
                    system = systems.SYSTEM_NAMES.get(coding.system, coding.system)
                    label = f"{coding.display or concept_text(concept)} ({system} {coding.code})"
                    options.setdefault(label, coding.model_dump(mode="json", exclude_none=True))
    return dict(sorted(options.items()))


def patient_display(patient: Patient | dict | None) -> dict[str, str]:
    """Name, gender and birth date for a banner."""
    if patient is None:
        return {"name": "(unknown patient)", "gender": "unknown", "birth_date": "unknown"}
    if isinstance(patient, dict):
        patient = Patient.model_validate(patient)
    name = human_name(patient.name[0]) if patient.name else ""
    return {"name": name or "(no name)", "gender": patient.gender or "unknown",
            "birth_date": str(patient.birthDate) if patient.birthDate else "unknown"}
