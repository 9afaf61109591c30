"""The patient's record for a hook call: the prefetch the CDS client sent, and what is missing read from fhirServer.

CDS Hooks 2.0 §Prefetch Template: a key the client did not satisfy is left out; a key with no data is `null`;
search results come as one `searchset` Bundle without next links. "It is the CDS Service's responsibility to
check prefetched data against its template to determine what requests were satisfied (if any) and to
programmatically retrieve any additional necessary data." Prefetch is checked like any input: a value of the
wrong shape, or a resource of another patient, is a 400; a single entry that is not valid R4 is skipped with a
warning (as the FHIR client does with the EHR's own searches).
"""

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from mappers.record import PatientRecord
from service.cds.hook_request import HookRequest, first_error
from service.cds.services import PREFETCH, expand_prefetch, prefetch_resource_type
from service.ehr.client import FhirClient
from service.errors import InvalidRequest, ServiceError

log = logging.getLogger(__name__)

FETCH_CONCURRENCY = 4  # searches in flight per hook call (the client also caps requests per server)


@dataclass
class PrefetchData:
    """What the prefetch gave: resources per satisfied key, the Patient if sent, and warnings."""

    resources: dict[str, list[Resource]] = field(default_factory=dict)  # satisfied keys only
    patient: Patient | None = None
    incomplete: set[str] = field(default_factory=set)  # keys sent with a next link (more pages exist)
    warnings: list[str] = field(default_factory=list)

    @property
    def satisfied(self) -> set[str]:
        return set(self.resources) - self.incomplete


@dataclass
class FetchResult:
    """What was read from the EHR for the keys the prefetch did not satisfy."""

    resources: dict[str, list[Resource]] = field(default_factory=dict)  # keys read successfully
    patient: Patient | None = None
    failed: list[str] = field(default_factory=list)
    failure_statuses: set[int | None] = field(default_factory=set)  # the EHR's HTTP status (None: no answer)
    warnings: list[str] = field(default_factory=list)
    requests: int = 0

    def failure_summary(self) -> str:
        """Why reads failed, without paths or ids: 'authorisation refused', 'HTTP 503', 'no answer'."""
        reasons = sorted({"authorisation refused" if status in (401, 403) else "no answer" if status is None
                          else f"HTTP {status}" for status in self.failure_statuses})
        return ", ".join(reasons)


def read_prefetch(request: HookRequest) -> PrefetchData:
    """Check the prefetch against our templates and turn it into R4B resources, per key."""
    data = PrefetchData()
    for key, value in request.prefetch.items():
        if key not in PREFETCH:
            continue  # not ours to read; CDS Hooks 2.0 says clients send only what was asked for
        if value is None:  # "no data to populate a template prefetch key"
            data.resources[key] = []
            continue
        if key == "patient":
            data.patient = _prefetch_patient(value, request.patient_id)
            data.resources[key] = []
            continue
        resources, warnings, has_next = _prefetch_search(key, value)
        _check_patient(key, resources, request.patient_id)
        data.resources[key] = resources
        data.warnings.extend(warnings)
        if has_next:
            data.incomplete.add(key)
            data.warnings.append(f"prefetch {key} has more pages (a next link), which CDS Hooks does not allow")
    return data


def fetch_keys(client: FhirClient, keys: Iterable[str], request: HookRequest) -> FetchResult:
    """Run the prefetch templates for `keys` against the EHR; a failure is a warning, not an error."""
    result = FetchResult()
    queries = [expand_prefetch(key, request.token_context) for key in keys]

    def run(query):  # noqa: ANN001, ANN202 - a PrefetchQuery → (key, resources | error)
        try:
            if query.resource_id is not None:
                return query.key, [client.read(query.resource_type, query.resource_id)], []
            found = client.search_all(query.resource_type, query.params)
            return query.key, found.resources, found.warnings
        except ServiceError as exc:
            return query.key, exc, []

    with ThreadPoolExecutor(max_workers=FETCH_CONCURRENCY, thread_name_prefix="cds-search") as pool:
        outcomes = list(pool.map(run, queries))
    for key, resources, warnings in outcomes:
        result.warnings.extend(warnings)
        if isinstance(resources, ServiceError):
            result.failed.append(key)
            result.failure_statuses.add(resources.upstream_status)
            result.warnings.append(f"could not read {prefetch_resource_type(key)} from the EHR: "
                                   f"{resources.diagnostics}")
            continue
        if key == "patient":
            patient = resources[0]
            result.patient = patient if isinstance(patient, Patient) else None
            result.resources[key] = []
        else:
            result.resources[key] = resources
    result.requests = client.request_count
    return result


