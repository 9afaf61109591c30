"""Helpers for the write-back tests: faults, referrals through the API, counting what the EHR holds."""

import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from flask.testing import FlaskClient

from fixtures.consultant import consult_for_packet
from fixtures.sandbox import SandboxServer
from tests.conftest import fixture_questions

FHIR_JSON = "application/fhir+json"
TERMINAL = frozenset({"completed", "failed", "rejected", "cancelled"})


def add_fault(ehr: SandboxServer, **spec: object) -> dict:
    resp = requests.post(f"{ehr.root_url}/_sandbox/faults", json=spec, timeout=5)
    assert resp.status_code == 201, resp.text
    return resp.json()


def clear_faults(ehr: SandboxServer) -> None:
    requests.delete(f"{ehr.root_url}/_sandbox/faults", timeout=5)


def sent_referral(client: FlaskClient, patient: str | None = None) -> str:
    """Draft and send a referral through the API; its id."""
    patient = patient or sorted(fixture_questions())[0]
    resp = client.post("/api/referrals", json={"patient": patient, "question": "Is the diagnosis right?"})
    assert resp.status_code == 201, resp.get_data(as_text=True)[:500]
    referral_id = resp.get_json()["id"]
    sent = client.post(f"/api/referrals/{referral_id}/send")
    assert sent.status_code == 200, sent.get_data(as_text=True)[:500]
    return referral_id


def consult_body(client: FlaskClient, referral_id: str) -> str:
    """The fixture consultant's answer to the referral's packet (FHIR JSON)."""
    packet = Bundle.model_validate(client.get(f"/api/referrals/{referral_id}/packet").get_json())
    return consult_for_packet(packet, now=datetime.now(UTC)).model_dump_json(exclude_none=True)


def post_consult(client: FlaskClient, referral_id: str, body: str | None = None):  # noqa: ANN201
    return client.post(f"/api/referrals/{referral_id}/consult", data=body or consult_body(client, referral_id),
                       headers={"Content-Type": FHIR_JSON})


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.05) -> object:
    """Poll until predicate() is truthy; fail the test with `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def by_identifier(ehr: SandboxServer, resource_type: str) -> dict[str, int]:
    """How many resources of a type the EHR holds per identifier value (a duplicate shows as 2)."""
    counts: dict[str, int] = {}
    for resource in ehr.store.all(resource_type):
        idents = resource.get("identifier")
        idents = idents if isinstance(idents, list) else [idents] if idents else []
        for ident in idents:
            counts[ident["value"]] = counts.get(ident["value"], 0) + 1
    return counts


def consult_identifiers(client: FlaskClient, referral_id: str) -> tuple[str, str]:
    """The identifier values of a referral's consult document and of its DocumentReference."""
    consult = client.get(f"/api/referrals/{referral_id}").get_json()["consult"]
    document = client.get(f"/api/referrals/{referral_id}/consult").get_json()
    return document["identifier"]["value"], f"urn:uuid:{consult['id']}"


def wait_for_statuses(client: FlaskClient, referral_ids: list[str], statuses: tuple[str, ...] = ("completed",),
                      timeout_s: float = 60.0) -> dict[str, dict]:
    """Poll (the cheap history endpoint) until every referral is in one of statuses; then their bodies."""
    current: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for referral_id in referral_ids:
            if current.get(referral_id) not in statuses:
                current[referral_id] = client.get(f"/api/referrals/{referral_id}/history").get_json()[-1]["to"]
        if all(current[r] in statuses for r in referral_ids):
            return {r: client.get(f"/api/referrals/{r}").get_json() for r in referral_ids}
        settled = {r: s for r, s in current.items() if s in TERMINAL and s not in statuses}
        if settled:
            pytest.fail(f"referral(s) ended {settled} instead of {statuses}")
        if time.monotonic() > deadline:
            stuck = {r: s for r, s in current.items() if s not in statuses}
            pytest.fail(f"{len(stuck)} referral(s) not {statuses} after {timeout_s} s: {list(stuck.items())[:3]}")
        time.sleep(0.1)


def request_count(ehr: SandboxServer, method: str, path: str) -> int:
    """How many requests the EHR received with this method and path (answered or not)."""
    return sum(1 for r in ehr.requests if r["method"] == method and r["path"] == path)


def history(client: FlaskClient, referral_id: str) -> list[str]:
    return [h["to"] for h in client.get(f"/api/referrals/{referral_id}/history").get_json()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        assert time.monotonic() < deadline, f"{url} did not come up"
        time.sleep(0.2)
