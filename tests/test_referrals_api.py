"""The referral REST API against the sandbox EHR over real HTTP: the loop, what the EHR receives, bad input."""

import json
from datetime import UTC, datetime

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle

from fixtures.consultant import consult_for_packet
from mappers.validation import check_document_bundle
from tests.conftest import assert_outcome, closed_port_url, fixture_questions, wait_for_status

FHIR_JSON = "application/fhir+json"


def create(client, patient: str, **extra: object):  # noqa: ANN001, ANN201
    return client.post("/api/referrals", json={"patient": patient, "question": "Is the diagnosis right?", **extra})


def sent_referral(client, patient: str) -> str:  # noqa: ANN001
    resp = create(client, patient)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    referral_id = resp.get_json()["id"]
    assert client.post(f"/api/referrals/{referral_id}/send").status_code == 200
    return referral_id


def post_consult(client, referral_id: str, body: bytes | str, content_type: str = FHIR_JSON):  # noqa: ANN001, ANN201
    return client.post(f"/api/referrals/{referral_id}/consult", data=body, headers={"Content-Type": content_type})


def consult_json(client, referral_id: str) -> str:  # noqa: ANN001
    packet = Bundle.model_validate(client.get(f"/api/referrals/{referral_id}/packet").get_json())
    return consult_for_packet(packet, now=datetime.now(UTC)).model_dump_json(exclude_none=True)


@pytest.mark.parametrize("patient", sorted(fixture_questions()))
def test_referral_loop_completes_and_lands_in_the_ehr(client, ehr, patient: str) -> None:  # noqa: ANN001
    asked = fixture_questions()[patient]
    resp = create(client, patient, question=asked["question"], patient_questions=asked["patient_questions"])
    assert resp.status_code == 201
    body = resp.get_json()
    assert body["status"] == "draft" and body["patient"] == f"Patient/{patient}"
    assert resp.headers["Location"].endswith(f"/api/referrals/{body['id']}")
    referral_id = body["id"]

    packet_resp = client.get(f"/api/referrals/{referral_id}/packet")
    assert packet_resp.headers["Content-Type"].startswith(FHIR_JSON)
    packet = Bundle.model_validate(packet_resp.get_json())
    assert check_document_bundle(packet) == []
    assert packet.entry[0].resource.type.coding[0].code == "57133-1"

    sent = client.post(f"/api/referrals/{referral_id}/send").get_json()
    assert sent["status"] == "requested" and sent["packet"]["frozen"]
    assert ehr.store.get("ServiceRequest", sent["service_request"].split("/")[1])["status"] == "active"

    accepted = post_consult(client, referral_id, consult_json(client, referral_id))
    assert accepted.status_code == 202
    done = wait_for_status(client, referral_id)
    assert done["status"] == "completed", done["writeback"]

    docref_id = done["writeback"]["document_reference"].split("/")[1]
    docref = ehr.store.get("DocumentReference", docref_id)
    assert docref["type"]["coding"][0]["code"] == "11488-4"
    assert docref["subject"]["reference"] == f"Patient/{patient}"
    assert docref["content"][0]["attachment"]["contentType"] == FHIR_JSON
    task = ehr.store.get("Task", sent["task"].split("/")[1])
    assert task["status"] == "completed"
    assert task["output"][0]["valueReference"]["reference"] == done["writeback"]["document_reference"]
    bundle = ehr.store.get("Bundle", done["writeback"]["bundle"].split("/")[1])
    assert bundle["type"] == "document"
    assert bundle["entry"][0]["resource"]["type"]["coding"][0]["code"] == "11488-4"


def test_write_back_uses_conditional_creates(client, ehr) -> None:  # noqa: ANN001
    patient = sorted(fixture_questions())[0]
    referral_id = sent_referral(client, patient)
    requests.delete(f"{ehr.root_url}/_sandbox/requests", timeout=5)
    post_consult(client, referral_id, consult_json(client, referral_id))
    wait_for_status(client, referral_id)
    log = requests.get(f"{ehr.root_url}/_sandbox/requests", timeout=5).json()
    posts = [r for r in log if r["method"] == "POST" and r["path"] in ("/fhir/Bundle", "/fhir/DocumentReference")]
    assert len(posts) == 2
    assert all(r["headers"].get("if-none-exist", "").startswith("identifier=urn:ietf:rfc:3986|urn:uuid:")
               for r in posts)


def test_packet_is_frozen_once_sent(client, ehr) -> None:  # noqa: ANN001
    patient = sorted(fixture_questions())[0]
    referral_id = sent_referral(client, patient)
    before = client.get(f"/api/referrals/{referral_id}/packet").get_data()
    assert_outcome(client.post(f"/api/referrals/{referral_id}/send"), 409, "conflict")
    assert client.get(f"/api/referrals/{referral_id}/packet").get_data() == before


