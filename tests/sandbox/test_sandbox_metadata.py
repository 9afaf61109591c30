"""The CapabilityStatement is valid, truthful, and reflects the EHR profile."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from fixtures.sandbox import SandboxServer

SAMPLE_VALUES = {"token": "x", "date": "ge2024-01-01", "reference": "Patient/x", "string": "a"}


@pytest.fixture(scope="module")
def generic_metadata() -> dict[str, Any]:
    """The generic profile's CapabilityStatement, fetched once."""
    with SandboxServer(load_fixtures=False) as server, requests.Session() as session:
        response = session.get(f"{server.base_url}/metadata", timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/fhir+json; charset=utf-8"
    return response.json()


def resources_by_type(statement: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Index rest.resource by type."""
    return {resource["type"]: resource for resource in statement["rest"][0]["resource"]}


def test_metadata_validates_as_r4b_capability_statement(generic_metadata: dict[str, Any]) -> None:
    statement = CapabilityStatement.model_validate(generic_metadata)
    assert statement.fhirVersion == "4.0.1"
    assert statement.kind == "instance"
    assert statement.format == ["json", "application/fhir+json"]
    assert statement.software.name == "second-opinion sandbox EHR"
    assert {interaction.code for interaction in statement.rest[0].interaction} == {"transaction", "batch"}


def test_metadata_lists_every_r4b_resource_type_and_no_abstract_one(generic_metadata: dict[str, Any]) -> None:
    types = resources_by_type(generic_metadata)
    served = {"Patient", "Condition", "MedicationStatement", "MedicationRequest", "DocumentReference", "Bundle", "Task"}
    assert served <= set(types)
    assert "Resource" not in types and "DomainResource" not in types
    for name in types:
        get_fhir_model_class(name)  # raises for anything R4B does not know


def test_metadata_lists_the_us_core_search_params_and_includes(generic_metadata: dict[str, Any]) -> None:
    types = resources_by_type(generic_metadata)
    observation = {param["name"]: param["type"] for param in types["Observation"]["searchParam"]}
    assert observation["patient"] == "reference"
    assert observation["date"] == "date"
    assert observation["category"] == observation["code"] == observation["status"] == "token"
    condition = {param["name"] for param in types["Condition"]["searchParam"]}
    assert condition >= {"patient", "clinical-status", "category", "date"}
    assert {param["name"] for param in types["MedicationRequest"]["searchParam"]} >= {"patient", "intent", "status"}
    assert {param["name"] for param in types["Bundle"]["searchParam"]} >= {"identifier", "type", "patient"}
    assert types["DiagnosticReport"]["searchInclude"] == ["DiagnosticReport:result", "DiagnosticReport:performer"]
    assert types["MedicationRequest"]["searchInclude"] == ["MedicationRequest:medication", "MedicationRequest:requester"]
    assert types["Encounter"]["searchInclude"] == ["Encounter:practitioner", "Encounter:service-provider",
                                                   "Encounter:location"]
    assert "searchInclude" not in types["Observation"]
    assert types["Patient"]["conditionalCreate"] is True


def test_every_advertised_search_param_is_accepted(generic_metadata: dict[str, Any], fhir: Any) -> None:
    for resource_type, resource in resources_by_type(generic_metadata).items():
        params = {param["name"]: SAMPLE_VALUES[param["type"]] for param in resource["searchParam"]}
        response = fhir.get(resource_type, params=params)  # one request per type: all its parameters, ANDed
        assert response.status_code == 200, (resource_type, response.text)
        assert response.json()["total"] == 0


@pytest.mark.parametrize("profile", ["epic", "cerner"])
def test_epic_and_cerner_hide_medication_statement(profile: str, make_fhir: Any) -> None:
    with SandboxServer(load_fixtures=False, profile=profile) as server:
        fhir = make_fhir(server)
        types = resources_by_type(fhir.get("metadata").json())
        assert "MedicationStatement" not in types
        assert "MedicationRequest" in types
        for path in ("MedicationStatement", "MedicationStatement/abc", "MedicationStatement?patient=Patient/x"):
            response = fhir.get(path)
            assert response.status_code == 404
            assert fhir.outcome_codes(response) == ["not-supported"]
            assert "not supported" in response.json()["issue"][0]["diagnostics"]
        statement = {"resourceType": "MedicationStatement", "status": "active", "subject": {"reference": "Patient/x"},
                     "medicationCodeableConcept": {"text": "aspirin"}}
        assert fhir.post("MedicationStatement", statement).status_code == 404


def test_hapi_profile_serves_everything_under_another_software_name(make_fhir: Any) -> None:
    with SandboxServer(load_fixtures=False, profile="hapi") as server:
        statement = make_fhir(server).get("metadata").json()
    assert statement["software"]["name"] != "second-opinion sandbox EHR"
    assert "HAPI" in statement["software"]["name"]
    assert "MedicationStatement" in resources_by_type(statement)


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="profile"):
        SandboxServer(load_fixtures=False, profile="meditech")
