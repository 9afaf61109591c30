"""Assessment (2.8), Assessment and Plan (2.9), Plan of Treatment (2.10) and Reason for Referral sections.

These sections are narrative first; their entries are mapped when they are planned, coded items (C-CDA on FHIR,
Plan of Treatment): planned act/encounter/procedure/observation → ServiceRequest (intent plan), planned medication
→ MedicationRequest (intent plan), and problem observations → Condition (encounter-diagnosis). Goals,
instructions and other entries stay in the narrative.
"""

from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest
from lxml import etree

from mappers.ccda import ccda
from mappers.ccda.context import EntryContext, Mapped
from mappers.ccda.datatypes import codeable_concept, identifiers
from mappers.ccda.medications import PLANNED_MOODS, map_dosage, medication_code
from mappers.ccda.problems import ENCOUNTER_DIAGNOSIS, map_problem_entry
from mappers.oids import OID_GOAL_OBSERVATION, OID_INSTRUCTION

_NOT_REQUESTS = (OID_INSTRUCTION, OID_GOAL_OBSERVATION)
_STATEMENTS = ("act", "encounter", "procedure", "observation", "substanceAdministration")
_SERVICE_STATUS = {"active": "active", "new": "active", "completed": "completed", "cancelled": "revoked",
                   "aborted": "revoked", "held": "on-hold", "suspended": "on-hold", "nullified": "entered-in-error"}
_MEDICATION_STATUS = {"active": "active", "new": "draft", "completed": "completed", "cancelled": "cancelled",
                      "aborted": "stopped", "held": "on-hold", "suspended": "on-hold",
                      "nullified": "entered-in-error"}
_PRIORITY = {"R": "routine", "UR": "urgent", "A": "asap", "CS": "asap", "EM": "stat", "S": "stat"}


def map_plan_entry(entry: etree._Element, ctx: EntryContext) -> list[Mapped]:
    """Map one entry of an assessment/plan/referral section: planned items and problem observations."""
    problems = map_problem_entry(entry, ctx, category=ENCOUNTER_DIAGNOSIS)
    if problems:
        return problems
    mapped: list[Mapped] = []
    for name in _STATEMENTS:
        for statement in ccda.each(entry, f"hl7:{name}"):
            mapped.extend(map_planned_item(statement, ctx))
    return mapped


def map_planned_item(statement: etree._Element, ctx: EntryContext) -> list[Mapped]:
    """Map a planned (moodCode INT/RQO/PRMS/PRP/ARQ/APT), coded clinical statement; others map to nothing.

    Instructions (4.20) and Goals (4.121) are not requests for a service: they stay in the narrative.
    """
    if (statement.get("moodCode") or "").strip() not in PLANNED_MOODS or ccda.has_template(statement, *_NOT_REQUESTS):
        return []
    if ccda.local_name(statement) == "substanceAdministration":
        request = map_planned_medication(statement, ctx)
    else:
        request = map_planned_service(statement, ctx)
    return [Mapped(entry=request)] if request is not None else []


def map_planned_service(statement: etree._Element, ctx: EntryContext) -> ServiceRequest | None:
    """Map a Planned Act/Encounter/Procedure/Observation (4.39/4.40/4.41/4.44) or referral act to a ServiceRequest."""
    code = codeable_concept(ccda.first(statement, "hl7:code"), ctx.narrative)
    if code is None:
        return None
    point, span = ccda.effective(ccda.first(statement, "hl7:effectiveTime"))
    return ServiceRequest(
        id=ctx.new_id(),
        identifier=identifiers(statement) or None,
        status=_SERVICE_STATUS.get(ccda.attr(statement, "hl7:statusCode", "code") or "", "unknown"),
        intent="plan",
        priority=_PRIORITY.get(ccda.attr(statement, "hl7:priorityCode", "code") or ""),
        code=code,
        subject=ctx.subject,
        occurrenceDateTime=point,
        occurrencePeriod=span,
    )


def map_planned_medication(sa: etree._Element, ctx: EntryContext) -> MedicationRequest | None:
    """Map a Planned Medication Activity (2.16.840.1.113883.10.20.22.4.42) to a MedicationRequest (intent plan)."""
    medication = medication_code(sa, ctx)
    if medication is None:
        return None
    dosage = map_dosage(sa, ctx)
    return MedicationRequest(
        id=ctx.new_id(),
        identifier=identifiers(sa) or None,
        status=_MEDICATION_STATUS.get(ccda.attr(sa, "hl7:statusCode", "code") or "", "unknown"),
        intent="plan",
        medicationCodeableConcept=medication,
        subject=ctx.subject,
        dosageInstruction=[dosage] if dosage else None,
    )