def build_record(request: HookRequest, prefetch: PrefetchData, fetched: FetchResult | None) -> PatientRecord:
    """One PatientRecord from both sources (fetched data replaces an incomplete prefetch key)."""
    by_key = dict(prefetch.resources)
    if fetched is not None:
        by_key.update(fetched.resources)
    patient = (fetched.patient if fetched and fetched.patient else None) or prefetch.patient
    warnings = list(prefetch.warnings) + (list(fetched.warnings) if fetched else [])
    if patient is None:  # readiness needs no demographics; the id keeps references resolvable
        patient = Patient(id=request.patient_id)
    return PatientRecord(patient=patient, resources=_unique(r for key in PREFETCH for r in by_key.get(key, [])),
                         base_url=request.fhir_server or "", warnings=warnings)


def _prefetch_patient(value: object, patient_id: str) -> Patient:
    if not isinstance(value, dict) or value.get("resourceType") != "Patient":
        raise InvalidRequest("prefetch.patient must be a FHIR Patient (or null)")
    try:
        patient = Patient.model_validate(value)
    except ValidationError as exc:
        raise InvalidRequest(f"prefetch.patient is not a valid R4 Patient: {first_error(exc)}") from exc
    if patient.id != patient_id:
        raise InvalidRequest("prefetch.patient is not the patient in context.patientId")
    return patient


def _prefetch_search(key: str, value: object) -> tuple[list[Resource], list[str], bool]:
    """A searchset Bundle → its resources (entries that are not valid R4 are skipped with a warning)."""
    if not isinstance(value, dict) or value.get("resourceType") != "Bundle":
        raise InvalidRequest(f"prefetch.{key} must be a FHIR searchset Bundle (or null)")
    entries = value.get("entry", [])
    if not isinstance(entries, list):
        raise InvalidRequest(f"prefetch.{key}.entry must be an array")
    try:
        envelope = Bundle.model_validate({k: v for k, v in value.items() if k != "entry"})
    except ValidationError as exc:
        raise InvalidRequest(f"prefetch.{key} is not a valid R4 Bundle: {first_error(exc)}") from exc
    resources: list[Resource] = []
    warnings: list[str] = []
    for index, entry in enumerate(entries):
        data = entry.get("resource") if isinstance(entry, dict) else None
        mode = ((entry.get("search") or {}) if isinstance(entry, dict) else {}).get("mode")
        if not isinstance(data, dict) or mode == "outcome" or data.get("resourceType") == "OperationOutcome":
            continue
        try:
            resources.append(get_fhir_model_class(data.get("resourceType")).model_validate(data))
        except (KeyError, ValueError, TypeError, ValidationError) as exc:
            detail = first_error(exc) if isinstance(exc, ValidationError) else "unknown resource type"
            warnings.append(f"prefetch {key}: skipped entry {index} ({data.get('resourceType')}): {detail}")
    has_next = any(link.relation == "next" for link in envelope.link or [])
    return resources, warnings, has_next


def _check_patient(key: str, resources: list[Resource], patient_id: str) -> None:
    """Every resource that names a patient names the one in context (a mix-up would put another patient's data
    on the card)."""
    for resource in resources:
        for name in ("subject", "patient"):
            ref = getattr(resource, name, None)
            reference = getattr(ref, "reference", None) if ref is not None else None
            if reference and reference.startswith(("Patient/", "http")) and "Patient/" in reference:
                if not (reference == f"Patient/{patient_id}" or reference.endswith(f"/Patient/{patient_id}")):
                    raise InvalidRequest(f"prefetch.{key} holds a {resource.get_resource_type()} of another patient "
                                         "than context.patientId")


def _unique(resources: Iterable[Resource]) -> list[Resource]:
    seen: set[str] = set()
    out: list[Resource] = []
    for resource in resources:
        key = f"{resource.get_resource_type()}/{resource.id}"
        if resource.id is None or key not in seen:
            seen.add(key)
            out.append(resource)
    return out
