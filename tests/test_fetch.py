"""Pulling a record like a production client: vendor profiles, status fallback, readiness, selection, faults."""

from collections.abc import Iterator

import pytest
import requests

from fixtures.sandbox import SandboxServer
from service.ehr.fetch import offset_page_weights
from tests.conftest import READINESS_GAPS, assert_outcome

PROSTATE = "so-prostate-patient"


@pytest.fixture(scope="module")
def vendor_ehrs() -> Iterator[dict[str, SandboxServer]]:
    servers = {name: SandboxServer(profile=name).start() for name in ("epic", "cerner")}
    yield servers
    for server in servers.values():
        server.stop()


def packet_of(client, patient: str, **body: object) -> tuple[dict, dict]:  # noqa: ANN001
    resp = client.post("/api/referrals", json={"patient": patient, "question": "Second opinion?", **body})
    assert resp.status_code == 201, resp.get_data(as_text=True)[:500]
    referral = resp.get_json()
    return referral, client.get(f"/api/referrals/{referral['id']}/packet").get_json()


def medications(packet: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"MedicationStatement": [], "MedicationRequest": []}
    for entry in packet["entry"]:
        if entry["resource"]["resourceType"] in out:
            out[entry["resource"]["resourceType"]].append(entry["resource"])
    return out


def medications_section_text(packet: dict) -> str:
    section = next(s for s in packet["entry"][0]["resource"]["section"] if s["code"]["coding"][0]["code"] == "10160-0")
    return section["text"]["div"]


@pytest.mark.parametrize("profile", ["epic", "cerner"])
def test_vendor_profiles_give_medications_from_medication_request_with_doses(make_app, vendor_ehrs,
                                                                            profile: str) -> None:  # noqa: ANN001
    ehr = vendor_ehrs[profile]
    requests.delete(f"{ehr.root_url}/_sandbox/requests", timeout=5)
    _, packet = packet_of(make_app(FHIR_BASE_URL=ehr.base_url).test_client(), PROSTATE)
    meds = medications(packet)
    assert meds["MedicationStatement"] == []
    expected = {r["id"] for r in ehr.store.all("MedicationRequest")
                if r["subject"]["reference"] == f"Patient/{PROSTATE}" and r["intent"] in ("order", "plan")}
    assert {m["id"] for m in meds["MedicationRequest"]} == expected and expected
    assert all(m.get("dosageInstruction") for m in meds["MedicationRequest"])
    assert " mg" in medications_section_text(packet)
    log = requests.get(f"{ehr.root_url}/_sandbox/requests", timeout=5).json()
    med_searches = [r for r in log if r["path"] == "/fhir/MedicationRequest"]
    assert [r["status"] for r in med_searches[:1]] == [400]  # refused without a status ...
    assert "status" in med_searches[1]["query"]  # ... and asked again naming every status
    assert not any(r["path"] == "/fhir/MedicationStatement" for r in log)


def test_epic_searchset_outcomes_become_warnings(make_app, vendor_ehrs) -> None:  # noqa: ANN001
    referral, _ = packet_of(make_app(FHIR_BASE_URL=vendor_ehrs["epic"].base_url).test_client(), PROSTATE)
    assert any("security settings" in w for w in referral["warnings"])


def test_generic_profile_gives_both_statements_and_requests(client, ehr) -> None:  # noqa: ANN001
    _, packet = packet_of(client, PROSTATE)
    meds = medications(packet)
    assert meds["MedicationStatement"] and meds["MedicationRequest"]


@pytest.mark.parametrize("patient", sorted(READINESS_GAPS))
def test_readiness_flags_what_is_really_missing(client, patient: str) -> None:  # noqa: ANN001
    referral, packet = packet_of(client, patient)
    gaps = {(i["item"], i.get("about")) for i in referral["readiness"] if i["status"] != "ok"}
    assert gaps == READINESS_GAPS[patient]
    assert all(i["message"] for i in referral["readiness"])
    readiness = next(s for s in packet["entry"][0]["resource"]["section"] if s["title"].startswith("Readiness"))
    text = readiness["text"]["div"]
    assert ("Missing" in text) == bool(READINESS_GAPS[patient])


