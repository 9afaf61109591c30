"""Orchestration of a referral: fetch → packet → send → consult intake (the write-back is in writeback.py)."""

import json
import logging
import uuid
from datetime import UTC, datetime

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.task import Task

from mappers import systems
from mappers.consult_context import ConsultContext
from mappers.docref import build_document_reference, render_consult_xhtml
from mappers.errors import MappingError
from mappers.ids import random_ids
from mappers.packet import ReferralRequest, build_referral_bundle
from mappers.referral import task_with_status
from mappers.selection import history_before
from mappers.validation import check_document_json
from service.consultants import display as consultant_display, require_consultant
from service.ehr.client import FhirClient, WriteResult
from service.ehr.fetch import fetch_patient
from service.errors import Conflict
from service import consults
from service.intake import ReferralInput
from service.lifecycle import BUSINESS_STATUS, check_transition
from service.store.repository import AuditEvent, Consult, Referral, ReferralRepository, utcnow
from service.writeback_profiles import DEFAULT_PROFILE, PROFILES, WritebackProfile, shape_document_reference

log = logging.getLogger(__name__)


def to_json(resource) -> str:  # noqa: ANN001 - any R4B model
    """Serialise an R4B model as compact FHIR JSON."""
    return resource.model_dump_json(exclude_none=True)


def identifier_query(identifier: Identifier) -> str:
    """The search that finds a resource by its business identifier (for If-None-Exist)."""
    return f"identifier={identifier.system}|{identifier.value}"


def create_referral(client: FhirClient, repo: ReferralRepository, data: ReferralInput, *, actor: str) -> Referral:
    """Fetch the patient's record, build the draft packet and store the referral as draft.

    The packet carries the EHR's resources as the EHR sent them (their JSON, references rewritten).
    """
    consultant = require_consultant(data.consultant)  # 400 for an unknown consultant, before any EHR work
    fetched = fetch_patient(client, data.patient)
    record = fetched.record
    referral_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    history = [k for k in history_before(record, data.since) if k not in data.exclude] if data.since else []
    request = ReferralRequest(referral_id=referral_id, question=data.question,
                              patient_questions=data.patient_questions, exclude=data.exclude + history,
                              consultant_display=consultant_display(consultant) if consultant else None)
    packet = build_referral_bundle(record, request, now=now, new_id=random_ids(), sources=fetched.sources,
                                   references=fetched.references, rows=fetched.rows)
    warnings = list(record.warnings) + [f"reference kept as display only: {ref}" for ref in packet.dropped_references]
    del fetched, record  # the packet holds what it needs: let the models go before the JSON is written
    problems = check_document_json(packet.document)
    if problems:  # our own mapper's bug, not the caller's: never store or send an invalid document
        raise MappingError(f"the packet failed the document checks: {problems[0]}", status=500, issue_code="exception")
    referral = Referral(
        id=referral_id, patient_id=data.patient, ehr_base_url=client.base_url, status="draft",
        question=data.question, patient_questions=data.patient_questions, exclude=data.exclude,
        excluded=[{"reference": key, "reason": f"dated before {data.since.isoformat()}" if key in history
                   else "left out by the clinician"} for key in packet.excluded],
        warnings=warnings, readiness=[item.as_dict() for item in packet.readiness],
        since=data.since.isoformat() if data.since else None, counts=packet.counts,
        packet_identifier=packet.identifier, packet_json=packet.json,
        service_request_json=to_json(packet.service_request), task_json=to_json(packet.task),
        ehr_service_request=None, ehr_task=None, created_at=now, updated_at=now, sent_at=None,
        consultant_id=consultant.id if consultant else None)
    log.info("referral %s drafted for Patient/%s: %s", referral_id, data.patient, packet.counts)
    return repo.add(referral, actor=actor)


def send_referral(client: FhirClient, repo: ReferralRepository, referral_id: str, *, actor: str) -> Referral:
    """Freeze the packet and place the order: ServiceRequest and Task in the EHR, then status requested.

    Both creates are conditional on our identifiers, so a repeated send after a failure creates nothing twice.
    """
    referral = repo.get(referral_id)
    check_transition(referral.status, "requested")
    service_request = ServiceRequest.model_validate_json(referral.service_request_json)
    service_request.status = "active"
    sr_result = client.create(service_request, if_none_exist=identifier_query(service_request.identifier[0]))
    _audit_write(repo, referral_id, actor, sr_result)
    service_request.id = sr_result.location.split("/", 1)[1]

    task = Task.model_validate_json(referral.task_json)
    task.focus = {"reference": sr_result.location}
    task = task_with_status(task, "requested", now=datetime.now(UTC),
                            business_status=BUSINESS_STATUS["requested"])
    task_result = client.create(task, if_none_exist=identifier_query(task.identifier[0]))
    _audit_write(repo, referral_id, actor, task_result)
    task.id = task_result.location.split("/", 1)[1]
    log.info("referral %s placed as %s and %s", referral_id, sr_result.location, task_result.location)
    return repo.transition(referral_id, "requested", actor=actor, reason="packet sent",
                           sent_at=utcnow(), ehr_service_request=sr_result.location, ehr_task=task_result.location,
                           service_request_json=to_json(service_request), task_json=to_json(task))


