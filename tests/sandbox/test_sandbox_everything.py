"""Patient/$everything on the sandbox: served (and advertised) by the hapi profile only, paged, filterable."""

from __future__ import annotations

from typing import Any

import pytest

from fixtures.sandbox import SandboxServer
from tests.sandbox.test_sandbox_metadata import resources_by_type

PATIENT = "so-prostate-patient"


@pytest.fixture(scope="module")
def hapi() -> Any:
    with SandboxServer(profile="hapi", page_size=7) as server:
        yield server


def _key(entry: dict[str, Any]) -> tuple[str, str]:
    return entry["resource"]["resourceType"], entry["resource"]["id"]


def test_only_the_hapi_profile_advertises_and_serves_it(hapi: Any, make_fhir: Any) -> None:
    statement = make_fhir(hapi).get("metadata").json()
    ops = resources_by_type(statement)["Patient"].get("operation", [])
    assert [op["name"] for op in ops] == ["everything"]
    with SandboxServer(profile="generic") as generic:
        fhir = make_fhir(generic)
        assert "operation" not in resources_by_type(fhir.get("metadata").json())["Patient"]
        response = fhir.get(f"Patient/{PATIENT}/$everything")
        assert response.status_code == 404 and fhir.outcome_codes(response) == ["not-supported"]


def test_everything_is_the_compartment_and_what_it_references_paged(hapi: Any, make_fhir: Any) -> None:
    fhir = make_fhir(hapi)
    first = fhir.get(f"Patient/{PATIENT}/$everything").json()
    assert first["type"] == "searchset" and len(first["entry"]) == 7
    assert any(link["relation"] == "next" and "/Patient/so-prostate-patient/$everything?" in link["url"]
               for link in first["link"])
    entries = fhir.search_all(f"Patient/{PATIENT}/$everything")
    keys = [_key(e) for e in entries]
    assert len(keys) == len(set(keys)) == first["total"]
    assert keys[0] == ("Patient", PATIENT)
    for resource_type in ("Condition", "Procedure", "DiagnosticReport", "MedicationRequest"):
        compartment = {_key(e) for e in fhir.search_all(resource_type, patient=PATIENT, _count=100)}
        assert compartment and compartment <= set(keys), resource_type
    other = {_key(e) for e in fhir.search_all("Condition", patient="so-breast-patient", _count=100)}
    assert other and not other & set(keys)  # nothing of another patient
    referenced = {k for k in keys if k[0] in ("Practitioner", "Organization", "Medication")}
    assert referenced  # what the compartment references comes along


def test_type_and_since_narrow_it_and_unknown_parameters_are_refused(hapi: Any, make_fhir: Any) -> None:
    fhir = make_fhir(hapi)
    only = fhir.search_all(f"Patient/{PATIENT}/$everything", _type="Condition,Procedure")
    assert only and {e["resource"]["resourceType"] for e in only} == {"Condition", "Procedure"}
    assert fhir.get(f"Patient/{PATIENT}/$everything", params={"_since": "2999-01-01T00:00:00Z"}).json()["total"] == 0
    for params, code in (({"start": "2020-01-01"}, "not-supported"), ({"_since": "yesterday"}, "invalid"),
                         ({"_count": "-1"}, "invalid")):
        response = fhir.get(f"Patient/{PATIENT}/$everything", params=params)
        assert response.status_code == 400 and fhir.outcome_codes(response) == [code], params
    missing = fhir.get("Patient/nobody/$everything")
    assert missing.status_code == 404 and fhir.outcome_codes(missing) == ["not-found"]
