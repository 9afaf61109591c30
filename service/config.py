"""Settings: defaults that run with no setup, overridden by SECOND_OPINION_* environment variables."""

from collections.abc import Mapping
from typing import Any

ENV_PREFIX = "SECOND_OPINION"

DEFAULTS: dict[str, Any] = {
    "FHIR_BASE_URL": None,            # the EHR's FHIR base; required by `serve`
    "FHIR_TIMEOUT": 30.0,             # seconds, per request
    "FHIR_MAX_RETRIES": 5,            # idempotent requests on 429/502/503/504
    "FHIR_BACKOFF": 0.5,              # seconds, exponential backoff factor
    "FHIR_TOKEN": None,               # static bearer token for open sandboxes (from the environment only)
    "FHIR_MAX_PAGES": 500,            # per search: a fetch that needs more ends with a clear error
    "FHIR_EVERYTHING": "auto",        # "auto": fetch by Patient/$everything where /metadata advertises it (per-type
                                      # searches if refused); "never": always the per-type searches
    "DATABASE_URL": None,             # default: SQLite file in the instance folder
    "DATABASE_AUTO_UPGRADE": None,    # run migrations at startup; default: yes for SQLite, no for PostgreSQL
    "QUEUE_URL": None,                # huey storage; default: the database if PostgreSQL, else a SQLite file beside it
    "QUEUE_WORKERS": 2,               # worker threads of the in-process consumer (serve, demo)
    "QUEUE_POLL_S": 0.25,             # longest wait between polls of an idle SQLite queue
    "WRITEBACK": "queue",             # "queue": durable queue; "inline": during the request (unit tests); "off"
    "WRITEBACK_PROFILE": "document",  # what the EHR accepts: document | docref-only | cerner
    "WRITEBACK_RETRY_BUDGET_S": 24 * 3600,
    "WRITEBACK_BASE_DELAY_S": 1.0,    # first retry delay; doubles per attempt (with jitter), up to the max
    "WRITEBACK_MAX_DELAY_S": 300.0,
    "WRITEBACK_LEASE_S": 30.0,        # a worker's hold on a referral's write-back, renewed every third of it
    "WRITEBACK_SWEEP_S": 30.0,        # how often a consumer re-enqueues due write-back it finds in the database
    "MAX_CONTENT_LENGTH": 25 * 1024 * 1024,
    "PUBLIC_URL": None,               # how the service is reached (for links); default from the request
    "LOG_LEVEL": "INFO",
    # CDS Hooks (issue 8; see service/api/cds_hooks.py)
    "CDS_CLIENTS": None,              # JSON list of trusted CDS clients: [{"iss": ..., "jwks_url": ...} | {"iss": ..., "jwks": {...}}]
    "CDS_ALLOW_UNAUTHENTICATED": False,  # development only: accept hook calls without a client JWT
    "CDS_JWT_ALGORITHMS": ["ES384", "RS384"],  # asymmetric only (CDS Hooks 2.0 "JWT Signing Algorithm")
    "CDS_JWT_LEEWAY_S": 30,           # clock skew allowed on exp/iat
    "CDS_JWKS_CACHE_S": 300,          # how long a client's fetched JWK Set is reused
    "CDS_HOOK_BUDGET_S": 5.0,         # total time a hook call may spend fetching from the EHR before it answers
    "CDS_RESULT_CACHE_S": 300,        # how long a fetch that outlived its hook call is kept to answer the next one
    "CDS_LAUNCH_URL": None,           # SMART launch URL for card links; default PUBLIC_URL (or the request's host) + /launch
    # SMART on FHIR (issue 4; see service/auth): secrets only from the environment or files it names
    "SECRET_KEY": None,               # signs the session cookie, seals stored tokens; default: instance/secret_key
    "SECRET_KEY_FILE": None,          # or read it from this file
    "CLIENT_ID": "second-opinion",    # the default tenant's client id (a public client: PKCE, no secret)
    "TENANTS": None,                  # JSON list of EHRs keyed by iss (see service/auth/tenants.py)
    "TENANTS_FILE": None,             # or a JSON file with them
    "JWT_KEY_FILES": None,            # more PEM private keys whose public halves /.well-known/jwks.json serves
    "API_AUTH": "open",               # "open": callers without a launch act with the service's own EHR credentials;
                                      # "session": /api needs a launched session; "token": a launched session or
                                      # an access token from POST /auth/token (server-to-server callers)
    "API_CLIENTS": None,              # JSON list of API callers: [{"client_id", "jwks_url" | "jwks", "scopes", "fhir_servers"?}]
    "API_JWT_ALGORITHMS": ["RS384", "ES384"],  # client assertions (SMART Backend Services)
    "API_TOKEN_LIFETIME_S": 300,      # access tokens we issue to API callers
    "TOKEN_REFRESH_MARGIN_S": 60,     # refresh a launched session's access token this long before it expires
    "LAUNCH_SESSION_LIFETIME_S": 12 * 3600,  # a launched session ends after this, whatever its tokens say
    "SESSION_COOKIE_NAME": "second_opinion_session",
    "SESSION_COOKIE_SAMESITE": "Lax",  # "None" (and SESSION_COOKIE_SECURE) when an EHR embeds the app in a frame
    # Pages (issue 7; see service/web): the clinician app and the consultant's link
    "CONSULTANTS": [                  # JSON list of {"id", "name", "specialty"}: who can be asked for an opinion
        {"id": "demo-urology", "name": "Dr. Avery Quill (synthetic)", "specialty": "Urologic oncology"},
        {"id": "demo-neurology", "name": "Dr. Morgan Vale (synthetic)", "specialty": "Neurology"},
    ],
    "CONSULTANT_LINK_MAX_AGE_S": 14 * 24 * 3600,  # a consultant's link works this long after the referral is sent
    "FRAME_ANCESTORS": "'self'",      # CSP frame-ancestors: the EHR origins allowed to show the pages in a frame
    "WTF_CSRF_TIME_LIMIT": 12 * 3600,  # a form's CSRF token lasts this long (a consult can take a while to write)
}


def apply_settings(config: dict, overrides: Mapping[str, Any] | None) -> None:
    """Apply explicit overrides (tests, CLI) on top of defaults and the environment."""
    if overrides:
        config.update(overrides)
