"""Builds the EHR client from the app's configuration (one shared session per app)."""

from flask import Flask, current_app

from service.ehr.client import FhirClient, build_session
from service.errors import ServiceError

EXTENSION = "second_opinion.ehr"


class EhrNotConfigured(ServiceError):
    status = 503
    issue_code = "exception"


def init_app(app: Flask) -> None:
    """Create the app's HTTP session (connection pool) for the EHR."""
    app.extensions[EXTENSION] = build_session(max_retries=int(app.config["FHIR_MAX_RETRIES"]),
                                              backoff=float(app.config["FHIR_BACKOFF"]))


def get_client(app: Flask | None = None) -> FhirClient:
    """The client for the configured EHR."""
    app = app or current_app
    base_url = app.config.get("FHIR_BASE_URL")
    if not base_url:
        raise EhrNotConfigured("no EHR is configured: set SECOND_OPINION_FHIR_BASE_URL")
    token = app.config.get("FHIR_TOKEN")
    return FhirClient(base_url, app.extensions[EXTENSION], timeout=float(app.config["FHIR_TIMEOUT"]),
                      max_pages=int(app.config["FHIR_MAX_PAGES"]),
                      auth_header=f"Bearer {token}" if token else None)