def _audit_write(repo: ReferralRepository, referral_id: str, actor: str, result: WriteResult) -> None:
    """Record one write to the EHR in the referral's audit trail (resource and status only)."""
    repo.record_audit(AuditEvent(at=utcnow(), actor=actor, action="ehr.write", referral_id=referral_id,
                                 resource=result.location, method="POST", http_status=result.status,
                                 detail="created" if result.created else "already there (conditional create)"))


def consult_context(referral: Referral, packet: Bundle | None = None) -> ConsultContext:
    """What the consult mappers need from a stored referral and its frozen packet."""
    packet = packet or Bundle.model_validate_json(referral.packet_json)
    patient = next(e.resource for e in packet.entry if isinstance(e.resource, Patient))
    conditions = [e for e in packet.entry if isinstance(e.resource, Condition)]
    service_request = ServiceRequest.model_validate_json(referral.service_request_json)
    return ConsultContext(referral_id=referral.id, patient=patient,
                          service_request_identifier=service_request.identifier[0],
                          service_request_ref=referral.ehr_service_request,
                          referred_conditions=[e.resource for e in conditions],
                          questions=[referral.question, *referral.patient_questions],
                          ehr_base_url=referral.ehr_base_url,
                          referred_full_urls={f"Condition/{e.resource.id}": e.fullUrl for e in conditions
                                              if e.resource.id and e.fullUrl})


def receive_consult(repo: ReferralRepository, referral_id: str, body: bytes, content_type: str | None,
                    *, actor: str, profile: WritebackProfile = PROFILES[DEFAULT_PROFILE]) -> Consult:
    """Turn a consultant's answer into our consult document and DocumentReference, and store its write-back.

    The DocumentReference is shaped for the EHR's write-back profile now, so what is stored is what is sent.
    """
    referral = repo.get(referral_id)
    if referral.status != "in-progress":  # a consultant who pressed "start" is already in-progress
        check_transition(referral.status, "in-progress")
    if repo.find_consult(referral_id) is not None:
        raise Conflict(f"referral {referral_id} already has a consult")
    now = datetime.now(UTC)
    consult_id = str(uuid.uuid4())
    packet = Bundle.model_validate_json(referral.packet_json)
    document = consults.build_consult_document(body, content_type, consult_context(referral, packet), packet,
                                               now=now, new_id=random_ids()).bundle  # FHIR JSON/XML or C-CDA
    document_json = to_json(document).encode("utf-8")
    docref = build_document_reference(
        document, document_json, patient_ref=f"Patient/{referral.patient_id}",
        service_request_ref=referral.ehr_service_request,
        identifier=Identifier(system=systems.URN_IETF_RFC_3986, value=f"urn:uuid:{consult_id}"),
        now=now, xhtml=render_consult_xhtml(document))
    docref = shape_document_reference(docref, profile, now=now)
    consult = Consult(id=consult_id, referral_id=referral_id, received_at=now, content_type=content_type or "",
                      source=body.decode("utf-8", errors="replace"), document_json=document_json.decode("utf-8"),
                      document_reference_json=to_json(docref), status="pending", last_error=None, attempts=0)
    stored = repo.add_consult(consult, list(profile.consult_steps), actor=actor, profile=profile.name)
    log.info("consult %s received for referral %s (%d entries)", consult_id, referral_id, len(document.entry or []))
    return stored


def referral_json(referral: Referral, consult: Consult | None, *, base: str = "") -> dict:
    """The referral as the REST API shows it."""
    body: dict = {
        "id": referral.id, "status": referral.status, "status_reason": referral.status_reason,
        "patient": f"Patient/{referral.patient_id}",
        "ehr": referral.ehr_base_url, "consultant": referral.consultant_id, "question": referral.question,
        "patient_questions": referral.patient_questions,
        "created": iso(referral.created_at), "updated": iso(referral.updated_at), "sent": iso(referral.sent_at),
        "packet": {"identifier": referral.packet_identifier, "url": f"{base}/api/referrals/{referral.id}/packet",
                   "counts": referral.counts, "frozen": referral.sent_at is not None},
        "since": referral.since, "excluded": referral.excluded, "readiness": referral.readiness,
        "warnings": referral.warnings,
        "service_request": referral.ehr_service_request, "task": referral.ehr_task,
    }
    if consult is not None:
        body["consult"] = {"id": consult.id, "received": iso(consult.received_at), "status": consult.status,
                           "content_type": consult.content_type, "url": f"{base}/api/referrals/{referral.id}/consult"}
        body["concordance"] = consults.concordance_of(consult.document_json, referral.packet_json)
        body["writeback"] = {
            "status": consult.status, "profile": consult.profile, "attempts": consult.attempts,
            "last_error": consult.last_error, "last_attempt": iso(consult.last_attempt_at),
            "next_attempt": iso(consult.next_attempt_at),
            "steps": [{"step": s.step, "status": s.status, "location": s.location, "done": iso(s.done_at)}
                      for s in consult.steps],
            **{s.step: s.location for s in consult.steps if s.location},
        }
    return body


def iso(value: datetime | None) -> str | None:
    """An ISO 8601 instant in UTC (SQLite hands back naive datetimes that are UTC)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def packet_json(referral: Referral) -> dict:
    return json.loads(referral.packet_json)
