"""End to end, per FHIR server (sandbox and sekmet-fhir): pull → packet → send → consult → write-back.

The service runs under a real HTTP server thread; it and the tests reach the FHIR server only over HTTP.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle

from mappers.validation import check_document_bundle
from service.demo import run_referral
from service.serving import ServiceServer
from tests.conftest import SYNTHEA_FILES, fixture_questions
from tests.e2e.servers import FhirServer

PACKET_TYPES = ("Condition", "Procedure", "DiagnosticReport", "MedicationStatement", "MedicationRequest")


@pytest.fixture
def service_url(make_app, fhir_server: FhirServer) -> Iterator[str]:  # noqa: ANN001
    with ServiceServer(make_app(FHIR_BASE_URL=fhir_server.base_url)) as server:
        yield server.url


def packet_ids(packet: dict) -> dict[str, set[str]]:
    return {t: {e["resource"]["id"] for e in packet["entry"] if e["resource"]["resourceType"] == t}
            for t in PACKET_TYPES}


def server_ids(server: FhirServer, patient_id: str) -> dict[str, set[str]]:
    return {t: server.search_ids(t, patient=patient_id) for t in PACKET_TYPES}


@pytest.mark.parametrize("patient", sorted(fixture_questions()))
def test_referral_loop_lands_in_the_server(fhir_server: FhirServer, service_url: str, patient: str) -> None:
    asked = fixture_questions()[patient]
    result = run_referral(service_url, patient, asked["question"], asked["patient_questions"], say=lambda _m: None)
    referral = result.referral
    assert referral["status"] == "completed", referral.get("writeback")

    packet = requests.get(f"{service_url}/api/referrals/{referral['id']}/packet", timeout=30).json()
    assert check_document_bundle(Bundle.model_validate(packet)) == []
    assert packet_ids(packet) == server_ids(fhir_server, patient)

    docref = fhir_server.read(referral["writeback"]["document_reference"])
    assert docref["type"]["coding"][0]["code"] == "11488-4"
    assert docref["subject"]["reference"] == f"Patient/{patient}"
    assert docref["context"]["related"][0]["reference"] == referral["service_request"]
    task = fhir_server.read(referral["task"])
    assert task["status"] == "completed"
    assert task["output"][0]["valueReference"]["reference"] == referral["writeback"]["document_reference"]
    document = fhir_server.read(referral["writeback"]["bundle"])
    assert document["type"] == "document" and document["entry"][0]["resource"]["resourceType"] == "Composition"


@pytest.fixture(scope="module")
def synthea_patients(fhir_server: FhirServer) -> dict[str, str]:
    """Every corpus Synthea patient loaded by one transaction each; file name → the server's Patient id."""
    loaded = {}
    for path in SYNTHEA_FILES:
        response = fhir_server.post_bundle(path.read_bytes())
        loaded[path.name] = next(pid for e in response["entry"] if (pid := patient_id_in(e["response"]["location"])))
    return loaded


def patient_id_in(location: str) -> str | None:
    """The id in a Location that names a Patient, relative ('Patient/x/_history/1') or absolute."""
    parts = location.split("/")
    return parts[parts.index("Patient") + 1] if "Patient" in parts[:-1] else None


def test_the_corpus_has_synthea_patients() -> None:
    assert len(SYNTHEA_FILES) >= 7


@pytest.mark.parametrize("path", SYNTHEA_FILES, ids=[p.name.split("_")[1] for p in SYNTHEA_FILES])
def test_synthea_packet_holds_everything_the_server_has(fhir_server: FhirServer, synthea_patients: dict[str, str],
                                                      make_app, path: Path) -> None:  # noqa: ANN001
    patient_id = synthea_patients[path.name]
    client = make_app(FHIR_BASE_URL=fhir_server.base_url).test_client()
    resp = client.post("/api/referrals", json={"patient": patient_id, "question": "Second opinion, please."})
    assert resp.status_code == 201, resp.get_data(as_text=True)[:500]
    raw = client.get(f"/api/referrals/{resp.get_json()['id']}/packet").get_json()

    packet = Bundle.model_validate(raw)
    Bundle.model_validate(packet.model_dump())
    assert check_document_bundle(packet) == []
    assert packet_ids(raw) == server_ids(fhir_server, patient_id)
    fulls = [e["fullUrl"] for e in raw["entry"]]
    assert all(u.startswith("urn:uuid:") for u in fulls) and len(set(fulls)) == len(fulls)
    assert "urn:uuid:" not in json.dumps([e["resource"].get("id") for e in raw["entry"]])