def test_since_leaves_out_old_history_but_keeps_what_is_active(client, ehr) -> None:  # noqa: ANN001
    patient = "so-prostate-patient"
    referral, packet = packet_of(client, patient, since="2026-01-01")
    left_out = {e["reference"] for e in referral["excluded"]}
    assert left_out and all(e["reason"] == "dated before 2026-01-01" for e in referral["excluded"])
    kept = {f"{e['resource']['resourceType']}/{e['resource'].get('id')}" for e in packet["entry"]}
    assert not left_out & kept
    active = {f"Condition/{c['id']}" for c in ehr.store.all("Condition")
              if c["subject"]["reference"] == f"Patient/{patient}"
              and c["clinicalStatus"]["coding"][0]["code"] == "active"}
    assert active and active <= kept
    assert any(k.startswith("Condition/") for k in left_out)  # the resolved history


def test_bad_since_is_400(client) -> None:  # noqa: ANN001
    resp = client.post("/api/referrals", json={"patient": PROSTATE, "question": "q", "since": "last year"})
    assert_outcome(resp, 400, "invalid")


def test_injected_429s_and_503s_still_give_a_complete_packet(client, ehr) -> None:  # noqa: ANN001
    _, clean = packet_of(client, PROSTATE)
    faults = [{"status": 429, "count": 2, "retry_after": 1, "methods": ["GET"]},
              {"status": 503, "count": 3, "methods": ["GET"]}]  # 5 faults < the 6 attempts a GET gets
    for fault in faults:
        assert requests.post(f"{ehr.root_url}/_sandbox/faults", json=fault, timeout=5).status_code == 201
    try:
        _, faulty = packet_of(client, PROSTATE)
    finally:
        requests.delete(f"{ehr.root_url}/_sandbox/faults", timeout=5)
    ids = lambda p: sorted(f"{e['resource']['resourceType']}/{e['resource'].get('id')}" for e in p["entry"][1:]
                           if e["resource"]["resourceType"] not in ("ServiceRequest",))  # noqa: E731
    assert ids(faulty) == ids(clean)


def test_outage_beyond_the_retry_budget_is_an_outcome_and_stores_nothing(make_app, ehr) -> None:  # noqa: ANN001
    app = make_app(FHIR_MAX_RETRIES=2)
    client = app.test_client()
    requests.post(f"{ehr.root_url}/_sandbox/faults", json={"status": 503, "duration_s": 30, "methods": ["GET"]},
                  timeout=5)
    try:
        assert_outcome(client.post("/api/referrals", json={"patient": PROSTATE, "question": "q"}), 502)
    finally:
        requests.delete(f"{ehr.root_url}/_sandbox/faults", timeout=5)
    from service.store.repository import get_repository

    with get_repository(app).engine.connect() as connection:
        assert connection.exec_driver_sql("select count(*) from referrals").scalar() == 0


