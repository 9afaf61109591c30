"""CDS Hooks services over the sandbox EHR: discovery, order-select and order-sign calls shaped like the
CDS Hooks 2.0 examples (with, without and with partial prefetch), cards, bad requests, time budget, feedback."""

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fhir.resources.R4B.communicationrequest import CommunicationRequest

from fixtures.sandbox import SandboxServer
from service.cds.services import PREFETCH, SERVICE_ID_SELECT, SERVICE_ID_SIGN
from service.cds.store import CdsStore
from service.store.repository import get_repository
from tests.conftest import assert_outcome
from tests.test_cds_hooks_support import (  # noqa: F401 - fixtures
    REFERRAL_ID, SELECT_URL, SIGN_URL, build_prefetch, cds_app, client_key, hook_call, lab_order, post_hook,
    referral_order, requests_with_token)


@pytest.fixture(scope="module")
def ehr() -> Iterator[SandboxServer]:
    """This module's own sandbox: the cards count the fixture patients' reports as loaded, not as other tests'
    write-backs (consult notes are reports too) left them in the shared one."""
    with SandboxServer() as server:
        yield server


def cards_of(resp) -> list[dict]:  # noqa: ANN001
    assert resp.status_code == 200, resp.get_data(as_text=True)[:800]
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.get_json()
    assert set(body) == {"cards"}
    return body["cards"]


def assert_card_shape(card: dict) -> None:
    """CDS Hooks 2.0 §Card Attributes: required fields, no null or empty values."""
    assert uuid.UUID(card["uuid"])
    assert 0 < len(card["summary"]) < 140
    assert card["indicator"] in ("info", "warning", "critical")
    assert card["source"]["label"] == "Second-opinion referral service"
    for key, value in card.items():
        assert value not in (None, "", [], {}), key
    (link,) = card["links"]
    assert link["type"] == "smart" and link["url"] == "http://localhost/launch"
    app_context = json.loads(link["appContext"])
    assert app_context["serviceRequest"] == f"ServiceRequest/{REFERRAL_ID}"


def test_discovery_lists_one_service_per_hook_with_prefetch_templates(cds_app) -> None:  # noqa: ANN001
    resp = cds_app.test_client().get("/cds-services")  # open: no JWT needed to discover
    assert resp.status_code == 200
    services = {s["id"]: s for s in resp.get_json()["services"]}
    assert {sid: s["hook"] for sid, s in services.items()} == {SERVICE_ID_SIGN: "order-sign",
                                                                 SERVICE_ID_SELECT: "order-select"}
    for service in services.values():
        assert service["title"] and "second-opinion referral" in service["description"]
        assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        assert service["prefetch"]["conditions"] == "Condition?patient={{context.patientId}}"
        assert service["prefetch"]["reports"] == ("DiagnosticReport?patient={{context.patientId}}"
                                                  "&_include=DiagnosticReport:result")
        assert set(service["prefetch"]) == set(PREFETCH)


def test_order_select_without_prefetch_reads_the_ehr_with_the_lent_token(
        cds_app, client_key, ehr) -> None:  # noqa: ANN001
    token = f"fhir-token-{uuid.uuid4()}"
    call = hook_call("order-select", "so-cad-patient", fhir_server=ehr.base_url, access_token=token)
    (card,) = cards_of(post_hook(cds_app, SELECT_URL, call, client_key))
    assert_card_shape(card)
    assert card["summary"] == ("Second-opinion packet: 8 problems, 7 reports — pathology report missing, "
                               "medication dose missing")
    assert card["indicator"] == "warning"
    assert "Adenocarcinoma of sigmoid colon" in card["detail"]
    # the service read every template's data from fhirServer, with the token it was lent
    seen = requests_with_token(ehr, token)
    assert {r["path"].rsplit("/fhir/", 1)[1].split("/")[0] for r in seen} == {
        "Patient", "Condition", "Procedure", "DiagnosticReport", "MedicationRequest", "DocumentReference",
        "CarePlan", "Encounter"}
    # order-select: one suggestion that asks for each missing piece with a draft CommunicationRequest
    assert card["selectionBehavior"] == "at-most-one"
    (suggestion,) = card["suggestions"]
    assert uuid.UUID(suggestion["uuid"]) and suggestion["label"].startswith("Ask for the missing information")
    requests_made = [CommunicationRequest.model_validate(a["resource"]) for a in suggestion["actions"]]
    assert all(a["type"] == "create" and a["description"] for a in suggestion["actions"])
    about = {r.about[0].reference for r in requests_made}
    assert about == {"Condition/so-cad-cond-colon-cancer", "MedicationRequest/so-cad-nitroglycerin-request"}
    for request in requests_made:
        assert request.status == "draft"
        assert request.subject.reference == "Patient/so-cad-patient"
        assert request.basedOn[0].reference == f"ServiceRequest/{REFERRAL_ID}"
        assert request.requester.reference == "PractitionerRole/123"


