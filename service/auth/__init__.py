"""SMART on FHIR for the service: tenants, launches, server-side tokens, backend services, patient isolation.

``init_app(app)`` reads the tenants and keys (failing at startup when they are wrong) and installs the
patient-isolation check; ``client_auth(app)`` says which EHR a request talks to and with what credentials.
"""

import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, current_app
from requests.auth import AuthBase

from service.auth.api_tokens import ApiTokens, parse_api_clients
from service.auth.backend import BackendTokens
from service.auth.discovery import discover
from service.auth.keys import SigningKey, load_signing_key, public_jwks
from service.auth.scopes import backend_scopes
from service.auth.sessions import SessionTokens, current_launch
from service.auth.store import LaunchedSession, TokenStore
from service.auth.tenants import Tenant, load_tenants, normalize_iss
from service.auth.http import RenewingBearerAuth, StaticBearerAuth
from service.errors import ConfigurationError, Unauthorized

log = logging.getLogger(__name__)

EXTENSION = "second_opinion.auth"
API_AUTH_MODES = ("open", "session", "token")


@dataclass(frozen=True)
class ClientAuth:
    """Which EHR to talk to, and how to authenticate there (None: no Authorization header)."""

    base_url: str
    auth: AuthBase | None
    launched: LaunchedSession | None = None


class AuthState:
    """Everything auth keeps per app: tenants, keys, the token store, backend token caches."""

    def __init__(self, app: Flask, store: TokenStore) -> None:
        from service.ehr.connection import EXTENSION as EHR_SESSION

        self.config = app.config
        self.tenants: dict[str, Tenant] = load_tenants(app.config)
        self.store = store
        self.http = app.extensions[EHR_SESSION]  # the app's pool to the EHRs (discovery, token requests)
        self.timeout = float(app.config["FHIR_TIMEOUT"])
        self.keys: dict[str, SigningKey] = {}  # by tenant iss ("" for the app's own key files)
        self.extra_keys: list[SigningKey] = [load_signing_key(p.strip()) for p in _paths(app.config["JWT_KEY_FILES"])]
        for tenant in self.tenants.values():
            if tenant.private_key_file:
                self.keys[tenant.iss] = load_signing_key(tenant.private_key_file, kid=tenant.kid, alg=tenant.alg)
        self._backend: dict[str, BackendTokens] = {}
        self._backend_lock = threading.Lock()
        self.api_tokens = _api_tokens(app, store.engine)

    def tenant(self, iss: str | None) -> Tenant | None:
        return self.tenants.get(normalize_iss(iss)) if iss else None

    def jwks(self) -> dict:
        return public_jwks([*self.keys.values(), *self.extra_keys])

    def backend_tokens(self, tenant: Tenant) -> BackendTokens:
        """The backend-services token cache of a tenant (token URL discovered once)."""
        with self._backend_lock:
            tokens = self._backend.get(tenant.iss)
        if tokens is not None:
            return tokens
        token_url, v2 = tenant.token_url, tenant.scope_version == "v2"
        if token_url is None or tenant.scope_version == "auto":
            server = discover(self.http, tenant.iss, timeout=self.timeout)
            token_url, v2 = token_url or server.token_endpoint, v2 or server.permission_v2
        scope = tenant.backend_scopes or backend_scopes(v2=v2)
        tokens = BackendTokens(self.http, token_url, tenant.backend_client_id or tenant.client_id,
                               self.keys[tenant.iss], scope, timeout=self.timeout)
        with self._backend_lock:
            return self._backend.setdefault(tenant.iss, tokens)


def init_app(app: Flask) -> None:
    """Read tenants and keys, prepare the token store, and install patient isolation."""
    from service.auth import isolation
    from service.store.repository import get_repository

    if app.config["API_AUTH"] not in API_AUTH_MODES:
        raise ConfigurationError(f"SECOND_OPINION_API_AUTH must be one of {', '.join(API_AUTH_MODES)}")
    _ensure_secret_key(app)
    store = TokenStore(get_repository(app).engine, str(app.config["SECRET_KEY"]).encode("utf-8"))
    app.extensions[EXTENSION] = AuthState(app, store)
    isolation.init_app(app)