def test_excluded_items_are_left_out_and_listed(client, ehr) -> None:  # noqa: ANN001
    patient = sorted(fixture_questions())[0]
    condition = next(c for c in ehr.store.all("Condition") if c["subject"]["reference"] == f"Patient/{patient}")
    key = f"Condition/{condition['id']}"
    body = create(client, patient, exclude=[key]).get_json()
    assert body["excluded"] == [{"reference": key, "reason": "left out by the clinician"}]
    packet = client.get(f"/api/referrals/{body['id']}/packet").get_json()
    assert condition["id"] not in {e["resource"].get("id") for e in packet["entry"]
                                   if e["resource"]["resourceType"] == "Condition"}


def test_history_records_each_transition(client) -> None:  # noqa: ANN001
    patient = sorted(fixture_questions())[0]
    referral_id = sent_referral(client, patient)
    post_consult(client, referral_id, consult_json(client, referral_id))
    wait_for_status(client, referral_id)
    history = client.get(f"/api/referrals/{referral_id}/history").get_json()
    assert [h["to"] for h in history] == ["draft", "requested", "in-progress", "completed"]
    assert all(h["actor"] and h["at"] for h in history)


# -- bad input: clear OperationOutcomes, never a 500, nothing half-stored ------------------------------

def test_unknown_patient_is_404(client) -> None:  # noqa: ANN001
    assert_outcome(create(client, "no-such-patient"), 404, "not-found")


@pytest.mark.parametrize("body", [
    {"question": "q"}, {"patient": "", "question": "q"}, {"patient": "a b", "question": "q"},
    {"patient": "p"}, {"patient": "p", "question": "  "}, {"patient": "p", "question": "q", "exclude": ["nope"]},
    {"patient": "p", "question": "q", "patient_questions": "not a list"}, {"patient": "p", "question": "q", "x": 1},
    ["not", "an", "object"]],
    ids=["no-patient", "empty-patient", "bad-patient-id", "no-question", "blank-question", "bad-exclude",
         "bad-patient-questions", "unknown-field", "not-an-object"])
def test_bad_referral_request_is_400(client, body: object) -> None:  # noqa: ANN001
    assert_outcome(client.post("/api/referrals", json=body), 400, "invalid")


def test_referral_body_that_is_not_json_is_400(client) -> None:  # noqa: ANN001
    assert_outcome(client.post("/api/referrals", data=b"{nope", content_type="application/json"), 400, "invalid")


def test_unreachable_ehr_is_502_and_nothing_is_stored(make_app) -> None:  # noqa: ANN001
    app = make_app(FHIR_BASE_URL=closed_port_url(), FHIR_MAX_RETRIES=0)
    client = app.test_client()
    body = assert_outcome(create(client, "any-patient"), 502)
    assert "could not reach" in body["issue"][0]["diagnostics"]
    from service.store.models import ReferralRow
    from service.store.repository import get_repository
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    with Session(get_repository(app).engine) as s:
        assert s.scalar(select(func.count()).select_from(ReferralRow)) == 0


def test_slow_ehr_is_504(make_app, ehr) -> None:  # noqa: ANN001
    app = make_app(FHIR_TIMEOUT=0.3, FHIR_MAX_RETRIES=0)
    requests.post(f"{ehr.root_url}/_sandbox/faults", json={"mode": "hang", "delay_s": 1.5,
                                                          "count": 20}, timeout=5)
    try:
        assert_outcome(create(app.test_client(), sorted(fixture_questions())[0]), 504, "timeout")
    finally:
        requests.delete(f"{ehr.root_url}/_sandbox/faults", timeout=5)


def test_unknown_referral_is_404_everywhere(client) -> None:  # noqa: ANN001
    for method, path in [("get", ""), ("get", "/packet"), ("post", "/send"), ("get", "/consult"), ("get", "/history")]:
        assert_outcome(getattr(client, method)(f"/api/referrals/nope{path}"), 404, "not-found")
    assert_outcome(post_consult(client, "nope", "{}"), 404, "not-found")


def test_consult_for_an_unsent_referral_is_409(client) -> None:  # noqa: ANN001
    referral_id = create(client, sorted(fixture_questions())[0]).get_json()["id"]
    assert_outcome(post_consult(client, referral_id, consult_json(client, referral_id)), 409, "conflict")


def test_second_consult_is_409_and_the_first_stays(client) -> None:  # noqa: ANN001
    referral_id = sent_referral(client, sorted(fixture_questions())[0])
    first = consult_json(client, referral_id)
    assert post_consult(client, referral_id, first).status_code == 202
    assert_outcome(post_consult(client, referral_id, consult_json(client, referral_id)), 409, "conflict")


