"""One hook call, end to end: referrals in the draft orders → record → readiness → cards, within a time budget.

The budget (CDS_HOOK_BUDGET_S, default 5 s; CDS Hooks 2.0 §Providing FHIR Resources: services "SHOULD respond
quickly (on the order of 500 ms.)") bounds the time spent reading from fhirServer. The read runs on a worker
thread; when it outlives the budget the call answers a "packet is being prepared" card and the read finishes
in the background: its assessment (counts and readiness items, no resources, no token) is kept in memory for
CDS_RESULT_CACHE_S and answers the next call for the same server and patient that also runs out of time.

The access token from fhirAuthorization exists only in the FhirClient built for this call, in its
Authorization header: never logged, never stored, dropped with the client when the read ends.

Data requirements: when neither prefetch nor fhirServer gives any part of the record, the answer is 412
(CDS Hooks 2.0 §Prefetch Template: "If the CDS Service is unable to obtain required data because it cannot
access the FHIR server and the request did not contain the necessary prefetch keys, the service SHALL respond
with an HTTP 412 Precondition Failed status code"). With a partial prefetch and no fhirServer the card is made
from what was given and says which parts were not available.
"""

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy

import requests

from service.cds.auth import ClientVerifier
from service.cds.cards import Assessment, CardContext, assess, pending_card, readiness_card, unavailable_types
from service.cds.gather import PrefetchData, build_record, fetch_keys, read_prefetch
from service.cds.hook_request import HookRequest
from service.cds.orders import referral_orders
from service.cds.services import PREFETCH, CdsService
from service.cds.store import CdsStore
from service.ehr.client import FhirClient, build_session
from service.errors import ServiceError

log = logging.getLogger(__name__)

EXTENSION = "second_opinion.cds"
MAX_BACKGROUND_READS = 16
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


class PreconditionFailed(ServiceError):
    """CDS Hooks 2.0: the service could not obtain the FHIR data it needs (412)."""

    status = 412
    issue_code = "incomplete"


@dataclass(frozen=True)
class HookSettings:
    budget_s: float
    fhir_timeout_s: float
    max_pages: int
    result_cache_s: float


class ResultCache:
    """Assessments of reads that outlived their call, by (fhirServer, patient id), for a short while."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str], tuple[float, Assessment]] = {}

    def put(self, key: tuple[str, str], assessment: Assessment) -> None:
        now = time.monotonic()
        with self._lock:
            self._items = {k: v for k, v in self._items.items() if v[0] > now}
            self._items[key] = (now + self._ttl_s, assessment)

    def get(self, key: tuple[str, str]) -> Assessment | None:
        with self._lock:
            item = self._items.get(key)
        return item[1] if item and item[0] > time.monotonic() else None


@dataclass
class CdsRuntime:
    """What the CDS Hooks endpoints share within one app."""

    store: CdsStore
    verifier: ClientVerifier
    allow_unauthenticated: bool
    session: requests.Session  # reads from CDS clients' FHIR servers (no cookies kept)
    settings: HookSettings
    cache: ResultCache


def build_ehr_session() -> requests.Session:
    """A session for the CDS clients' FHIR servers: one quick retry, and a cookie jar that keeps nothing."""
    session = build_session(max_retries=1, backoff=0.1)
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return session


def answer_hook(runtime: CdsRuntime, service: CdsService, request: HookRequest, ctx: CardContext, *,
                started: float, client: str | None) -> dict:
    """The CDS Hooks response for one call: `{"cards": [...]}` (empty when no referral is being ordered)."""
    referrals = referral_orders(request)
    if not referrals:
        return {"cards": []}
    assessment = gather_assessment(runtime, request, started)
    if assessment is None:
        cards = [pending_card(order, runtime.settings.budget_s, ctx) for order in referrals]
    else:
        cards = [readiness_card(order, assessment, ctx) for order in referrals]
    runtime.store.record_cards(service.id, request.hook, request.hook_instance, cards, client)
    log.info("%s answered %s with %d card(s) (%s)", service.id, request.hook, len(cards),
             "pending" if assessment is None else f"{len(assessment.gaps)} gap(s)")
    return {"cards": cards}


def gather_assessment(runtime: CdsRuntime, request: HookRequest, started: float) -> Assessment | None:
    """Assess the record from prefetch plus fhirServer; None when the read outlived the budget."""
    prefetch = read_prefetch(request)
    missing = [key for key in PREFETCH if key not in prefetch.satisfied]
    if not missing or request.fhir_server is None:
        if missing and not prefetch.resources:
            raise PreconditionFailed("no prefetch data and no fhirServer: the service cannot read the patient's "
                                     "record (send the prefetch keys from discovery, or fhirServer and "
                                     "fhirAuthorization)")
        record = build_record(request, prefetch, None)
        return assess(record, unavailable=unavailable_types(missing), from_prefetch=_types(prefetch.satisfied),
                      from_ehr=[])
    settings = runtime.settings
    auth = request.fhir_authorization.header() if request.fhir_authorization else None
    ehr = FhirClient(request.fhir_server, runtime.session, timeout=min(settings.fhir_timeout_s, settings.budget_s),
                     max_pages=settings.max_pages, auth_header=auth)
    job = background_reads().submit(_read_and_assess, ehr, missing, request, prefetch)
    try:
        return job.result(timeout=max(settings.budget_s - (time.monotonic() - started), 0.01))
    except FuturesTimeout:
        key = (request.fhir_server, request.patient_id)
        job.add_done_callback(lambda done: _keep_late_result(runtime.cache, key, done))
        log.info("reading the record outlived the hook budget of %g s; answering with a pending card",
                 settings.budget_s)
        return runtime.cache.get(key)


def background_reads() -> ThreadPoolExecutor:
    """The process-wide pool that reads records for hook calls (shared by every app in the process)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=MAX_BACKGROUND_READS, thread_name_prefix="cds-read")
        return _executor


def _read_and_assess(ehr: FhirClient, missing: list[str], request: HookRequest,
                     prefetch: PrefetchData) -> Assessment:
    fetched = fetch_keys(ehr, missing, request)
    if fetched.failed and len(fetched.failed) == len(missing) and not prefetch.resources:
        raise PreconditionFailed(f"could not read the patient's record from fhirServer ({fetched.failure_summary()}) "
                                 "and the call had no prefetch")
    record = build_record(request, prefetch, fetched)
    return assess(record, unavailable=unavailable_types(fetched.failed), from_prefetch=_types(prefetch.satisfied),
                  from_ehr=unavailable_types([k for k in missing if k not in fetched.failed]))


def _keep_late_result(cache: ResultCache, key: tuple[str, str], done: Future) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    cache.put(key, done.result())


def _types(keys: set[str]) -> list[str]:
    return unavailable_types([k for k in PREFETCH if k in keys])
