"""Pull everything a consultant needs for one patient from the EHR, concurrently and within budgets.

The Patient read goes out with /metadata; then every search in the plan starts at once (bounded by the
per-server request cap). When the server's statement was read before and its cache has expired, the plan of that
statement fills the request slots /metadata leaves free; when the new body is the same (client.capabilities keeps
the validated statement), those searches are the plan, else the fetch starts again with the new statement's plan.
When a first page states its `total` and its next link carries a recognisable offset parameter, the remaining
pages are requested in parallel; otherwise next links are followed one after another, as the server hands them out
(an opaque cursor cannot be split: the next page's address exists only once the previous page is read).

Each page is validated (every resource through its R4B model) as soon as it lands, in the fetch's one handler
thread, while the thread that fetched it sends the next request, and what it references is noted at once.
Practitioners, organisations, medications... come in the same search where the server lists an `_include` for
them; the rest are read in `_id` batches that go out as soon as a request slot would otherwise idle (or a batch is
full) and no running search may still include them. Report attachments held as a `url` to the server's Binary are
read as soon as their report arrives.

Where the CapabilityStatement advertises `Patient/$everything` (and FHIR_EVERYTHING is "auto"), one paged
$everything call stands in for the searches: its pages are fetched like a search's, the resources the plan could
select are validated as each page lands, and when the last page is in, service.ehr.everything picks exactly what
the searches and their includes would have brought; what they reference is taken from the answer or read in the
usual `_id` batches, attachments as usual. A server that refuses the call (4xx, 501), or answers a first page that
cannot be complete, gets the per-type searches instead, and the record gets a warning.

The EHR's JSON is kept for pass-through (mappers.packet writes it unchanged); the models stay with the record.
"""

import heapq
import itertools
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource

from mappers.narrative import Row, standalone_row
from mappers.record import PatientRecord
from mappers.references import Located, json_reference_paths, json_resource_key, reference_key
from service.ehr.client import FhirClient, Fetched, Page, PageHeader, checked, fhir_json
from service.ehr.everything import (EVERYTHING_COUNT, EVERYTHING_MODES, FALLBACK_STATUSES, advertises_everything,
                                    everything_types, matches_search, select_like_plan, selectable)
from service.ehr.plan import REFERENCED_TYPES, PlannedSearch, plan_searches
from service.errors import NotFound, ServiceError, UpstreamError

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 4  # requests in flight per fetch; the client also caps requests in flight per server
ID_BATCH = 20  # ids per _id search
OFFSET_PARAMS = ("_getpagesoffset", "_offset", "offset", "__offset")
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
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
T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class EverythingCall(PlannedSearch):
    """`Patient/<id>/$everything`, paged like a search, standing in for the planned searches it covers."""

    patient_id: str = ""
    covers: tuple[PlannedSearch, ...] = ()

    @property
    def path(self) -> str:
        return f"Patient/{self.patient_id}/$everything"

    def included_types(self) -> set[str]:
        """Everything referenced may be in it: no _id batch goes out until its selection is made."""
        return set(REFERENCED_TYPES)


@dataclass(frozen=True)
class Refused:
    """A $everything page the server refused (a status that calls for the per-type searches instead)."""

    error: ServiceError


@dataclass(frozen=True)
class FetchedRecord:
    """A fetched record, the EHR's JSON of its resources (for pass-through) and where the references in that JSON
    are (json_reference_paths, found as each page landed), both by id() of their model."""

    record: PatientRecord
    sources: dict[int, dict]
    references: dict[int, Located] = field(default_factory=dict)
    rows: dict[int, tuple[Resource, Row]] = field(default_factory=dict)  # narrative.standalone_row, by id() too


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


