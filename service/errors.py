"""One exception tree; every error leaves the API as a FHIR OperationOutcome."""

import json
import logging

from fhir.resources.R4B.operationoutcome import OperationOutcome
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from mappers.errors import MappingError

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"


class ServiceError(Exception):
    """Base for errors reported to callers as an OperationOutcome."""

    status = 500
    issue_code = "exception"
    severity = "error"

    def __init__(self, diagnostics: str, *, upstream: dict | None = None, upstream_status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.upstream = upstream  # the EHR's own OperationOutcome (JSON), kept verbatim
        self.upstream_status = upstream_status  # the EHR's HTTP status, when the EHR answered
        self.retry_after = retry_after  # seconds the EHR asked us to wait (its Retry-After), when it said

    @property
    def transient(self) -> bool:
        """True when repeating the same request later may succeed (EHR down, throttled, timed out)."""
        return self.upstream_status is None or self.upstream_status in (408, 429) or self.upstream_status >= 500


class InvalidRequest(ServiceError):
    status = 400
    issue_code = "invalid"


class Unauthorized(ServiceError):
    status = 401
    issue_code = "login"


class Forbidden(ServiceError):
    status = 403
    issue_code = "forbidden"


class NotFound(ServiceError):
    status = 404
    issue_code = "not-found"


class Conflict(ServiceError):
    status = 409
    issue_code = "conflict"


class PayloadTooLarge(ServiceError):
    status = 413
    issue_code = "too-costly"


class UnsupportedMediaType(ServiceError):
    status = 415
    issue_code = "not-supported"


class UpstreamError(ServiceError):
    """The EHR answered with an error or something that is not FHIR."""

    status = 502
    issue_code = "exception"


class UpstreamTimeout(ServiceError):
    """The EHR did not answer in time (or could not be reached)."""

    status = 504
    issue_code = "timeout"


class ConfigurationError(Exception):
    """The service is not configured to run; raised at startup, never per request."""


def operation_outcome(status: int, issue_code: str, diagnostics: str, *, severity: str = "error",
                      upstream: dict | None = None) -> dict:
    """Build an OperationOutcome (as JSON) for one problem, keeping an upstream outcome's issues."""
    issues = [{"severity": severity, "code": issue_code, "diagnostics": diagnostics}]
    for issue in (upstream or {}).get("issue", []) if isinstance(upstream, dict) else []:
        if isinstance(issue, dict) and issue.get("severity") and issue.get("code"):
            issues.append({k: issue[k] for k in ("severity", "code", "diagnostics", "details") if k in issue})
    outcome = OperationOutcome.model_validate({"resourceType": "OperationOutcome", "issue": issues})
    return outcome.model_dump(mode="json", exclude_none=True)


def outcome_response(status: int, issue_code: str, diagnostics: str, *, upstream: dict | None = None,
                     headers: dict | None = None) -> Response:
    """A Flask response carrying one OperationOutcome."""
    body = json.dumps(operation_outcome(status, issue_code, diagnostics, upstream=upstream))
    resp = Response(body, status=status, content_type=FHIR_JSON)
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def register_error_handlers(app: Flask) -> None:
    """Turn every error, ours or Werkzeug's, into an OperationOutcome response."""

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        level = logging.WARNING if exc.status < 500 else logging.ERROR
        log.log(level, "%s %s: %s", exc.status, type(exc).__name__, exc.diagnostics)
        challenge = {"WWW-Authenticate": 'Bearer realm="second-opinion"'} if exc.status == 401 else None  # rfc6750 §3
        return outcome_response(exc.status, exc.issue_code, exc.diagnostics, upstream=exc.upstream,
                                headers=challenge)

    @app.errorhandler(MappingError)
    def _mapping_error(exc: MappingError) -> Response:
        log.warning("%s mapping error: %s", exc.status, exc.diagnostics)
        return outcome_response(exc.status, exc.issue_code, exc.diagnostics)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        issue = {404: "not-found", 405: "not-supported", 413: "too-costly", 415: "not-supported"}.get(
            code, "invalid" if code < 500 else "exception")
        resp = outcome_response(code, issue, exc.description or exc.name)
        if code == 405 and getattr(exc, "valid_methods", None):
            resp.headers["Allow"] = ", ".join(exc.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:  # the one boundary where a bare Exception is caught
        log.exception("unexpected error (%s)", type(exc).__name__)
        return outcome_response(500, "exception", "Internal error; see the service log for the request.")
