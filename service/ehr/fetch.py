"""Pull everything a consultant needs for one patient from the EHR, concurrently and within budgets.

Every search in the plan starts at once (bounded by the per-server request cap). When a first page states its
`total` and its next link carries a recognisable offset parameter, the remaining pages are requested in
parallel; otherwise next links are followed one after another, as the server hands them out. References the
results make to practitioners, organisations, encounters, medications and observations are then read in
`_id` batches, and report attachments held as `url` are read into the packet.
"""

import base64
import base64
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource

from mappers import systems
from mappers.record import PatientRecord
from mappers.references import iter_references, reference_key
from service.ehr.client import FhirClient, Page
from service.errors import NotFound, ServiceError, UpstreamError

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 4  # per fetch; the client also caps requests in flight per server
# Encounters are not resolved one by one (a long history has hundreds); hospital stays come from their own search.
REFERENCED_TYPES = ("Practitioner", "PractitionerRole", "Organization", "Medication", "Location", "Specimen",
                    "Observation")
HOSPITAL_STAY_CLASSES = "IMP,ACUTE,NONAC"  # v3 ActCode inpatient classes (readiness: discharge summaries)
OFFSET_PARAMS = ("_getpagesoffset", "_offset", "offset", "__offset")
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
# Report documents a consultant needs (DESIGN.md "What we pull").
REPORT_TYPES = (systems.LOINC_PATHOLOGY_STUDY, "60567-5", systems.LOINC_OPERATIVE_NOTE, systems.LOINC_PROCEDURE_NOTE,
                systems.LOINC_DISCHARGE_SUMMARY, systems.LOINC_IMAGING_STUDY, systems.LOINC_CONSULT_NOTE)
# When a server refuses a search without a status, ask again naming every status (R4 value sets).
STATUS_FALLBACK = {
    "Condition": ("clinical-status", "active,recurrence,relapse,inactive,remission,resolved"),
    "AllergyIntolerance": ("clinical-status", "active,inactive,resolved"),
    "Procedure": ("status", "preparation,in-progress,not-done,on-hold,stopped,completed,unknown"),
    "DiagnosticReport": ("status", "registered,partial,preliminary,final,amended,corrected,appended,cancelled"),
    "MedicationStatement": ("status", "active,completed,intended,stopped,on-hold,unknown,not-taken"),
    "MedicationRequest": ("status", "active,on-hold,cancelled,completed,stopped,draft,unknown"),
    "CarePlan": ("status", "draft,active,on-hold,revoked,completed,unknown"),
    "DocumentReference": ("status", "current,superseded"),
}

Progress = Callable[[str, int, int | None], None]  # (resource type, pages done, pages known or None)


@dataclass(frozen=True, eq=False)  # identity hashing: pages are kept per search
class PlannedSearch:
    """One search the fetch will run to the end."""

    resource_type: str
    params: dict[str, str]


@dataclass
class FetchStats:
    """What a fetch cost."""

    requests: int = 0
    pages: dict[str, int] = field(default_factory=dict)


def plan_searches(patient_id: str, capability: CapabilityStatement) -> list[PlannedSearch]:
    """The patient searches to run, limited to what the server says it supports."""
    resources = {r.type: r for rest in capability.rest or [] if rest.mode == "server" for r in rest.resource or []}
    plan = []
    for resource_type, extra in [
        ("Condition", {}), ("Procedure", {}),
        ("DiagnosticReport", {"_include": "DiagnosticReport:result"}),
        ("MedicationStatement", {}),
        ("MedicationRequest", {"intent": "order,plan", "_include": "MedicationRequest:medication"}),
        ("AllergyIntolerance", {}), ("CarePlan", {}),
        ("DocumentReference", {"type": ",".join(f"{systems.LOINC}|{c}" for c in REPORT_TYPES)}),
        ("Encounter", {"class": HOSPITAL_STAY_CLASSES}),
    ]:
        if resources and resource_type not in resources:
            continue
        if resource_type == "Encounter" and not _lists_param(resources.get(resource_type), "class"):
            continue  # without a class filter this would read every visit
        plan.append(PlannedSearch(resource_type, {"patient": patient_id,
                                                  **_supported(resources.get(resource_type), extra)}))
    return plan


def _supported(resource: object, params: dict[str, str]) -> dict[str, str]:
    """Keep only the parameters and includes the server lists for this type (all, when it lists none)."""
    if resource is None:
        return params
    names = {p.name for p in resource.searchParam or []}
    includes = set(resource.searchInclude or [])
    kept = {}
    for name, value in params.items():
        if name == "_include":
            if not includes or value in includes:
                kept[name] = value
        elif not names or name in names:
            kept[name] = value
    return kept


