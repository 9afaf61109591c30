"""The HL7 C-CDA R2.1 Consultation Note example maps with its key sections and structured entries."""

from decimal import Decimal
from pathlib import Path

import pytest
from fhir.resources.R4B.composition import CompositionSection

from mappers.ccda.document import CcdaMapping, map_ccda_consult
from mappers.ccda.parser import parse_ccda
from mappers.ids import sequential_ids
from mappers.validation import check_document_bundle

SOURCE = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "ccda" / "hl7-examples_Consultation_Note.xml"
SNOMED, RXNORM, LOINC = "http://snomed.info/sct", "http://www.nlm.nih.gov/research/umls/rxnorm", "http://loinc.org"


@pytest.fixture(scope="module")
def mapping() -> CcdaMapping:
    from datetime import datetime, timezone

    now = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)
    return map_ccda_consult(parse_ccda(SOURCE.read_bytes()), None, now=now, new_id=sequential_ids())


def _section(mapping: CcdaMapping, loinc: str) -> CompositionSection:
    return next(s for s in mapping.bundle.entry[0].resource.section if s.code.coding[0].code == loinc)


def _entries(mapping: CcdaMapping, section: CompositionSection) -> list:
    by_url = {e.fullUrl: e.resource for e in mapping.bundle.entry}
    return [by_url[ref.reference] for ref in section.entry or []]


def _codes(resources: list, attribute: str) -> set[tuple[str, str]]:
    return {(c.system, c.code) for r in resources for c in getattr(r, attribute).coding}


def test_it_is_a_consultation_note_filed_as_a_consult_note(mapping: CcdaMapping) -> None:
    composition = mapping.bundle.entry[0].resource
    assert mapping.document_kind == "consultation-note"
    assert (composition.type.coding[0].system, composition.type.coding[0].code) == (LOINC, "11488-4")
    assert composition.title == "Community Health Consult Note"
    assert composition.model_dump(mode="json")["date"] == "2013-08-01T05:00:00-08:00"
    assert composition.status == "final"
    assert composition.attester[0].mode == "legal"
    assert composition.extension[0].valueReference.identifier.value == "1298989898"
    assert check_document_bundle(mapping.bundle) == []
    assert "not a consultation note" not in " ".join(mapping.warnings)


def test_reason_for_referral_assessment_and_plan_keep_their_narrative(mapping: CcdaMapping) -> None:
    reason = _section(mapping, "42349-1")
    assert "Request for consultation for weight management." in reason.text.div
    assessment = _section(mapping, "51848-0")
    assert "Uncontrolled brittle Type II diabetic." in assessment.text.div
    plan = _section(mapping, "18776-5")
    assert "Hand-off Communication:" in plan.text.div
    assert {s.code: s.status for s in mapping.sections}["42349-1"] == "structured"  # its referral act


def test_problems_are_structured_conditions(mapping: CcdaMapping) -> None:
    conditions = _entries(mapping, _section(mapping, "11450-4"))
    assert {r.get_resource_type() for r in conditions} == {"Condition"}
    assert _codes(conditions, "code") == {(SNOMED, "190389009"), (SNOMED, "195977004"), (SNOMED, "304527002"),
                                          (SNOMED, "233604007")}
    pneumonia = next(c for c in conditions if c.code.coding[0].code == "233604007")
    assert pneumonia.clinicalStatus.coding[0].code == "resolved"
    assert str(pneumonia.abatementDateTime) == "1998-03-16"


def test_medications_are_structured_statements_with_dosage(mapping: CcdaMapping) -> None:
    statements = _entries(mapping, _section(mapping, "10160-0"))
    assert {r.get_resource_type() for r in statements} == {"MedicationStatement"}
    assert _codes(statements, "medicationCodeableConcept") == {(RXNORM, "573621"), (RXNORM, "197380")}
    albuterol = next(s for s in statements if s.medicationCodeableConcept.coding[0].code == "573621")
    assert albuterol.dosage[0].timing.repeat.period == 6 and albuterol.dosage[0].timing.repeat.periodUnit == "h"
    assert albuterol.dosage[0].route.coding[0].code == "C38216"


def test_allergies_are_structured_allergy_intolerances(mapping: CcdaMapping) -> None:
    allergies = _entries(mapping, _section(mapping, "48765-2"))
    assert {r.get_resource_type() for r in allergies} == {"AllergyIntolerance"}
    assert _codes(allergies, "code") == {(RXNORM, "70618"), (RXNORM, "2670")}
    penicillin = next(a for a in allergies if a.code.coding[0].code == "70618")
    assert penicillin.reaction[0].manifestation[0].coding[0].code == "422587007"


def test_results_are_a_report_with_observations(mapping: CcdaMapping) -> None:
    reports = _entries(mapping, _section(mapping, "30954-2"))
    assert {r.get_resource_type() for r in reports} == {"DiagnosticReport"}
    by_url = {e.fullUrl: e.resource for e in mapping.bundle.entry}
    cbc = next(r for r in reports if r.code.coding[0].code == "57021-8")
    hemoglobin = by_url[cbc.result[0].reference]
    assert hemoglobin.code.coding[0].code == "718-7"
    assert (hemoglobin.valueQuantity.value, hemoglobin.valueQuantity.code) == (Decimal("13.2"), "g/dL")
    assert hemoglobin.referenceRange[0].low.value == 12


def test_every_section_of_the_source_is_in_the_output(mapping: CcdaMapping) -> None:
    assert len(mapping.sections) == 13
    assert all(r.status != "empty" for r in mapping.sections)
