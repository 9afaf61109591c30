"""Minimum necessary: which history to leave out of a packet when the clinician sets a `since` date.

Active problems, current medications, allergies and current plans are always offered, however old; other
items dated before `since` are left out (and listed, never silently dropped).
"""

from datetime import date, datetime

from fhir.resources.R4B.resource import Resource

from mappers.record import PatientRecord

ACTIVE_CLINICAL = {"active", "recurrence", "relapse"}
CURRENT_STATUSES = {"active", "intended", "on-hold", "draft", "in-progress", "preparation"}
ALWAYS_OFFERED = {"AllergyIntolerance", "Patient"}


def history_before(record: PatientRecord, since: date) -> list[str]:
    """The "Type/id" keys of items dated before `since` that are not active or current."""
    return [f"{r.get_resource_type()}/{r.id}" for r in record.resources
            if r.id and not _always_offered(r) and (when := main_date(r)) is not None and when < since]


def _always_offered(resource: Resource) -> bool:
    if resource.get_resource_type() in ALWAYS_OFFERED:
        return True
    clinical = getattr(resource, "clinicalStatus", None)
    if clinical is not None and any(c.code in ACTIVE_CLINICAL for c in clinical.coding or []):
        return True
    status = getattr(resource, "status", None)
    return resource.get_resource_type() != "Condition" and status in CURRENT_STATUSES


def main_date(resource: Resource) -> date | None:
    """The date that places an item in the patient's history (the latest relevant one)."""
    for name in ("abatementDateTime", "performedDateTime", "effectiveDateTime", "issued", "authoredOn",
                 "dateAsserted", "date", "recordedDate", "onsetDateTime"):
        value = getattr(resource, name, None)
        if value:
            return _as_date(value)
    for name in ("performedPeriod", "effectivePeriod", "period", "abatementPeriod", "onsetPeriod"):
        period = getattr(resource, name, None)
        if period is not None and (period.end or period.start):
            return _as_date(period.end or period.start)
    return None


def _as_date(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = str(value)
    try:
        return date.fromisoformat(text[:10]) if len(text) >= 10 else date(int(text[:4]), int(text[5:7] or 1), 1)
    except ValueError:
        return None
