"""The referral lifecycle through the API: accept, reject, start, cancel; the EHR's Task follows; the audit trail."""

import json
import time

import pytest

from tests.conftest import assert_outcome, fixture_questions
from tests.writeback.helpers import (
    add_fault,
    clear_faults,
    consult_body,
    history,
    post_consult,
    request_count,
    sent_referral,
    wait_for,
    wait_for_statuses,
)


def ehr_task(ehr, client, referral_id: str) -> dict:  # noqa: ANN001
    task_ref = client.get(f"/api/referrals/{referral_id}").get_json()["task"]
    return ehr.store.get("Task", task_ref.split("/")[1])


def wait_for_task(ehr, client, referral_id: str, status: str) -> dict:  # noqa: ANN001
    return wait_for(lambda: (t := ehr_task(ehr, client, referral_id))["status"] == status and t, 10,
                    f"the EHR's Task to become {status}")


def test_accept_start_and_consult_each_move_once_and_the_task_follows(sandbox, make_app) -> None:  # noqa: ANN001
    client = make_app(FHIR_BASE_URL=sandbox.base_url).test_client()
    referral_id = sent_referral(client)
    accepted = client.post(f"/api/referrals/{referral_id}/accept")
    assert accepted.status_code == 200 and accepted.get_json()["status"] == "accepted"
    task = wait_for_task(sandbox, client, referral_id, "accepted")
    assert task["businessStatus"]["coding"][0]["code"] == "3.0"

    started = client.post(f"/api/referrals/{referral_id}/start", json={"reason": "reviewing the slides"})
    assert started.get_json()["status"] == "in-progress"
    task = wait_for_task(sandbox, client, referral_id, "in-progress")
    assert task["businessStatus"]["coding"][0]["code"].startswith("5.")

    assert post_consult(client, referral_id).status_code == 202  # already in-progress: no new transition
    wait_for_statuses(client, [referral_id])
    assert history(client, referral_id) == ["draft", "requested", "accepted", "in-progress", "completed"]
    steps = client.get(f"/api/referrals/{referral_id}/history").get_json()
    assert steps[3]["reason"] == "reviewing the slides" and steps[3]["actor"] == "api" and steps[3]["at"]
    task = wait_for_task(sandbox, client, referral_id, "completed")
    assert task["businessStatus"]["coding"][0]["code"] == "7.0"


def test_reject_needs_a_reason_and_ends_the_referral(sandbox, make_app) -> None:  # noqa: ANN001
    client = make_app(FHIR_BASE_URL=sandbox.base_url).test_client()
    referral_id = sent_referral(client)
    assert_outcome(client.post(f"/api/referrals/{referral_id}/reject"), 400, "invalid")
    assert_outcome(client.post(f"/api/referrals/{referral_id}/reject", json={"reason": "  "}), 400, "invalid")
    rejected = client.post(f"/api/referrals/{referral_id}/reject", json={"reason": "outside my specialty"})
    assert rejected.status_code == 200
    body = rejected.get_json()
    assert body["status"] == "rejected" and body["status_reason"] == "outside my specialty"
    task = wait_for_task(sandbox, client, referral_id, "rejected")
    assert task["statusReason"]["text"] == "outside my specialty"
    assert task["businessStatus"]["coding"][0]["code"] == "4.0"
    assert_outcome(client.post(f"/api/referrals/{referral_id}/accept"), 409, "conflict")
    assert_outcome(post_consult(client, referral_id, consult_body(client, referral_id)), 409, "conflict")
    assert history(client, referral_id) == ["draft", "requested", "rejected"]


@pytest.mark.parametrize("action,body", [
    ("start", None), ("accept", {"reason": "x", "extra": 1}), ("accept", ["not", "an", "object"]),
    ("cancel", {"reason": 5}), ("cancel", {"reason": "x" * 2001}),
], ids=["start-a-draft", "unknown-field", "not-an-object", "reason-not-text", "reason-too-long"])
def test_illegal_moves_and_bad_bodies_are_outcomes(client, action: str, body: object) -> None:  # noqa: ANN001
    patient = sorted(fixture_questions())[0]
    referral_id = client.post("/api/referrals", json={"patient": patient, "question": "q"}).get_json()["id"]
    resp = client.post(f"/api/referrals/{referral_id}/{action}", json=body) if body is not None else \
        client.post(f"/api/referrals/{referral_id}/{action}")
    assert_outcome(resp, 409 if action == "start" else 400)
    assert client.get(f"/api/referrals/{referral_id}").get_json()["status"] == "draft"


