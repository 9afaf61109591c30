"""REST API for referrals: create, read, packet, send, consult."""

from flask import Blueprint, current_app, request, url_for

from service import referrals, writeback
from service.api.responses import fhir_response, json_response
from service.ehr.connection import get_client
from service.errors import NotFound
from service.intake import parse_json_body, parse_referral_input
from service.store.repository import get_repository

bp = Blueprint("referrals", __name__, url_prefix="/api/referrals")


def _actor() -> str:
    """Who is acting (the authenticated user once SMART auth is in; the API caller until then)."""
    return "api"


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
    return json_response(_referral_body(referral.id), 201, {"Location": location})


@bp.get("/<referral_id>")
def get_referral(referral_id: str):
    """The referral: status, packet summary, write-back details."""
    return json_response(_referral_body(referral_id))


@bp.get("/<referral_id>/packet")
def get_packet(referral_id: str):
    """The referral packet: a FHIR document Bundle."""
    return fhir_response(get_repository().get(referral_id).packet_json)


@bp.post("/<referral_id>/send")
def send_referral(referral_id: str):
    """Freeze the packet and place the order in the EHR."""
    referrals.send_referral(get_client(), get_repository(), referral_id, actor=_actor())
    return json_response(_referral_body(referral_id))


@bp.post("/<referral_id>/consult")
def receive_consult(referral_id: str):
    """Accept the consultant's answer; it is stored, then written back to the EHR."""
    consult = referrals.receive_consult(get_repository(), referral_id, request.get_data(),
                                        request.headers.get("Content-Type"), actor=_actor())
    writeback.enqueue(current_app._get_current_object(), consult.id)
    location = url_for("referrals.get_referral", referral_id=referral_id, _external=True)
    return json_response(_referral_body(referral_id), 202, {"Location": location})


@bp.get("/<referral_id>/consult")
def get_consult(referral_id: str):
    """The consult document as we built it (a FHIR document Bundle)."""
    consult = get_repository().find_consult(referral_id)
    if consult is None:
        raise NotFound(f"referral {referral_id} has no consult yet")
    return fhir_response(consult.document_json)


@bp.get("/<referral_id>/history")
def get_history(referral_id: str):
    """Every status change of the referral: who, when, why."""
    history = get_repository().history(referral_id)
    return json_response([{"from": t.from_status, "to": t.to_status, "actor": t.actor, "reason": t.reason,
                           "at": referrals.iso(t.at)} for t in history])
