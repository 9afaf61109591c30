"""Problems section (2.16.840.1.113883.10.20.22.2.5/.5.1): Problem Concern Act → Condition(s)."""

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.condition import Condition
from lxml import etree

from mappers import systems
from mappers.ccda import ccda
from mappers.ccda.context import EntryContext, Mapped
from mappers.ccda.datatypes import codeable_concept, identifiers
from mappers.oids import OID_PROBLEM_CONCERN_ACT, OID_PROBLEM_OBSERVATION, OID_PROBLEM_STATUS

CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
PROBLEM_LIST_ITEM = "problem-list-item"
ENCOUNTER_DIAGNOSIS = "encounter-diagnosis"

# Problem Status value set (2.16.840.1.113883.3.88.12.80.68) and the older R1.1 values → FHIR condition-clinical.
_STATUS_VALUE = {"55561003": "active", "73425007": "inactive", "413322009": "resolved", "90734009": "active",
                 "7087005": "active", "255227004": "recurrence", "277022003": "remission"}
_RULED_OUT = "410516002"  # SNOMED "Ruled out" (R1.1 problem status) → verificationStatus refuted
_ACTIVE_LIKE = {"active", "recurrence", "relapse"}


def map_problem_entry(entry: etree._Element, ctx: EntryContext,
                      category: str = PROBLEM_LIST_ITEM) -> list[Mapped]:
    """Map one section entry: a Problem Concern Act, or a bare Problem Observation."""
    results: list[Condition] = []
    for act in ccda.each(entry, "hl7:act"):
        if ccda.has_template(act, OID_PROBLEM_CONCERN_ACT):
            results.extend(map_problem_act(act, ctx, category))
    for obs in ccda.with_template(entry, "hl7:observation", OID_PROBLEM_OBSERVATION):
        condition = map_problem_observation(obs, ctx, None, category)
        if condition is not None:
            results.append(condition)
    return [Mapped(entry=c) for c in results]


def map_problem_act(act: etree._Element, ctx: EntryContext, category: str = PROBLEM_LIST_ITEM) -> list[Condition]:
    """Map a Problem Concern Act (2.16.840.1.113883.10.20.22.4.3) to one Condition per Problem Observation."""
    concern_status = ccda.attr(act, "hl7:statusCode", "code")
    observations = ccda.with_template(act, "hl7:entryRelationship/hl7:observation", OID_PROBLEM_OBSERVATION)
    if not observations:  # some vendors omit the observation's templateId
        observations = ccda.each(act, "hl7:entryRelationship[@typeCode='SUBJ']/hl7:observation")
    conditions = [map_problem_observation(obs, ctx, concern_status, category) for obs in observations]
    return [c for c in conditions if c is not None]


def map_problem_observation(obs: etree._Element, ctx: EntryContext, concern_status: str | None,
                            category: str = PROBLEM_LIST_ITEM) -> Condition | None:
    """Map a Problem Observation (2.16.840.1.113883.10.20.22.4.4) to a Condition.

    clinicalStatus: the Problem Status observation if present, else the concern act's statusCode (completed →
    resolved when the observation has effectiveTime/high, else inactive), else active; an abatement date forces
    a non-active status (FHIR con-4). negationInd="true" → verificationStatus refuted (C-CDA on FHIR, Problems).
    """
    code = codeable_concept(ccda.first(obs, "hl7:value"), ctx.narrative)
    if code is None:
        ctx.warn(f"problem observation ({OID_PROBLEM_OBSERVATION}) without a problem code or text: skipped")
        return None
    onset, abatement = _onset_and_abatement(obs)
    status_value = ccda.attr(_status_observation(obs), "hl7:value", "code")
    clinical = _clinical_status(status_value, concern_status, abatement)
    if abatement and clinical in _ACTIVE_LIKE:
        ctx.warn("problem with a resolution date but an active status: clinicalStatus set to resolved (con-4)")
        clinical = "resolved"
    refuted = (obs.get("negationInd") or "").strip().lower() == "true" or status_value == _RULED_OUT
    return Condition(
        id=ctx.new_id(),
        identifier=identifiers(obs) or None,
        clinicalStatus=concept(systems.CONDITION_CLINICAL, clinical),
        verificationStatus=concept(systems.CONDITION_VER_STATUS, "refuted") if refuted else None,
        category=[concept(CONDITION_CATEGORY, category)],
        code=code,
        subject=ctx.subject,
        onsetDateTime=onset,
        abatementDateTime=abatement,
        recordedDate=ccda.ts(obs, "hl7:author/hl7:time"),
    )


def _onset_and_abatement(obs: etree._Element) -> tuple[str | None, str | None]:
    """Return the onset (low or @value) and abatement (high) of a problem observation."""
    time = ccda.first(obs, "hl7:effectiveTime")
    onset = ccda.ts(time, "hl7:low") or ccda.ts(time)
    abatement = ccda.ts(time, "hl7:high")
    if onset and abatement and ccda.inverted(onset, abatement):
        abatement = None
    return onset, abatement


def _status_observation(obs: etree._Element) -> etree._Element | None:
    """Return the Problem Status observation (4.6) of a problem observation, if any."""
    found = ccda.with_template(obs, "hl7:entryRelationship/hl7:observation", OID_PROBLEM_STATUS)
    return found[0] if found else None


def _clinical_status(status_value: str | None, concern_status: str | None, abatement: str | None) -> str:
    """Choose the condition-clinical code from the status observation, the concern status and abatement."""
    if status_value in _STATUS_VALUE:
        return _STATUS_VALUE[status_value]
    if concern_status == "active":
        return "active"
    if concern_status in ("completed", "aborted", "suspended"):
        return "resolved" if abatement else "inactive"
    return "resolved" if abatement else "active"


def concept(system: str, code: str) -> CodeableConcept:
    """Return a one-coding CodeableConcept."""
    return CodeableConcept(coding=[Coding(system=system, code=code)])
