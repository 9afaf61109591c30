"""SMART Backend Services: a client assertion signed by us (pyjwt), exchanged for a system access token."""

import logging
import secrets
import threading
import time
from dataclasses import dataclass

import jwt
import requests

from service.auth.keys import SigningKey
from service.errors import UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME_S = 300  # SMART: exp no more than five minutes in the future
RENEW_MARGIN_S = 60.0


def client_assertion(client_id: str, token_url: str, key: SigningKey, *, lifetime_s: int = MAX_ASSERTION_LIFETIME_S,
                     now: float | None = None) -> str:
    """A fresh private_key_jwt: iss = sub = client_id, aud = the token URL, a new jti, exp ≤ 5 minutes."""
    issued = int(now if now is not None else time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "jti": secrets.token_urlsafe(24),
              "iat": issued, "exp": issued + min(lifetime_s, MAX_ASSERTION_LIFETIME_S)}
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid, "typ": "JWT"})


@dataclass(frozen=True)
class BackendToken:
    access_token: str
    expires_at: float  # time.time()
    scope: str

    def __repr__(self) -> str:
        return f"BackendToken(expires_at={self.expires_at:.0f}, scope={self.scope!r})"


def request_backend_token(http: requests.Session, token_url: str, client_id: str, key: SigningKey, scope: str,
                          *, timeout: float = 30.0) -> BackendToken:
    """POST client_credentials with a new assertion; UpstreamError (the server's OAuth error) when refused."""
    form = {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion(client_id, token_url, key)}
    try:
        resp = http.post(token_url, data=form, headers={"Accept": "application/json"}, timeout=timeout,
                         allow_redirects=False)
    except requests.Timeout as exc:
        raise UpstreamTimeout(f"the EHR's token endpoint did not answer within {timeout:g} s") from exc
    except requests.RequestException as exc:
        raise UpstreamError(f"could not reach the EHR's token endpoint: {type(exc).__name__}") from exc
    body = _json(resp)
    if resp.status_code != 200 or not isinstance(body.get("access_token"), str):
        error = str(body.get("error") or f"HTTP {resp.status_code}")
        description = str(body.get("error_description") or "")[:300]
        log.warning("backend services token refused for client %s: %s", client_id, error)
        raise UpstreamError(f"the EHR's token endpoint refused our backend-services client {client_id}: "
                            f"{error}{': ' + description if description else ''}",
                            upstream_status=resp.status_code if resp.status_code >= 400 else 502)
    expires_in = body.get("expires_in") if isinstance(body.get("expires_in"), (int, float)) else 300
    return BackendToken(body["access_token"], time.time() + float(expires_in), str(body.get("scope") or scope))


def _json(resp: requests.Response) -> dict:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


class BackendTokens:
    """One backend client's current token: reused until a minute before expiry, renewed on demand after a 401."""

    def __init__(self, http: requests.Session, token_url: str, client_id: str, key: SigningKey, scope: str,
                 timeout: float = 30.0) -> None:
        self._http, self.token_url, self.client_id = http, token_url, client_id
        self._key, self.scope, self._timeout = key, scope, timeout
        self._lock = threading.Lock()
        self._token: BackendToken | None = None

    def access_token(self) -> str:
        with self._lock:
            if self._token is None or self._token.expires_at - RENEW_MARGIN_S < time.time():
                self._token = request_backend_token(self._http, self.token_url, self.client_id, self._key,
                                                    self.scope, timeout=self._timeout)
            return self._token.access_token

    def renew(self, stale: str) -> str | None:
        """A new token after the EHR refused ``stale`` (another thread may have renewed it already)."""
        with self._lock:
            if self._token is not None and self._token.access_token != stale:
                return self._token.access_token
            self._token = None
        return self.access_token()
