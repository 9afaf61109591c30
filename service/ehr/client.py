"""The only code that speaks HTTP to an EHR's FHIR server."""

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from mappers import fhirjson
from mappers.errors import describe_validation_error
from service.errors import Conflict, NotFound, UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"
RETRY_STATUSES = (429, 502, 503, 504)
MAX_RETRY_AFTER_S = 30.0  # a longer Retry-After is not waited out inside one request


class CappedRetry(Retry):
    """urllib3 Retry that honours Retry-After but never sleeps longer than MAX_RETRY_AFTER_S."""

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        return None if value is None else min(value, MAX_RETRY_AFTER_S)


class EnvironmentOnceSession(requests.Session):
    """A requests Session that works out the environment's settings (proxies, CA bundle) once per origin.

    With trust_env on (the default), requests scans os.environ for proxy settings before every request: about a
    quarter of a millisecond of CPU each time, in each request slot of a paged fetch. A service's environment does
    not change while it runs, so what requests works out for an origin and the same arguments is kept.
    """

    MAX_KEPT = 256

    def __init__(self) -> None:
        super().__init__()
        self._merged: dict[tuple, dict[str, Any]] = {}

    def merge_environment_settings(self, url: str, proxies: dict[str, str] | None, stream: bool | None,
                                   verify: bool | str | None, cert: Any) -> dict[str, Any]:
        key = (_origin(url), tuple(sorted((proxies or {}).items())), stream, verify, cert, self.trust_env,
               tuple(sorted(self.proxies.items())), self.stream, self.verify, self.cert)
        merged = self._merged.get(key)
        if merged is None:
            merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if len(self._merged) < self.MAX_KEPT:
                self._merged[key] = merged
        return {**merged, "proxies": dict(merged["proxies"])}


def build_session(*, max_retries: int = 3, backoff: float = 0.5, pool_size: int = 8) -> requests.Session:
    """A session that retries idempotent requests (GET, PUT) on 429/502/503/504, honouring Retry-After."""
    retry = CappedRetry(total=max_retries, backoff_factor=backoff, status_forcelist=RETRY_STATUSES,
                        allowed_methods=frozenset({"GET", "PUT", "HEAD"}), respect_retry_after_header=True,
                        raise_on_status=False)
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session = EnvironmentOnceSession()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["Accept"] = FHIR_JSON
    return session


@dataclass
class SearchResult:
    """Every resource a search returned over all its pages, with the server's warnings."""

    resources: list[Resource] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pages: int = 0


@dataclass(frozen=True)
class PageHeader:
    """What a searchset page says about paging, read from its JSON before any resource in it is validated."""

    next_url: str | None
    total: int | None
    matches: int  # entries with search.mode match (or no mode)
    entries: int  # every entry (matches, includes, outcomes): a measure of the work the page brings


@dataclass(frozen=True)
class Page:
    """One searchset page: its resources, the server's warnings, where the next page is, the total if stated."""

    resources: list[Resource]
    warnings: list[str]
    next_url: str | None
    total: int | None
    matches: int  # entries with search.mode match (or no mode)
    sources: list[dict] = field(default_factory=list)  # with keep_json: each resource's JSON as the EHR sent it


@dataclass(frozen=True)
class Fetched:
    """A resource as the EHR sent it (JSON, decimals exact) and the R4B model that validated it."""

    data: dict
    model: Resource


@dataclass(frozen=True)
class WriteResult:
    """Where a create or update left the resource."""

    status: int
    location: str | None  # "Type/id" (no history part)
    resource: dict | None  # the server's copy when it returned one
    created: bool


CAPABILITY_TTL_S = 3600.0  # /metadata is read again after this long, so a server's upgrade is noticed


@dataclass(frozen=True)
class _CachedCapability:
    """A server's CapabilityStatement, when it was read, and the SHA-256 of the body it was validated from."""

    statement: CapabilityStatement
    digest: bytes
    read_at: float  # time.monotonic()


_capabilities: dict[str, _CachedCapability] = {}
_capabilities_lock = threading.Lock()


def _fresh(cached: _CachedCapability) -> bool:
    return time.monotonic() - cached.read_at < CAPABILITY_TTL_S


DEFAULT_SERVER_CONCURRENCY = 4
_server_slots: dict[str, threading.BoundedSemaphore] = {}
_server_slots_lock = threading.Lock()


def server_slots(base_url: str, limit: int = DEFAULT_SERVER_CONCURRENCY) -> threading.BoundedSemaphore:
    """The process-wide cap on requests in flight to one server (shared by every fetch and write-back)."""
    origin = "%s://%s" % _origin(base_url)
    with _server_slots_lock:
        if origin not in _server_slots:
            _server_slots[origin] = threading.BoundedSemaphore(limit)
        return _server_slots[origin]


