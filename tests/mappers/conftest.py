"""Fixtures for the mapper tests: a fixed clock, corpus patients as EHR records, small resource builders."""

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.patient import Patient

from mappers.consult_context import ConsultContext
from mappers.record import PatientRecord

EHR_BASE = "https://ehr.example.org/fhir"
CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
DATA = Path(__file__).resolve().parent / "data"
_URN_REFERENCE = re.compile(r'"reference": "(urn:uuid:[0-9a-fA-F-]+)"')


@pytest.fixture
def now() -> datetime:
    """The fixed clock every mapper test uses."""
    return datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def synthea_record() -> Callable[[Path], PatientRecord]:
    """Load a Synthea transaction Bundle as an EHR would hold it (Type/id references), cached per file."""
    cache: dict[Path, PatientRecord] = {}

    def load(path: Path) -> PatientRecord:
        if path not in cache:
            cache[path] = record_from_transaction(json.loads(path.read_text(encoding="utf-8")))
        return cache[path]

    return load


def record_from_transaction(bundle: dict[str, Any]) -> PatientRecord:
    """Turn a transaction Bundle into a PatientRecord: keep ids, rewrite urn:uuid references to Type/id."""
    keys = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        resource.setdefault("id", entry["fullUrl"].removeprefix("urn:uuid:"))
        keys[entry["fullUrl"]] = f"{resource['resourceType']}/{resource['id']}"
    text = _URN_REFERENCE.sub(lambda m: f'"reference": "{keys[m.group(1)]}"', json.dumps(bundle))
    parsed = json.loads(text)
    parsed["type"] = "collection"
    for entry in parsed["entry"]:
        entry.pop("request", None)
    resources = [e.resource for e in Bundle.model_validate(parsed).entry]
    patient = next(r for r in resources if isinstance(r, Patient))
    return PatientRecord(patient=patient, resources=[r for r in resources if r is not patient], base_url=EHR_BASE)


@pytest.fixture
def our_patient() -> Patient:
    """The EHR's patient a consult must be about."""
    return Patient.model_validate({
        "resourceType": "Patient", "id": "ehr-patient-1",
        "identifier": [{"system": "urn:oid:1.3.6.1.4.1.22812.3.2009316.3", "value": "160920144139807"},
                       {"system": "http://hospital.example.org/mrn", "value": "MRN-0001"}],
        "name": [{"family": "Jones", "given": ["Myra"]}],
        "birthDate": "1947-05-01",
        "managingOrganization": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000099"},
    })


@pytest.fixture
def consult_context(our_patient: Patient) -> ConsultContext:
    """The referral a test consult answers."""
    return ConsultContext(
        referral_id="5b1f0d6e-3f7a-4c55-9d59-2a6f3f1f0a11",
        patient=our_patient,
        service_request_identifier=Identifier(system="urn:ietf:rfc:3986",
                                              value="urn:uuid:5b1f0d6e-3f7a-4c55-9d59-2a6f3f1f0a11"),
        service_request_ref="ServiceRequest/sr-1",
        questions=["Is the diagnosis right?"],
    )
