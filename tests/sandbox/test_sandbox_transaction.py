"""Transactions and batches, including every Synthea patient in the shared corpus loaded with one POST."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fixtures.sandbox import SandboxServer

CORPUS = Path("/work/shared/corpus/fhir-patients")
SYNTHEA_FILES = sorted(CORPUS.glob("*.json"))
REFERENCE = re.compile(r'"reference":\s*"([^"]*)"')
LITERAL = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")


def request(method: str, url: str, resource: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A Bundle entry with a request (and a resource, for writes)."""
    item: dict[str, Any] = {"request": {"method": method, "url": url}, **extra}
    return {"resource": resource, **item} if resource is not None else item


def references_in(resource: dict[str, Any]) -> list[str]:
    """Every reference string anywhere in a resource (including nested and contained elements)."""
    return REFERENCE.findall(json.dumps(resource))


@pytest.fixture(scope="module")
def synthea() -> Iterator[tuple[SandboxServer, dict[str, requests.Response], dict[str, float]]]:
    """One sandbox with every Synthea bundle posted once; the responses and timings by file name."""
    responses: dict[str, requests.Response] = {}
    seconds: dict[str, float] = {}
    with SandboxServer(load_fixtures=False) as server, requests.Session() as session:
        for path in SYNTHEA_FILES:
            started = time.perf_counter()
            responses[path.name] = session.post(server.base_url, data=path.read_bytes(),
                                                headers={"Content-Type": "application/fhir+json"}, timeout=120)
            seconds[path.name] = time.perf_counter() - started
        yield server, responses, seconds


@pytest.mark.parametrize("path", SYNTHEA_FILES, ids=lambda path: path.name.split("_")[1])
def test_synthea_bundle_loads_with_one_post_and_every_reference_resolves(
        synthea: tuple[SandboxServer, dict[str, requests.Response], dict[str, float]], path: Path) -> None:
    server, responses, seconds = synthea
    source = json.loads(path.read_bytes())
    response = responses[path.name]
    assert response.status_code == 200, response.text[:500]
    assert seconds[path.name] < 10
    answer = response.json()
    assert answer["type"] == "transaction-response"
    assert len(answer["entry"]) == len(source["entry"])
    assert {item["response"]["status"] for item in answer["entry"]} == {"201 Created"}
    stored = []
    for item in answer["entry"]:
        resource_type, resource_id, _, version = item["response"]["location"].split("/")
        assert version == "1" and item["response"]["etag"] == 'W/"1"'
        stored.append(server.store.get(resource_type, resource_id))
    sent = Counter(item["resource"]["resourceType"] for item in source["entry"])
    assert Counter(resource["resourceType"] for resource in stored) == sent
    for resource in stored:
        for reference in references_in(resource):
            assert not reference.startswith("urn:uuid:"), (resource["resourceType"], reference)
            if reference.startswith("#"):
                continue  # Synthea's contained references (#referral, #coverage)
            match = LITERAL.match(reference)
            assert match, reference
            assert server.store.get(match[1], match[2]) is not None, reference


def test_synthea_patients_are_searchable_by_patient(
        synthea: tuple[SandboxServer, dict[str, requests.Response], dict[str, float]], make_fhir: Any) -> None:
    server = synthea[0]
    fhir = make_fhir(server)
    patients = server.store.all("Patient")
    assert len(patients) == len(SYNTHEA_FILES)
    for patient in patients:
        for resource_type in ("Condition", "Encounter", "Claim", "Observation"):
            bundle = fhir.get(resource_type, params={"patient": patient["id"], "_summary": "count"}).json()
            assert bundle["total"] == server.store.count(resource_type, patient=patient["id"])
    per_patient = [server.store.count("Observation", patient=patient["id"]) for patient in patients]
    assert sum(per_patient) == server.store.count("Observation")


PATIENT_URN = "urn:uuid:11111111-1111-4111-8111-111111111111"


def small_transaction(*extra: dict[str, Any]) -> dict[str, Any]:
    """A transaction creating a patient and a condition that references it by urn:uuid (also from a contained one)."""
    provenance = {"resourceType": "Provenance", "recorded": "2024-01-01T00:00:00Z",
                  "agent": [{"who": {"display": "x"}}], "target": [{"reference": PATIENT_URN}]}
    condition = {"resourceType": "Condition", "subject": {"reference": PATIENT_URN}, "code": {"text": "example"},
                 "contained": [provenance]}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        request("POST", "Patient", {"resourceType": "Patient", "name": [{"family": "Example"}]}, fullUrl=PATIENT_URN),
        request("POST", "Condition", condition, fullUrl="urn:uuid:22222222-2222-4222-8222-222222222222"),
        *extra,
    ]}


def test_transaction_rewrites_references_even_inside_contained_resources(fhir: Any) -> None:
    response = fhir.post("", small_transaction())
    assert response.status_code == 200
    patient_location, condition_location = (item["response"]["location"] for item in response.json()["entry"])
    patient_reference = "/".join(patient_location.split("/")[:2])
    condition = fhir.server.store.get("Condition", condition_location.split("/")[1])
    assert condition["subject"]["reference"] == patient_reference
    assert condition["contained"][0]["target"][0]["reference"] == patient_reference


