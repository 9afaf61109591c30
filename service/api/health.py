"""Liveness and readiness."""

from flask import Blueprint, current_app

from service.api.responses import json_response

bp = Blueprint("health", __name__)


@bp.get("/health")
def health():
    """The service is up; says which EHR it is pointed at."""
    return json_response({"status": "ok", "ehr": current_app.config.get("FHIR_BASE_URL")})
