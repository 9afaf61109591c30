"""The clinician app (where a SMART launch lands): the patient's referrals, drafting, minimum necessary, sending.

Every route needs a launched session. Routes name their patient (path ``patient_id``) or referral
(``referral_id``), so the patient-isolation hook keeps a session within its own patient; the landing page
(``/patient`` in service/api/launch.py) shows only the launched session's patient.
"""

import logging
from dataclasses import dataclass

from flask import Blueprint, Response, redirect, request, url_for
from markupsafe import Markup
from lxml import etree

from mappers.consult_form import Consultant
from mappers.narrative import Row, sanitize_div, summarise
from service import referrals
from service.auth import get_auth, launched_user
from service.auth.sessions import current_launch
from service.auth.store import LaunchedSession
from service.auth.tenants import normalize_iss
from service.ehr.connection import get_client
from service.errors import Conflict, ServiceError, Unauthorized
from service.intake import MAX_PATIENT_QUESTIONS, MAX_QUESTION_CHARS, ReferralInput
from service.consultants import configured_consultants, find_consultant
from service.store.repository import Referral, get_repository
from service.web.links import consultant_link
from service.web.packet_view import Item, packet_view, patient_display, read_packet
from service.web.pages import PATIENT_QUESTION_SUGGESTIONS, error_page, page

log = logging.getLogger(__name__)

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static/web")

REPLACED_REASON = "replaced by an updated draft"
MAX_EXCLUDED_LOOKUPS = 50
DEFAULT_PATIENT_QUESTIONS = 3  # the first suggestions come ticked


@bp.errorhandler(ServiceError)
def _service_error(exc: ServiceError) -> Response:
    return error_page(exc.status, exc.diagnostics, issue_code=exc.issue_code)


def require_launch() -> LaunchedSession:
    """The launched session of this browser (Unauthorized without one)."""
    launch = current_launch(get_auth().store)
    if launch is None:
        raise Unauthorized("There is no launched session in this browser; open the app from the patient's chart "
                           "in the EHR.")
    return launch[1]


def _actor() -> str:
    return launched_user() or "clinician"


# --- the landing page ---------------------------------------------------------------------------------------


def render_home() -> Response:
    """The launched patient's page: banner, their referrals, and the way to start one."""
    launched = require_launch()
    patient = get_client().read("Patient", launched.patient or "").model_dump(mode="json", exclude_none=True)
    return page("patient.html", launched=launched, banner=launched.need_patient_banner,
                patient=patient_display(patient), patient_id=launched.patient,
                referrals=patient_referrals(launched.patient or "", launched.iss))


def patient_referrals(patient_id: str, iss: str) -> list[Referral]:
    """This patient's referrals at this EHR, newest first (drafts replaced by a newer draft left out)."""
    return [r for r in get_repository().find_referrals(patient_id)
            if normalize_iss(r.ehr_base_url) == normalize_iss(iss)
            and not (r.status == "cancelled" and r.status_reason == REPLACED_REASON)]


# --- starting a referral ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestForm:
    """What the clinician asks, and of whom."""

    question: str
    patient_questions: list[str]
    consultant: Consultant | None
    errors: list[str]


def read_request_form() -> RequestForm:
    """The question, the patient's questions and the consultant from a posted form (errors listed)."""
    form = request.form
    errors = []
    question = form.get("question", "").strip()
    if not question:
        errors.append("Write the clinical question for the consultant.")
    elif len(question) > MAX_QUESTION_CHARS:
        errors.append(f"The clinical question is longer than {MAX_QUESTION_CHARS} characters.")
    asked = [q.strip() for q in form.getlist("patient_question") if q.strip()]
    asked += [line.strip() for line in form.get("other_questions", "").splitlines() if line.strip()]
    asked = list(dict.fromkeys(asked))
    if len(asked) > MAX_PATIENT_QUESTIONS or any(len(q) > MAX_QUESTION_CHARS for q in asked):
        errors.append(f"Up to {MAX_PATIENT_QUESTIONS} patient questions of up to {MAX_QUESTION_CHARS} characters.")
    consultant = find_consultant(form.get("consultant"))
    if consultant is None:
        errors.append("Choose the consultant.")
    return RequestForm(question, asked, consultant, errors)


