"""The EHR client: paging, retries, timeouts and status mapping (sandbox over HTTP; canned answers only
where a real server cannot be made to misbehave that way)."""

import json
import time

import pytest
import requests
from requests.adapters import BaseAdapter

from service.ehr.client import FhirClient, build_session, forget_capabilities
from tests.conftest import closed_port_url
from service.errors import Conflict, NotFound, UpstreamError, UpstreamTimeout


@pytest.fixture
def fhir(ehr) -> FhirClient:  # noqa: ANN001
    requests_session = build_session(max_retries=3, backoff=0.01)
    yield FhirClient(ehr.base_url, requests_session, timeout=5)
    requests.delete(f"{ehr.root_url}/_sandbox/faults", timeout=5)
    requests_session.close()


def inject(ehr, **fault: object) -> None:  # noqa: ANN001
    resp = requests.post(f"{ehr.root_url}/_sandbox/faults", json=fault, timeout=5)
    assert resp.status_code == 201, resp.text


def a_patient_with_conditions(ehr) -> str:  # noqa: ANN001
    counts: dict[str, int] = {}
    for condition in ehr.store.all("Condition"):
        ref = condition["subject"]["reference"]
        counts[ref] = counts.get(ref, 0) + 1
    return max(counts, key=counts.get).split("/")[1]


def test_search_follows_next_links_to_the_end(fhir: FhirClient, ehr) -> None:  # noqa: ANN001
    patient = a_patient_with_conditions(ehr)
    result = fhir.search_all("Condition", {"patient": patient, "_count": "1"})
    expected = ehr.store.count("Condition", patient=patient)
    assert expected > 1
    assert result.pages == expected
    assert len({r.id for r in result.resources}) == expected


def test_search_stops_at_the_page_cap_with_a_clear_error(ehr) -> None:  # noqa: ANN001
    patient = a_patient_with_conditions(ehr)
    capped = FhirClient(ehr.base_url, build_session(), timeout=5, max_pages=1)
    with pytest.raises(UpstreamError, match="more than 1 pages"):
        capped.search_all("Condition", {"patient": patient, "_count": "1"})


def test_get_is_retried_on_503_and_succeeds(fhir: FhirClient, ehr) -> None:  # noqa: ANN001
    inject(ehr, status=503, count=2, methods=["GET"])
    assert fhir.read("Patient", a_patient_with_conditions(ehr)).id


def test_429_retry_after_is_honoured(fhir: FhirClient, ehr) -> None:  # noqa: ANN001
    import time

    inject(ehr, status=429, count=1, retry_after=1, methods=["GET"])
    start = time.monotonic()
    fhir.read("Patient", a_patient_with_conditions(ehr))
    assert time.monotonic() - start >= 0.9


def test_post_is_never_retried_blindly(fhir: FhirClient, ehr) -> None:  # noqa: ANN001
    inject(ehr, status=503, count=1, methods=["POST"])
    before = ehr.store.count("Basic")
    with pytest.raises(UpstreamError) as info:
        fhir.create({"resourceType": "Basic", "code": {"text": "x"}})
    assert info.value.upstream_status == 503 and info.value.transient
    assert ehr.store.count("Basic") == before
    fhir.create({"resourceType": "Basic", "code": {"text": "x"}})  # the fault was used up by one POST
    assert ehr.store.count("Basic") == before + 1


def test_a_persistent_outage_becomes_upstream_error_with_the_ehr_outcome(fhir: FhirClient, ehr) -> None:  # noqa: ANN001
    inject(ehr, status=503, count=10, methods=["GET"])
    with pytest.raises(UpstreamError) as info:
        fhir.read("Patient", "anything")
    assert info.value.upstream["resourceType"] == "OperationOutcome"


def test_unknown_resource_is_not_found(fhir: FhirClient) -> None:
    with pytest.raises(NotFound):
        fhir.read("Patient", "no-such-patient")


def test_unreachable_ehr_is_upstream_error() -> None:
    client = FhirClient(closed_port_url(), build_session(max_retries=0), timeout=2)
    with pytest.raises(UpstreamError, match="could not reach"):
        client.read("Patient", "x")


def test_the_environments_proxy_and_no_proxy_still_hold_on_every_request(ehr, loopback_listener,  # noqa: ANN001
                                                                          monkeypatch) -> None:  # noqa: ANN001
    """The session works the environment out once per origin (EnvironmentOnceSession): what it worked out must be
    what requests would have, request after request."""
    port, received = loopback_listener
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    session = build_session(max_retries=0)
    direct = FhirClient(ehr.base_url, session, timeout=5)
    proxied = FhirClient("http://ehr.invalid/fhir", session, timeout=2)
    for _ in range(2):
        assert direct.get_json("metadata")["resourceType"] == "CapabilityStatement"  # NO_PROXY: straight there
        with pytest.raises(UpstreamError):
            proxied.read("Patient", "x")  # through the proxy, which answers nothing
    deadline = time.monotonic() + 5
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r.split(b"\r\n")[0] for r in received] == [b"GET http://ehr.invalid/fhir/Patient/x HTTP/1.1"] * 2


