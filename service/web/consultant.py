"""The consultant's pages, reached by a signed, expiring, single-referral link: review, accept or decline, answer.

Each route is authorised by its link alone (``read_link_token``): it is patient-independent for the isolation hook,
sets no launch in the session and reaches only the referral inside the token. The consult goes through the same
intake and write-back as ``POST /api/referrals/<id>/consult``.
"""

import json
import logging
from datetime import UTC, datetime

from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.patient import Patient
from flask import Blueprint, Response, current_app, redirect, request, url_for
from markupsafe import Markup
from werkzeug.datastructures import MultiDict

from mappers.consult_form import ConsultForm, Diagnosis, Judgement, build_consult_form_bundle
from mappers.errors import MappingError
from mappers.ids import random_ids
from service import queue, referrals, writeback
from service.api.responses import fhir_response
from service.auth.isolation import patient_independent
from service.errors import Conflict, Forbidden, InvalidRequest, ServiceError, UnsupportedMediaType
from service.intake import CONSULT_TYPES
from service.lifecycle import ACTIONS, MAX_REASON_CHARS
from service.render import render_packet_html, render_pdf
from service.render.assets import STYLESHEET_URL
from service.store.repository import AuditEvent, Referral, get_repository, utcnow
from service.web.links import ConsultantGrant, read_link_token
from service.web.packet_view import PacketView, packet_view, patient_display, read_packet
from service.web.pages import error_page, page

log = logging.getLogger(__name__)

bp = Blueprint("consultant", __name__, url_prefix="/consult", template_folder="templates")

OPEN_FOR_CONSULT = ("requested", "accepted", "in-progress")
NEW_DIAGNOSIS_FIELDS = 3
UPLOAD_TYPES = {".json": "application/fhir+json", ".xml": "application/xml"}


@bp.errorhandler(ServiceError)
def _service_error(exc: ServiceError) -> Response:
    return error_page(exc.status, exc.diagnostics, issue_code=exc.issue_code, force_html=True)


@bp.errorhandler(MappingError)
def _mapping_error(exc: MappingError) -> Response:
    return error_page(exc.status, f"The consult could not be read: {exc.diagnostics}", force_html=True)


def _granted(token: str) -> tuple[ConsultantGrant, Referral]:
    """The link's referral, once the link is checked (403 for a bad, expired or unsent one)."""
    grant = read_link_token(token)
    referral = get_repository().get(grant.referral_id)
    if referral.sent_at is None:
        raise Forbidden("This referral has not been sent.")
    if referral.consultant_id is not None and referral.consultant_id != grant.consultant.id:
        raise Forbidden("This link is for another consultant than the one this referral asks.")
    return grant, referral


def _actor(grant: ConsultantGrant) -> str:
    return f"consultant/{grant.consultant.id}"


def _audit_read(grant: ConsultantGrant, referral: Referral, what: str) -> None:
    get_repository().record_audit(AuditEvent(at=utcnow(), actor=_actor(grant), action="packet.read",
                                             referral_id=referral.id, resource=what, method="GET",
                                             http_status=200, detail="consultant link"))


@bp.get("/<token>")
@patient_independent
def view(token: str) -> Response:
    """The packet as a readable document, the actions open now, and the consult form."""
    grant, referral = _granted(token)
    _audit_read(grant, referral, f"Bundle?identifier={referral.packet_identifier}")
    return _consult_page(token, grant, referral, status=200, values=MultiDict(), errors=[])


def _consult_page(token: str, grant: ConsultantGrant, referral: Referral, *, status: int, values: MultiDict,
                  errors: list[str]) -> Response:
    packet = read_packet(referral.packet_json)
    view_ = packet_view(packet)
    consult = get_repository().find_consult(referral.id)
    questions = [referral.question, *referral.patient_questions]
    return page("consultant.html", status, token=token, grant=grant, referral=referral, view=view_,
                patient=patient_display(view_.patient), packet_html=_packet_html(referral),
                render_stylesheet=STYLESHEET_URL,
                consult=consult, questions=questions, errors=errors, values=values,
                can_accept=referral.status == "requested",
                can_consult=referral.status in OPEN_FOR_CONSULT and consult is None,
                new_fields=range(NEW_DIAGNOSIS_FIELDS), reason_max=MAX_REASON_CHARS)


def _packet_html(referral: Referral) -> Markup:
    """The packet as the renderer draws it (its text escaped there: service/render)."""
    return Markup(render_packet_html(json.loads(referral.packet_json), referral_id=referral.id, fragment=True))


# --- downloads ---------------------------------------------------------------------------------------------