@pytest.mark.parametrize("patient, summary, indicator", [
    ("so-prostate-patient", "Second-opinion packet: 6 problems, 7 reports — ready for review", "info"),
    ("so-breast-patient", "Second-opinion packet: 4 problems, 6 reports — operative note missing", "warning"),
    ("so-ms-patient", "Second-opinion packet: 5 problems, 5 reports — discharge summary missing, "
                      "no current care plan", "warning"),
], ids=["complete", "operative-note-gap", "discharge-and-plan-gaps"])
def test_order_sign_with_full_prefetch_needs_no_fhir_server(cds_app, client_key, ehr, patient, summary,  # noqa: ANN001
                                                            indicator) -> None:
    call = hook_call("order-sign", patient, prefetch=build_prefetch(ehr.base_url, patient))
    (card,) = cards_of(post_hook(cds_app, SIGN_URL, call, client_key))
    assert_card_shape(card)
    assert card["summary"] == summary
    assert card["indicator"] == indicator
    assert "suggestions" not in card  # suggestions are offered on order-select only
    assert "Sources — prefetch: Patient, Condition" in card["detail"]
    assert "read from the EHR" not in card["detail"]


def test_partial_prefetch_fetches_only_what_is_missing(cds_app, client_key, ehr) -> None:  # noqa: ANN001
    token = f"fhir-token-{uuid.uuid4()}"
    prefetch = build_prefetch(ehr.base_url, "so-ms-patient", ["patient", "conditions", "reports"])
    call = hook_call("order-select", "so-ms-patient", fhir_server=ehr.base_url, access_token=token,
                     prefetch=prefetch)
    (card,) = cards_of(post_hook(cds_app, SELECT_URL, call, client_key))
    assert card["summary"] == ("Second-opinion packet: 5 problems, 5 reports — discharge summary missing, "
                               "no current care plan")
    fetched = {r["path"].rsplit("/fhir/", 1)[1].split("/")[0] for r in requests_with_token(ehr, token)}
    assert fetched == {"Procedure", "MedicationRequest", "DocumentReference", "CarePlan", "Encounter"}
    assert len(card["suggestions"][0]["actions"]) == 2


def test_partial_prefetch_without_fhir_server_answers_with_what_it_has(
        cds_app, client_key, ehr) -> None:  # noqa: ANN001
    prefetch = build_prefetch(ehr.base_url, "so-cad-patient", ["patient", "conditions", "reports", "documents"])
    (card,) = cards_of(post_hook(cds_app, SIGN_URL, hook_call("order-sign", "so-cad-patient", prefetch=prefetch),
                                 client_key))
    assert card["indicator"] == "warning"
    assert card["summary"] == ("Second-opinion packet: 8 problems, 7 reports — pathology report missing, "
                               "record incomplete")
    assert "Procedure, MedicationRequest, CarePlan, Encounter" in card["detail"]


def test_null_prefetch_keys_mean_no_data_not_missing(cds_app, client_key, ehr) -> None:  # noqa: ANN001
    prefetch = build_prefetch(ehr.base_url, "so-prostate-patient")
    prefetch["carePlans"] = None  # CDS Hooks 2.0: "no data to populate a template prefetch key" → null
    call = hook_call("order-sign", "so-prostate-patient", prefetch=prefetch)
    (card,) = cards_of(post_hook(cds_app, SIGN_URL, call, client_key))
    assert card["summary"].endswith("— no current care plan")
    assert "record incomplete" not in card["summary"]


def test_no_prefetch_and_no_fhir_server_is_412(cds_app, client_key) -> None:  # noqa: ANN001
    resp = post_hook(cds_app, SIGN_URL, hook_call("order-sign", "so-cad-patient"), client_key)
    body = assert_outcome(resp, 412, "incomplete")
    assert "fhirServer" in body["issue"][0]["diagnostics"]


