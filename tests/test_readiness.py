"""The readiness check: what a consultant needs that the record lacks (pure, on records built inline)."""

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.patient import Patient

from mappers.readiness import assess_readiness, gaps
from mappers.record import PatientRecord

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"


def model(data: dict):  # noqa: ANN201
    return get_fhir_model_class(data["resourceType"]).model_validate(data)


def record(*resources: dict) -> PatientRecord:
    return PatientRecord(patient=Patient(id="p"), resources=[model(r) for r in resources])


PROSTATE_CANCER = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p"},
                   "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C61"}],
                            "text": "Malignant neoplasm of prostate"}}
HYPERTENSION = {"resourceType": "Condition", "id": "c2", "subject": {"reference": "Patient/p"},
                "code": {"coding": [{"system": SNOMED, "code": "38341003", "display": "Hypertensive disorder"}]}}
PATHOLOGY_DOC = {"resourceType": "DocumentReference", "id": "d1", "status": "current",
                 "type": {"coding": [{"system": LOINC, "code": "11526-1"}]}, "subject": {"reference": "Patient/p"},
                 "content": [{"attachment": {"contentType": "text/plain", "data": "eA=="}}]}
SURGERY = {"resourceType": "Procedure", "id": "s1", "status": "completed", "subject": {"reference": "Patient/p"},
           "category": {"coding": [{"system": SNOMED, "code": "387713003"}]}, "code": {"text": "Lumpectomy"},
           "performedDateTime": "2026-03-02"}
OPERATIVE_NOTE = {**PATHOLOGY_DOC, "id": "d2", "type": {"coding": [{"system": LOINC, "code": "11504-8"}]},
                  "date": "2026-03-02T15:00:00Z"}
STAY = {"resourceType": "Encounter", "id": "e1", "status": "finished", "subject": {"reference": "Patient/p"},
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "period": {"start": "2026-01-10", "end": "2026-01-14"}}
DISCHARGE = {**PATHOLOGY_DOC, "id": "d3", "type": {"coding": [{"system": LOINC, "code": "18842-5"}]},
             "context": {"encounter": [{"reference": "Encounter/e1"}]}}
PLAN = {"resourceType": "CarePlan", "id": "cp", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p"}}
MED_WITH_DOSE = {"resourceType": "MedicationStatement", "id": "m1", "status": "active",
                 "subject": {"reference": "Patient/p"}, "medicationCodeableConcept": {"text": "Tamsulosin"},
                 "dosage": [{"text": "0.4 mg once daily"}]}
MED_WITHOUT_DOSE = {**MED_WITH_DOSE, "id": "m2", "medicationCodeableConcept": {"text": "Metformin"}, "dosage": None}


def by_item(items) -> dict[str, list[str]]:  # noqa: ANN001
    out: dict[str, list[str]] = {}
    for item in items:
        out.setdefault(item.item, []).append(item.status)
    return out


def test_a_complete_record_has_no_gaps() -> None:
    items = assess_readiness(record(PROSTATE_CANCER, PATHOLOGY_DOC, SURGERY, OPERATIVE_NOTE, STAY, DISCHARGE, PLAN,
                                    MED_WITH_DOSE))
    assert gaps(items) == []
    assert by_item(items) == {"pathology-report": ["ok"], "operative-note": ["ok"], "discharge-summary": ["ok"],
                              "care-plan": ["ok"], "medication-dosage": ["ok"]}


def test_cancer_without_pathology_report_is_missing() -> None:
    missing = gaps(assess_readiness(record(PROSTATE_CANCER, PLAN)))
    assert [(i.item, i.about) for i in missing] == [("pathology-report", "Condition/c1")]
    assert "Malignant neoplasm of prostate" in missing[0].message


def test_a_non_cancer_diagnosis_needs_no_pathology_report() -> None:
    assert gaps(assess_readiness(record(HYPERTENSION, PLAN))) == []


def test_surgery_without_operative_note_is_missing() -> None:
    assert [(i.item, i.about) for i in gaps(assess_readiness(record(SURGERY, PLAN)))] == [("operative-note", "Procedure/s1")]


def test_an_operative_note_months_later_does_not_count() -> None:
    late = {**OPERATIVE_NOTE, "date": "2026-09-01T10:00:00Z"}
    assert [i.item for i in gaps(assess_readiness(record(SURGERY, late, PLAN)))] == ["operative-note"]


def test_hospital_stay_without_discharge_summary_is_missing() -> None:
    assert [(i.item, i.about) for i in gaps(assess_readiness(record(STAY, PLAN)))] == [("discharge-summary", "Encounter/e1")]


def test_no_care_plan_is_missing() -> None:
    assert [i.item for i in gaps(assess_readiness(record(HYPERTENSION)))] == ["care-plan"]


def test_some_medications_without_dose_is_partial() -> None:
    items = gaps(assess_readiness(record(MED_WITH_DOSE, MED_WITHOUT_DOSE, PLAN)))
    assert [(i.item, i.status, i.about) for i in items] == [("medication-dosage", "partial", "MedicationStatement/m2")]