def _download_name(referral: Referral, ext: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="referral-{referral.id}.{ext}"'}


@bp.get("/<token>/packet.json")
@patient_independent
def packet_json(token: str) -> Response:
    """The packet as FHIR JSON."""
    return _packet_download(token, "json")


@bp.get("/<token>/packet.xml")
@patient_independent
def packet_xml(token: str) -> Response:
    """The packet as FHIR XML."""
    return _packet_download(token, "xml")


def _packet_download(token: str, fmt: str) -> Response:
    grant, referral = _granted(token)
    _audit_read(grant, referral, f"Bundle?identifier={referral.packet_identifier}")
    return fhir_response(referral.packet_json, headers=_download_name(referral, fmt), fmt=fmt)


@bp.get("/<token>/packet.pdf")
@patient_independent
def packet_pdf(token: str) -> Response:
    """The packet as PDF (service.render)."""
    grant, referral = _granted(token)
    html = render_packet_html(json.loads(referral.packet_json), referral_id=referral.id)
    _audit_read(grant, referral, f"Bundle?identifier={referral.packet_identifier}")
    return Response(render_pdf(html), content_type="application/pdf",
                    headers={**_download_name(referral, "pdf"), "Cache-Control": "no-store"})


# --- accept, decline ---------------------------------------------------------------------------------------


def _move(grant: ConsultantGrant, referral: Referral, action: str, reason: str) -> None:
    """One lifecycle move, as the API's change_status makes it (the EHR's Task follows)."""
    app = current_app._get_current_object()
    profile = writeback.profile_for(app, referral.ehr_base_url)
    get_repository().transition(referral.id, ACTIONS[action].target, actor=_actor(grant), reason=reason,
                                mirror_profile=profile.name if profile.task_writes else None)
    queue.enqueue_writeback(app, referral.id)


@bp.post("/<token>/accept")
@patient_independent
def accept(token: str) -> Response:
    grant, referral = _granted(token)
    _move(grant, referral, "accept", ACTIONS["accept"].default_reason)
    return redirect(url_for("consultant.view", token=token), code=303, Response=Response)


@bp.post("/<token>/decline")
@patient_independent
def decline(token: str) -> Response:
    grant, referral = _granted(token)
    reason = request.form.get("reason", "").strip()
    if not reason or len(reason) > MAX_REASON_CHARS:
        return _consult_page(token, grant, referral, status=400, values=request.form,
                             errors=[f"Say why you decline (up to {MAX_REASON_CHARS} characters)."])
    _move(grant, referral, "reject", reason)
    return redirect(url_for("consultant.view", token=token), code=303, Response=Response)


# --- the consult -------------------------------------------------------------------------------------------


def read_consult_form(view_: PacketView, questions: list[str]) -> tuple[ConsultForm, list[str]]:
    """The consult form's answers as a ConsultForm, and what is wrong with them."""
    form = request.form
    errors = []
    judgements = []
    for index, condition in enumerate(view_.conditions):
        verdict = form.get(f"verdict-{index}", "")
        if verdict not in ("confirm", "revise", "refute"):
            continue
        revised = None
        if verdict == "revise":
            revised = diagnosis_from_text(form.get(f"revised-{index}", ""), view_.code_options)
            if revised is None:
                errors.append(f"Name the revised diagnosis for item {index + 1} (choose a code or type it).")
                continue
        judgements.append(Judgement(condition=condition, verdict=verdict, revised_to=revised))
    new = [d for d in (diagnosis_from_text(t, view_.code_options) for t in form.getlist("new_diagnosis")) if d]
    consult = ConsultForm(
        judgements=judgements, new_diagnoses=new, recommendation=form.get("recommendation", "").strip(),
        alternatives=[a.strip() for a in form.get("alternatives", "").splitlines() if a.strip()],
        answers=[(q, form.get(f"answer-{i}", "").strip()) for i, q in enumerate(questions)],
        assessment=form.get("assessment", "").strip())
    if not errors and not (judgements or new or consult.assessment or consult.recommendation
                           or any(a for _, a in consult.answers)):
        errors.append("The consult is empty: give at least a verdict, an assessment or an answer.")
    return consult, errors


def diagnosis_from_text(text: str, options: dict[str, dict]) -> Diagnosis | None:
    """A diagnosis typed or chosen in the search box: coded when it is one of the packet's codes."""
    text = text.strip()
    if not text:
        return None
    coding = options.get(text)
    if coding is not None:
        concept = Coding.model_validate(coding)
        return Diagnosis(text=concept.display or text, coding=concept)
    return Diagnosis(text=text)


@bp.post("/<token>/consult")
@patient_independent
def submit_consult(token: str) -> Response:
    """The consult form → a FHIR consult document → the intake and write-back the API uses."""
    grant, referral = _granted(token)
    _check_open(referral)
    view_ = packet_view(read_packet(referral.packet_json))
    form, errors = read_consult_form(view_, [referral.question, *referral.patient_questions])
    if errors:
        return _consult_page(token, grant, referral, status=400, values=request.form,
                             errors=errors)
    patient = view_.patient or Patient()
    bundle = build_consult_form_bundle(form, patient=patient, consultant=grant.consultant,
                                       now=datetime.now(UTC), new_id=random_ids())
    _receive(grant, referral, bundle.model_dump_json(exclude_none=True).encode("utf-8"), "application/fhir+json")
    return redirect(url_for("consultant.view", token=token), code=303, Response=Response)


@bp.post("/<token>/upload")
@patient_independent
def upload_consult(token: str) -> Response:
    """A consult written elsewhere: a C-CDA document or a FHIR consult (JSON or XML)."""
    grant, referral = _granted(token)
    _check_open(referral)
    upload = request.files.get("consult_file")
    if upload is None or not upload.filename:
        raise InvalidRequest("Choose the consult file to upload.")
    name = upload.filename.lower()
    content_type = next((t for ext, t in UPLOAD_TYPES.items() if name.endswith(ext)), upload.mimetype)
    if content_type not in CONSULT_TYPES:
        raise UnsupportedMediaType("Upload a C-CDA document (.xml) or a FHIR consult (.json or .xml).")
    _receive(grant, referral, upload.read(), content_type)
    return redirect(url_for("consultant.view", token=token), code=303, Response=Response)


def _check_open(referral: Referral) -> None:
    if referral.status not in OPEN_FOR_CONSULT:
        raise Conflict(f"This referral is {referral.status}; it takes no consult now.")


def _receive(grant: ConsultantGrant, referral: Referral, body: bytes, content_type: str) -> None:
    """Store the consult with its write-back, then start the write-back (as the API does)."""
    app = current_app._get_current_object()
    referrals.receive_consult(get_repository(), referral.id, body, content_type, actor=_actor(grant),
                              profile=writeback.profile_for(app, referral.ehr_base_url))
    queue.enqueue_writeback(app, referral.id)
    log.info("consult received through the consultant's page for referral %s", referral.id)