def test_ehr_refusing_the_token_without_prefetch_is_412(cds_app, client_key, ehr) -> None:  # noqa: ANN001
    fault = requests.post(f"{ehr.root_url}/_sandbox/faults", json={"status": 401}, timeout=5).json()
    try:
        call = hook_call("order-sign", "so-cad-patient", fhir_server=ehr.base_url, access_token="expired")
        body = assert_outcome(post_hook(cds_app, SIGN_URL, call, client_key), 412, "incomplete")
        assert "(authorisation refused)" in body["issue"][0]["diagnostics"]
        assert "so-cad-patient" not in body["issue"][0]["diagnostics"]
    finally:
        requests.delete(f"{ehr.root_url}/_sandbox/faults/{fault['id']}", timeout=5)


@pytest.mark.parametrize("hook, url", [("order-select", SELECT_URL), ("order-sign", SIGN_URL)])
def test_draft_orders_without_a_referral_get_no_cards(cds_app, client_key, hook, url) -> None:  # noqa: ANN001
    # the spec example's orders only (a diet and a medication), plus a lab order: nothing to say
    call = hook_call(hook, "1288992", orders=[lab_order("1288992")])
    resp = post_hook(cds_app, url, call, client_key)
    assert resp.status_code == 200
    assert resp.get_json() == {"cards": []}


def test_order_select_speaks_only_about_the_selected_orders(cds_app, client_key, ehr) -> None:  # noqa: ANN001
    call = hook_call("order-select", "so-cad-patient", selections=["NutritionOrder/diet-soft-1"],
                     fhir_server=ehr.base_url)
    assert cards_of(post_hook(cds_app, SELECT_URL, call, client_key)) == []


@pytest.mark.parametrize("how", ["code", "category", "reason"])
def test_referral_is_recognised_by_code_category_or_second_opinion_reason(
        cds_app, client_key, ehr, how) -> None:  # noqa: ANN001
    call = hook_call("order-sign", "so-breast-patient", orders=[referral_order("so-breast-patient", how=how)],
                     fhir_server=ehr.base_url)
    (card,) = cards_of(post_hook(cds_app, SIGN_URL, call, client_key))
    assert card["summary"].endswith("operative note missing")


def _without(path: str):  # noqa: ANN202
    def change(call: dict) -> None:
        *parents, last = path.split(".")
        target = call
        for name in parents:
            target = target[name]
        del target[last]
    return change


def _set(path: str, value: object):  # noqa: ANN202
    def change(call: dict) -> None:
        *parents, last = path.split(".")
        target = call
        for name in parents:
            target = target[name]
        target[last] = value
    return change


def _referral(change: dict):  # noqa: ANN202
    def apply(call: dict) -> None:
        call["context"]["draftOrders"]["entry"][-1]["resource"].update(change)
    return apply


