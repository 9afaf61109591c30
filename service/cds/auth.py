"""Trusting CDS clients (CDS Hooks 2.0 §Security and Safety / Trusting CDS Clients).

Each call carries `Authorization: Bearer <JWT>`, signed by the CDS client with its private key (JWS, rfc7515).
Header: `alg` (asymmetric; ES384 and RS384 RECOMMENDED, §JWT Signing Algorithm; never `none` or HMAC), `kid`
(REQUIRED: picks the key in the client's JWK Set), `typ` `JWT`, optional `jku`. Payload: `iss`, `aud` (the URL
of the CDS Service endpoint being invoked, a string or an array), `exp`, `iat`, `jti` (nonce against replay),
optional `tenant`. "CDS Services SHOULD maintain an allowlist of the `iss` and `jku` fields".

Here:
- the allowlist is SECOND_OPINION_CDS_CLIENTS, a JSON array of {"iss", "jwks_url"} or {"iss", "jwks"} (and
  optionally "fhir_servers": base URLs this client may send us to);
- keys come only from the configured JWK Set: a `jku` header is accepted only when it equals the configured
  `jwks_url` (it is never fetched otherwise); fetched sets are cached (CDS_JWKS_CACHE_S) and re-read at most
  every MIN_REFRESH_S when a `kid` is unknown (key rotation);
- `aud` must be the full URL of the endpoint called (PUBLIC_URL + path when set, else the request URL);
- a `jti` is accepted once per issuer until its `exp` (kept in the database, so every worker sees it);
- any failure is 401 with a message saying which rule failed; the token itself is never logged.
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import jwt
import requests

from service.errors import ConfigurationError, Unauthorized

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                                   "ES256", "ES384", "ES512", "EdDSA"})
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "jti"]
MIN_REFRESH_S = 10.0
JWKS_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 256 * 1024
CLIENT_FIELDS = {"iss", "jwks_url", "jwks", "fhir_servers"}
NO_CDS_CLIENTS = ("no CDS clients are trusted: set SECOND_OPINION_CDS_CLIENTS to a JSON array of "
                  '{"iss": ..., "jwks_url": ...} (or "jwks": {...})')


@dataclass(frozen=True)
class TrustedClient:
    """A CDS client we accept calls from: its issuer and where its public keys are."""

    iss: str
    jwks_url: str | None = None
    jwks: dict | None = field(default=None, repr=False)  # an inline JWK Set {"keys": [...]}
    fhir_servers: tuple[str, ...] = ()  # when set, the fhirServer values this client may send

    def allows_fhir_server(self, url: str) -> bool:
        """True when no fhirServer allowlist is set, or `url` is (under) one of its bases."""
        return not self.fhir_servers or any(url == base or url.startswith(base + "/") for base in self.fhir_servers)


@dataclass(frozen=True)
class VerifiedClient:
    """Who called, after the JWT checked out."""

    iss: str
    jti: str
    expires_at: int
    tenant: str | None
    client: TrustedClient | None  # None only with CDS_ALLOW_UNAUTHENTICATED


def parse_clients(value: object, setting: str = "SECOND_OPINION_CDS_CLIENTS") -> list[TrustedClient]:
    """Read CDS_CLIENTS (a JSON string from the environment, or a list); ConfigurationError on any problem."""
    value = load_json_setting(value, setting)
    clients: list[TrustedClient] = []
    for index, item in enumerate(value):
        where = f"{setting}[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("iss"), str) or not item["iss"]:
            raise ConfigurationError(f"{where} must be an object with a non-empty 'iss'")
        unknown = set(item) - CLIENT_FIELDS
        if unknown:
            raise ConfigurationError(f"{where} has unknown field(s): {', '.join(sorted(unknown))}")
        if ("jwks_url" in item) == ("jwks" in item):
            raise ConfigurationError(f"{where} needs exactly one of 'jwks_url' and 'jwks'")
        if "jwks_url" in item and not _is_http_url(item["jwks_url"]):
            raise ConfigurationError(f"{where}.jwks_url must be an http(s) URL")
        if "jwks" in item:
            _check_jwks(item["jwks"], where)
        servers = item.get("fhir_servers", [])
        if not isinstance(servers, list) or not all(_is_http_url(s) for s in servers):
            raise ConfigurationError(f"{where}.fhir_servers must be a list of http(s) base URLs")
        if any(c.iss == item["iss"] for c in clients):
            raise ConfigurationError(f"{where}: issuer listed twice")
        clients.append(TrustedClient(iss=item["iss"], jwks_url=item.get("jwks_url"), jwks=item.get("jwks"),
                                     fhir_servers=tuple(s.rstrip("/") for s in servers)))
    return clients


def load_json_setting(value: object, setting: str) -> list:
    """A setting that holds a JSON array (a string from the environment, or a list); [] when unset."""
    if value is None or value == "" or value == []:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ConfigurationError(f"{setting} is not valid JSON") from exc
    if not isinstance(value, list):
        raise ConfigurationError(f"{setting} must be a JSON array of objects")
    return value


def check_algorithms(value: object) -> list[str]:
    """CDS_JWT_ALGORITHMS: asymmetric JWS algorithms only (§JWT Signing Algorithm: no `none`, no HMAC)."""
    if isinstance(value, str):
        value = [a.strip() for a in value.split(",") if a.strip()]
    if not isinstance(value, list) or not value or not all(a in ASYMMETRIC_ALGORITHMS for a in value):
        raise ConfigurationError("SECOND_OPINION_CDS_JWT_ALGORITHMS must list asymmetric JWS algorithms "
                                 f"from {', '.join(sorted(ASYMMETRIC_ALGORITHMS))}")
    return list(value)


class JwksCache:
    """The clients' public keys: inline sets as configured, fetched sets cached for `ttl_s`."""

    def __init__(self, session: requests.Session, ttl_s: float) -> None:
        self._session = session
        self._ttl_s = ttl_s
        self._lock = threading.Lock()
        self._fetched: dict[str, tuple[float, list[dict]]] = {}

    def find_key(self, client: TrustedClient, kid: str) -> dict:
        """The JWK with this `kid` from the client's configured set; Unauthorized when there is none."""
        if client.jwks is not None:
            keys = client.jwks["keys"]
        else:
            keys = self._keys(client.jwks_url, refresh=False)
            if not _with_kid(keys, kid):
                keys = self._keys(client.jwks_url, refresh=True)
        found = _with_kid(keys, kid)
        if found is None:
            raise Unauthorized(f"no key with this kid in the JWK Set configured for issuer {client.iss}")
        return found

    def _keys(self, url: str, *, refresh: bool) -> list[dict]:
        now = time.monotonic()
        with self._lock:
            cached = self._fetched.get(url)
        if cached and (now - cached[0] < self._ttl_s) and not (refresh and now - cached[0] >= MIN_REFRESH_S):
            return cached[1]
        keys = self._fetch(url)
        with self._lock:
            self._fetched[url] = (now, keys)
        return keys

    def _fetch(self, url: str) -> list[dict]:
        try:
            resp = self._session.get(url, timeout=JWKS_TIMEOUT_S, allow_redirects=False,
                                     headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            log.warning("could not fetch the JWK Set at %s (%s)", url, type(exc).__name__)
            raise Unauthorized("could not fetch the CDS client's JWK Set") from exc
        if resp.status_code != 200 or len(resp.content) > MAX_JWKS_BYTES:
            log.warning("the JWK Set at %s answered %s", url, resp.status_code)
            raise Unauthorized("could not fetch the CDS client's JWK Set")
        try:
            data = resp.json()
            _check_jwks(data, "the JWK Set")
        except (ValueError, ConfigurationError) as exc:
            raise Unauthorized("the CDS client's JWK Set is not a valid JWK Set") from exc
        return data["keys"]


class ClientVerifier:
    """Checks the CDS client's JWT on each call."""

    def __init__(self, clients: list[TrustedClient], *, algorithms: list[str], leeway_s: float,
                 keys: JwksCache, remember_jti: Callable[[str, str, int], bool], who: str = "CDS client",
                 unconfigured: str = NO_CDS_CLIENTS) -> None:
        self._clients = {c.iss: c for c in clients}
        self._algorithms = algorithms
        self._leeway_s = leeway_s
        self._keys = keys
        self._remember_jti = remember_jti  # False when (iss, jti) was seen before
        self._who = who  # whose JWTs these are, for messages
        self._unconfigured = unconfigured  # the message when nobody is trusted

    @property
    def configured(self) -> bool:
        return bool(self._clients)

    def verify(self, authorization: str | None, audiences: list[str]) -> VerifiedClient:
        """Verify `Authorization: Bearer <JWT>` for a call to one of `audiences` (the endpoint's URLs)."""
        if not self._clients:
            raise Unauthorized(self._unconfigured)
        return self.verify_jwt(_bearer(authorization), audiences)

    def verify_jwt(self, token: str, audiences: list[str], *, required: list[str] = REQUIRED_CLAIMS,
                   subject_is_issuer: bool = False, max_lifetime_s: float | None = None) -> VerifiedClient:
        """Verify a client-signed JWT for one of `audiences`.

        For a SMART Backend Services client assertion (hl7.org/fhir/smart-app-launch/backend-services.html,
        "Authenticating to the Token endpoint"): `sub` must equal `iss` (the client_id) and `exp` be at most
        five minutes ahead (`max_lifetime_s=300`).
        """
        if not self._clients:
            raise Unauthorized(self._unconfigured)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthorized("the bearer token is not a JWT") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self._algorithms:
            raise Unauthorized(f"JWT alg must be one of {', '.join(self._algorithms)} "
                               "(CDS Hooks 2.0: asymmetric signatures only)")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("JWT header kid is required (CDS Hooks 2.0 §Trusting CDS Clients)")
        if "typ" in header and str(header["typ"]).upper() != "JWT":
            raise Unauthorized("JWT header typ must be JWT")
        iss = unverified.get("iss")
        client = self._clients.get(iss) if isinstance(iss, str) else None
        if client is None:
            raise Unauthorized(f"JWT issuer is not a trusted {self._who}")
        if "jku" in header and header["jku"] != client.jwks_url:
            raise Unauthorized("JWT jku is not the JWK Set URL configured for this issuer")
        jwk = self._keys.find_key(client, kid)
        claims = self._decode(token, jwk, alg, client, audiences, required)
        if subject_is_issuer and claims.get("sub") != client.iss:
            raise Unauthorized("JWT sub must equal iss (the client_id)")
        if max_lifetime_s is not None and claims["exp"] > time.time() + max_lifetime_s + self._leeway_s:
            raise Unauthorized(f"JWT exp must be at most {int(max_lifetime_s)} seconds ahead")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise Unauthorized("JWT jti must be a non-empty string")
        if not self._remember_jti(client.iss, jti, int(claims["exp"])):
            raise Unauthorized("JWT already used (jti replayed)")
        tenant = claims.get("tenant") if isinstance(claims.get("tenant"), str) else None
        return VerifiedClient(iss=client.iss, jti=jti, expires_at=int(claims["exp"]), tenant=tenant, client=client)

    def _decode(self, token: str, jwk: dict, alg: str, client: TrustedClient, audiences: list[str],
                required: list[str]) -> dict:
        if jwk.get("use", "sig") != "sig":
            raise Unauthorized("the JWK for this kid is not a signing key")
        try:
            key = jwt.PyJWK(jwk, algorithm=jwk.get("alg") or alg)
            return jwt.decode(token, key=key, algorithms=[alg], audience=audiences, issuer=client.iss,
                              leeway=self._leeway_s,
                              options={"require": required, "enforce_minimum_key_length": True})
        except jwt.InvalidAudienceError as exc:
            raise Unauthorized(f"JWT aud is not this endpoint's URL (expected {audiences[0]})") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"JWT rejected: {exc}") from exc


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a signed JWT from the CDS client is required: Authorization: Bearer <JWT> "
                           "(CDS Hooks 2.0 §Trusting CDS Clients)")
    return token.strip()


def _with_kid(keys: list[dict], kid: str) -> dict | None:
    return next((k for k in keys if isinstance(k, dict) and k.get("kid") == kid), None)


def _check_jwks(value: object, where: str) -> None:
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise ConfigurationError(f"{where} must be a JWK Set: {{\"keys\": [...]}}")
    for key in value["keys"]:
        if not isinstance(key, dict) or not key.get("kty") or "d" in key:
            raise ConfigurationError(f"{where} must hold public JWKs with kty (and no private parts)")


def _is_http_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
