"""Patient isolation: in a launched session, every request must stay within the launch's patient (and encounter).

One ``before_request`` hook for the whole app, deny by default: a route in a launched session must name the
session's patient (path ``patient``/``patient_id``, query ``patient``, JSON body ``patient``) or a referral of
that patient at that EHR (path ``referral_id``), or be marked patient-independent. So a new route cannot slip
through: until it names its patient or is marked, a launched session gets 403 from it.
"""

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, current_app, request

from service.errors import Forbidden, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])

PATIENT_INDEPENDENT = "_patient_independent"
PATIENT_ARGS = ("patient", "patient_id")
REFERRAL_ARGS = ("referral_id",)
ENCOUNTER_ARGS = ("encounter", "encounter_id")
INDEPENDENT_ENDPOINTS = frozenset({"static", "health.health"})


def patient_independent(view: F) -> F:
    """Mark a view that touches no patient's data (or only the launched session's own patient)."""
    setattr(view, PATIENT_INDEPENDENT, True)
    return view


def init_app(app: Flask) -> None:
    app.before_request(enforce_patient_isolation)


def is_independent(endpoint: str | None) -> bool:
    if endpoint is None or endpoint in INDEPENDENT_ENDPOINTS:
        return True
    view = current_app.view_functions.get(endpoint)
    return bool(getattr(view, PATIENT_INDEPENDENT, False))


def enforce_patient_isolation() -> None:
    """Refuse (403) anything in a launched session that names another patient, encounter or referral."""
    from service.auth import get_auth
    from service.auth.sessions import current_launch

    if is_independent(request.endpoint):
        return
    launch = current_launch(get_auth().store)
    if launch is None:
        mode = current_app.config["API_AUTH"]
        if mode == "session":
            raise Unauthorized("this API needs a launched session: open the app from the patient's chart in the EHR")
        if mode == "token":
            from service.auth.api_access import require_api_token

            require_api_token()  # a server-to-server caller, within its granted scopes
        return  # open API (the default): callers act with the service's own EHR credentials and scopes
    launched = launch[1]
    patients, encounters, referrals = _named(request.view_args or {})
    if not patients and not referrals:
        raise Forbidden("this route names no patient or referral, so it is not available in a launched session "
                        "(a launch is bound to one patient)")
    for patient in patients:
        if patient != launched.patient:
            raise Forbidden("this session was launched for another patient; launch the app from this patient's chart")
    for encounter in encounters:
        if launched.encounter and encounter != launched.encounter:
            raise Forbidden("this session was launched for another encounter")
    for referral_id in referrals:
        _check_referral(referral_id, launched.patient, launched.iss)


def _check_referral(referral_id: str, patient: str | None, iss: str) -> None:
    from service.auth.tenants import normalize_iss
    from service.store.repository import get_repository

    referral = get_repository().get(referral_id)  # NotFound (404) for an unknown referral
    if referral.patient_id != patient or normalize_iss(referral.ehr_base_url) != iss:
        raise Forbidden("this referral belongs to another patient than the one this session was launched for")


def _named(view_args: dict[str, Any]) -> tuple[set[str], set[str], set[str]]:
    """The patients, encounters and referrals a request names: path, query, and a JSON body's top level."""
    patients = {_reference_id(view_args[k]) for k in PATIENT_ARGS if k in view_args}
    encounters = {_reference_id(view_args[k]) for k in ENCOUNTER_ARGS if k in view_args}
    referrals = {str(view_args[k]) for k in REFERRAL_ARGS if k in view_args}
    patients |= {_reference_id(v) for k in PATIENT_ARGS for v in request.args.getlist(k)}
    encounters |= {_reference_id(v) for k in ENCOUNTER_ARGS for v in request.args.getlist(k)}
    referrals |= set(request.args.getlist("referral"))
    body = request.get_json(silent=True) if request.is_json else None
    if isinstance(body, dict):
        patients |= {_reference_id(body[k]) for k in PATIENT_ARGS if k in body}
        encounters |= {_reference_id(body[k]) for k in ENCOUNTER_ARGS if k in body}
        if isinstance(body.get("referral"), str):
            referrals.add(body["referral"])
    return patients, encounters, referrals


def _reference_id(value: Any) -> str:
    """``x``, ``Patient/x``, ``https://ehr/fhir/Patient/x`` or ``{"reference": ...}`` → ``x``."""
    if isinstance(value, dict):
        value = value.get("reference", "")
    text = str(value).strip()
    path = urlsplit(text).path if "://" in text else text
    parts = [p for p in path.split("/") if p]
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    return parts[-1] if parts else text
