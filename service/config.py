"""Settings: defaults that run with no setup, overridden by SECOND_OPINION_* environment variables."""

from collections.abc import Mapping
from typing import Any

ENV_PREFIX = "SECOND_OPINION"

DEFAULTS: dict[str, Any] = {
    "FHIR_BASE_URL": None,            # the EHR's FHIR base; required by `serve`
    "FHIR_TIMEOUT": 30.0,             # seconds, per request
    "FHIR_MAX_RETRIES": 3,            # idempotent requests on 429/502/503/504
    "FHIR_BACKOFF": 0.5,              # seconds, exponential backoff factor
    "FHIR_TOKEN": None,               # static bearer token for open sandboxes (from the environment only)
    "FHIR_MAX_PAGES": 500,            # per search: a fetch that needs more ends with a clear error
    "DATABASE_URL": None,             # default: SQLite file in the instance folder
    "WRITEBACK": "thread",            # "thread": in-process runner; "inline": during the request (tests); "off"
    "WRITEBACK_RETRY_BUDGET_S": 24 * 3600,
    "WRITEBACK_BASE_DELAY_S": 1.0,    # first retry delay; doubles per attempt (with jitter), up to 300 s
    "MAX_CONTENT_LENGTH": 25 * 1024 * 1024,
    "PUBLIC_URL": None,               # how the service is reached (for links); default from the request
    "LOG_LEVEL": "INFO",
}


def apply_settings(config: dict, overrides: Mapping[str, Any] | None) -> None:
    """Apply explicit overrides (tests, CLI) on top of defaults and the environment."""
    if overrides:
        config.update(overrides)
