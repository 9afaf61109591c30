"""The EHR-side order: a BSeR-style ServiceRequest and its Task, and the Task's status moves."""

from datetime import datetime, timedelta

import pytest
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from mappers.ids import sequential_ids
from mappers.packet import ReferralRequest
from mappers.referral import build_service_request, build_task, task_with_status

REFERRAL_ID = "5b1f0d6e-3f7a-4c55-9d59-2a6f3f1f0a11"
PACKET_ID = Identifier(system="urn:ietf:rfc:3986", value="urn:uuid:00000000-0000-4000-8000-000000000001")
BSER = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"


def referral(**changes: object) -> ReferralRequest:
    """A referral request from Dr Ada to Dr Second."""
    fields: dict = {"referral_id": REFERRAL_ID, "question": "Is it lupus?", "patient_questions": ["Is it genetic?"],
                    "requester_display": "Dr Ada", "consultant_display": "Dr Second", **changes}
    return ReferralRequest(**fields)


def service_request(now: datetime, **changes: object) -> ServiceRequest:
    """The order for referral()."""
    return build_service_request("Patient/p1", referral(**changes), condition_refs=["Condition/c1", "Condition/c2"],
                                 packet_identifier=PACKET_ID, now=now, new_id=sequential_ids())


def draft_task(now: datetime) -> Task:
    """The draft Task for referral()."""
    return build_task("Patient/p1", "ServiceRequest/sr1", referral(), now=now, new_id=sequential_ids())


def test_service_request_is_a_draft_bser_referral_for_a_second_opinion(now: datetime) -> None:
    order = service_request(now)
    assert (order.status, order.intent, order.id) == ("draft", "order", None)
    assert order.identifier[0].model_dump(exclude_none=True) == {"system": "urn:ietf:rfc:3986",
                                                                 "value": f"urn:uuid:{REFERRAL_ID}"}
    assert order.code.coding[0].model_dump(exclude_none=True) == {
        "system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}
    [reason] = order.reasonCode
    assert reason.text == "Is it lupus?"
    assert reason.coding[0].model_dump(exclude_none=True) == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0336", "code": "S", "display": "Second Opinion"}
    assert [r.reference for r in order.reasonReference] == ["Condition/c1", "Condition/c2"]
    assert (order.subject.reference, order.authoredOn) == ("Patient/p1", now)
    assert order.requester.model_dump(exclude_none=True) == {"display": "Dr Ada"}
    assert [p.model_dump(exclude_none=True) for p in order.performer] == [{"display": "Dr Second"}]
    assert [n.text for n in order.note] == ["Is it genetic?"]


def test_service_request_points_at_the_packet_by_identifier_only(now: datetime) -> None:
    [info] = service_request(now).supportingInfo
    assert info.reference is None
    assert info.type == "Bundle" and info.identifier == PACKET_ID


def test_service_request_without_optional_parts_leaves_them_out(now: datetime) -> None:
    order = build_service_request("Patient/p1", referral(patient_questions=[], requester_display=None,
                                                         consultant_display=None),
                                  condition_refs=[], packet_identifier=PACKET_ID, now=now, new_id=sequential_ids())
    assert order.note is None and order.requester is None and order.performer is None
    assert order.reasonReference is None
    ServiceRequest.model_validate(order.model_dump())


def test_task_is_a_draft_fulfill_task_owned_by_the_consultant(now: datetime) -> None:
    task = draft_task(now)
    assert (task.status, task.intent, task.businessStatus) == ("draft", "order", None)
    assert task.code.coding[0].model_dump(exclude_none=True) == {
        "system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill",
        "display": "Fulfill the focal request"}
    assert task.focus.reference == "ServiceRequest/sr1" and task.for_fhir.reference == "Patient/p1"
    assert task.identifier[0].value == "urn:uuid:00000000-0000-4000-8000-000000000001"
    assert task.owner.display == "Dr Second" and task.authoredOn == now


@pytest.mark.parametrize(
    ("status", "code", "display"),
    [("requested", "2.0", "Service Request Created"), ("accepted", "3.0", "Service Request Accepted"),
     ("rejected", "4.0", "Service Request Declined"), ("in-progress", "5.1.1", "Service Request Event Scheduled"),
     ("failed", "6.0", "Service Request Fulfillment Cancelled"),
     ("cancelled", "6.0", "Service Request Fulfillment Cancelled"),
     ("completed", "7.0", "Service Request Fulfillment Completed")],
    ids=["requested", "accepted", "rejected", "in-progress", "failed", "cancelled", "completed"],
)
def test_each_status_gets_its_bser_business_status(now: datetime, status: str, code: str, display: str) -> None:
    moved = task_with_status(draft_task(now), status, now=now + timedelta(hours=1))
    assert moved.status == status and moved.lastModified == now + timedelta(hours=1)
    assert moved.businessStatus.coding[0].model_dump(exclude_none=True) == {"system": BSER, "code": code,
                                                                           "display": display}


def test_a_given_business_status_wins_over_the_default(now: datetime) -> None:
    moved = task_with_status(draft_task(now), "in-progress", now=now, business_status=("5.1.4", "Event Completed"))
    assert moved.businessStatus.coding[0].code == "5.1.4"


def test_completion_records_the_output_and_the_reason(now: datetime) -> None:
    started = task_with_status(draft_task(now), "in-progress", now=now)
    done = task_with_status(started, "completed", now=now + timedelta(days=2), reason="consult received",
                            output_ref="DocumentReference/d1")
    [output] = done.output
    assert output.type.text == "Consult note" and output.valueReference.reference == "DocumentReference/d1"
    assert done.statusReason.text == "consult received"
    assert (done.executionPeriod.start, done.executionPeriod.end) == (now, now + timedelta(days=2))
    Task.model_validate(done.model_dump())


def test_moving_a_task_leaves_the_original_unchanged(now: datetime) -> None:
    task = draft_task(now)
    task_with_status(task, "requested", now=now, reason="sent")
    assert task.status == "draft" and task.statusReason is None


def test_an_unknown_status_is_refused(now: datetime) -> None:
    with pytest.raises(ValueError, match="not a Task.status"):
        task_with_status(draft_task(now), "done", now=now)
