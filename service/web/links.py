"""Consultant links: one referral, one configured consultant, signed with the app's SECRET_KEY and expiring."""

from dataclasses import dataclass

from flask import current_app, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from mappers.consult_form import Consultant
from service.consultants import find_consultant
from service.errors import Forbidden

LINK_SALT = "second-opinion.consultant-link.v1"


@dataclass(frozen=True)
class ConsultantGrant:
    """What a valid link grants: this referral, for this consultant. Nothing else."""

    referral_id: str
    consultant: Consultant


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(str(current_app.config["SECRET_KEY"]), salt=LINK_SALT)


def sign_link_token(referral_id: str, consultant_id: str) -> str:
    """The token of a consultant link (it holds ids only, never patient data)."""
    return _serializer().dumps({"r": referral_id, "c": consultant_id})


def consultant_link(referral_id: str, consultant_id: str) -> str:
    """The consultant's URL for a referral (PUBLIC_URL when set, else this request's host)."""
    token = sign_link_token(referral_id, consultant_id)
    public = current_app.config.get("PUBLIC_URL")
    if public:
        return f"{str(public).rstrip('/')}{url_for('consultant.view', token=token)}"
    return url_for("consultant.view", token=token, _external=True)


def read_link_token(token: str) -> ConsultantGrant:
    """Check a link's signature, age and consultant; Forbidden (403) for anything wrong."""
    max_age = int(current_app.config["CONSULTANT_LINK_MAX_AGE_S"])
    try:
        data = _serializer().loads(token, max_age=max_age)
    except SignatureExpired as exc:
        raise Forbidden("This consultant link has expired. Ask the referring clinician for a new one.") from exc
    except BadSignature as exc:
        raise Forbidden("This consultant link is not valid (it may have been changed or cut short).") from exc
    if not isinstance(data, dict) or not isinstance(data.get("r"), str) or not isinstance(data.get("c"), str):
        raise Forbidden("This consultant link is not valid.")
    consultant = find_consultant(data["c"])
    if consultant is None:
        raise Forbidden("This consultant link names a consultant who is no longer configured.")
    return ConsultantGrant(referral_id=data["r"], consultant=consultant)
