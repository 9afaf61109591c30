"""REST API for referrals: create, read, packet, send, consult, lifecycle actions, write-back retry, audit."""

import json
import re

from flask import Blueprint, Response, current_app, request, url_for

from service import consults, queue, referrals, writeback
from service.auth import launched_user
from service.api.responses import (
    RENDITION_FORMATS,
    fhir_format,
    fhir_response,
    html_response,
    json_response,
    pdf_response,
)
from service.ehr.connection import get_client
from service.errors import NotFound
from service.intake import parse_json_body, parse_referral_input
from service.lifecycle import ACTIONS, action_reason
from service.render import render_consult_html, render_packet_html, render_pdf
from service.store.repository import AuditEvent, get_repository, utcnow

bp = Blueprint("referrals", __name__, url_prefix="/api/referrals")


def _actor() -> str:
    """Who is acting: the launched clinician (their fhirUser), or "api" for a server-to-server caller."""
    return launched_user() or "api"


def _ehr_of(referral_id: str) -> str:
    """The FHIR base of the EHR a referral belongs to (NotFound for an unknown referral)."""
    return get_repository().get(referral_id).ehr_base_url


def _referral_body(referral_id: str) -> dict:
    repo = get_repository()
    referral = repo.get(referral_id)
    return referrals.referral_json(referral, repo.find_consult(referral_id), base=request.host_url.rstrip("/"))


@bp.post("")
def create_referral():
    """Draft a referral: fetch the patient's record and build the packet."""
    data = parse_referral_input(parse_json_body(request.get_data()))
    referral = referrals.create_referral(get_client(), get_repository(), data, actor=_actor())
    location = url_for("referrals.get_referral", referral_id=referral.id, _external=True)
    body = referrals.referral_json(referral, None, base=request.host_url.rstrip("/"))  # as stored; no consult yet
    return json_response(body, 201, {"Location": location})


@bp.get("/<referral_id>")
def get_referral(referral_id: str):
    """The referral: status, packet summary, write-back details."""
    return json_response(_referral_body(referral_id))


@bp.get("/<referral_id>/packet")
def get_packet(referral_id: str):
    """The referral packet: a FHIR document Bundle (FHIR JSON, or XML on request), or its HTML or PDF rendition."""
    fmt = fhir_format(renditions=True)  # 406 before anything is read
    referral = get_repository().get(referral_id)
    _audit_read(referral_id, "packet.read", f"Bundle?identifier={referral.packet_identifier}", fmt)
    if fmt in RENDITION_FORMATS:
        html = render_packet_html(json.loads(referral.packet_json), referral_id=referral_id)
        return _rendition(html, fmt, f"referral-{referral_id}-packet.pdf")
    return fhir_response(referral.packet_json, fmt=fmt)


@bp.post("/<referral_id>/send")
def send_referral(referral_id: str):
    """Freeze the packet and place the order in the EHR."""
    referrals.send_referral(get_client(), get_repository(), referral_id, actor=_actor())
    return json_response(_referral_body(referral_id))


@bp.post("/<referral_id>/consult")
def receive_consult(referral_id: str):
    """Accept the consultant's answer; it is stored, then written back to the EHR."""
    app = current_app._get_current_object()
    referrals.receive_consult(get_repository(), referral_id, request.get_data(), request.headers.get("Content-Type"),
                              actor=_actor(), profile=writeback.profile_for(app, _ehr_of(referral_id)))
    queue.enqueue_writeback(app, referral_id)  # the outbox rows are committed: durable even if this enqueue fails
    location = url_for("referrals.get_referral", referral_id=referral_id, _external=True)
    return json_response(_referral_body(referral_id), 202, {"Location": location})


@bp.get("/<referral_id>/consult")
def get_consult(referral_id: str):
    """The consult document as we built it (a FHIR document Bundle; FHIR JSON, or XML on request), or its HTML or
    PDF rendition (with the second opinion's conclusions against the packet)."""
    fmt = fhir_format(renditions=True)
    repo = get_repository()
    consult = repo.find_consult(referral_id)
    if consult is None:
        raise NotFound(f"referral {referral_id} has no consult yet")
    _audit_read(referral_id, "consult.read", f"consult/{consult.id}", fmt)
    if fmt in RENDITION_FORMATS:
        concordance = consults.concordance_of(consult.document_json, repo.get(referral_id).packet_json)
        html = render_consult_html(json.loads(consult.document_json), referral_id=referral_id,
                                   concordance=concordance)
        return _rendition(html, fmt, f"referral-{referral_id}-consult.pdf")
    return fhir_response(consult.document_json, fmt=fmt)


@bp.get("/<referral_id>/history")
def get_history(referral_id: str):
    """Every status change of the referral: who, when, why."""
    history = get_repository().history(referral_id)
    return json_response([{"from": t.from_status, "to": t.to_status, "actor": t.actor, "reason": t.reason,
                           "at": referrals.iso(t.at)} for t in history])


# -- lifecycle, write-back retry and audit (issue 6) ---------------------------------------------------------
@bp.post("/<referral_id>/<any(accept, reject, start, cancel):action>")
def change_status(referral_id: str, action: str):
    """Accept, reject (reason required), start or cancel (reason required) a referral; 409 if not allowed now."""
    reason = action_reason(action, parse_json_body(request.get_data()) if request.get_data() else None)
    app = current_app._get_current_object()
    profile = writeback.profile_for(app, _ehr_of(referral_id))
    get_repository().transition(referral_id, ACTIONS[action].target, actor=_actor(), reason=reason,
                                mirror_profile=profile.name if profile.task_writes else None)
    queue.enqueue_writeback(app, referral_id)  # the EHR's Task follows (where the profile writes Tasks)
    return json_response(_referral_body(referral_id))


@bp.post("/<referral_id>/retry")
def retry_writeback(referral_id: str):
    """Resume a failed write-back (failed → in-progress, with a fresh retry budget)."""
    queue.resume_writeback(current_app._get_current_object(), referral_id, actor=_actor())
    return json_response(_referral_body(referral_id), 202)


@bp.get("/<referral_id>/audit")
def get_audit(referral_id: str):
    """Who read the packet or consult, and every write to the EHR for this referral (ids and statuses only)."""
    return json_response([{"at": referrals.iso(e.at), "actor": e.actor, "action": e.action, "resource": e.resource,
                           "method": e.method, "status": e.http_status, "detail": e.detail}
                          for e in get_repository().audit(referral_id)])


def _audit_read(referral_id: str, action: str, resource: str, fmt: str = "json") -> None:
    """Record a read of the packet or consult; a rendition is noted as such (detail "as html" / "as pdf")."""
    detail = f"as {fmt}" if fmt in RENDITION_FORMATS else None
    get_repository().record_audit(AuditEvent(at=utcnow(), actor=_actor(), action=action, referral_id=referral_id,
                                             resource=resource, method="GET", http_status=200, detail=detail))


_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _rendition(html: str, fmt: str, filename: str) -> Response:
    """An HTML rendition as it is, or printed to PDF (Content-Disposition inline, filename made header-safe)."""
    if fmt == "pdf":
        return pdf_response(render_pdf(html), _FILENAME_UNSAFE.sub("_", filename))
    return html_response(html)