@bp.get("/patient/<patient_id>/referrals/new")
def new_referral(patient_id: str) -> Response:
    """The form that starts a referral: question, the patient's questions, the consultant."""
    launched = require_launch()
    return _new_referral_page(launched, patient_id, status=200, values=None, errors=[])


def _new_referral_page(launched: LaunchedSession, patient_id: str, *, status: int, values: RequestForm | None,
                       errors: list[str]) -> Response:
    suggested = list(PATIENT_QUESTION_SUGGESTIONS)
    asked = values.patient_questions if values else suggested[:DEFAULT_PATIENT_QUESTIONS]
    return page("new_referral.html", status, patient_id=patient_id, launched=launched, errors=errors,
                question=values.question if values else "", suggestions=suggested, asked=asked,
                other_questions="\n".join(q for q in asked if q not in suggested),
                consultants=configured_consultants(),
                chosen=values.consultant.id if values and values.consultant else None)


@bp.post("/patient/<patient_id>/referrals")
def start_referral(patient_id: str) -> Response:
    """Fetch the record and build the draft packet (everything offered; the clinician unticks what is not needed)."""
    launched = require_launch()
    form = read_request_form()
    if form.errors:
        return _new_referral_page(launched, patient_id, status=400, values=form, errors=form.errors)
    data = ReferralInput(patient_id, form.question, form.patient_questions, [],
                         consultant=form.consultant.id if form.consultant else None)
    referral = referrals.create_referral(get_client(), get_repository(), data, actor=_actor())
    return redirect(url_for("web.referral_page", referral_id=referral.id), code=303, Response=Response)




# --- one referral: the draft to review, or what happened to it --------------------------------------------------


@bp.get("/referrals/<referral_id>")
def referral_page(referral_id: str) -> Response:
    """A draft to review and send, or a sent referral's status, timeline and consult."""
    launched = require_launch()
    referral = get_repository().get(referral_id)
    if referral.status == "draft":
        return _draft_page(launched, referral, status=200, values=None, errors=[])
    return _status_page(launched, referral)


def _draft_page(launched: LaunchedSession, referral: Referral, *, status: int, values: RequestForm | None,
                errors: list[str]) -> Response:
    view = packet_view(read_packet(referral.packet_json), excluded=_excluded_items(referral))
    suggested = list(PATIENT_QUESTION_SUGGESTIONS)
    asked = values.patient_questions if values else referral.patient_questions
    consultant = values.consultant if values else find_consultant(referral.consultant_id)
    gaps = [r for r in referral.readiness if r.get("status") != "ok"]
    left_out_documents = [i for s in view.sections if s.key == "reports" for i in s.items if not i.included]
    return page("draft.html", status, launched=launched, referral=referral, view=view, errors=errors,
                banner=launched.need_patient_banner, patient=patient_display(view.patient),
                question=values.question if values else referral.question, suggestions=suggested, asked=asked,
                other_questions="\n".join(q for q in asked if q not in suggested),
                consultants=configured_consultants(), chosen=consultant.id if consultant else None,
                readiness=referral.readiness, gaps=gaps, left_out_documents=left_out_documents)


def _excluded_items(referral: Referral) -> list[Item]:
    """The items the clinician left out, labelled from the EHR (their key alone when the EHR cannot say).

    One `_id` search per resource type reads them (the first MAX_EXCLUDED_LOOKUPS), not one read per item.
    """
    keys = [entry["reference"] if isinstance(entry, dict) else str(entry) for entry in referral.excluded]
    by_type: dict[str, list[str]] = {}
    for key in keys[:MAX_EXCLUDED_LOOKUPS]:
        resource_type, _, resource_id = key.partition("/")
        by_type.setdefault(resource_type, []).append(resource_id)
    rows: dict[str, Row] = {}
    client = get_client() if by_type else None
    for resource_type, ids in by_type.items():
        try:
            for resource in client.search(resource_type, {"_id": ",".join(ids), "_count": str(len(ids))}):
                rows[f"{resource.get_resource_type()}/{resource.id}"] = summarise(resource)
        except ServiceError as exc:
            log.info("left-out %s items not readable for their labels (%s)", resource_type, type(exc).__name__)
    return [Item(key, rows.get(key, Row(what=key)), included=False) for key in keys]


