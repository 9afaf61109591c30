"""Pull everything a consultant needs for one patient from the EHR."""

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource

from mappers.record import PatientRecord
from mappers.references import iter_references, reference_key
from service.ehr.client import FhirClient, SearchResult
from service.errors import NotFound, UpstreamError

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 4  # per server
ID_BATCH = 50  # ids per `_id` search when resolving references
REFERENCED_TYPES = ("Practitioner", "PractitionerRole", "Organization", "Encounter", "Medication",
                    "Location", "Specimen", "Observation")


@dataclass(frozen=True)
class PlannedSearch:
    """One search the fetch will run to the end."""

    resource_type: str
    params: dict[str, str]


def plan_searches(patient_id: str, capability: CapabilityStatement) -> list[PlannedSearch]:
    """The patient searches to run, limited to what the server says it supports."""
    supported = supported_types(capability)
    wanted = [
        PlannedSearch("Condition", {"patient": patient_id}),
        PlannedSearch("Procedure", {"patient": patient_id}),
        PlannedSearch("DiagnosticReport", {"patient": patient_id, "_include": "DiagnosticReport:result"}),
        PlannedSearch("MedicationStatement", {"patient": patient_id}),
        PlannedSearch("MedicationRequest", {"patient": patient_id, "intent": "order,plan",
                                            "_include": "MedicationRequest:medication"}),
        PlannedSearch("AllergyIntolerance", {"patient": patient_id}),
        PlannedSearch("CarePlan", {"patient": patient_id}),
        PlannedSearch("DocumentReference", {"patient": patient_id}),
    ]
    return [s for s in wanted if not supported or s.resource_type in supported]


def supported_types(capability: CapabilityStatement) -> set[str]:
    """Resource types the server's CapabilityStatement lists (empty when it lists none)."""
    types: set[str] = set()
    for rest in capability.rest or []:
        if rest.mode == "server":
            types.update(r.type for r in rest.resource or [])
    return types


def fetch_patient_record(client: FhirClient, patient_id: str) -> PatientRecord:
    """Read the patient and run every planned search to the end, then resolve what they reference."""
    capability = client.capabilities()
    patient = client.read("Patient", patient_id)
    if not isinstance(patient, Patient):
        raise UpstreamError("the EHR answered a read of Patient with another resource type")
    searches = plan_searches(patient_id, capability)
    with ThreadPoolExecutor(max_workers=MAX_CONCURRENCY) as pool:
        results = list(pool.map(lambda s: client.search_all(s.resource_type, s.params), searches))
    resources = _unique(r for result in results for r in result.resources)
    warnings = [w for result in results for w in result.warnings]
    resources += resolve_references(client, resources, patient, warnings)
    log.info("fetched %d resources for Patient/%s in %d searches", len(resources), patient_id, len(searches))
    return PatientRecord(patient=patient, resources=resources, base_url=client.base_url, warnings=warnings)


def resolve_references(client: FhirClient, resources: list[Resource], patient: Patient,
                       warnings: list[str]) -> list[Resource]:
    """Fetch the Practitioners, Organizations, Encounters... that the fetched resources point at."""
    have = {f"{r.get_resource_type()}/{r.id}" for r in resources} | {f"Patient/{patient.id}"}
    missing: dict[str, set[str]] = {}
    for resource in [patient, *resources]:
        for ref in iter_references(resource):
            key = reference_key(ref.reference or "", client.base_url)
            if key and key not in have and key.split("/")[0] in REFERENCED_TYPES:
                missing.setdefault(key.split("/")[0], set()).add(key.split("/")[1])
    batches = [(t, sorted(ids)[i:i + ID_BATCH]) for t, ids in sorted(missing.items())
               for i in range(0, len(ids), ID_BATCH)]
    with ThreadPoolExecutor(max_workers=MAX_CONCURRENCY) as pool:
        found = list(pool.map(lambda b: _fetch_ids(client, b[0], b[1], warnings), batches))
    return _unique(r for batch in found for r in batch if f"{r.get_resource_type()}/{r.id}" not in have)


def _fetch_ids(client: FhirClient, resource_type: str, ids: list[str], warnings: list[str]) -> list[Resource]:
    result = SearchResult()
    try:
        resources = list(client.search(resource_type, {"_id": ",".join(ids), "_count": str(len(ids))}, result))
    except NotFound as exc:  # the server cannot search this type by _id; the references stay display-only
        warnings.append(f"could not resolve {len(ids)} {resource_type} reference(s): {exc.diagnostics}")
        return []
    warnings.extend(result.warnings)
    return [r for r in resources if r.get_resource_type() == resource_type]


def _unique(resources: Iterable[Resource]) -> list[Resource]:
    seen: set[str] = set()
    out: list[Resource] = []
    for r in resources:
        key = f"{r.get_resource_type()}/{r.id}"
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out
