"""The EHR-side order of a referral: a BSeR-style ServiceRequest and the Task that tracks it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task, TaskOutput

from mappers import systems
from mappers.ids import IdFactory

if TYPE_CHECKING:  # packet.py imports this module; the dataclass is only needed for type hints here
    from mappers.packet import ReferralRequest

TASK_STATUSES = frozenset({"draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
                           "in-progress", "on-hold", "failed", "completed", "entered-in-error"})
_ENDED = frozenset({"rejected", "cancelled", "failed", "completed", "entered-in-error"})
CONSULT_OUTPUT_TYPE = "Consult note"


def build_service_request(
    patient_ref: str,
    request: ReferralRequest,
    *,
    condition_refs: list[str],
    packet_identifier: Identifier,
    now: datetime,
    new_id: IdFactory,
) -> ServiceRequest:
    """A draft BSeR-style referral order for a second opinion, pointing at the packet by identifier.

    It has no `id`: the EHR assigns one on create (FHIR http.html#create; HAPI before 6.x even refuses a POST
    body with an id, HAPI-0365). Its business identifier urn:uuid:<referral id> keeps the conditional create
    idempotent. `new_id` is not needed here and is kept for the uniform mapper signature.
    """
    return ServiceRequest(
        identifier=[referral_identifier(request.referral_id)],
        status="draft",
        intent="order",
        code=_concept(systems.SNOMED, systems.SNOMED_PATIENT_REFERRAL, systems.SNOMED_PATIENT_REFERRAL_DISPLAY),
        subject=Reference(reference=patient_ref),
        authoredOn=now,
        requester=_display_only(request.requester_display),
        performer=_listed(_display_only(request.consultant_display)),
        reasonCode=[_second_opinion_reason(request.question)],
        reasonReference=[Reference(reference=ref) for ref in condition_refs] or None,
        supportingInfo=[Reference(type="Bundle", identifier=packet_identifier.model_copy(deep=True))],
        note=[Annotation(text=q, authorString="Patient") for q in request.patient_questions] or None,
    )


def build_task(
    patient_ref: str,
    service_request_ref: str,
    request: ReferralRequest,
    *,
    now: datetime,
    new_id: IdFactory,
) -> Task:
    """A draft Task (code fulfill) whose focus is the referral order and whose owner is the consultant."""
    return Task(
        identifier=[Identifier(system=systems.URN_IETF_RFC_3986, value=f"urn:uuid:{new_id()}")],
        status="draft",
        intent="order",
        code=_concept(systems.TASK_CODE_SYSTEM, *systems.TASK_CODE_FULFILL),
        focus=Reference(reference=service_request_ref),
        for_fhir=Reference(reference=patient_ref),
        authoredOn=now,
        lastModified=now,
        requester=_display_only(request.requester_display),
        owner=_display_only(request.consultant_display),
        description="Second-opinion referral",
    )


def task_with_status(
    task: Task,
    status: str,
    *,
    now: datetime,
    business_status: tuple[str, str] | None = None,
    reason: str | None = None,
    output_ref: str | None = None,
) -> Task:
    """A copy of the Task moved to a new status, with its BSeR businessStatus, reason and output.

    Without business_status the BSeR code of DESIGN.md's life table is used (none for draft). The reason
    describes the new status only, so an earlier statusReason is not carried over. executionPeriod starts at
    the first move to in-progress and ends when the Task reaches a final state.
    """
    if status not in TASK_STATUSES:
        raise ValueError(f"{status!r} is not a Task.status code")
    moved = task.model_copy(deep=True)
    moved.status = status
    moved.lastModified = now
    code = business_status or systems.BSER_BUSINESS_STATUS_FOR_TASK_STATUS.get(status)
    moved.businessStatus = _concept(systems.BSER_BUSINESS_STATUS, *code) if code else None
    moved.statusReason = CodeableConcept(text=reason) if reason else None
    moved.executionPeriod = _execution_period(moved.executionPeriod, status, now)
    if output_ref:
        moved.output = [TaskOutput(type=CodeableConcept(text=CONSULT_OUTPUT_TYPE),
                                   valueReference=Reference(reference=output_ref))]
    return moved


def referral_identifier(referral_id: str) -> Identifier:
    """The ServiceRequest's business identifier for one referral."""
    return Identifier(system=systems.URN_IETF_RFC_3986, value=f"urn:uuid:{referral_id}")


def _execution_period(period: Period | None, status: str, now: datetime) -> Period | None:
    """Start the execution period on in-progress, end it on a final status."""
    if status == "in-progress" and (period is None or period.start is None):
        return Period(start=now)
    if status in _ENDED and period is not None and period.start is not None and period.end is None:
        return Period(start=period.start, end=now)
    return period


def _second_opinion_reason(question: str) -> CodeableConcept:
    """reasonCode: HL7 v2 table 0336 "S" (Second Opinion), with the clinical question as its text."""
    coding = Coding(system=systems.V2_0336, code=systems.V2_0336_SECOND_OPINION,
                    display=systems.V2_0336_SECOND_OPINION_DISPLAY)
    return CodeableConcept(coding=[coding], text=question)


def _concept(system: str, code: str, display: str) -> CodeableConcept:
    """A CodeableConcept with one coding."""
    return CodeableConcept(coding=[Coding(system=system, code=code, display=display)])


def _display_only(display: str | None) -> Reference | None:
    """A Reference that names someone without pointing at a resource."""
    return Reference(display=display) if display else None


def _listed(reference: Reference | None) -> list[Reference] | None:
    """A one-element list, or None."""
    return [reference] if reference is not None else None