def get_auth(app: Flask | None = None) -> AuthState:
    state: AuthState = (app or current_app).extensions[EXTENSION]
    return state


def launched_user(app: Flask | None = None) -> str | None:
    """Who acts in this request (for transitions and audit): the launched session's fhirUser, or the API client
    ("client/<client_id>") that authenticated with an access token; None otherwise."""
    from service.auth.api_access import api_client_id

    launch = current_launch(get_auth(app).store)
    if launch is not None:
        return launch[1].fhir_user
    client_id = api_client_id()
    return f"client/{client_id}" if client_id else None


def client_auth(app: Flask, base_url: str | None = None) -> ClientAuth | None:
    """How to reach an EHR now: the launched session's own tokens, else the tenant's server-side credentials.

    None when no EHR is configured at all.
    """
    state = get_auth(app)
    launch = current_launch(state.store)
    if launch is not None and (base_url is None or normalize_iss(base_url) == launch[1].iss):
        session_id, launched = launch
        tokens = SessionTokens(state.store, session_id, launched, margin_s=float(app.config["TOKEN_REFRESH_MARGIN_S"]),
                               timeout=state.timeout)
        return ClientAuth(launched.iss, RenewingBearerAuth(tokens), launched)
    target = base_url or default_ehr(app)
    if not target:
        return None
    tenant = state.tenant(target) or Tenant(iss=normalize_iss(target))
    return ClientAuth(tenant.iss, _server_auth(state, tenant))


def default_ehr(app: Flask) -> str | None:
    """The EHR requests outside a launched session go to: FHIR_BASE_URL, else the only tenant (None: none)."""
    target = app.config.get("FHIR_BASE_URL")
    tenants = get_auth(app).tenants
    if not target and len(tenants) == 1:
        target = next(iter(tenants))
    return target or None


def _server_auth(state: AuthState, tenant: Tenant) -> AuthBase | None:
    """Credentials for requests outside a launched session (API callers, the write-back worker)."""
    if tenant.auth == "bearer" and tenant.token:
        return StaticBearerAuth(tenant.token)
    if tenant.auth == "backend" or (tenant.auth == "smart" and tenant.iss in state.keys):
        return RenewingBearerAuth(state.backend_tokens(tenant))
    if tenant.auth == "smart":
        raise Unauthorized(f"the EHR at {tenant.iss} needs a SMART launch: open the app from the patient's chart "
                           "(or configure backend-services keys for this tenant)")
    return None


def _api_tokens(app: Flask, engine) -> ApiTokens:  # noqa: ANN001 - the store's Engine
    """The token issuer and checker for server-to-server API callers (API_CLIENTS; checked at startup)."""
    from service.cds.auth import JwksCache
    from service.cds.hooks import build_ehr_session
    from service.cds.store import CdsStore

    clients, trusted = parse_api_clients(app.config.get("API_CLIENTS"))
    if app.config["API_AUTH"] == "token" and not clients:
        log.warning("API_AUTH=token but no API_CLIENTS: only launched sessions can use the API")
    return ApiTokens(engine, clients, trusted, keys=JwksCache(build_ehr_session(), ttl_s=300.0),
                     algorithms=app.config["API_JWT_ALGORITHMS"], leeway_s=float(app.config["CDS_JWT_LEEWAY_S"]),
                     lifetime_s=float(app.config["API_TOKEN_LIFETIME_S"]), remember_jti=CdsStore(engine).remember_jti)


def _ensure_secret_key(app: Flask) -> None:
    """SECRET_KEY from the environment, from the file SECRET_KEY_FILE names, or one kept in the instance folder."""
    if app.config.get("SECRET_KEY"):
        return
    path = app.config.get("SECRET_KEY_FILE")
    if path:
        try:
            app.config["SECRET_KEY"] = Path(path).read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read SECOND_OPINION_SECRET_KEY_FILE {path}: {exc.strerror}") from exc
        return
    generated = Path(app.instance_path) / "secret_key"
    try:
        fd = os.open(generated, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # made earlier, or by another worker just now
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    app.config["SECRET_KEY"] = generated.read_text("utf-8").strip()


def _paths(value: object) -> list[str]:
    if not value:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [p for p in str(value).replace(os.pathsep, ",").split(",") if p.strip()]