@pytest.mark.parametrize("body,content_type,status", [
    (b"{not json", FHIR_JSON, 400),
    (b'{"resourceType": "Patient"}', FHIR_JSON, 422),
    (b'{"resourceType": "Bundle", "type": "document", "entry": [{"resource": {"resourceType": "Condition"}}]}',
     FHIR_JSON, 422),
    (b'{"resourceType": "Composition", "status": "final"}', FHIR_JSON, 422),
    (b'{"resourceType": "Bundle", "type": "no-such-type"}', FHIR_JSON, 422),
    (b"plain words", "text/plain", 415),
], ids=["not-json", "wrong-resource", "no-composition", "invalid-composition", "invalid-bundle", "wrong-media-type"])
def test_malformed_consult_is_rejected_and_nothing_is_stored(client, body: bytes, content_type: str,
                                                              status: int) -> None:  # noqa: ANN001
    referral_id = sent_referral(client, sorted(fixture_questions())[0])
    outcome = assert_outcome(post_consult(client, referral_id, body, content_type), status)
    assert outcome["issue"][0]["diagnostics"]
    referral = client.get(f"/api/referrals/{referral_id}").get_json()
    assert referral["status"] == "requested" and "consult" not in referral


def test_unknown_route_and_wrong_method_are_outcomes(client) -> None:  # noqa: ANN001
    assert_outcome(client.get("/api/nothing-here"), 404, "not-found")
    resp = assert_outcome(client.delete("/api/referrals"), 405)
    assert resp["issue"][0]["code"] == "not-supported"


def test_outage_during_write_back_is_retried_until_it_lands_once(client, ehr) -> None:  # noqa: ANN001
    referral_id = sent_referral(client, sorted(fixture_questions())[0])
    requests.post(f"{ehr.root_url}/_sandbox/faults", json={"status": 503, "count": 6, "methods": ["POST", "PUT"]},
                  timeout=5)
    try:
        assert post_consult(client, referral_id, consult_json(client, referral_id)).status_code == 202
        done = wait_for_status(client, referral_id, timeout_s=60)
    finally:
        requests.delete(f"{ehr.root_url}/_sandbox/faults", timeout=5)
    assert done["status"] == "completed"
    assert done["writeback"]["attempts"] >= 1
    consult = client.get(f"/api/referrals/{referral_id}/consult").get_json()
    ident = consult["identifier"]["value"]
    assert sum(1 for b in ehr.store.all("Bundle") if (b.get("identifier") or {}).get("value") == ident) == 1
    docref_id = done["writeback"]["document_reference"].split("/")[1]
    docref_ident = ehr.store.get("DocumentReference", docref_id)["identifier"][0]["value"]
    assert sum(1 for d in ehr.store.all("DocumentReference")
               if any(i.get("value") == docref_ident for i in d.get("identifier", []))) == 1


def test_write_back_refused_by_the_ehr_fails_with_the_reason(client, ehr) -> None:  # noqa: ANN001
    referral_id = sent_referral(client, sorted(fixture_questions())[0])
    requests.post(f"{ehr.root_url}/_sandbox/faults", json={"status": 400, "count": 1, "methods": ["POST"]}, timeout=5)
    try:
        post_consult(client, referral_id, consult_json(client, referral_id))
        done = wait_for_status(client, referral_id)
    finally:
        requests.delete(f"{ehr.root_url}/_sandbox/faults", timeout=5)
    assert done["status"] == "failed"
    assert "400" in done["writeback"]["last_error"]
    assert json.dumps(done).count("Traceback") == 0


def test_sending_records_both_ehr_writes_in_the_audit(client) -> None:  # noqa: ANN001
    referral_id = sent_referral(client, sorted(fixture_questions())[0])
    sent = client.get(f"/api/referrals/{referral_id}").get_json()
    audit = client.get(f"/api/referrals/{referral_id}/audit").get_json()
    writes = {(e["resource"], e["method"], e["status"]) for e in audit if e["action"] == "ehr.write"}
    assert {(sent["service_request"], "POST", 201), (sent["task"], "POST", 201)} <= writes


def test_the_chosen_consultant_is_the_orders_performer_and_the_tasks_owner(client, ehr) -> None:  # noqa: ANN001
    resp = create(client, "so-prostate-patient", consultant="demo-urology")
    assert resp.status_code == 201 and resp.get_json()["consultant"] == "demo-urology"
    sent = client.post(f"/api/referrals/{resp.get_json()['id']}/send").get_json()
    order = ehr.store.get("ServiceRequest", sent["service_request"].split("/")[1])
    task = ehr.store.get("Task", sent["task"].split("/")[1])
    assert [p["display"] for p in order["performer"]] == ["Dr. Avery Quill (synthetic) (Urologic oncology)"]
    assert task["owner"]["display"] == "Dr. Avery Quill (synthetic) (Urologic oncology)"


def test_an_unknown_consultant_is_400_before_the_ehr_is_asked(client, ehr) -> None:  # noqa: ANN001
    before = len(ehr.requests)
    outcome = assert_outcome(create(client, "so-prostate-patient", consultant="dr-nobody"), 400)
    assert "demo-urology" in outcome["issue"][0]["diagnostics"]  # says which ones there are
    assert len(ehr.requests) == before
    assert_outcome(create(client, "so-prostate-patient", consultant=["demo-urology"]), 400)