class FhirClient:
    """A FHIR R4 REST client for one server: reads, searches with paging, conditional writes."""

    def __init__(self, base_url: str, session: requests.Session, *, timeout: float = 30.0,
                 max_pages: int = 500, max_bytes: int | None = None, auth_header: str | None = None,
                 concurrency: int = DEFAULT_SERVER_CONCURRENCY) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = timeout
        self.max_pages = max_pages
        self.max_bytes = max_bytes  # a budget for everything this client reads; None = no limit
        self._auth_header = auth_header  # never logged
        self._slots = server_slots(self.base_url, concurrency)
        self._counter_lock = threading.Lock()
        self.request_count = 0
        self.bytes_received = 0

    # -- capability -------------------------------------------------------------------------------
    def capabilities(self) -> CapabilityStatement:
        """The server's CapabilityStatement, read once per base URL and cached for the process (CAPABILITY_TTL_S).

        When /metadata is read again (the cache expired or was forgotten) and the body is byte for byte the one
        validated before, that validated statement is kept: a server's statement can be 100 KB and more, and
        validating it costs tens of milliseconds every time.
        """
        with _capabilities_lock:
            cached = _capabilities.get(self.base_url)
        if cached is not None and _fresh(cached):
            return cached.statement
        resp = self._send("GET", self._url("metadata"))
        digest = hashlib.sha256(resp.content).digest()
        if cached is not None and cached.digest == digest:
            statement = cached.statement
        else:
            try:
                statement = CapabilityStatement.model_validate(_json_body(resp))
            except ValidationError as exc:
                raise UpstreamError(f"the server's /metadata is not a valid R4 CapabilityStatement: "
                                    f"{describe_validation_error(exc)}") from exc
        with _capabilities_lock:
            _capabilities[self.base_url] = _CachedCapability(statement, digest, time.monotonic())
        return statement

    def expired_capabilities(self) -> CapabilityStatement | None:
        """The statement read from this server before, when its cache has expired (None when fresh or never read):
        what to plan with while /metadata is read again, as long as the new body proves to be the same."""
        with _capabilities_lock:
            cached = _capabilities.get(self.base_url)
        return cached.statement if cached is not None and not _fresh(cached) else None

    # -- reads -------------------------------------------------------------------------------------
    def read(self, resource_type: str, resource_id: str) -> Resource:
        """Read one resource; NotFound when the server has no such resource."""
        return _to_model(self._request_json("GET", f"{resource_type}/{resource_id}"))

    def read_json(self, resource_type: str, resource_id: str) -> Fetched:
        """Read one resource, validated, keeping the EHR's JSON; NotFound when the server has no such resource."""
        return checked(self.get_json(f"{resource_type}/{resource_id}"))

    def search(self, resource_type: str, params: Mapping[str, str] | None = None,
               result: SearchResult | None = None) -> Iterator[Resource]:
        """Yield every matching (and included) resource, following next links to the end."""
        result = result if result is not None else SearchResult()
        url: str | None = self._url(resource_type)
        query: Mapping[str, str] | None = params
        while url is not None:
            if result.pages >= self.max_pages:
                raise UpstreamError(f"{resource_type} search needs more than {self.max_pages} pages; "
                                    "narrow it or raise FHIR_MAX_PAGES")
            page = self.search_page(url, query)
            result.pages += 1
            result.warnings.extend(page.warnings)
            yield from page.resources
            url, query = page.next_url, None

    def search_page(self, url: str, params: Mapping[str, Any] | None = None, *, keep_json: bool = False) -> Page:
        """Fetch one searchset page (url: a resource type, or a next link of this server).

        With keep_json, every resource is still validated through its model, and the page also keeps the JSON the
        EHR sent (decimals exact) as `sources`, one per resource, for pass-through without re-serialising.
        """
        if keep_json:
            return self.page_of(self.get_json(url, params), keep_json=True)
        return self.page_of(self._request_json("GET", url, params=params))

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> dict:
        """GET a resource or a searchset page as FHIR JSON (decimals exact, mappers.fhirjson), not yet validated."""
        return fhir_json(self.get(url, params))

    def get(self, url: str, params: Mapping[str, Any] | None = None) -> requests.Response:
        """GET as FHIR JSON: the answer with its status checked (UpstreamError...), its body not yet parsed
        (fhir_json parses it), so that a caller can free its request slot before the parsing."""
        return self._send("GET", self._url(url), params=params)

    def page_header(self, data: dict) -> PageHeader:
        """A searchset page's next link, total and counts (UpstreamError when it is not a Bundle)."""
        if data.get("resourceType") != "Bundle":
            raise UpstreamError(f"a search answered a {data.get('resourceType')}, not a Bundle")
        entries = _entries(data)
        matches = sum(1 for e in entries if (e.get("search") or {}).get("mode", "match") == "match")
        total = data.get("total") if isinstance(data.get("total"), int) else None
        return PageHeader(self._next_link(data), total, matches, len(entries))

    def page_of(self, data: dict, *, keep_json: bool = False, header: PageHeader | None = None) -> Page:
        """A searchset page read from its JSON: each resource validated (see search_page); header: its
        page_header, when the caller read it already."""
        header = header or self.page_header(data)
        warnings: list[str] = []
        holder = SearchResult(warnings=warnings)
        sources: list[dict] = []
        resources = list(self._page_resources(data, holder, sources if keep_json else None))
        return Page(resources, warnings, header.next_url, header.total, header.matches, sources)

    def search_all(self, resource_type: str, params: Mapping[str, str] | None = None) -> SearchResult:
        """Run a search to the end and return everything with its warnings."""
        result = SearchResult()
        result.resources.extend(self.search(resource_type, params, result))
        return result

    # -- writes ------------------------------------------------------------------------------------
    def create(self, resource: Resource | dict, *, if_none_exist: str | None = None) -> WriteResult:
        """POST a resource; with if_none_exist, a conditional create that a repeat cannot duplicate."""
        body = _to_json(resource)
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else {}
        resp = self._send("POST", self._url(body["resourceType"]), body=body, headers=headers)
        return _write_result(resp)

    def update(self, resource: Resource | dict) -> WriteResult:
        """PUT a resource at its id (idempotent)."""
        body = _to_json(resource)
        if not body.get("id"):
            raise ValueError("update needs a resource id")
        resp = self._send("PUT", self._url(f"{body['resourceType']}/{body['id']}"), body=body)
        return _write_result(resp)

    def transaction(self, bundle: Resource | dict) -> dict:
        """POST a transaction Bundle; returns the transaction-response as JSON."""
        resp = self._send("POST", self.base_url, body=_to_json(bundle))
        return _json_body(resp)

    # -- plumbing ----------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def _next_link(self, page: dict) -> str | None:
        for link in page.get("link") or []:
            if link.get("relation") == "next" and link.get("url"):
                url = urljoin(self.base_url + "/", link["url"])
                if _origin(url) != _origin(self.base_url):
                    raise UpstreamError("the server's next link leaves its origin; refusing to follow it")
                return url
        return None

    def _page_resources(self, page: dict, result: SearchResult, sources: list[dict] | None = None) -> Iterator[Resource]:
        for entry in _entries(page):
            data = entry.get("resource")
            if not isinstance(data, dict):
                continue
            mode = (entry.get("search") or {}).get("mode")
            if mode == "outcome" or (data.get("resourceType") == "OperationOutcome" and mode != "match"):
                result.warnings.extend(_outcome_messages(data))
                continue
            try:
                model = _to_model(data)
            except UpstreamError as exc:
                result.warnings.append(f"skipped {data.get('resourceType')}/{data.get('id')}: {exc.diagnostics}")
                continue
            if sources is not None:
                sources.append(data)
            yield model

    def _request_json(self, method: str, url: str, *, params: Mapping[str, str] | None = None) -> dict:
        return _json_body(self._send(method, self._url(url), params=params))

    def _send(self, method: str, url: str, *, params: Mapping[str, str] | None = None,
              body: dict | None = None, headers: dict | None = None) -> requests.Response:
        all_headers = {"Accept": FHIR_JSON, **(headers or {})}
        if self._auth_header:
            all_headers["Authorization"] = self._auth_header
        data = None
        if body is not None:
            all_headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            with self._slots:
                resp = self.session.request(method, url, params=params, data=data, headers=all_headers,
                                            timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            if _is_timeout(exc):
                raise UpstreamTimeout(f"the EHR did not answer {method} {_path(url)} within {self.timeout:g} s") from exc
            raise UpstreamError(f"could not reach the EHR for {method} {_path(url)}: {type(exc).__name__}") from exc
        log.debug("%s %s -> %s", method, _path(url), resp.status_code)
        self._count(len(resp.content))
        raise_for_status(resp, method, url)
        return resp

    def _count(self, size: int) -> None:
        with self._counter_lock:
            self.request_count += 1
            self.bytes_received += size
            over = self.max_bytes is not None and self.bytes_received > self.max_bytes
        if over:
            raise UpstreamError(f"the record is larger than the fetch budget of {self.max_bytes // 1_000_000} MB; "
                                "narrow the selection (since, exclude) or raise FHIR_MAX_FETCH_BYTES")


def _entries(bundle: dict) -> list[dict]:
    """A Bundle's entries that are JSON objects (anything else in a server's answer is ignored)."""
    entries = bundle.get("entry")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _is_timeout(exc: requests.RequestException) -> bool:
    """A timeout, including one urllib3 wrapped in MaxRetryError after its read retries ran out."""
    if isinstance(exc, requests.Timeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # NewConnectionError (refused, unreachable) subclasses ConnectTimeoutError in urllib3 2.x: not a timeout.
    return isinstance(reason, (ReadTimeoutError, ConnectTimeoutError)) and not isinstance(reason, NewConnectionError)


def raise_for_status(resp: requests.Response, method: str, url: str) -> None:
    """Map an EHR error status to our error tree, keeping any OperationOutcome it sent."""
    status = resp.status_code
    if status < 400:
        return
    upstream = _outcome_or_none(resp)
    where = f"{method} {_path(url)}"
    retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
    if status in (404, 410):
        raise NotFound(f"the EHR has no {_path(url)} ({status})", upstream=upstream, upstream_status=status)
    if status in (401, 403):
        log.warning("EHR refused authorisation for %s (%s)", where, status)
        raise UpstreamError(f"the EHR refused authorisation for {where} ({status})", upstream=upstream,
                            upstream_status=status)
    if status in (409, 412):
        raise Conflict(f"the EHR reported a conflict for {where} ({status})", upstream=upstream, upstream_status=status)
    if status == 504:
        raise UpstreamTimeout(f"the EHR timed out on {where} (504)", upstream=upstream, upstream_status=status,
                              retry_after=retry_after)
    raise UpstreamError(f"the EHR answered {status} to {where}", upstream=upstream, upstream_status=status,
                        retry_after=retry_after)


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (delta-seconds or an HTTP date) as seconds from now; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _write_result(resp: requests.Response) -> WriteResult:
    location = resp.headers.get("Location") or resp.headers.get("Content-Location")
    body = _json_body(resp) if resp.content else None
    key = _location_key(location) if location else None
    if key is None and isinstance(body, dict) and body.get("id"):
        key = f"{body['resourceType']}/{body['id']}"
    return WriteResult(status=resp.status_code, location=key, resource=body, created=resp.status_code == 201)


def _location_key(location: str) -> str | None:
    """'http://x/fhir/Type/id/_history/2' → 'Type/id'."""
    parts = [p for p in urlsplit(location).path.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


def _json_body(resp: requests.Response, loads: Callable[[bytes], object] = json.loads) -> dict:
    """The body as a FHIR resource's JSON; UpstreamError when it is not JSON or not a resource."""
    try:
        data = loads(resp.content)
    except ValueError as exc:
        ctype = resp.headers.get("Content-Type", "none")
        raise UpstreamError(f"the EHR answered {resp.status_code} with a body that is not JSON ({ctype})") from exc
    if not isinstance(data, dict) or "resourceType" not in data:
        raise UpstreamError("the EHR answered JSON that is not a FHIR resource")
    return data


def fhir_json(resp: requests.Response) -> dict:
    """The body as FHIR JSON with decimals kept exact (mappers.fhirjson)."""
    return _json_body(resp, fhirjson.loads)


def _outcome_or_none(resp: requests.Response) -> dict | None:
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("resourceType") == "OperationOutcome" else None


def _outcome_messages(outcome: dict) -> list[str]:
    messages = []
    for issue in outcome.get("issue") or []:
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
        messages.append(f"{issue.get('severity', 'information')}: {text}")
    return messages


def checked(data: dict) -> Fetched:
    """A resource's JSON with the R4B model that validates it (UpstreamError when it is not valid R4)."""
    return Fetched(data, _to_model(data))


def _to_model(data: dict) -> Resource:
    resource_type = data.get("resourceType")
    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError, TypeError) as exc:
        raise UpstreamError(f"the EHR sent an unknown resource type {resource_type!r}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UpstreamError(f"{resource_type} from the EHR is not valid R4: {describe_validation_error(exc)}") from exc


def _to_json(resource: Resource | dict) -> dict:
    if isinstance(resource, dict):
        return resource
    return resource.model_dump(mode="json", exclude_none=True)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _path(url: str) -> str:
    """The path of a URL without its query (queries can carry identifiers)."""
    return urlsplit(url).path or "/"


def forget_capabilities(base_url: str | None = None) -> None:
    """Mark cached CapabilityStatements (all, or one server's) expired: the next use reads /metadata again.

    The statement stays known by the digest of its body, so an unchanged /metadata is not validated again.
    """
    with _capabilities_lock:
        for url in [u for u in _capabilities if base_url is None or u == base_url.rstrip("/")]:
            _capabilities[url] = replace(_capabilities[url], read_at=float("-inf"))
