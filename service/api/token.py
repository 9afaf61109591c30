"""``POST /auth/token``: access tokens for server-to-server API callers (SMART Backend Services, client_credentials).

Answers follow RFC 6749 §5.1 (``Cache-Control: no-store``) and §5.2 (``{"error", "error_description"}``, 400, or
401 for ``invalid_client``), as OAuth clients expect from a token endpoint; the token is never logged.
"""

import logging

from flask import Blueprint, Response, current_app, request

from service.api.responses import json_response
from service.auth import get_auth
from service.auth.api_tokens import TokenError
from service.auth.isolation import patient_independent

log = logging.getLogger(__name__)

bp = Blueprint("token", __name__)
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM_BYTES = 64 * 1024


@bp.post("/auth/token")
@patient_independent
def token() -> Response:
    """Exchange a signed client assertion for an access token to this service's API."""
    try:
        if (request.content_length or 0) > MAX_FORM_BYTES:
            raise TokenError("invalid_request", "the request is too large")
        if request.mimetype != "application/x-www-form-urlencoded":
            raise TokenError("invalid_request", "send the token request as application/x-www-form-urlencoded")
        answer = get_auth().api_tokens.issue(request.form.to_dict(), _token_url())
    except TokenError as exc:
        log.warning("token request refused: %s (%s)", exc.error, exc.description)
        headers = dict(NO_STORE)
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer error="invalid_client"'
        return json_response({"error": exc.error, "error_description": exc.description}, exc.status, headers)
    log.info("access token issued to an API client (scopes: %s)", answer["scope"])
    return json_response(answer, 200, NO_STORE)


def _token_url() -> str:
    """Our token URL as clients address it (the assertion's expected aud): PUBLIC_URL + path, else the request URL."""
    public = current_app.config.get("PUBLIC_URL")
    return public.rstrip("/") + request.path if public else request.base_url