BAD_CALLS = [
    ("no-hook", _without("hook"), "hook is required"),
    ("no-hook-instance", _without("hookInstance"), "hookInstance is required"),
    ("no-context", _without("context"), "context is required"),
    ("context-not-object", _set("context", ["x"]), "context is required"),
    ("other-hook", _set("hook", "order-select"), f"/cds-services/{SERVICE_ID_SELECT}"),
    ("unknown-hook", _set("hook", "patient-view"), "answers the order-sign hook"),
    ("no-draft-orders", _without("context.draftOrders"), "draftOrders is required"),
    ("draft-orders-not-bundle", _set("context.draftOrders", {"resourceType": "List"}), "must be a FHIR Bundle"),
    ("entry-not-array", _set("context.draftOrders.entry", {"resource": {}}), "entry must be an array"),
    ("entry-without-resource", _set("context.draftOrders.entry", [{"fullUrl": "urn:uuid:1"}]), "entry[0]"),
    ("service-request-invalid", _referral({"subject": "Patient/so-cad-patient"}), "not a valid R4 ServiceRequest"),
    ("service-request-no-intent", _referral({"intent": None}), "not a valid R4 ServiceRequest"),
    ("bundle-type-invalid", _set("context.draftOrders.type", 7), "not a valid R4 Bundle"),
    ("referral-for-another-patient", _referral({"subject": {"reference": "Patient/someone-else"}}),
     "another patient"),
    ("no-patient-id", _without("context.patientId"), "context.patientId is required"),
    ("bad-patient-id", _set("context.patientId", "a b/c"), "context.patientId"),
    ("no-user-id", _without("context.userId"), "context.userId is required"),
    ("authorization-without-server", _set("fhirAuthorization", {"access_token": "t", "token_type": "Bearer"}),
     "fhirServer is required"),
    ("fhir-server-not-url", _set("fhirServer", "ftp://x"), "fhirServer must be"),
    ("prefetch-not-object", _set("prefetch", ["x"]), "prefetch must be"),
    ("prefetch-patient-wrong-type", _set("prefetch", {"patient": {"resourceType": "Condition"}}),
     "prefetch.patient must be"),
    ("prefetch-other-patient", _set("prefetch", {"patient": {"resourceType": "Patient", "id": "someone-else"}}),
     "not the patient"),
    ("prefetch-search-not-bundle", _set("prefetch", {"conditions": {"resourceType": "Condition"}}),
     "prefetch.conditions must be"),
    ("prefetch-condition-of-another-patient", _set("prefetch", {"conditions": {
        "resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
            "resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/someone-else"}}}]}}),
     "another patient"),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_calls_are_400_with_a_message(cds_app, client_key, change, message) -> None:  # noqa: ANN001
    call = hook_call("order-sign", "so-cad-patient")
    change(call)
    body = assert_outcome(post_hook(cds_app, SIGN_URL, call, client_key), 400, "invalid")
    assert message in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("change, message", [
    (_without("context.selections"), "context.selections is required"),
    (_set("context.selections", []), "context.selections is required"),
    (_set("fhirAuthorization", {"access_token": "t", "token_type": "MAC"}), "token_type must be Bearer"),
    (_set("fhirAuthorization", {"token_type": "Bearer"}), "access_token is required"),
], ids=["no-selections", "empty-selections", "token-type-mac", "no-access-token"])
def test_bad_order_select_calls_are_400(cds_app, client_key, ehr, change, message) -> None:  # noqa: ANN001
    call = hook_call("order-select", "so-cad-patient", fhir_server=ehr.base_url)
    change(call)
    body = assert_outcome(post_hook(cds_app, SELECT_URL, call, client_key), 400, "invalid")
    assert message in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b"", "\u00e9".encode("latin-1")],
                         ids=["not-json", "array", "empty", "not-utf8"])
def test_bodies_that_are_not_a_json_object_are_400(cds_app, client_key, data) -> None:  # noqa: ANN001
    assert_outcome(post_hook(cds_app, SIGN_URL, data, client_key), 400, "invalid")


def test_spec_example_orders_are_tolerated_but_only_service_requests_are_read(
        cds_app, client_key) -> None:  # noqa: ANN001
    # Bundle without type, MedicationRequest with STU3-shaped dosage: as in the CDS Hooks examples → 200
    call = hook_call("order-select", "1288992", orders=[])
    assert cards_of(post_hook(cds_app, SELECT_URL, call, client_key)) == []


def test_unknown_service_is_404(cds_app, client_key) -> None:  # noqa: ANN001
    resp = post_hook(cds_app, "/cds-services/no-such-service", hook_call("order-sign", "x"), client_key)
    assert_outcome(resp, 404, "not-found")


def test_slow_ehr_gets_a_pending_card_within_budget_then_the_late_result(
        make_app, client_key, ehr) -> None:  # noqa: ANN001
    app = make_app(worker=False, WRITEBACK="off", CDS_HOOK_BUDGET_S=0.5,
                   CDS_CLIENTS=[{"iss": "https://ehr.example.org/", "jwks": client_key.jwks()}])
    fault = requests.post(f"{ehr.root_url}/_sandbox/faults", timeout=5, json={
        "mode": "hang", "delay_s": 1.5, "count": 2, "path_contains": "/Procedure"}).json()
    try:
        call = hook_call("order-sign", "so-breast-patient", fhir_server=ehr.base_url)
        started = time.monotonic()
        (card,) = cards_of(post_hook(app, SIGN_URL, call, client_key))
        assert time.monotonic() - started < 1.2
        assert card["summary"].startswith("Second-opinion packet is being prepared")
        assert card["indicator"] == "info" and card["links"][0]["type"] == "smart"
        time.sleep(1.5)  # the first read finishes in the background
        call = hook_call("order-sign", "so-breast-patient", fhir_server=ehr.base_url)
        (card,) = cards_of(post_hook(app, SIGN_URL, call, client_key))  # times out again; the late result answers
        assert card["summary"] == "Second-opinion packet: 4 problems, 6 reports — operative note missing"
    finally:
        requests.delete(f"{ehr.root_url}/_sandbox/faults/{fault['id']}", timeout=5)


