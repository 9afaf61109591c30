"""The browser flows: EHR launch and standalone launch (authorization code + PKCE S256), and the callback."""

import logging
import secrets
import time

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session, OAuthError
from flask import session, url_for

from service.auth import AuthState
from service.auth.discovery import discover
from service.auth.scopes import launch_scopes
from service.auth.sessions import SESSION_KEY
from service.auth.store import LaunchedSession, PendingLaunch, digest
from service.auth.tenants import Tenant
from service.errors import ServiceError

log = logging.getLogger(__name__)

PENDING_LAUNCH_S = 600  # a clinician has ten minutes between the launch and the callback
AUTH_ERRORS = {  # what the authorization server's error means for the clinician
    "invalid_scope": "the EHR did not accept the permissions (scopes) this app asks for; ask your EHR "
                     "administrator to check the app's registration",
    "access_denied": "access was not granted",
    "unauthorized_client": "the EHR does not allow this app (check its client id and registration)",
    "invalid_client": "the EHR does not know this app (check its client id and registration)",
}


class LaunchError(ServiceError):
    """A launch that cannot go on; shown to the clinician as a page (never with a token or code in it)."""

    issue_code = "login"

    def __init__(self, status: int, diagnostics: str) -> None:
        super().__init__(diagnostics)
        self.status = status


def redirect_uri(state: AuthState) -> str:
    public = state.config.get("PUBLIC_URL")
    return f"{public.rstrip('/')}/callback" if public else url_for("launch.callback", _external=True)


def start_launch(state: AuthState, iss: str | None, launch: str | None, *, standalone: bool) -> str:
    """Begin a launch; return the authorization URL to send the browser to."""
    if not iss:
        raise LaunchError(400, "The launch has no iss (the EHR's FHIR base URL); start the app from the EHR.")
    tenant = state.tenant(iss)
    if tenant is None:
        raise LaunchError(400, f"This service is not set up for the EHR at {iss}; ask your administrator to add it "
                               "as a tenant (SECOND_OPINION_TENANTS).")
    if not standalone and not launch:
        raise LaunchError(400, "The EHR launch has no launch parameter; start the app from a patient's chart.")
    server = discover(state.http, tenant.iss, timeout=state.timeout)
    if not server.authorization_endpoint:
        raise LaunchError(502, f"The EHR at {tenant.iss} publishes no authorization endpoint.")
    scope = tenant.scopes or launch_scopes(v2=_v2(tenant, server.permission_v2), standalone=standalone,
                                           access=tenant.access)
    browser_id = session.get(SESSION_KEY)
    if not isinstance(browser_id, str) or not browser_id:
        browser_id = session[SESSION_KEY] = secrets.token_urlsafe(32)
    oauth_state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(64)
    callback = redirect_uri(state)
    state.store.add_pending(oauth_state, PendingLaunch(
        browser_hash=digest(browser_id), iss=tenant.iss, kind="standalone" if standalone else "ehr",
        redirect_uri=callback, token_endpoint=server.token_endpoint, verifier=verifier,
        expires_at=time.time() + PENDING_LAUNCH_S))
    extra = {} if standalone else {"launch": launch}
    with OAuth2Session(client_id=tenant.client_id, redirect_uri=callback, scope=scope,
                       code_challenge_method="S256") as oauth:
        url, _ = oauth.create_authorization_url(server.authorization_endpoint, state=oauth_state,
                                                code_verifier=verifier, aud=tenant.iss, **extra)
    log.info("%s launch started for %s (scopes %s)", "standalone" if standalone else "EHR", tenant.iss,
             "v2" if _v2(tenant, server.permission_v2) else "v1")
    return url


