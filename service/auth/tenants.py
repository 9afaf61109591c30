"""Per-EHR configuration (tenants), keyed by FHIR base URL (the ``iss`` of a launch).

Read from ``SECOND_OPINION_TENANTS`` (JSON) or the file named by ``SECOND_OPINION_TENANTS_FILE``; with neither,
one tenant: ``FHIR_BASE_URL`` with auth ``none`` (``bearer`` when ``FHIR_TOKEN`` is set). Secrets are never
written in the configuration itself: a tenant names the environment variable or file that holds them.
"""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ConfigurationError

AUTH_MODES = ("none", "bearer", "smart", "backend")
DEFAULT_CLIENT_ID = "second-opinion"
SCOPE_VERSIONS = ("auto", "v1", "v2")
TENANT_KEYS = {"iss", "auth", "client_id", "scopes", "scope_version", "access", "token_env", "token_file",
               "backend_client_id", "private_key_file", "private_key_env", "kid", "alg", "backend_scopes",
               "token_url", "writeback_profile", "name"}


@dataclass(frozen=True)
class Tenant:
    """One EHR: how the service authenticates to its FHIR server, and what it asks for."""

    iss: str  # the FHIR base URL, without a trailing slash
    auth: str = "none"  # none | bearer | smart | backend: how requests outside a launched session authenticate
    client_id: str = DEFAULT_CLIENT_ID  # for launches (a public client: PKCE, no secret)
    scopes: str | None = None  # launch scopes; None: built from what we use and what the server supports
    scope_version: str = "auto"  # auto: v2 when the server advertises permission-v2, else v1
    access: str = "offline"  # offline_access (refresh tokens that outlive the browser) or online_access
    token: str | None = None  # bearer mode: the static token (read from token_env / token_file)
    backend_client_id: str | None = None  # backend services (defaults to client_id)
    private_key_file: str | None = None  # PEM; its public half is served at /.well-known/jwks.json
    kid: str | None = None  # default: the key's RFC 7638 thumbprint
    alg: str | None = None  # RS384 or ES384; default from the key type
    backend_scopes: str | None = None  # default: system/ scopes for what we read and write
    token_url: str | None = None  # default: discovered from the server's SMART configuration
    writeback_profile: str | None = None  # document | docref-only | cerner; None: the app's WRITEBACK_PROFILE
    name: str | None = None

    def __repr__(self) -> str:  # never show the token
        return f"Tenant(iss={self.iss!r}, auth={self.auth!r}, client_id={self.client_id!r})"

    @property
    def has_backend_key(self) -> bool:
        return self.private_key_file is not None


def normalize_iss(url: str) -> str:
    """A FHIR base URL as tenants are keyed: no trailing slash, lower-case scheme and host."""
    url = url.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}"


def load_tenants(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Tenant]:
    """Every configured tenant by normalized iss; ConfigurationError with a clear message when one is wrong."""
    environ = os.environ if environ is None else environ
    raw = config.get("TENANTS")
    path = config.get("TENANTS_FILE")
    if raw is not None and path:
        raise ConfigurationError("set SECOND_OPINION_TENANTS or SECOND_OPINION_TENANTS_FILE, not both")
    if path:
        try:
            raw = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigurationError(f"cannot read SECOND_OPINION_TENANTS_FILE {path}: {exc.strerror}") from exc
    entries = _entries(raw)
    tenants: dict[str, Tenant] = {}
    for index, entry in enumerate(entries):
        tenant = _tenant(entry, index, environ)
        if tenant.iss in tenants:
            raise ConfigurationError(f"tenant {index}: {tenant.iss} is configured twice")
        tenants[tenant.iss] = tenant
    base = config.get("FHIR_BASE_URL")
    if base and normalize_iss(base) not in tenants:
        token = config.get("FHIR_TOKEN")
        tenants[normalize_iss(base)] = Tenant(iss=normalize_iss(base), auth="bearer" if token else "none",
                                              client_id=config.get("CLIENT_ID") or DEFAULT_CLIENT_ID,
                                              token=token or None)
    return tenants


def _entries(raw: Any) -> list[dict]:
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ConfigurationError(f"the tenants configuration is not valid JSON: {exc.msg} "
                                     f"(line {exc.lineno})") from exc
    if isinstance(raw, dict) and "tenants" in raw:
        raw = raw["tenants"]
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise ConfigurationError('the tenants configuration must be a list of objects (or {"tenants": [...]})')
    return raw


def _tenant(entry: dict, index: int, environ: Mapping[str, str]) -> Tenant:
    where = f"tenant {index} ({entry.get('iss', 'no iss')})"
    unknown = set(entry) - TENANT_KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; "
                                 f"known: {', '.join(sorted(TENANT_KEYS))}")
    iss = entry.get("iss")
    if not isinstance(iss, str) or not iss.startswith(("http://", "https://")):
        raise ConfigurationError(f"{where}: iss must be the FHIR base URL (http:// or https://)")
    auth = entry.get("auth", "none")
    if auth not in AUTH_MODES:
        raise ConfigurationError(f"{where}: auth must be one of {', '.join(AUTH_MODES)}")
    if entry.get("scope_version", "auto") not in SCOPE_VERSIONS:
        raise ConfigurationError(f"{where}: scope_version must be one of {', '.join(SCOPE_VERSIONS)}")
    if entry.get("access", "offline") not in ("offline", "online"):
        raise ConfigurationError(f"{where}: access must be offline or online")
    if entry.get("alg") not in (None, "RS384", "ES384"):
        raise ConfigurationError(f"{where}: alg must be RS384 or ES384")
    token = _secret(entry, "token_env", "token_file", environ, where)
    if auth == "bearer" and not token:
        raise ConfigurationError(f"{where}: auth bearer needs token_env (an environment variable) or token_file")
    key_file = entry.get("private_key_file")
    if entry.get("private_key_env"):
        key_file = environ.get(entry["private_key_env"])
        if not key_file:
            raise ConfigurationError(f"{where}: the environment variable {entry['private_key_env']} is not set")
    if auth == "backend" and not key_file:
        raise ConfigurationError(f"{where}: auth backend needs private_key_file or private_key_env (a PEM path)")
    values = {k: entry[k] for k in ("client_id", "scopes", "scope_version", "access", "backend_client_id", "kid",
                                    "alg", "backend_scopes", "token_url", "writeback_profile", "name") if k in entry}
    return Tenant(iss=normalize_iss(iss), auth=auth, token=token, private_key_file=key_file, **values)


def _secret(entry: dict, env_key: str, file_key: str, environ: Mapping[str, str], where: str) -> str | None:
    if entry.get(env_key):
        value = environ.get(entry[env_key])
        if not value:
            raise ConfigurationError(f"{where}: the environment variable {entry[env_key]} is not set")
        return value
    if entry.get(file_key):
        try:
            return Path(entry[file_key]).read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(f"{where}: cannot read {entry[file_key]}: {exc.strerror}") from exc
    return None
