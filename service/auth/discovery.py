"""Where an EHR's authorization server is: its SMART configuration, or the CapabilityStatement's oauth-uris."""

import threading
import time
from dataclasses import dataclass

import requests

from service.errors import UpstreamError

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
CACHE_TTL_S = 3600.0
ACCEPT_JSON = {"Accept": "application/json"}


class SmartUnavailable(UpstreamError):
    """The EHR publishes no usable SMART configuration."""


@dataclass(frozen=True)
class SmartServer:
    """What a launch or a backend token request needs to know about an EHR's authorization server."""

    iss: str
    authorization_endpoint: str | None
    token_endpoint: str
    capabilities: frozenset[str]
    issuer: str | None = None
    jwks_uri: str | None = None
    source: str = "smart-configuration"  # or "capability-statement"

    @property
    def permission_v2(self) -> bool:
        return "permission-v2" in self.capabilities


_cache: dict[str, tuple[float, SmartServer]] = {}
_cache_lock = threading.Lock()


def discover(http: requests.Session, iss: str, *, timeout: float = 30.0) -> SmartServer:
    """The SMART endpoints of the EHR at ``iss`` (cached for an hour); SmartUnavailable when there are none."""
    with _cache_lock:
        cached = _cache.get(iss)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    server = _from_well_known(http, iss, timeout) or _from_capability_statement(http, iss, timeout)
    if server is None:
        raise SmartUnavailable(f"the EHR at {iss} publishes no SMART configuration "
                               "(.well-known/smart-configuration or oauth-uris in its CapabilityStatement)")
    with _cache_lock:
        _cache[iss] = (time.monotonic() + CACHE_TTL_S, server)
    return server


def forget(iss: str | None = None) -> None:
    """Drop cached configurations (all, or one EHR's)."""
    with _cache_lock:
        if iss is None:
            _cache.clear()
        else:
            _cache.pop(iss, None)


def _get_json(http: requests.Session, url: str, timeout: float, accept: dict[str, str]) -> dict | None:
    try:
        resp = http.get(url, headers=accept, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise SmartUnavailable(f"could not reach the EHR for SMART discovery: {type(exc).__name__}") from exc
    if resp.status_code != 200:
        return None
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _from_well_known(http: requests.Session, iss: str, timeout: float) -> SmartServer | None:
    data = _get_json(http, f"{iss}/.well-known/smart-configuration", timeout, ACCEPT_JSON)
    if not data or not isinstance(data.get("token_endpoint"), str):
        return None
    capabilities = data.get("capabilities") if isinstance(data.get("capabilities"), list) else []
    return SmartServer(iss=iss, authorization_endpoint=_str(data.get("authorization_endpoint")),
                       token_endpoint=data["token_endpoint"], capabilities=frozenset(map(str, capabilities)),
                       issuer=_str(data.get("issuer")), jwks_uri=_str(data.get("jwks_uri")))


def _from_capability_statement(http: requests.Session, iss: str, timeout: float) -> SmartServer | None:
    data = _get_json(http, f"{iss}/metadata", timeout, {"Accept": "application/fhir+json"})
    for rest in (data or {}).get("rest") or []:
        for extension in ((rest or {}).get("security") or {}).get("extension") or []:
            if extension.get("url") != OAUTH_URIS:
                continue
            uris = {e.get("url"): e.get("valueUri") for e in extension.get("extension") or []}
            if isinstance(uris.get("token"), str):
                return SmartServer(iss=iss, authorization_endpoint=_str(uris.get("authorize")),
                                   token_endpoint=uris["token"], capabilities=frozenset(),
                                   source="capability-statement")
    return None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
