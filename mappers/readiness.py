"""Readiness: compare a patient's record with what a second-opinion consultant needs, and say what is missing.

The preparation list (issue #3, after the usual second-opinion advice): a pathology report for every cancer
diagnosis; the operative note for every surgery; the discharge summary for every hospital stay; the current
treatment plan; and a dose for every current medication. The check informs the clinician; it never blocks.
"""

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta

from fhir.resources.R4B.resource import Resource

from mappers import systems
from mappers.record import PatientRecord

# Cancer diagnoses: ICD-10-CM chapter II malignant and in-situ neoplasms (C00–D09), or words SNOMED CT uses in
# the preferred terms of malignant neoplasm concepts.
CANCER_WORDS = ("malignant", "carcinoma", "cancer", "adenocarcinoma", "lymphoma", "leukemia", "leukaemia",
                "melanoma", "sarcoma", "myeloma", "glioblastoma", "neoplasm of")
# Report types that count as pathology: LOINC 11526-1 Pathology study, 60567-5 Comprehensive pathology report,
# 60568-3 Pathology Synoptic report, 22034-0 Pathology report.
PATHOLOGY_CODES = {"11526-1", "60567-5", "60568-3", "22034-0", "11529-5"}
OPERATIVE_NOTE_CODES = {systems.LOINC_OPERATIVE_NOTE, systems.LOINC_PROCEDURE_NOTE}
SNOMED_SURGICAL_PROCEDURE = "387713003"
INPATIENT_CLASSES = {"IMP", "ACUTE", "NONAC"}  # v3 ActCode encounter classes for hospital stays
OPERATIVE_NOTE_WINDOW = timedelta(days=30)
DISCHARGE_SUMMARY_WINDOW = timedelta(days=14)


@dataclass(frozen=True)
class ReadinessItem:
    """One thing a consultant needs, whether the packet has it, and a sentence for the clinician."""

    item: str  # pathology-report | operative-note | discharge-summary | care-plan | medication-dosage
    status: str  # ok | missing | partial
    message: str
    about: str | None = None  # "Type/id" of what it concerns

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def assess_readiness(record: PatientRecord) -> list[ReadinessItem]:
    """Every readiness item for the record, problems first."""
    items = (_pathology(record) + _operative_notes(record) + _discharge_summaries(record) + _care_plan(record)
             + _dosages(record))
    return sorted(items, key=lambda i: i.status == "ok")


def gaps(items: list[ReadinessItem]) -> list[ReadinessItem]:
    """The items that are not ok."""
    return [i for i in items if i.status != "ok"]


def _pathology(record: PatientRecord) -> list[ReadinessItem]:
    cancers = [c for c in record.of_type("Condition") if _is_cancer(c) and _status(c, "clinicalStatus") != "entered-in-error"]
    reports = [r for r in record.of_type("DiagnosticReport") if _codes(r.code) & PATHOLOGY_CODES or _is_pathology_category(r)]
    documents = [d for d in record.of_type("DocumentReference") if _codes(d.type) & PATHOLOGY_CODES]
    have = bool(reports or documents)
    return [ReadinessItem("pathology-report", "ok" if have else "missing",
                          f"Pathology report {'found' if have else 'not found'} for {_label(c)}.", _key(c))
            for c in cancers]


def _operative_notes(record: PatientRecord) -> list[ReadinessItem]:
    notes = [d for d in record.of_type("DocumentReference") if _codes(d.type) & OPERATIVE_NOTE_CODES]
    items = []
    for procedure in record.of_type("Procedure"):
        if SNOMED_SURGICAL_PROCEDURE not in _codes(procedure.category) or procedure.status in ("not-done", "entered-in-error"):
            continue
        when = _procedure_date(procedure)
        found = any(_linked(note, procedure) or _within(when, _doc_date(note), OPERATIVE_NOTE_WINDOW) for note in notes)
        items.append(ReadinessItem("operative-note", "ok" if found else "missing",
                                   f"Operative note {'found' if found else 'not found'} for {_label(procedure)}.",
                                   _key(procedure)))
    return items