def _lists_param(resource: object, name: str) -> bool:
    return resource is not None and any(p.name == name for p in resource.searchParam or [])


def supported_types(capability: CapabilityStatement) -> set[str]:
    """Resource types the server's CapabilityStatement lists (empty when it lists none)."""
    return {r.type for rest in capability.rest or [] if rest.mode == "server" for r in rest.resource or []}


class ParallelPager:
    """Runs searches to the end on a shared pool, fetching pages in parallel where the server allows it."""

    def __init__(self, client: FhirClient, pool: ThreadPoolExecutor, progress: Progress | None = None) -> None:
        self.client, self.pool, self.progress = client, pool, progress
        self._lock = threading.Lock()
        self._pending = 0
        self._done = threading.Event()
        self._done.set()
        self._error: BaseException | None = None
        self.pages: dict[PlannedSearch, dict[int, Page]] = {}
        self._known: dict[PlannedSearch, int | None] = {}

    def start(self, search: PlannedSearch) -> None:
        self.pages[search] = {}
        self._known[search] = None
        self._submit(search, 0, search.resource_type, search.params, first=True)

    def wait(self) -> None:
        self._done.wait()
        if self._error is not None:
            raise self._error

    def _submit(self, search: PlannedSearch, index: int, url: str, params: dict | None, *, first: bool) -> None:
        with self._lock:
            if self._error is not None:
                return
            self._pending += 1
            self._done.clear()
        future = self.pool.submit(self._fetch, search, url, params)
        future.add_done_callback(lambda f: self._landed(search, index, f, first))

    def _fetch(self, search: PlannedSearch, url: str, params: dict | None) -> Page:
        try:
            return self.client.search_page(url, params)
        except UpstreamError as exc:
            fallback = STATUS_FALLBACK.get(search.resource_type)
            if exc.upstream_status != 400 or params is None or fallback is None or fallback[0] in params:
                raise
            log.info("%s search refused without a status; asking again with every status", search.resource_type)
            return self.client.search_page(url, {**params, fallback[0]: fallback[1]})

    def _landed(self, search: PlannedSearch, index: int, future: Future, first: bool) -> None:
        try:
            page = future.result()
            with self._lock:
                self.pages[search][index] = page
                if len(self.pages[search]) > self.client.max_pages:
                    raise UpstreamError(f"{search.resource_type} search needs more than {self.client.max_pages} pages")
            if page.next_url:
                self._follow(search, index, page, first)
            elif first:
                self._known[search] = 1
            if self.progress:
                self.progress(search.resource_type, len(self.pages[search]), self._known[search])
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            with self._lock:
                self._error = self._error or exc
        finally:
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self._done.set()

    def _follow(self, search: PlannedSearch, index: int, page: Page, first: bool) -> None:
        urls = offset_pages(page.next_url, page.total, page.matches) if first else None
        if urls:
            self._known[search] = 1 + len(urls)
            for n, url in enumerate(urls, start=1):
                self._submit(search, n, url, None, first=False)
        elif self._known[search] is None or index + 1 < (self._known[search] or 0) and first:
            self._submit(search, index + 1, page.next_url, None, first=False)
        elif self._known[search] is None:
            self._submit(search, index + 1, page.next_url, None, first=False)

    def resources(self, search: PlannedSearch) -> tuple[list[Resource], list[str]]:
        pages = [self.pages[search][i] for i in sorted(self.pages[search])]
        return [r for p in pages for r in p.resources], [w for p in pages for w in p.warnings]


def offset_pages(next_url: str, total: int | None, page_matches: int) -> list[str] | None:
    """URLs of every remaining page, when the next link pages by an offset and the total is known."""
    if total is None or page_matches <= 0:
        return None
    parts = urlsplit(next_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [k for k, _ in query]
    offset_name = next((n for n in OFFSET_PARAMS if n in names), None)
    if offset_name is None:
        return None
    offset = int(dict(query)[offset_name]) if dict(query)[offset_name].isdigit() else None
    if offset != page_matches:
        return None  # not a plain offset scheme we can extrapolate safely
    urls = []
    for start in range(offset, total, page_matches):
        new_query = [(k, str(start) if k == offset_name else v) for k, v in query]
        urls.append(urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(new_query), parts.fragment)))
    return urls