def test_action_edge_cases(client) -> None:  # noqa: ANN001
    assert_outcome(client.post("/api/referrals/nope/accept"), 404, "not-found")
    assert_outcome(client.post("/api/referrals/nope/retry"), 404, "not-found")
    assert_outcome(client.get("/api/referrals/nope/audit"), 404, "not-found")
    assert_outcome(client.post("/api/referrals/nope/promote"), 404, "not-found")
    patient = sorted(fixture_questions())[0]
    referral_id = client.post("/api/referrals", json={"patient": patient, "question": "q"}).get_json()["id"]
    assert_outcome(client.post(f"/api/referrals/{referral_id}/accept", data=b"{nope",
                               content_type="application/json"), 400, "invalid")
    assert_outcome(client.post(f"/api/referrals/{referral_id}/retry"), 409, "conflict")
    cancelled = client.post(f"/api/referrals/{referral_id}/cancel", json={"reason": "duplicate request"})
    assert cancelled.get_json()["status"] == "cancelled"  # a draft has no Task in the EHR: nothing is written
    assert_outcome(client.post(f"/api/referrals/{referral_id}/cancel", json={"reason": "again"}), 409, "conflict")
    assert history(client, referral_id) == ["draft", "cancelled"]


def test_cancel_stops_a_pending_write_back_and_the_task_shows_it(sandbox, make_app) -> None:  # noqa: ANN001
    client = make_app(FHIR_BASE_URL=sandbox.base_url).test_client()
    referral_id = sent_referral(client)
    add_fault(sandbox, status=503, duration_s=60, methods=["POST"])
    try:
        post_consult(client, referral_id)
        wait_for(lambda: client.get(f"/api/referrals/{referral_id}").get_json()["writeback"]["attempts"] >= 1, 10,
                 "a failed write-back attempt")
        cancelled = client.post(f"/api/referrals/{referral_id}/cancel", json={"reason": "patient withdrew"})
        assert cancelled.get_json()["status"] == "cancelled"
        task = wait_for_task(sandbox, client, referral_id, "cancelled")
        assert task["statusReason"]["text"] == "patient withdrew"
    finally:
        clear_faults(sandbox)
    posts_before = request_count(sandbox, "POST", "/fhir/DocumentReference")
    body = client.get(f"/api/referrals/{referral_id}").get_json()
    assert body["writeback"]["status"] == "cancelled"
    time.sleep(1.5)  # longer than the retry delay: a live write-back would have written by now
    assert request_count(sandbox, "POST", "/fhir/DocumentReference") == posts_before
    assert client.get(f"/api/referrals/{referral_id}").get_json()["status"] == "cancelled"


def test_the_cerner_profile_never_writes_the_task(make_app) -> None:  # noqa: ANN001
    from fixtures.sandbox import SandboxServer

    with SandboxServer(profile="cerner") as cerner:
        client = make_app(FHIR_BASE_URL=cerner.base_url, WRITEBACK_PROFILE="cerner").test_client()
        referral_id = sent_referral(client)
        task_path = "/fhir/" + client.get(f"/api/referrals/{referral_id}").get_json()["task"]
        assert client.post(f"/api/referrals/{referral_id}/accept").status_code == 200
        assert post_consult(client, referral_id).status_code == 202
        wait_for_statuses(client, [referral_id])
        assert request_count(cerner, "PUT", task_path) == 0
        assert ehr_task(cerner, client, referral_id)["status"] == "requested"


def test_audit_records_packet_reads_and_every_ehr_write_without_patient_data(sandbox, make_app) -> None:  # noqa: ANN001
    client = make_app(FHIR_BASE_URL=sandbox.base_url).test_client()
    referral_id = sent_referral(client)
    post_consult(client, referral_id)  # reads the packet first (consult_body)
    wait_for_statuses(client, [referral_id])
    client.get(f"/api/referrals/{referral_id}/consult")
    audit = client.get(f"/api/referrals/{referral_id}/audit").get_json()
    actions = [(e["action"], e["method"], e["resource"].split("/")[0].split("?")[0], e["status"]) for e in audit]
    assert ("packet.read", "GET", "Bundle", 200) in actions
    assert ("consult.read", "GET", "consult", 200) in actions
    writes = [(m, r, s) for a, m, r, s in actions if a == "ehr.write"]
    assert writes == [("POST", "ServiceRequest", 201), ("POST", "Task", 201),  # placing the order (send)
                      ("POST", "Bundle", 201), ("POST", "DocumentReference", 201), ("PUT", "Task", 200),
                      ("PUT", "Provenance", 201)]
    assert all(e["actor"] and e["at"] for e in audit)
    patient = sandbox.store.get("Patient", sorted(fixture_questions())[0])
    text = json.dumps(audit)
    assert patient["name"][0]["family"] not in text and patient["birthDate"] not in text