def _discharge_summaries(record: PatientRecord) -> list[ReadinessItem]:
    summaries = [d for d in record.of_type("DocumentReference") if systems.LOINC_DISCHARGE_SUMMARY in _codes(d.type)]
    items = []
    for encounter in record.of_type("Encounter"):
        if (encounter.class_fhir.code if encounter.class_fhir else None) not in INPATIENT_CLASSES:
            continue
        end = _as_date(encounter.period.end if encounter.period else None)
        found = any(_linked(doc, encounter) or _within(end, _doc_date(doc), DISCHARGE_SUMMARY_WINDOW)
                    for doc in summaries)
        items.append(ReadinessItem("discharge-summary", "ok" if found else "missing",
                                   f"Discharge summary {'found' if found else 'not found'} for the hospital stay"
                                   f"{' ending ' + end.isoformat() if end else ''}.", _key(encounter)))
    return items


def _care_plan(record: PatientRecord) -> list[ReadinessItem]:
    plans = [p for p in record.of_type("CarePlan") if p.status in ("active", "on-hold", "draft")]
    if plans:
        return [ReadinessItem("care-plan", "ok", "Current treatment plan found.", _key(plans[0]))]
    return [ReadinessItem("care-plan", "missing", "No current treatment plan (CarePlan) found.")]


def _dosages(record: PatientRecord) -> list[ReadinessItem]:
    current = [m for m in record.of_type("MedicationStatement") if m.status in ("active", "intended", "on-hold")]
    current += [m for m in record.of_type("MedicationRequest") if m.status in ("active", "on-hold", "draft")]
    without = [m for m in current if not _has_dose(m)]
    if not current:
        return []
    if not without:
        return [ReadinessItem("medication-dosage", "ok", f"All {len(current)} current medication entries have a dose.")]
    status = "missing" if len(without) == len(current) else "partial"
    return [ReadinessItem("medication-dosage", status, f"No dose recorded for {_label(m)}.", _key(m)) for m in without]


def _has_dose(medication: Resource) -> bool:
    dosages = getattr(medication, "dosage", None) or getattr(medication, "dosageInstruction", None) or []
    return any(d.text or d.doseAndRate for d in dosages)


def _is_cancer(condition: Resource) -> bool:
    code = condition.code
    if code is None:
        return False
    for coding in code.coding or []:
        value = (coding.code or "").replace(".", "").upper()
        if coding.system == systems.ICD10CM and (value.startswith("C") or value.startswith("D0")):
            return True
    words = " ".join([code.text or ""] + [c.display or "" for c in code.coding or []]).lower()
    return any(w in words for w in CANCER_WORDS)


def _is_pathology_category(report: Resource) -> bool:
    return any(c.code in ("PAT", "SP", "CP") for cat in report.category or [] for c in cat.coding or [])


def _codes(concepts: object) -> set[str]:
    if concepts is None:
        return set()
    concepts = concepts if isinstance(concepts, list) else [concepts]
    return {c.code for cc in concepts for c in cc.coding or [] if c.code}


def _status(resource: Resource, element: str) -> str | None:
    concept = getattr(resource, element, None)
    return concept.coding[0].code if concept and concept.coding else None


def _label(resource: Resource) -> str:
    concept = (getattr(resource, "code", None) or getattr(resource, "medicationCodeableConcept", None))
    if concept is not None:
        text = concept.text or next((c.display for c in concept.coding or [] if c.display), None)
        if text:
            return text
    return _key(resource)


def _key(resource: Resource) -> str:
    return f"{resource.get_resource_type()}/{resource.id}"


def _linked(document: Resource, target: Resource) -> bool:
    key = _key(target)
    context = document.context
    if context is None:
        return False
    refs = [r.reference for r in (context.encounter or [])] + [r.reference for r in (context.related or [])]
    return any(ref and (ref == key or ref.endswith("/" + key)) for ref in refs)


def _procedure_date(procedure: Resource) -> date | None:
    if procedure.performedDateTime:
        return _as_date(procedure.performedDateTime)
    if procedure.performedPeriod:
        return _as_date(procedure.performedPeriod.end or procedure.performedPeriod.start)
    return None


def _doc_date(document: Resource) -> date | None:
    if document.context and document.context.period and (document.context.period.end or document.context.period.start):
        return _as_date(document.context.period.end or document.context.period.start)
    return _as_date(document.date)


def _within(start: date | None, when: date | None, window: timedelta) -> bool:
    return start is not None and when is not None and start - timedelta(days=1) <= when <= start + window


def _as_date(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and len(value) >= 10:
        return date.fromisoformat(value[:10])
    return None
