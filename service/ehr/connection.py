"""Builds the EHR client from the app's configuration (one shared session per app)."""

from flask import Flask, current_app

from service.ehr.client import FhirClient, build_session
from service.errors import ConfigurationError, ServiceError

EXTENSION = "second_opinion.ehr"


class EhrNotConfigured(ServiceError):
    status = 503
    issue_code = "exception"


def init_app(app: Flask) -> None:
    """Check the fetch settings and create the app's HTTP session (connection pool) for the EHR."""
    from service.ehr.everything import EVERYTHING_MODES

    if app.config["FHIR_EVERYTHING"] not in EVERYTHING_MODES:
        raise ConfigurationError(f"SECOND_OPINION_FHIR_EVERYTHING must be one of {', '.join(EVERYTHING_MODES)}")
    app.extensions[EXTENSION] = build_session(max_retries=int(app.config["FHIR_MAX_RETRIES"]),
                                              backoff=float(app.config["FHIR_BACKOFF"]))


def get_client(app: Flask | None = None, *, base_url: str | None = None) -> FhirClient:
    """The client for the EHR of this request: a launched session's EHR with its tokens, else the configured one
    (or ``base_url``'s tenant) with the service's own credentials (none, static bearer, backend services)."""
    from service.auth import client_auth
    from service.auth.http import session_with_auth

    app = app or current_app
    target = client_auth(app, base_url)
    if target is None:
        raise EhrNotConfigured("no EHR is configured: set SECOND_OPINION_FHIR_BASE_URL")
    shared = app.extensions[EXTENSION]
    session = shared if target.auth is None else session_with_auth(shared, target.auth)
    return FhirClient(target.base_url, session, timeout=float(app.config["FHIR_TIMEOUT"]),
                      max_pages=int(app.config["FHIR_MAX_PAGES"]))