def test_slow_ehr_is_upstream_timeout(ehr) -> None:  # noqa: ANN001
    client = FhirClient(ehr.base_url, build_session(max_retries=0), timeout=0.3)
    inject(ehr, mode="hang", delay_s=1.5, count=1)
    try:
        with pytest.raises(UpstreamTimeout):
            client.read("Patient", "x")
    finally:
        requests.delete(f"{ehr.root_url}/_sandbox/faults", timeout=5)


def test_conditional_create_does_not_duplicate(fhir: FhirClient, ehr) -> None:  # noqa: ANN001
    ident = {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:6d1b7c55-0000-4000-8000-000000000001"}
    body = {"resourceType": "Basic", "identifier": [ident], "code": {"text": "conditional"}}
    query = f"identifier={ident['system']}|{ident['value']}"
    first = fhir.create(body, if_none_exist=query)
    second = fhir.create(body, if_none_exist=query)
    assert first.created and not second.created
    assert first.location == second.location


def test_capabilities_are_read_once_per_server(fhir: FhirClient, ehr) -> None:  # noqa: ANN001
    forget_capabilities(ehr.base_url)
    requests.delete(f"{ehr.root_url}/_sandbox/requests", timeout=5)
    fhir.capabilities()
    fhir.capabilities()
    FhirClient(ehr.base_url, build_session()).capabilities()
    log = requests.get(f"{ehr.root_url}/_sandbox/requests", timeout=5).json()
    assert [r["path"] for r in log].count("/fhir/metadata") == 1


def test_capabilities_read_again_keep_the_validated_statement_while_the_body_is_unchanged() -> None:
    statement = {"resourceType": "CapabilityStatement", "status": "active", "date": "2026-01-01",
                 "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
                 "rest": [{"mode": "server", "resource": [{"type": "Condition"}]}]}
    first = canned_client(200, statement)
    forget_capabilities(first.base_url)
    known = first.capabilities()
    forget_capabilities(first.base_url)  # expired: /metadata is read again
    again = canned_client(200, statement)
    assert again.capabilities() is known and again.request_count == 1
    forget_capabilities(first.base_url)
    changed = canned_client(200, {**statement, "rest": [{"mode": "server", "resource": [{"type": "Procedure"}]}]})
    assert changed.capabilities() is not known
    assert changed.capabilities().rest[0].resource[0].type == "Procedure"
    forget_capabilities(first.base_url)
    with pytest.raises(UpstreamError, match="not a valid R4 CapabilityStatement"):
        canned_client(200, {**statement, "kind": 7}).capabilities()


class CannedAdapter(BaseAdapter):
    """Answers every request with one canned response (for misbehaviour a real server won't show)."""

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        super().__init__()
        self.status, self.body, self.content_type = status, body, content_type

    def send(self, request, **kwargs):  # noqa: ANN001, ANN201
        resp = requests.Response()
        resp.status_code, resp._content, resp.url, resp.request = self.status, self.body, request.url, request
        resp.headers["Content-Type"] = self.content_type
        return resp

    def close(self) -> None:
        pass


def canned_client(status: int, body: object, content_type: str = "application/fhir+json") -> FhirClient:
    session = requests.Session()
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    session.mount("http://", CannedAdapter(status, raw, content_type))
    return FhirClient("http://ehr.test/fhir", session)


def test_next_link_to_another_origin_is_refused() -> None:
    page = {"resourceType": "Bundle", "type": "searchset",
            "link": [{"relation": "next", "url": "http://elsewhere.test/fhir/Condition?page=2"}], "entry": []}
    with pytest.raises(UpstreamError, match="leaves its origin"):
        canned_client(200, page).search_all("Condition", {"patient": "p"})


def test_outcome_entries_in_a_searchset_become_warnings() -> None:
    page = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {"resourceType": "OperationOutcome",
                      "issue": [{"severity": "warning", "code": "informational", "diagnostics": "status filter applied"}]},
         "search": {"mode": "outcome"}},
        {"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p"}},
         "search": {"mode": "match"}}]}
    result = canned_client(200, page).search_all("Condition", {"patient": "p"})
    assert [r.id for r in result.resources] == ["c1"]
    assert result.warnings == ["warning: status filter applied"]


def test_a_body_that_is_not_json_is_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="not JSON"):
        canned_client(200, b"<html>login</html>", "text/html").read("Patient", "p")


@pytest.mark.parametrize("status,error", [(401, UpstreamError), (403, UpstreamError), (409, Conflict),
                                          (412, Conflict), (410, NotFound), (500, UpstreamError),
                                          (504, UpstreamTimeout)],
                         ids=["401", "403", "409", "412", "410", "500", "504"])
def test_status_codes_map_to_the_error_tree(status: int, error: type) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
    with pytest.raises(error) as info:
        canned_client(status, outcome).read("Patient", "p")
    assert info.value.upstream_status == status