@pytest.mark.parametrize("bad_entry, where", [
    (request("POST", "Observation", {"resourceType": "Observation", "status": "final"}), "Observation.code"),
    (request("POST", "Patient", {"resourceType": "Patient", "birthDate": "1st May"}), "Patient.birthDate"),
    (request("POST", "Observation", {"resourceType": "Patient"}), "resourceType"),
    (request("PUT", "Patient/b", {"resourceType": "Patient", "id": "a"}), "Patient.id"),
    (request("GET", "Patient/does-not-exist"), "does-not-exist"),
    (request("PATCH", "Patient/x"), "PATCH"),
    ({"resource": {"resourceType": "Basic", "code": {"text": "x"}}}, "request"),
], ids=["missing-required", "bad-date", "type-mismatch", "put-id-mismatch", "read-missing", "patch", "no-request"])
def test_transaction_with_one_bad_entry_stores_nothing(fhir: Any, bad_entry: dict[str, Any], where: str) -> None:
    fhir.put("Patient/existing", {"resourceType": "Patient", "id": "existing"})
    response = fhir.post("", small_transaction(request("DELETE", "Patient/existing"), bad_entry))
    assert response.status_code in (400, 404)
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert diagnostics.startswith("Bundle.entry[3]")
    assert where in diagnostics
    assert fhir.server.store.count("Patient") == 1 and fhir.server.store.get("Patient", "existing") is not None
    assert fhir.server.store.count("Condition") == 0


def test_transaction_conditional_create_reuses_the_match_for_references(fhir: Any) -> None:
    first = fhir.post("", small_transaction()).json()
    bundle = small_transaction()
    bundle["entry"][0]["resource"]["identifier"] = [{"system": "urn:example:mrn", "value": "7"}]
    bundle["entry"][0]["request"]["ifNoneExist"] = "identifier=urn:example:mrn|7"
    fhir.post("", bundle)  # creates the identified patient
    again = fhir.post("", bundle).json()
    assert again["entry"][0]["response"]["status"] == "200 OK"
    assert fhir.server.store.count("Patient") == 2
    patient_reference = "/".join(again["entry"][0]["response"]["location"].split("/")[:2])
    condition = fhir.server.store.get("Condition", again["entry"][1]["response"]["location"].split("/")[1])
    assert condition["subject"]["reference"] == patient_reference
    assert first["entry"][0]["response"]["location"] != again["entry"][0]["response"]["location"]


def test_transaction_runs_put_delete_and_get_entries(fhir: Any) -> None:
    fhir.put("Patient/to-delete", {"resourceType": "Patient", "id": "to-delete"})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        request("PUT", "Patient/put-me", {"resourceType": "Patient", "id": "put-me"}),
        request("DELETE", "Patient/to-delete"),
        request("GET", "Patient/put-me"),
        request("GET", "Patient?_id=put-me,to-delete"),
    ]}
    answer = fhir.post("", bundle).json()
    statuses = [item["response"]["status"] for item in answer["entry"]]
    assert statuses == ["201 Created", "204 No Content", "200 OK", "200 OK"]
    assert answer["entry"][2]["resource"]["id"] == "put-me"
    assert answer["entry"][3]["resource"]["total"] == 1
    assert fhir.get("Patient/to-delete").status_code == 410


def test_batch_runs_each_entry_on_its_own(fhir: Any) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        request("POST", "Patient", {"resourceType": "Patient"}),
        request("POST", "Observation", {"resourceType": "Observation", "status": "final"}),
        request("GET", "Patient/missing"),
        request("POST", "Patient", {"resourceType": "Patient"}),
    ]}
    response = fhir.post("", bundle)
    assert response.status_code == 200
    answer = response.json()
    assert answer["type"] == "batch-response"
    statuses = [item["response"]["status"] for item in answer["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "404 Not Found", "201 Created"]
    assert answer["entry"][1]["response"]["outcome"]["issue"][0]["code"] == "invalid"
    assert "Observation.code" in answer["entry"][1]["response"]["outcome"]["issue"][0]["diagnostics"]
    assert fhir.server.store.count("Patient") == 2
    assert fhir.server.store.count("Observation") == 0


@pytest.mark.parametrize("bundle", [
    {"resourceType": "Bundle", "type": "collection", "entry": []},
    {"resourceType": "Patient"},
    [],
], ids=["collection", "not-a-bundle", "not-an-object"])
def test_base_post_needs_a_transaction_or_batch(fhir: Any, bundle: Any) -> None:
    response = fhir.post("", bundle)
    assert response.status_code == 400
    assert fhir.outcome_codes(response) == ["invalid"]


def test_epic_profile_refuses_medication_statement_in_a_transaction(make_fhir: Any) -> None:
    with SandboxServer(load_fixtures=False, profile="epic") as server:
        statement = {"resourceType": "MedicationStatement", "status": "active", "subject": {"reference": "Patient/x"},
                     "medicationCodeableConcept": {"text": "aspirin"}}
        response = make_fhir(server).post("", small_transaction(request("POST", "MedicationStatement", statement)))
        assert response.status_code == 404
        assert response.json()["issue"][0]["code"] == "not-supported"
        assert server.store.count("Patient") == 0
