"""SMART launch routes: /launch, /launch/standalone, /callback, /.well-known/jwks.json and the patient page
(the landing page of the clinician app in service/web)."""

import json

from flask import Blueprint, Response, redirect, request, url_for

from service.auth import get_auth
from service.auth.flows import finish_launch, start_launch
from service.auth.isolation import patient_independent
from service.errors import ServiceError
from service.web.pages import error_page

bp = Blueprint("launch", __name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

@bp.errorhandler(ServiceError)
def _error_page(exc: ServiceError) -> Response:
    """Browser routes answer errors with a readable page, never a 500 and never a token or code."""
    return error_page(exc.status, exc.diagnostics, title="The app could not start", force_html=True)


@bp.get("/launch")
@patient_independent
def launch() -> Response:
    """EHR launch: ``?iss=<FHIR base>&launch=<opaque>`` → the EHR's authorization endpoint."""
    url = start_launch(get_auth(), request.args.get("iss"), request.args.get("launch"), standalone=False)
    return redirect(url, code=302, Response=Response)


@bp.get("/launch/standalone")
@patient_independent
def launch_standalone() -> Response:
    """Standalone launch: ``?iss=<FHIR base>`` → the EHR's authorization endpoint (launch/patient)."""
    url = start_launch(get_auth(), request.args.get("iss"), None, standalone=True)
    return redirect(url, code=302, Response=Response)


@bp.get("/callback")
@patient_independent
def callback() -> Response:
    """The authorization server's redirect: check state, exchange the code, land on the patient's page."""
    finish_launch(get_auth(), request.args.to_dict())
    resp = redirect(url_for("launch.patient_page"), code=303, Response=Response)
    resp.headers.update(NO_STORE)
    return resp


@bp.get("/patient")
@patient_independent
def patient_page() -> Response:
    """The launched patient's page: the clinician app (service/web); needs a launched session."""
    from service.web.clinician import render_home

    return render_home()


@bp.get("/.well-known/jwks.json")
@patient_independent
def jwks() -> Response:
    """Our public keys (backend-services client assertions); private keys are never served."""
    return Response(json.dumps(get_auth().jwks()), content_type="application/json",
                    headers={"Cache-Control": "public, max-age=3600"})