@bp.post("/referrals/<referral_id>")
def update_referral(referral_id: str) -> Response:
    """Apply the clinician's choices to a draft: re-check the record (a new draft), or send it."""
    launched = require_launch()
    repo = get_repository()
    referral = repo.get(referral_id)
    if referral.status != "draft":
        raise Conflict(f"this referral is {referral.status}; only a draft can be changed or sent")
    form = read_request_form()
    if form.errors:
        return _draft_page(launched, referral, status=400, values=form, errors=form.errors)
    offered = list(dict.fromkeys(request.form.getlist("item")))
    included = set(request.form.getlist("include"))
    exclude = [key for key in offered if key not in included]
    action = request.form.get("action", "refresh")
    consultant_id = form.consultant.id if form.consultant else None
    unchanged = (exclude == list(referral.exclude) and form.question == referral.question
                 and form.patient_questions == list(referral.patient_questions)
                 and consultant_id == referral.consultant_id)
    if action != "send" or not unchanged:
        data = ReferralInput(referral.patient_id, form.question, form.patient_questions, exclude,
                             consultant=consultant_id)
        replacement = referrals.create_referral(get_client(), repo, data, actor=_actor())
        repo.transition(referral_id, "cancelled", actor=_actor(), reason=REPLACED_REASON)
        referral = replacement
    if action == "send":
        referrals.send_referral(get_client(), repo, referral.id, actor=_actor())
    return redirect(url_for("web.referral_page", referral_id=referral.id), code=303, Response=Response)


def _status_page(launched: LaunchedSession, referral: Referral) -> Response:
    repo = get_repository()
    consult = repo.find_consult(referral.id)
    body = referrals.referral_json(referral, consult)
    view = packet_view(read_packet(referral.packet_json))
    consultant = find_consultant(referral.consultant_id)
    link = consultant_link(referral.id, consultant.id) if consultant and referral.sent_at else None
    return page("referral.html", launched=launched, referral=referral, body=body, view=view,
                banner=launched.need_patient_banner, patient=patient_display(view.patient),
                history=repo.history(referral.id), consultant=consultant, link=link,
                comparison=concordance_rows(view.conditions, body.get("concordance")),
                consult_sections=consult_sections(consult.document_json) if consult else [])


def concordance_rows(referred: list, concordance: dict | None) -> list[dict]:
    """What was sent beside what the consultant concluded: one row per referred diagnosis, then the new ones."""
    if not concordance:
        return []
    verdicts: dict[str, tuple[str, str]] = {}
    for item in concordance.get("confirmed", []):
        verdicts[item.get("condition") or ""] = ("confirmed", "Confirmed")
    for item in concordance.get("refuted", []):
        verdicts[item.get("condition") or ""] = ("refuted", "Refuted (not supported)")
    for item in concordance.get("revised", []):
        to = item.get("to") or {}
        verdicts[(item.get("from") or {}).get("condition") or ""] = ("revised", f"Revised to {to.get('display')}")
    rows = []
    for condition in referred:
        key = f"Condition/{condition.id}"
        verdict, text = verdicts.get(key, ("not-addressed", "Not addressed"))
        rows.append({"sent": summarise(condition).what, "verdict": verdict, "conclusion": text})
    for item in concordance.get("new", []):
        rows.append({"sent": "—", "verdict": "new", "conclusion": f"New: {item.get('display')}"})
    return rows


def consult_sections(document_json: str) -> list[dict]:
    """The consult's sections as (title, sanitised narrative) for display."""
    from fhir.resources.R4B.bundle import Bundle

    document = Bundle.model_validate_json(document_json)
    composition = document.entry[0].resource
    sections = []
    for section in getattr(composition, "section", None) or []:
        html = ""
        if section.text is not None and section.text.div:
            html = etree.tostring(sanitize_div(section.text.div), method="html", encoding="unicode")
        sections.append({"title": section.title or "Section", "html": Markup(html)})
    return sections