def finish_launch(state: AuthState, args: dict[str, str]) -> LaunchedSession:
    """Check the callback, exchange the code (with the PKCE verifier) and keep the tokens server-side."""
    oauth_state = args.get("state")
    if args.get("error"):
        if oauth_state:
            state.store.pop_pending(oauth_state)
        error = args["error"]
        meaning = AUTH_ERRORS.get(error, "the EHR refused the authorization request")
        detail = (args.get("error_description") or "")[:200]
        raise LaunchError(403 if error == "access_denied" else 400,
                          f"The launch failed: {meaning} ({error}{': ' + detail if detail else ''}).")
    code = args.get("code")
    if not oauth_state or not code:
        raise LaunchError(400, "The callback has no state or code; please launch the app again from the EHR.")
    pending = state.store.pop_pending(oauth_state)
    if pending is None:
        raise LaunchError(400, "This launch is unknown, already used or expired (state does not match); "
                               "please launch the app again from the EHR.")
    browser_id = session.get(SESSION_KEY)
    if not isinstance(browser_id, str) or digest(browser_id) != pending.browser_hash:
        raise LaunchError(400, "This launch was started in another browser session; please launch the app again "
                               "from the EHR.")
    tenant = state.tenant(pending.iss)
    if tenant is None:
        raise LaunchError(400, "The EHR of this launch is no longer configured.")
    token = _exchange_code(state, tenant, pending, code)
    launched = _launched_session(state, tenant, pending, token)
    new_id = secrets.token_urlsafe(32)
    state.store.add_session(new_id, launched)
    if state.store.find_session(browser_id) is not None:
        state.store.end_session(browser_id)  # a new launch in this browser replaces the old one
    session.clear()
    session[SESSION_KEY] = new_id  # a fresh id after login (no session fixation)
    log.info("%s launch completed for %s", pending.kind, pending.iss)
    return launched


def _exchange_code(state: AuthState, tenant: Tenant, pending: PendingLaunch, code: str) -> dict:
    with OAuth2Session(client_id=tenant.client_id, redirect_uri=pending.redirect_uri,
                       token_endpoint_auth_method="none", default_timeout=state.timeout) as oauth:
        try:
            token = oauth.fetch_token(pending.token_endpoint, grant_type="authorization_code", code=code,
                                      code_verifier=pending.verifier)
        except OAuthError as exc:
            log.warning("the EHR refused to exchange an authorization code: %s", exc.error)
            detail = (exc.description or "")[:200]
            raise LaunchError(400, f"The EHR did not issue a token ({exc.error}{': ' + detail if detail else ''}); "
                                   "please launch the app again from the EHR.") from None
        except (requests.RequestException, ValueError) as exc:
            raise LaunchError(502, f"The EHR's token endpoint could not be used ({type(exc).__name__}); "
                                   "please try again.") from None
    if not isinstance(token.get("access_token"), str) or str(token.get("token_type", "")).lower() != "bearer":
        raise LaunchError(502, "The EHR's token response has no bearer access token.")
    return dict(token)


def _launched_session(state: AuthState, tenant: Tenant, pending: PendingLaunch, token: dict) -> LaunchedSession:
    patient = token.get("patient")
    if not isinstance(patient, str) or not patient:
        raise LaunchError(400, "The EHR gave no patient context; open the app from a patient's chart "
                               "(or pick a patient in a standalone launch).")
    now = time.time()
    fhir_context = token.get("fhirContext") if isinstance(token.get("fhirContext"), list) else []
    encounter = token.get("encounter") if isinstance(token.get("encounter"), str) else None
    return LaunchedSession(
        iss=tenant.iss, client_id=tenant.client_id, token_endpoint=pending.token_endpoint, patient=patient,
        encounter=encounter, fhir_user=_fhir_user(token, tenant.client_id),
        need_patient_banner=token.get("need_patient_banner") is not False, fhir_context=fhir_context,
        scope=str(token.get("scope") or ""), access_token=token["access_token"],
        refresh_token=token.get("refresh_token") if isinstance(token.get("refresh_token"), str) else None,
        access_expires_at=now + float(token.get("expires_in") or 3600),
        expires_at=now + float(state.config["LAUNCH_SESSION_LIFETIME_S"]))


def _fhir_user(token: dict, client_id: str) -> str | None:
    """fhirUser from the id_token (received straight from the token endpoint over the TLS connection we opened,
    so OpenID Connect Core 3.1.3.7 lets TLS stand in for the signature); its aud and exp are checked."""
    id_token = token.get("id_token")
    if not isinstance(id_token, str):
        return token.get("fhirUser") if isinstance(token.get("fhirUser"), str) else None
    try:
        claims = jwt.decode(id_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise LaunchError(502, "The EHR's id_token is not a valid JWT.") from None
    audience = claims.get("aud")
    if client_id not in (audience if isinstance(audience, list) else [audience]):
        raise LaunchError(502, "The EHR's id_token was not issued to this app (aud).")
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] < time.time() - 60:
        raise LaunchError(502, "The EHR's id_token has expired.")
    user = claims.get("fhirUser") or claims.get("profile")
    return user if isinstance(user, str) else None


def _v2(tenant: Tenant, advertised: bool) -> bool:
    return tenant.scope_version == "v2" or (tenant.scope_version == "auto" and advertised)
