"""Every Synthea patient in the corpus, loaded into the sandbox by transaction, makes a complete, valid packet."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle

from mappers.validation import check_document_bundle
from tests.conftest import SYNTHEA_FILES

PACKET_TYPES = ("Condition", "Procedure", "DiagnosticReport", "MedicationStatement", "MedicationRequest")


@pytest.fixture(scope="module")
def synthea_ehr() -> Iterator[tuple[object, dict[str, str]]]:
    """An empty sandbox loaded with every corpus Synthea patient; maps file name → server Patient id."""
    from fixtures.sandbox import SandboxServer

    with SandboxServer(load_fixtures=False) as server:
        patients = {}
        for path in SYNTHEA_FILES:
            resp = requests.post(server.base_url, data=path.read_bytes(),
                                 headers={"Content-Type": "application/fhir+json"}, timeout=120)
            assert resp.status_code == 200, resp.text[:500]
            locations = [e["response"]["location"] for e in resp.json()["entry"]]
            patients[path.name] = next(loc.split("/")[1] for loc in locations if loc.startswith("Patient/"))
        yield server, patients


def test_the_corpus_has_synthea_patients() -> None:
    assert len(SYNTHEA_FILES) >= 7


@pytest.mark.parametrize("path", SYNTHEA_FILES, ids=[p.name.split("_")[1] for p in SYNTHEA_FILES])
def test_packet_holds_everything_the_ehr_has(make_app, synthea_ehr, path: Path) -> None:  # noqa: ANN001
    server, patients = synthea_ehr
    patient_id = patients[path.name]
    client = make_app(FHIR_BASE_URL=server.base_url).test_client()
    resp = client.post("/api/referrals", json={"patient": patient_id, "question": "Second opinion, please."})
    assert resp.status_code == 201, resp.get_data(as_text=True)[:500]
    raw = client.get(f"/api/referrals/{resp.get_json()['id']}/packet").get_json()

    packet = Bundle.model_validate(raw)
    Bundle.model_validate(packet.model_dump())
    assert check_document_bundle(packet) == []
    in_packet = {t: {e["resource"]["id"] for e in raw["entry"] if e["resource"]["resourceType"] == t}
                 for t in PACKET_TYPES}
    for resource_type in PACKET_TYPES:
        in_ehr = {r["id"] for r in server.store.all(resource_type)
                  if _patient_of(r) == f"Patient/{patient_id}"}
        assert in_packet[resource_type] == in_ehr, resource_type
    fulls = {e["fullUrl"] for e in raw["entry"]}
    assert all(u.startswith("urn:uuid:") for u in fulls) and len(fulls) == len(raw["entry"])
    assert "urn:uuid:" not in json.dumps([e["resource"].get("id") for e in raw["entry"]])


def _patient_of(resource: dict) -> str | None:
    return (resource.get("subject") or resource.get("patient") or {}).get("reference")
