"""With a ConsultContext the output Patient is the EHR's, after checking the C-CDA is about the same person."""

from collections.abc import Callable
from types import SimpleNamespace

import pytest
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.patient import Patient

from mappers.ccda.document import CcdaMapping
from mappers.consult_context import ConsultContext
from mappers.errors import MappingError
from mappers.validation import check_document_bundle

Mapper = Callable[..., CcdaMapping]
SR_ID = Identifier(system="https://second-opinion.example/referral", value="ref-42")


def _context(**patient: object) -> ConsultContext:
    fields = {"id": "ehr-patient-1", "birthDate": "1975-05-01", "gender": "female",
              "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-1"}], **patient}
    return ConsultContext(referral_id="r-1", patient=Patient.model_validate(fields), service_request_identifier=SR_ID)


def test_same_patient_uses_the_ehr_patient_and_the_referral_order(build: SimpleNamespace, mapper: Mapper) -> None:
    context = _context()
    mapping = mapper(build.problem_doc(), context)
    patient = mapping.bundle.entry[1].resource
    assert patient.id == "ehr-patient-1" and patient.name is None  # a copy of the EHR's, not the C-CDA's
    composition = mapping.bundle.entry[0].resource
    assert composition.subject.reference == mapping.bundle.entry[1].fullUrl
    orders = [e.valueReference.identifier for e in composition.extension]
    assert (SR_ID.system, SR_ID.value) in {(o.system, o.value) for o in orders}
    assert check_document_bundle(mapping.bundle) == []
    assert context.patient.id == "ehr-patient-1"  # the context is not modified


def test_different_birth_date_is_422_without_values(build: SimpleNamespace, mapper: Mapper) -> None:
    with pytest.raises(MappingError) as caught:
        mapper(build.problem_doc(), _context(birthDate="1975-05-02"))
    assert caught.value.status == 422
    assert caught.value.diagnostics == "the C-CDA document is about a different patient (birth date differs)"
    assert "1975" not in caught.value.diagnostics


def test_different_identifier_in_the_same_system_is_422(build: SimpleNamespace, mapper: Mapper) -> None:
    with pytest.raises(MappingError) as caught:
        mapper(build.problem_doc(), _context(identifier=[{"system": "urn:oid:2.16.840.1.113883.19.5",
                                                          "value": "MRN-2"}]))
    assert caught.value.status == 422 and "identifier differs" in caught.value.diagnostics
    assert "MRN" not in caught.value.diagnostics


def test_different_gender_is_422(build: SimpleNamespace, mapper: Mapper) -> None:
    with pytest.raises(MappingError) as caught:
        mapper(build.problem_doc(), _context(gender="male"))
    assert "administrative gender differs" in caught.value.diagnostics


def test_identifier_systems_as_oid_or_uri_compare_equal(build: SimpleNamespace, mapper: Mapper) -> None:
    ssn = '<id root="2.16.840.1.113883.4.1" extension="444-22-2222"/>'
    data = build.document([], patient_ids=ssn)
    mapper(data, _context(identifier=[{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "444222222"}]))
    with pytest.raises(MappingError):
        mapper(data, _context(identifier=[{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "444-22-3333"}]))


def test_identifiers_of_other_systems_are_not_compared(build: SimpleNamespace, mapper: Mapper) -> None:
    mapping = mapper(build.problem_doc(), _context(identifier=[{"system": "urn:oid:1.2.3", "value": "other"}]))
    assert mapping.bundle.entry[1].resource.id == "ehr-patient-1"


def test_nothing_to_compare_is_422(build: SimpleNamespace, mapper: Mapper) -> None:
    with pytest.raises(MappingError) as caught:
        mapper(build.document([], birth=""), _context(identifier=[]))
    assert caught.value.status == 422 and "cannot confirm" in caught.value.diagnostics


def test_without_context_the_patient_comes_from_record_target(build: SimpleNamespace, mapper: Mapper) -> None:
    patient = mapper(build.problem_doc()).bundle.entry[1].resource
    assert patient.name[0].family == "Patient" and str(patient.birthDate) == "1975-05-01"
    assert patient.identifier[0].system == "urn:oid:2.16.840.1.113883.19.5"