def fetch_patient_record(client: FhirClient, patient_id: str, *, progress: Progress | None = None,
                         concurrency: int = MAX_CONCURRENCY) -> PatientRecord:
    """Read the patient and run every planned search to the end, then resolve what they reference."""
    capability = client.capabilities()
    searches = plan_searches(patient_id, capability)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fetch") as pool:
        patient_future = pool.submit(client.read, "Patient", patient_id)
        pager = ParallelPager(client, pool, progress)
        for search in searches:
            pager.start(search)
        pager.wait()
        patient = patient_future.result()
        if not isinstance(patient, Patient):
            raise UpstreamError("the EHR answered a read of Patient with another resource type")
        resources: list[Resource] = []
        warnings: list[str] = []
        for search in searches:
            found, said = pager.resources(search)
            resources.extend(found)
            warnings.extend(said)
        resources = _unique(resources)
        resources += resolve_references(client, pool, resources, patient, warnings)
        inline_attachments(client, pool, resources, warnings)
    log.info("fetched %d resources for Patient/%s in %d searches, %d requests", len(resources), patient_id,
             len(searches), client.request_count)
    return PatientRecord(patient=patient, resources=resources, base_url=client.base_url, warnings=warnings)


def resolve_references(client: FhirClient, pool: ThreadPoolExecutor, resources: list[Resource], patient: Patient,
                       warnings: list[str]) -> list[Resource]:
    """Read the Practitioners, Organizations, Encounters... that the fetched resources point at, in _id batches."""
    have = {f"{r.get_resource_type()}/{r.id}" for r in resources} | {f"Patient/{patient.id}"}
    missing: dict[str, set[str]] = {}
    for resource in [patient, *resources]:
        for ref in iter_references(resource):
            key = reference_key(ref.reference or "", client.base_url)
            if key and key not in have and key.split("/")[0] in REFERENCED_TYPES:
                missing.setdefault(key.split("/")[0], set()).add(key.split("/")[1])
    batch = 20
    batches = [(t, sorted(ids)[i:i + batch]) for t, ids in sorted(missing.items()) for i in range(0, len(ids), batch)]
    found = list(pool.map(lambda b: _fetch_ids(client, b[0], b[1], warnings), batches))
    return _unique(r for group in found for r in group if f"{r.get_resource_type()}/{r.id}" not in have)


def _fetch_ids(client: FhirClient, resource_type: str, ids: list[str], warnings: list[str]) -> list[Resource]:
    try:
        result = client.search_all(resource_type, {"_id": ",".join(ids), "_count": str(len(ids))})
    except NotFound as exc:  # the server cannot search this type; the references stay display-only
        warnings.append(f"could not resolve {len(ids)} {resource_type} reference(s): {exc.diagnostics}")
        return []
    warnings.extend(result.warnings)
    return [r for r in result.resources if r.get_resource_type() == resource_type]


def inline_attachments(client: FhirClient, pool: ThreadPoolExecutor, resources: list[Resource],
                       warnings: list[str]) -> None:
    """Read report attachments held as a url to the server's Binary into the attachment's data (size-capped)."""
    attachments = [a for r in resources for a in _attachments(r)
                   if a.data is None and a.url and reference_key(a.url, client.base_url, ) and
                   reference_key(a.url, client.base_url).startswith("Binary/")]
    for attachment, problem in zip(attachments, pool.map(lambda a: _read_binary(client, a), attachments)):
        if problem:
            warnings.append(problem)


def _attachments(resource: Resource) -> Iterable:
    if resource.get_resource_type() == "DocumentReference":
        return [c.attachment for c in resource.content or []]
    if resource.get_resource_type() == "DiagnosticReport":
        return list(resource.presentedForm or [])
    return []


def _read_binary(client: FhirClient, attachment) -> str | None:  # noqa: ANN001 - an R4B Attachment
    key = reference_key(attachment.url, client.base_url)
    if attachment.size and attachment.size > MAX_ATTACHMENT_BYTES:
        return f"{key} is larger than {MAX_ATTACHMENT_BYTES // 1_000_000} MB; left as a link"
    try:
        binary = client.read(*key.split("/"))
    except ServiceError as exc:
        return f"{key} could not be read: {exc.diagnostics}"
    data = getattr(binary, "data", None)
    if data is None or len(data) * 3 // 4 > MAX_ATTACHMENT_BYTES:
        return f"{key} has no data or is larger than {MAX_ATTACHMENT_BYTES // 1_000_000} MB; left as a link"
    attachment.data = data if isinstance(data, bytes) else base64.b64decode(data)
    attachment.contentType = attachment.contentType or binary.contentType
    return None


def _unique(resources: Iterable[Resource]) -> list[Resource]:
    seen: set[str] = set()
    out: list[Resource] = []
    for r in resources:
        key = f"{r.get_resource_type()}/{r.id}"
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out