def test_the_lent_token_is_never_logged_nor_stored(cds_app, client_key, ehr, caplog) -> None:  # noqa: ANN001
    token = f"secret-fhir-token-{uuid.uuid4()}"
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="service")  # create_app set it to LOG_LEVEL (INFO)
    call = hook_call("order-select", "so-cad-patient", fhir_server=ehr.base_url, access_token=token,
                     prefetch=build_prefetch(ehr.base_url, "so-cad-patient", ["patient", "conditions"]))
    jwt_token = client_key.sign("http://localhost" + SELECT_URL)
    resp = post_hook(cds_app, SELECT_URL, call, token=jwt_token)
    assert cards_of(resp) and requests_with_token(ehr, token)  # the token was used, for this call
    # and on an error path: the EHR refuses it
    fault = requests.post(f"{ehr.root_url}/_sandbox/faults", json={"status": 401}, timeout=5).json()
    try:
        call = hook_call("order-select", "so-cad-patient", fhir_server=ehr.base_url, access_token=token)
        assert post_hook(cds_app, SELECT_URL, call, client_key).status_code == 412
    finally:
        requests.delete(f"{ehr.root_url}/_sandbox/faults/{fault['id']}", timeout=5)
    assert caplog.records  # something was logged, and none of it is a credential
    assert token not in caplog.text and jwt_token not in caplog.text
    assert token not in resp.get_data(as_text=True)
    engine = get_repository(cds_app).engine
    engine.dispose()
    database = Path(engine.url.database)
    for path in [database, *database.parent.glob(database.name + "-*")]:  # the SQLite file and its WAL
        assert token.encode() not in path.read_bytes()


def test_feedback_is_accepted_and_recorded(cds_app, client_key, ehr) -> None:  # noqa: ANN001
    call = hook_call("order-select", "so-cad-patient", fhir_server=ehr.base_url)
    (card,) = cards_of(post_hook(cds_app, SELECT_URL, call, client_key))
    suggestion = card["suggestions"][0]["uuid"]
    feedback = {"feedback": [
        {"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}],
         "outcomeTimestamp": "2026-11-22T10:00:00Z"},
        {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:05:00Z",
         "overrideReason": {"reason": {"code": "not-needed", "system": "https://ehr.example.org/override"},
                            "userComment": "Report requested by phone"}},
    ]}
    resp = post_hook(cds_app, SELECT_URL + "/feedback", feedback, client_key)
    assert resp.status_code == 200 and resp.get_json() == {"recorded": 2}
    stored = CdsStore(get_repository(cds_app).engine).feedback_for(card["uuid"])
    assert [(f.outcome, f.accepted_suggestions, f.card_known) for f in stored] == [
        ("accepted", [suggestion], True), ("overridden", [], True)]
    assert stored[1].override_reason["reason"]["code"] == "not-needed"
    assert stored[0].service_id == SERVICE_ID_SELECT and stored[0].client == "https://ehr.example.org/"
    issued = CdsStore(get_repository(cds_app).engine).card_issued(card["uuid"])
    assert issued["hook_instance"] == call["hookInstance"] and issued["indicator"] == "warning"


@pytest.mark.parametrize("body, message", [
    ({}, "non-empty feedback array"),
    ({"feedback": []}, "non-empty feedback array"),
    ({"feedback": [{"outcome": "accepted"}]}, "card must be"),
    ({"feedback": [{"card": "c", "outcome": "ignored", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]},
     "outcome must be"),
    ({"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2026-01-01T00:00:00Z"}]},
     "acceptedSuggestions is required"),
    ({"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"}]}, "ISO 8601"),
    ({"feedback": [{"card": "c", "outcome": "overridden"}]}, "outcomeTimestamp is required"),
    ({"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z",
                    "overrideReason": {"reason": {"code": "x"}}}]}, "Coding with code and system"),
], ids=["no-array", "empty", "no-card", "bad-outcome", "accepted-without-suggestions", "bad-time", "no-time",
        "bad-reason"])
def test_bad_feedback_is_400(cds_app, client_key, body, message) -> None:  # noqa: ANN001
    body = assert_outcome(post_hook(cds_app, SIGN_URL + "/feedback", body, client_key), 400, "invalid")
    assert message in body["issue"][0]["diagnostics"]
