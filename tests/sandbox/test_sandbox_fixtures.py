"""Patient fixtures load at startup through the transaction code path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fixtures.sandbox import SandboxServer, SandboxStore
from fixtures.sandbox.loader import PATIENTS_DIR, FixtureError, load_patient_fixtures


def is_fhir(path: Path) -> bool:
    """True when a JSON file holds a FHIR resource (the folder also has side files)."""
    content = json.loads(path.read_bytes())
    return isinstance(content, dict) and "resourceType" in content


PATIENT_URN = "urn:uuid:aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
FIXTURE_FILES = sorted(path for path in PATIENTS_DIR.glob("*.json") if is_fhir(path))


def written_ids(path: Path) -> list[tuple[str, str]]:
    """Return (type, id) of each PUT entry of a transaction fixture."""
    bundle = json.loads(path.read_bytes())
    return [tuple(entry["request"]["url"].split("/")[:2]) for entry in bundle.get("entry", [])
            if entry["request"]["method"] == "PUT"]


@pytest.fixture(scope="module")
def loaded() -> Any:
    """A sandbox started with the default fixtures (epic profile: MedicationStatement loaded but hidden)."""
    with SandboxServer(profile="epic") as server:
        yield server


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda path: path.stem)
def test_each_patient_fixture_is_served_after_startup(loaded: SandboxServer, make_fhir: Any, path: Path) -> None:
    fhir = make_fhir(loaded)
    for resource_type, resource_id in written_ids(path):
        assert loaded.store.get(resource_type, resource_id) is not None, (resource_type, resource_id)
        expected = 404 if resource_type == "MedicationStatement" else 200
        assert fhir.get(f"{resource_type}/{resource_id}").status_code == expected


def transaction_fixture() -> dict[str, Any]:
    """A tiny transaction fixture with a urn:uuid reference."""
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": PATIENT_URN, "resource": {"resourceType": "Patient"},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Condition", "subject": {"reference": PATIENT_URN}},
         "request": {"method": "POST", "url": "Condition"}},
    ]}


def test_loader_runs_transactions_stores_other_resources_and_skips_non_fhir_json(tmp_path: Path) -> None:
    (tmp_path / "a-transaction.json").write_text(json.dumps(transaction_fixture()))
    (tmp_path / "b-document.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection"}))
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "questions.json").write_text(json.dumps({"patient-1": {"question": "not FHIR, skipped"}}))
    store = SandboxStore()
    assert load_patient_fixtures(store, tmp_path) == 2
    (patient,) = store.all("Patient")
    assert store.all("Condition")[0]["subject"]["reference"] == f"Patient/{patient['id']}"
    assert store.count("Bundle") == 1


def test_loader_with_no_folder_loads_nothing(tmp_path: Path) -> None:
    store = SandboxStore()
    assert load_patient_fixtures(store, tmp_path / "missing") == 0
    assert store.types() == []


def test_loader_names_a_broken_fixture_and_loads_none_of_it(tmp_path: Path) -> None:
    broken = transaction_fixture()
    broken["entry"][1]["resource"]["subject"] = "Patient/x"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    store = SandboxStore()
    with pytest.raises(FixtureError, match=r"broken\.json.*Bundle\.entry\[1\].*Condition\.subject"):
        load_patient_fixtures(store, tmp_path)
    assert store.types() == []
