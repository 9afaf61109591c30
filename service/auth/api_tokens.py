"""Access tokens for server-to-server API callers: SMART Backend Services with this service as the authorization server.

With ``SECOND_OPINION_API_AUTH=token``, an EHR or integration engine calling ``/api`` without a launched session
needs ``Authorization: Bearer <token>``, a token it gets from ``POST /auth/token`` exactly as a SMART backend
service gets one from an EHR (hl7.org/fhir/smart-app-launch/backend-services.html):

- ``grant_type=client_credentials``,
  ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``,
  ``client_assertion=<JWT>`` signed by the client (RS384 or ES384, ``kid`` in the header; ``iss`` = ``sub`` = its
  client_id, ``aud`` = our token URL, ``exp`` at most five minutes ahead, a ``jti`` never used before),
  ``scope=<space-separated system/ scopes>``;
- the client is registered in ``SECOND_OPINION_API_CLIENTS``: a JSON array of
  ``{"client_id", "jwks" | "jwks_url", "scopes": [...], "fhir_servers": [...]}`` — public keys only; ``scopes``
  is what the client may ever be granted, ``fhir_servers`` (optional) the EHRs whose referrals it may touch;
- the answer is ``{"access_token", "token_type": "bearer", "expires_in", "scope"}`` with the granted scopes
  (each requested scope must be within a registered one; RFC 6749 §5.2 errors otherwise).

Tokens are opaque random strings; the database keeps only their SHA-256, the client and the scopes, so the table
alone lets nobody call the API. The assertion checks are the CDS Hooks client checks (service/cds/auth.py) with
SMART's extra rules; a jti is accepted once (the same seen-JWT table, keyed by client_id).
"""

import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select

from service.auth.scopes import covers, parse_scope
from service.auth.store import api_tokens, digest
from service.auth.tenants import normalize_iss
from service.cds.auth import (ClientVerifier, JwksCache, TrustedClient, check_algorithms, load_json_setting,
                              parse_clients)
from service.errors import ConfigurationError, Unauthorized

SETTING = "SECOND_OPINION_API_CLIENTS"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_CLAIMS = ["iss", "sub", "aud", "exp", "jti"]  # SMART Backend Services: iat is optional
MAX_ASSERTION_LIFETIME_S = 300  # "exp ... no more than five minutes in the future"
NO_API_CLIENTS = ("no API clients are registered: set SECOND_OPINION_API_CLIENTS to a JSON array of "
                  '{"client_id": ..., "jwks_url": ... (or "jwks": {...}), "scopes": [...]}')


@dataclass(frozen=True)
class ApiClient:
    """A registered server-to-server caller."""

    client_id: str
    scopes: tuple[str, ...]
    fhir_servers: tuple[str, ...] = ()  # empty: any EHR the service talks to

    def allows_ehr(self, base_url: str) -> bool:
        return not self.fhir_servers or normalize_iss(base_url) in self.fhir_servers


@dataclass(frozen=True)
class ApiGrant:
    """What a valid access token lets its bearer do."""

    client: ApiClient
    scopes: tuple[str, ...]


class TokenError(Exception):
    """An RFC 6749 §5.2 error answer from the token endpoint."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def parse_api_clients(value: object) -> tuple[list[ApiClient], list[TrustedClient]]:
    """Read API_CLIENTS; ConfigurationError on any problem (at startup)."""
    items = load_json_setting(value, SETTING)
    scopes_of: list[tuple[str, ...]] = []
    keyed: list[dict] = []
    for index, item in enumerate(items):
        where = f"{SETTING}[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("client_id"), str) or not item["client_id"]:
            raise ConfigurationError(f"{where} must be an object with a non-empty 'client_id'")
        scopes = item.get("scopes")
        if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) and parse_scope(s)
                                                                  for s in scopes):
            raise ConfigurationError(f"{where}.scopes must list SMART system scopes, e.g. system/ServiceRequest.rs")
        keyed.append({"iss": item["client_id"], **{k: v for k, v in item.items() if k not in ("client_id", "scopes")}})
        scopes_of.append(tuple(scopes))
    trusted = parse_clients(keyed, SETTING)  # the key and URL checks, as for CDS clients
    clients = [ApiClient(client_id=t.iss, scopes=scopes, fhir_servers=tuple(normalize_iss(s) for s in t.fhir_servers))
               for t, scopes in zip(trusted, scopes_of)]
    return clients, trusted


class ApiTokens:
    """Issues access tokens against client assertions and checks them on API calls."""

    def __init__(self, engine: Engine, clients: list[ApiClient], trusted: list[TrustedClient], *, keys: JwksCache,
                 algorithms: list[str], leeway_s: float, lifetime_s: float,
                 remember_jti) -> None:  # noqa: ANN001 - (iss, jti, exp) -> bool
        self.engine = engine
        self.clients = {c.client_id: c for c in clients}
        self.lifetime_s = lifetime_s
        self._verifier = ClientVerifier(trusted, algorithms=check_algorithms(algorithms), leeway_s=leeway_s,
                                        keys=keys, remember_jti=remember_jti, who="API client",
                                        unconfigured=NO_API_CLIENTS)

    def issue(self, form: dict[str, str], token_url: str) -> dict:
        """Answer a token request (the form fields); TokenError says what is wrong."""
        if form.get("grant_type") != "client_credentials":
            raise TokenError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE or not form.get("client_assertion"):
            raise TokenError("invalid_client", f"a client_assertion of type {CLIENT_ASSERTION_TYPE} is required", 401)
        try:
            verified = self._verifier.verify_jwt(form["client_assertion"], [token_url], required=ASSERTION_CLAIMS,
                                                 subject_is_issuer=True, max_lifetime_s=MAX_ASSERTION_LIFETIME_S)
        except Unauthorized as exc:
            raise TokenError("invalid_client", exc.diagnostics, 401) from exc
        client = self.clients[verified.iss]
        requested = (form.get("scope") or "").split()
        if not requested:
            raise TokenError("invalid_scope", "scope is required (space-separated system/ scopes)")
        refused = [s for s in requested if not parse_scope(s) or not any(covers(g, s) for g in client.scopes)]
        if refused:
            raise TokenError("invalid_scope", f"not granted to this client: {' '.join(refused)[:200]}")
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(delete(api_tokens).where(api_tokens.c.expires_at < now))
            conn.execute(insert(api_tokens).values(token_hash=digest(token), client_id=client.client_id,
                                                   scope=" ".join(requested), expires_at=now + self.lifetime_s))
        return {"access_token": token, "token_type": "bearer", "expires_in": int(self.lifetime_s),
                "scope": " ".join(requested)}

    def check(self, authorization: str | None) -> ApiGrant:
        """The grant behind ``Authorization: Bearer <token>``; Unauthorized when missing, unknown or expired."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("this API needs a launched session or an access token from POST /auth/token "
                               "(Authorization: Bearer <token>)")
        with self.engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(api_tokens.c.token_hash == digest(token.strip()))).first()
        if row is None or row.expires_at < time.time() or row.client_id not in self.clients:
            raise Unauthorized("the access token is unknown or expired; get a new one from POST /auth/token")
        return ApiGrant(client=self.clients[row.client_id], scopes=tuple(row.scope.split()))