def test_long_searches_are_paged_in_parallel_and_complete(make_app) -> None:  # noqa: ANN001
    with SandboxServer(page_size=2, max_page_size=2) as small_pages:
        client = make_app(FHIR_BASE_URL=small_pages.base_url).test_client()
        requests.delete(f"{small_pages.root_url}/_sandbox/requests", timeout=5)
        _, packet = packet_of(client, PROSTATE)
        conditions = {c["id"] for c in small_pages.store.all("Condition")
                      if c["subject"]["reference"] == f"Patient/{PROSTATE}"}
        assert {e["resource"]["id"] for e in packet["entry"] if e["resource"]["resourceType"] == "Condition"} == conditions
        log = requests.get(f"{small_pages.root_url}/_sandbox/requests", timeout=5).json()
    pages = [r for r in log if r["path"] == "/fhir/Condition"]
    assert len(pages) == -(-len(conditions) // 2)
    assert len({tuple(sorted(r["query"].items())) for r in pages}) == len(pages)  # no page read twice


def test_a_search_past_the_page_cap_ends_the_fetch_before_its_later_pages_are_asked_for(make_app) -> None:  # noqa: ANN001
    with SandboxServer(page_size=2, max_page_size=2) as small_pages:
        app = make_app(FHIR_BASE_URL=small_pages.base_url, FHIR_MAX_PAGES=2)
        conditions = [c for c in small_pages.store.all("Condition") if c["subject"]["reference"] == f"Patient/{PROSTATE}"]
        assert len(conditions) > 4  # three pages or more at two a page
        requests.delete(f"{small_pages.root_url}/_sandbox/requests", timeout=5)
        resp = app.test_client().post("/api/referrals", json={"patient": PROSTATE, "question": "q"})
        log = requests.get(f"{small_pages.root_url}/_sandbox/requests", timeout=5).json()
    outcome = assert_outcome(resp, 502)
    assert "needs more than 2 pages" in outcome["issue"][0]["diagnostics"]
    assert [r["path"] for r in log].count("/fhir/Condition") == 1  # the first page said how many: no more asked for
    from service.store.repository import get_repository

    with get_repository(app).engine.connect() as connection:
        assert connection.exec_driver_sql("select count(*) from referrals").scalar() == 0


def test_a_later_page_that_is_not_json_is_an_outcome_and_stores_nothing(make_app) -> None:  # noqa: ANN001
    """A proxy's login page instead of a searchset page (its body is parsed after its request slot is freed)."""
    with SandboxServer(page_size=2, max_page_size=2) as small_pages:
        fhir, served = small_pages.app.wsgi_app, []

        def login_page_for_later_condition_pages(environ, start_response):  # noqa: ANN001, ANN202
            if environ["PATH_INFO"] == "/fhir/Condition" and "_getpagesoffset" in environ.get("QUERY_STRING", ""):
                served.append(environ["QUERY_STRING"])
                start_response("200 OK", [("Content-Type", "text/html")])
                return [b"<html><body>Please sign in</body></html>"]
            return fhir(environ, start_response)

        small_pages.app.wsgi_app = login_page_for_later_condition_pages
        app = make_app(FHIR_BASE_URL=small_pages.base_url)
        resp = app.test_client().post("/api/referrals", json={"patient": PROSTATE, "question": "q"})
    assert served  # the first Condition page was the sandbox's; a later one was the login page
    outcome = assert_outcome(resp, 502)
    assert "not JSON (text/html)" in outcome["issue"][0]["diagnostics"]
    from service.store.repository import get_repository

    with get_repository(app).engine.connect() as connection:
        assert connection.exec_driver_sql("select count(*) from referrals").scalar() == 0


def test_the_packet_keeps_the_ehrs_decimals_and_instants_byte_for_byte(make_app) -> None:  # noqa: ANN001
    body = ('{"resourceType":"Bundle","type":"transaction","entry":['
            '{"fullUrl":"urn:uuid:p","resource":{"resourceType":"Patient","id":"dec-patient"},'
            '"request":{"method":"PUT","url":"Patient/dec-patient"}},'
            '{"resource":{"resourceType":"MedicationRequest","status":"active","intent":"order",'
            '"subject":{"reference":"Patient/dec-patient"},"medicationCodeableConcept":{"text":"Drug"},'
            '"authoredOn":"2024-01-02T03:04:05.1+00:00",'
            '"dosageInstruction":[{"doseAndRate":[{"doseQuantity":{"value":2.50,"unit":"mg"}}]}]},'
            '"request":{"method":"POST","url":"MedicationRequest"}}]}')
    with SandboxServer(load_fixtures=False) as ehr:
        loaded = requests.post(ehr.base_url, data=body, timeout=10,
                               headers={"Content-Type": "application/fhir+json"})
        assert loaded.status_code == 200, loaded.text[:300]
        ehr.store.put("Condition", "broken", {"resourceType": "Condition", "id": "broken", "code": {"text": "Broken"},
                                              "subject": {"reference": "Patient/dec-patient"},
                                              "onsetAge": {"value": "not a number"}})  # past the sandbox's checks
        client = make_app(FHIR_BASE_URL=ehr.base_url).test_client()
        resp = client.post("/api/referrals", json={"patient": "dec-patient", "question": "Dose?"})
        assert resp.status_code == 201, resp.get_data(as_text=True)[:500]
        text = client.get(f"/api/referrals/{resp.get_json()['id']}/packet").get_data(as_text=True)
    assert '"doseQuantity":{"value":2.50,"unit":"mg"}' in text
    assert '"authoredOn":"2024-01-02T03:04:05.1+00:00"' in text
    # the invalid Condition is reported, not passed on
    assert any(w.startswith("skipped Condition/broken: Condition from the EHR is not valid R4")
               for w in resp.get_json()["warnings"])
    assert '"Broken"' not in text


def _searched(log: list[dict]) -> list[str]:
    return [r["path"] for r in log if r["path"] not in ("/fhir/metadata",) and not r["path"].startswith("/fhir/Patient")]


def test_while_an_expired_statement_is_read_again_its_plan_takes_the_free_request_slots(ehr) -> None:  # noqa: ANN001
    import threading
    import time

    from service.ehr.client import FhirClient, build_session, forget_capabilities
    from service.ehr.fetch import fetch_patient

    client = FhirClient(ehr.base_url, build_session(), timeout=10)
    cold = fetch_patient(client, PROSTATE, everything="never")
    forget_capabilities(ehr.base_url)
    requests.delete(f"{ehr.root_url}/_sandbox/requests", timeout=5)
    requests.post(f"{ehr.root_url}/_sandbox/faults", json={"mode": "hang", "delay_s": 1.5, "count": 1,
                                                           "path_contains": "/metadata"}, timeout=5)
    try:
        result: list = []
        worker = threading.Thread(target=lambda: result.append(fetch_patient(client, PROSTATE, everything="never")))
        worker.start()
        time.sleep(0.7)  # /metadata is still held by the sandbox
        during = requests.get(f"{ehr.root_url}/_sandbox/requests", timeout=5).json()
        worker.join(30)
    finally:
        requests.delete(f"{ehr.root_url}/_sandbox/faults", timeout=5)
    log = requests.get(f"{ehr.root_url}/_sandbox/requests", timeout=5).json()
    assert [r["status"] for r in during if r["path"] == "/fhir/metadata"] == [None]
    assert len(_searched(during)) >= 2  # the first searches went out with it
    assert [r["path"] for r in log].count("/fhir/metadata") == 1
    assert sorted(_searched(log)) == sorted(set(_searched(log)))  # the statement was the same: nothing asked twice
    keys = {f"{m.get_resource_type()}/{m.id}" for m in cold.record.resources}
    assert {f"{m.get_resource_type()}/{m.id}" for m in result[0].record.resources} == keys


def test_a_statement_that_changed_meanwhile_starts_the_fetch_again_with_its_plan(ehr) -> None:  # noqa: ANN001
    from dataclasses import replace

    from service.ehr import client as client_module
    from service.ehr.client import FhirClient, build_session, forget_capabilities
    from service.ehr.fetch import fetch_patient

    client = FhirClient(ehr.base_url, build_session(), timeout=10)
    cold = fetch_patient(client, PROSTATE, everything="never")
    cached = client_module._capabilities[ehr.base_url]
    # What the server said before: no MedicationStatement (as Epic); it says otherwise now.
    before = cached.statement.model_copy(deep=True)
    before.rest[0].resource = [r for r in before.rest[0].resource if r.type != "MedicationStatement"]
    client_module._capabilities[ehr.base_url] = replace(cached, statement=before, digest=b"an older body")
    forget_capabilities(ehr.base_url)
    requests.delete(f"{ehr.root_url}/_sandbox/requests", timeout=5)
    again = fetch_patient(client, PROSTATE, everything="never")
    log = requests.get(f"{ehr.root_url}/_sandbox/requests", timeout=5).json()
    assert "/fhir/MedicationStatement" in _searched(log)  # the new plan's
    statements = [m for m in again.record.resources if m.get_resource_type() == "MedicationStatement"]
    assert statements and len(statements) == len([m for m in cold.record.resources
                                                   if m.get_resource_type() == "MedicationStatement"])
    assert [f"{m.get_resource_type()}/{m.id}" for m in again.record.resources] == \
        [f"{m.get_resource_type()}/{m.id}" for m in cold.record.resources]
    assert client_module._capabilities[ehr.base_url].statement is not before


def test_the_last_offset_page_weighs_what_is_left_of_the_total() -> None:
    # 133 matches, 20 a page (30 entries with includes): pages 2-6 full, page 7 holds 13 of the 20.
    assert offset_page_weights(30, 20, 133, 6) == [30, 30, 30, 30, 30, 19]
    assert offset_page_weights(30, 20, 140, 6) == [30] * 6  # a full last page
    assert offset_page_weights(30, 20, 20, 0) == []