def offset_page_weights(entries: int, matches: int, total: int, pages: int) -> list[int]:
    """How many entries each of the pages after a first one will likely carry (the request queue's weight): as many
    as the first, but the last holds only what is left of the total, so it goes out after its search's and other
    searches' full pages, and the final round's pages are the lightest to validate."""
    left = total - matches * pages
    return [entries] * (pages - 1) + [entries * left // matches] if pages else []


# Request order (lower first): first pages, which tell how much is left, then the pages after them, then the
# reads of what was referenced or attached, which fill the slots the searches leave free.
METADATA, FIRST, LATER, SUPPORTING = -1, 0, 1, 2


class RecordFetch:
    """One patient's fetch: requests in priority order, at most `concurrency` at a time, each handled as it lands.

    A request's network part holds one of the fetch's slots; when it ends, the same thread sends the next queued
    request, and what came back is handled (validating a page, filing it, requesting the pages after it, noting what
    it references, reading its attachments) in the handler thread, one answer after another. `wait` returns when
    nothing is left, or raises the first error.
    """

    def __init__(self, client: FhirClient, pool: ThreadPoolExecutor, handler: ThreadPoolExecutor, *,
                 concurrency: int = MAX_CONCURRENCY, progress: Progress | None = None) -> None:
        """pool: threads for the requests in flight (`concurrency` of them); handler: one thread that handles what
        they bring, in the order it lands."""
        self.client, self.pool, self.handler = client, pool, handler
        self.concurrency, self.progress = concurrency, progress
        self._lock = threading.Lock()
        self._queue: list[tuple[int, int, int, Callable[[], Any], Callable[[Any], None]]] = []
        self._sequence = itertools.count()
        self._in_network = 0
        self._pending = 0
        self._done = threading.Event()
        self._done.set()
        self._error: BaseException | None = None
        self._abandoned = False
        self.pages: dict[PlannedSearch, dict[int, Page]] = {}
        self._known: dict[PlannedSearch, int | None] = {}
        self._open: list[PlannedSearch] = []  # searches with pages still to come
        self.patient: Fetched | None = None
        self._have: set[str] = set()  # "Type/id" of what the searches and the Patient read brought
        self._wanted: dict[str, dict[str, None]] = {}  # type → referenced ids not yet asked for (in order)
        self._asked: set[str] = set()
        self._batch_queued: set[str] = set()
        self.batches: dict[tuple[str, str], tuple[list[Fetched], list[str]]] = {}  # (type, first id) → found, warnings
        self.attachment_problems: dict[tuple[str, int], str] = {}  # ("Type/id", attachment number) → warning
        self.everything: EverythingCall | None = None
        self._everything_state: str | None = None  # None while it runs, then "selected" or "abandoned"
        self._everything_models: dict[int, Resource] = {}  # id() of a page's JSON → the model that validated it
        self.selected: dict[PlannedSearch, tuple[list[Resource], list[dict], list[str]]] = {}  # from $everything
        self.notes: list[str] = []  # warnings of the $everything fast path (its pages' outcomes, a fallback)
        self.located: dict[int, Located] = {}  # id() of a resource's JSON → where its references are
        self.rows: dict[int, tuple[Resource, Row]] = {}  # id() of a model → it and its standalone narrative row

    # -- scheduling ------------------------------------------------------------------------------------
    def read_patient(self, patient_id: str) -> None:
        self._submit(FIRST, lambda: self.client.get_json(f"Patient/{patient_id}"), self._patient_landed)

    def start(self, search: PlannedSearch) -> None:
        with self._lock:
            self.pages[search] = {}
            self._known[search] = None
            self._open.append(search)
        self._submit_page(search, 0, search.resource_type, search.params, first=True)

    def start_everything(self, call: EverythingCall) -> None:
        """Fetch the record by $everything for the searches it covers (they start instead if it is refused)."""
        with self._lock:
            self.everything = call
            self.pages[call] = {}
            self._known[call] = None
            self._open.append(call)
        self._submit_page(call, 0, call.path, call.params, first=True)

    def wait(self) -> None:
        self._done.wait()
        if self._error is not None and not self._abandoned:
            raise self._error

    def read_capabilities(self) -> Future:
        """Read /metadata ahead of everything queued so far: a Future of the statement (or of what the read raised)."""
        statement: Future = Future()

        def network() -> None:
            try:
                statement.set_result(self.client.capabilities())
            except BaseException as exc:
                statement.set_exception(exc)
                raise

        self._submit(METADATA, network, lambda _: None)
        return statement

    def abandon(self) -> None:
        """Drop what has not started and whatever lands from here on (wait() then returns once nothing is left)."""
        with self._lock:
            self._abandoned = True
            self._pending -= len(self._queue)
            self._queue.clear()
            if self._pending == 0:
                self._done.set()

    def _submit(self, priority: int, network: Callable[[], T], landed: Callable[[T], None], *, weight: int = 0) -> None:
        """Queue a request: by priority, then the heaviest first (weight: the entries its search's pages carry, so
        the pages that take longest to validate land early and the last round's are light), then in order."""
        with self._lock:
            if self._error is not None or self._abandoned:
                return
            self._pending += 1
            self._done.clear()
            heapq.heappush(self._queue, (priority, -weight, next(self._sequence), network, landed))
        self._dispatch()

    def _dispatch(self, *, keep_one: bool = False) -> tuple[Callable[[], Any], Callable[[Any], None]] | None:
        """Start what the free request slots allow, each in a pool thread; keep_one: return the first instead, for
        the calling thread (whose own request just ended) to send without waking another."""
        ready = []
        with self._lock:
            while self._queue and self._in_network < self.concurrency:
                self._in_network += 1
                ready.append(heapq.heappop(self._queue)[-2:])
        kept = ready.pop(0) if keep_one and ready else None
        for network, landed in ready:
            self.pool.submit(self._run, network, landed)
        return kept

    def _run(self, network: Callable[[], T], landed: Callable[[T], None]) -> None:
        """Send requests one after another in this thread: each time one ends, its slot goes to the next queued
        request here, and what came back is handled (validated, filed...) in the handler thread, so that the next
        request goes out at once instead of waiting for a thread to wake behind a page being validated."""
        job: tuple[Callable[[], Any], Callable[[Any], None]] | None = (network, landed)
        while job is not None:
            network, landed = job
            try:
                result = network()
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                self._fail(exc)
                self._finished()
                result, landed = None, None
            finally:
                with self._lock:
                    self._in_network -= 1
                job = self._dispatch(keep_one=True)
            if landed is not None:
                self.handler.submit(self._land, landed, result)

    def _land(self, landed: Callable[[T], None], result: T) -> None:
        """Handle what a request brought, then queue the _id reads it made due."""
        try:
            if not self._abandoned:
                landed(result)
                self._queue_batches()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self._fail(exc)
        finally:
            self._finished()

    def _fail(self, exc: BaseException) -> None:
        """Keep the first error for wait(); what has not started will not."""
        with self._lock:
            self._error = self._error or exc
            self._pending -= len(self._queue)
            self._queue.clear()

    def _finished(self) -> None:
        """One request fully handled: wake wait() when it was the last."""
        with self._lock:
            self._pending -= 1
            if self._pending == 0:
                self._done.set()

    # -- pages -----------------------------------------------------------------------------------------
    def _submit_page(self, search: PlannedSearch, index: int, url: str, params: dict | None, *, first: bool,
                     weight: int = 0) -> None:
        self._submit(FIRST if first else LATER, lambda: self._fetch_page(search, url, params),
                     lambda data: self._page_landed(search, index, data, first), weight=weight)

    def _fetch_page(self, search: PlannedSearch, url: str, params: dict | None) -> requests.Response | Refused:
        """The page's answer, its body parsed later by _page_landed (in the handler thread)."""
        if isinstance(search, EverythingCall):
            return self._fetch_everything_page(url, params)
        try:
            return self.client.get(url, params)
        except UpstreamError as exc:
            fallback = STATUS_FALLBACK.get(search.resource_type)
            if exc.upstream_status != 400 or params is None or fallback is None or fallback[0] in params:
                raise
            log.info("%s search refused without a status; asking again with every status", search.resource_type)
            return self.client.get(url, {**params, fallback[0]: fallback[1]})

    def _page_landed(self, search: PlannedSearch, index: int, answer: requests.Response | Refused,
                     first: bool) -> None:
        data = answer if isinstance(answer, Refused) else fhir_json(answer)
        if isinstance(search, EverythingCall):
            self._everything_page_landed(search, index, data, first)
            return
        header = self.client.page_header(data)
        self._follow(search, index, header, first)  # before validating: it takes a while
        page = self.client.page_of(data, keep_json=True, header=header)
        kept = {search.resource_type, *REFERENCED_TYPES}  # what an include of another type brings is not ours
        pairs = [(m, d) for m, d in zip(page.resources, page.sources) if d.get("resourceType") in kept]
        page = Page([m for m, _ in pairs], page.warnings, page.next_url, page.total, page.matches,
                    [d for _, d in pairs])
        with self._lock:
            self.pages[search][index] = page
        self._note(page.sources)
        self._read_attachments(pairs)
        self._work_out_rows(page.resources)
        with self._lock:
            known = self._known[search]
            if known is not None and len(self.pages[search]) >= known and search in self._open:
                self._open.remove(search)
        if self.progress:
            self.progress(search.resource_type, len(self.pages[search]), self._known[search])

    def _follow(self, search: PlannedSearch, index: int, page: PageHeader, first: bool) -> None:
        """Request the pages after this one: all at once when they page by offset, else the next one (the page
        cap is enforced here, before anything past it is asked for)."""
        if not page.next_url:
            with self._lock:
                if self._known[search] is None:
                    self._known[search] = index + 1
            return
        urls = offset_pages(page.next_url, page.total, page.matches) if first else None
        pages = 1 + len(urls) if urls else index + 2
        if pages > self.client.max_pages:
            what = "Patient/$everything" if isinstance(search, EverythingCall) else f"{search.resource_type} search"
            raise UpstreamError(f"{what} needs more than {self.client.max_pages} pages")
        if urls:
            with self._lock:
                self._known[search] = 1 + len(urls)
            weights = offset_page_weights(page.entries, page.matches, page.total or 0, len(urls))
            for n, (url, weight) in enumerate(zip(urls, weights), start=1):
                self._submit_page(search, n, url, None, first=False, weight=weight)
        elif self._known[search] is None:
            self._submit_page(search, index + 1, page.next_url, None, first=False, weight=page.entries)

    def _patient_landed(self, data: dict) -> None:
        fetched = checked(data)
        if not isinstance(fetched.model, Patient):
            raise UpstreamError("the EHR answered a read of Patient with another resource type")
        self.patient = fetched
        self._note([data])

    def resources(self, search: PlannedSearch) -> tuple[list[Resource], list[dict], list[str]]:
        """A finished search's resources, their JSON and the server's warnings, in page order."""
        if search in self.selected:
            return self.selected[search]
        pages = [self.pages[search][i] for i in sorted(self.pages[search])]
        return ([r for p in pages for r in p.resources], [d for p in pages for d in p.sources],
                [w for p in pages for w in p.warnings])

    # -- $everything ----------------------------------------------------------------------------------
    def _fetch_everything_page(self, url: str, params: dict | None) -> requests.Response | Refused:
        try:
            return self.client.get(url, params)
        except ServiceError as exc:
            if exc.upstream_status in FALLBACK_STATUSES:
                return Refused(exc)
            raise

    def _everything_page_landed(self, call: EverythingCall, index: int, data: dict | Refused, first: bool) -> None:
        if isinstance(data, Refused):
            status = data.error.upstream_status
            self._abandon_everything(f"the EHR refused Patient/$everything ({status}); the record was fetched by "
                                     "per-type searches instead", f"refused ({status})")
            return
        if self._everything_state is not None:
            return  # abandoned: pages still on their way are dropped
        page = self._everything_page(call, data)
        problem = _incomplete(page, int(call.params["_count"])) if first else None
        if problem:
            self._abandon_everything(f"Patient/$everything answered {problem}; the record was fetched by per-type "
                                     "searches instead", problem)
            return
        with self._lock:
            if self._everything_state is not None:
                return  # abandoned while this page was on its way
            self.pages[call][index] = page
        self._follow(call, index, PageHeader(page.next_url, page.total, page.matches, len(page.sources)), first)
        with self._lock:
            known = self._known[call]
            complete = (known is not None and len(self.pages[call]) >= known and self._everything_state is None
                        and call in self._open)
            if complete:
                self._everything_state = "selecting"
        if self.progress:
            self.progress(call.resource_type, len(self.pages[call]), self._known[call])
        if complete:
            self._select_everything(call)

    def _everything_page(self, call: EverythingCall, data: dict) -> Page:
        """One $everything page: what a covered search matches validated now, what may be referenced kept as JSON
        (validated if selected), the rest (types and resources the plan would not fetch) dropped."""
        if data.get("resourceType") != "Bundle":
            raise UpstreamError(f"Patient/$everything answered a {data.get('resourceType')}, not a Bundle")
        base = self.client.base_url
        entries = [e for e in data.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
        now, later = [], []
        for entry in entries:
            resource, mode = entry["resource"], (entry.get("search") or {}).get("mode")
            resource_type = resource.get("resourceType")
            if mode == "outcome" or (resource_type == "OperationOutcome" and mode != "match"):
                now.append(entry)
            elif any(s.resource_type == resource_type and matches_search(s, resource, base) for s in call.covers):
                now.append(entry)
            elif resource_type in REFERENCED_TYPES or resource_type == "Patient":
                later.append(resource)
        validated = self.client.page_of({**data, "entry": now}, keep_json=True)
        matches = sum(1 for e in entries if (e.get("search") or {}).get("mode", "match") == "match")
        with self._lock:
            self._everything_models.update((id(d), m) for m, d in zip(validated.resources, validated.sources))
        return Page(validated.resources, validated.warnings, validated.next_url, validated.total, matches,
                    validated.sources + later)

    def _abandon_everything(self, warning: str, reason: str) -> None:
        """Run the covered searches instead (once; pages still on their way are dropped)."""
        call = self.everything
        with self._lock:
            if call is None or self._everything_state is not None:
                return
            self._everything_state = "abandoned"
            self.pages[call] = {}
            self._everything_models.clear()
            self.notes.append(warning)
        log.warning("Patient/$everything %s: falling back to per-type searches", reason)
        for search in call.covers:
            self.start(search)
        with self._lock:
            self._open.remove(call)

    def _select_everything(self, call: EverythingCall) -> None:
        """Keep what the covered searches would have brought; note what is still to read by _id; read attachments."""
        pages = [self.pages[call][i] for i in sorted(self.pages[call])]
        sources = [d for p in pages for d in p.sources]
        notes = [w for p in pages for w in p.warnings]
        selection = select_like_plan(call.covers, call.patient_id, sources, self.client.base_url)
        models = self._everything_models

        def valid(found: list[dict]) -> list[tuple[Resource, dict]]:
            pairs = []
            for data in found:
                model = models.get(id(data))
                if model is None:
                    try:
                        model = checked(data).model
                    except UpstreamError as exc:
                        notes.append(f"skipped {data.get('resourceType')}/{data.get('id')}: {exc.diagnostics}")
                        continue
                pairs.append((model, data))
            return pairs

        chosen = [valid(found) for found in selection.matched]
        referenced = valid(selection.referenced)
        keys = [f"{m.get_resource_type()}/{m.id}" for pairs in [*chosen, referenced] for m, _ in pairs]
        by_type: dict[str, list[Fetched]] = {}
        for model, data in referenced:
            by_type.setdefault(model.get_resource_type(), []).append(Fetched(data, model))
        with self._lock:
            for search, pairs in zip(call.covers, chosen):
                self.selected[search] = ([m for m, _ in pairs], [d for _, d in pairs], [])
            for resource_type, found in by_type.items():
                self.batches[(resource_type, "")] = (found, [])  # sorts before the batches read by _id
            self._have.update(keys)
            self._want(selection.unresolved)
            self.notes.extend(notes)
            self.pages[call] = {}
            self._everything_models.clear()
            self._everything_state = "selected"
            self._open.remove(call)
        for pairs in chosen:
            self._read_attachments(pairs)
            self._work_out_rows([m for m, _ in pairs])

    # -- references ------------------------------------------------------------------------------------
    def _note(self, sources: list[dict]) -> None:
        """File what arrived and note the referenced resources still to read."""
        base = self.client.base_url
        keys = [k for d in sources if (k := json_resource_key(d))]
        located = [(d, json_reference_paths(d)) for d in sources]  # kept for the packet's rewriting
        referenced = [k for _, found in located for _, ref in found
                      if (k := reference_key(ref["reference"], base)) and k.split("/")[0] in REFERENCED_TYPES]
        with self._lock:
            self._have.update(keys)
            self._want(referenced)
            self.located.update((id(d), found) for d, found in located)

    def _want(self, keys: Iterable[str]) -> None:
        """Note "Type/id"s to read by _id, unless they came or were asked for already (the lock is held)."""
        for key in keys:
            if key not in self._have and key not in self._asked:
                resource_type, resource_id = key.split("/")
                self._wanted.setdefault(resource_type, {})[resource_id] = None

    def _queue_batches(self) -> None:
        """Queue an _id read for each type with ids to read that no running search may still include."""
        with self._lock:
            blocked = {t for s in self._open for t in s.included_types()}
            due = [t for t, ids in self._wanted.items() if ids and t not in blocked and t not in self._batch_queued]
            self._batch_queued.update(due)
        for resource_type in due:
            self._submit(SUPPORTING, lambda t=resource_type: self._fetch_wanted(t), self._batch_landed)

    def _fetch_wanted(self, resource_type: str) -> tuple[str, list[str], tuple[list[Fetched], list[str]]] | None:
        """Read up to ID_BATCH of the ids wanted now (the batch is made when its turn comes, so it is as full as
        it can be); queue another read when more are left."""
        with self._lock:
            self._batch_queued.discard(resource_type)
            wanted = self._wanted.get(resource_type, {})
            fresh = [i for i in wanted if f"{resource_type}/{i}" not in self._have]
            ids, rest = fresh[:ID_BATCH], fresh[ID_BATCH:]
            self._wanted[resource_type] = dict.fromkeys(rest)
            self._asked.update(f"{resource_type}/{i}" for i in ids)
        if rest:
            self._queue_batches()
        return (resource_type, ids, self._fetch_ids(resource_type, ids)) if ids else None

    def _fetch_ids(self, resource_type: str, ids: list[str]) -> tuple[list[Fetched], list[str]]:
        """Read resources by _id (all pages); a server that cannot search the type leaves them display-only."""
        found: list[Fetched] = []
        warnings: list[str] = []
        url: str | None = resource_type
        params: dict | None = {"_id": ",".join(ids), "_count": str(len(ids))}
        try:
            while url is not None:
                page = self.client.search_page(url, params, keep_json=True)
                warnings += page.warnings
                found += [Fetched(d, m) for m, d in zip(page.resources, page.sources)
                          if d.get("resourceType") == resource_type]
                url, params = page.next_url, None
        except NotFound as exc:
            warnings.append(f"could not resolve {len(ids)} {resource_type} reference(s): {exc.diagnostics}")
        return found, warnings

    def _batch_landed(self, result: tuple[str, list[str], tuple[list[Fetched], list[str]]] | None) -> None:
        if result is not None:
            resource_type, ids, found = result
            with self._lock:
                self.batches[(resource_type, ids[0])] = found
            self._work_out_rows([f.model for f in found[0]])

    def _work_out_rows(self, models: list[Resource]) -> None:
        """The narrative rows that depend on no other resource, worked out while the network is awaited (the packet
        would otherwise summarise every resource after the last page). Reports are left to the packet: a Binary
        read may still fill their attachments in."""
        rows = [(m, row) for m in models if m.get_resource_type() not in _REPORT_TYPES
                and (row := standalone_row(m)) is not None]
        with self._lock:
            self.rows.update((id(m), (m, row)) for m, row in rows)

    # -- attachments -----------------------------------------------------------------------------------
    def _read_attachments(self, pairs: list[tuple[Resource, dict]]) -> None:
        """Read report attachments held as a url to the server's Binary (size-capped) into their data."""
        for model, data in pairs:
            for n, (attachment, attachment_model) in enumerate(_attachments(model, data)):
                url = attachment.get("url")
                key = reference_key(url, self.client.base_url) if isinstance(url, str) else None
                if attachment.get("data") is None and key and key.startswith("Binary/"):
                    where = (f"{model.get_resource_type()}/{model.id}", n)
                    self._submit(SUPPORTING, lambda a=attachment, k=key: self._read_binary(a, k),
                                 lambda found, a=attachment, m=attachment_model, w=where: self._binary_landed(
                                     a, m, w, found))

    def _read_binary(self, attachment: dict, key: str) -> Fetched | str:
        size = attachment.get("size")
        if isinstance(size, int) and size > MAX_ATTACHMENT_BYTES:
            return f"{key} is larger than {MAX_ATTACHMENT_BYTES // 1_000_000} MB; left as a link"
        try:
            return self.client.read_json(*key.split("/"))
        except ServiceError as exc:
            return f"{key} could not be read: {exc.diagnostics}"

    def _binary_landed(self, attachment: dict, model: Any, where: tuple[str, int], found: Fetched | str) -> None:
        key = reference_key(attachment["url"], self.client.base_url)
        if isinstance(found, Fetched):
            data = found.data.get("data")
            if not isinstance(data, str) or len(data) * 3 // 4 > MAX_ATTACHMENT_BYTES:
                found = f"{key} has no data or is larger than {MAX_ATTACHMENT_BYTES // 1_000_000} MB; left as a link"
            else:
                attachment["data"] = data  # base64, as the Binary carried it
                content_type = found.data.get("contentType")
                if not attachment.get("contentType") and content_type:
                    attachment["contentType"] = content_type
                    model.contentType = content_type
                return
        with self._lock:
            self.attachment_problems[where] = found


_REPORT_TYPES = ("DiagnosticReport", "DocumentReference")  # the types whose attachments a Binary read fills in


def _attachments(model: Resource, data: dict) -> list[tuple[dict, Any]]:
    """A report's attachments: (its JSON, its model) pairs."""
    if data.get("resourceType") == "DocumentReference":
        return [(c["attachment"], m.attachment) for c, m in zip(data.get("content") or [], model.content or [])
                if isinstance(c, dict) and isinstance(c.get("attachment"), dict)]
    if data.get("resourceType") == "DiagnosticReport":
        return [(a, m) for a, m in zip(data.get("presentedForm") or [], model.presentedForm or [])
                if isinstance(a, dict)]
    return []


def fetch_patient(client: FhirClient, patient_id: str, *, progress: Progress | None = None,
                  concurrency: int = MAX_CONCURRENCY, everything: str | None = None) -> FetchedRecord:
    """Read the patient and run every planned search to the end, with what they reference; keep the EHR's JSON.

    everything: "auto" (use Patient/$everything where advertised) or "never"; default FHIR_EVERYTHING of the
    current app, else "auto".
    """
    mode = everything or _configured_everything()
    # A thread per request in flight, and one thread that handles what they bring (validating pages...): the
    # validation holds the GIL whatever the number of threads doing it, and with one such thread instead of eight,
    # the threads reading answers and sending requests wait less for the GIL and the process spends 10% less CPU
    # switching between threads (bench/fetch.py).
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fetch") as pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch-handler") as handler:
        # Stale while revalidating: when the statement read before has expired, /metadata is read again first and
        # that statement's searches take the request slots it leaves free; an unchanged body keeps them.
        known = client.expired_capabilities()
        fetch = RecordFetch(client, pool, handler, concurrency=concurrency, progress=progress)
        statement = fetch.read_capabilities()
        fetch.read_patient(patient_id)  # needs no capability: it goes out with /metadata
        searches = _start_plan(fetch, patient_id, known, mode) if known is not None else None
        try:
            current = statement.result()
        except BaseException:
            fetch.abandon()
            fetch.wait()
            raise
        if searches is not None and current is not known:
            log.info("the server's CapabilityStatement changed: the fetch starts again with its new plan")
            fetch.abandon()
            fetch.wait()
            fetch = RecordFetch(client, pool, handler, concurrency=concurrency, progress=progress)
            fetch.read_patient(patient_id)
            searches = None
        try:
            if searches is None:
                searches = _start_plan(fetch, patient_id, current, mode)
        finally:
            fetch.wait()
    return _assemble(client, patient_id, fetch, searches)


def _start_plan(fetch: RecordFetch, patient_id: str, capability: CapabilityStatement,
                mode: str) -> list[PlannedSearch]:
    """Start the planned searches (those $everything covers through it, where it is advertised and wanted)."""
    searches = plan_searches(patient_id, capability)
    covered = [s for s in searches if selectable(s)] if mode == "auto" and advertises_everything(capability) else []
    for search in searches:
        if search not in covered:
            fetch.start(search)
    if covered:
        params = {"_type": ",".join(everything_types(covered)), "_count": str(EVERYTHING_COUNT)}
        fetch.start_everything(EverythingCall("Patient/$everything", params, patient_id, tuple(covered)))
    return searches


def _configured_everything() -> str:
    """FHIR_EVERYTHING of the app serving this request ("auto" outside one, e.g. the CLI's packet command)."""
    from flask import current_app, has_app_context

    mode = current_app.config.get("FHIR_EVERYTHING", "auto") if has_app_context() else "auto"
    if mode not in EVERYTHING_MODES:
        raise ValueError(f"FHIR_EVERYTHING must be one of {', '.join(EVERYTHING_MODES)}, not {mode!r}")
    return mode


def _incomplete(page: Page, count: int) -> str | None:
    """Why a first $everything page cannot be the whole answer though it has no next link (None: it can be)."""
    if page.next_url is not None:
        return None
    if page.total is not None and page.total != page.matches:
        return f"{page.matches} of {page.total} resources without a next link"
    if page.total is None and page.matches >= count:
        return f"a full page of {page.matches} resources without a next link or a total"
    return None


def _assemble(client: FhirClient, patient_id: str, fetch: RecordFetch, searches: list[PlannedSearch]) -> FetchedRecord:
    """The record in a stable order: the searches' resources (plan, page and entry order), then what they reference."""
    if fetch.patient is None:
        raise UpstreamError("the EHR did not answer the read of Patient")
    found: list[tuple[Resource, dict]] = []
    warnings: list[str] = list(fetch.notes)
    for search in searches:
        models, sources, said = fetch.resources(search)
        found += zip(models, sources)
        warnings += said
    resources = _unique(found)
    have = {f"{m.get_resource_type()}/{m.id}" for m, _ in resources}
    have.add(f"Patient/{fetch.patient.model.id}")
    for key in sorted(fetch.batches):
        batch, said = fetch.batches[key]
        warnings += said
        new = _unique((f.model, f.data) for f in batch if f"{f.model.get_resource_type()}/{f.model.id}" not in have)
        resources += new
        have.update(f"{m.get_resource_type()}/{m.id}" for m, _ in new)
    position = {f"{m.get_resource_type()}/{m.id}": n for n, (m, _) in enumerate(resources)}
    warnings += [fetch.attachment_problems[k] for k in
                 sorted(fetch.attachment_problems, key=lambda k: (position.get(k[0], len(position)), k[1]))]
    log.info("fetched %d resources for Patient/%s in %d searches, %d requests", len(resources), patient_id,
             len(searches), client.request_count)
    record = PatientRecord(patient=fetch.patient.model, resources=[m for m, _ in resources],
                           base_url=client.base_url, warnings=warnings)
    sources = {id(m): d for m, d in resources}
    sources[id(fetch.patient.model)] = fetch.patient.data
    references = {key: found for key, data in sources.items() if (found := fetch.located.get(id(data))) is not None}
    kept = {id(m) for m, _ in resources}
    rows = {key: found for key, found in fetch.rows.items() if key in kept}
    return FetchedRecord(record, sources, references, rows)


def _unique(resources: Iterable[tuple[Resource, dict]]) -> list[tuple[Resource, dict]]:
    seen: set[str] = set()
    out: list[tuple[Resource, dict]] = []
    for model, data in resources:
        key = f"{model.get_resource_type()}/{model.id}"
        if key not in seen:
            seen.add(key)
            out.append((model, data))
    return out
