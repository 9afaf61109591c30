"""The consultants a clinician can ask for a second opinion (SECOND_OPINION_CONSULTANTS), for the API and the pages."""

import json

from flask import Flask, current_app

from mappers.consult_form import Consultant
from service.errors import ConfigurationError, InvalidRequest

SHAPE = '{"id", "name", "specialty"}'


def configured_consultants(app: Flask | None = None) -> list[Consultant]:
    """The CONSULTANTS setting (a JSON list of {id, name, specialty}) as Consultants; ConfigurationError if malformed."""
    raw = (app or current_app).config.get("CONSULTANTS") or []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ConfigurationError(f"SECOND_OPINION_CONSULTANTS must be a JSON list of {SHAPE}") from exc
    if not isinstance(raw, list) or not all(isinstance(c, dict) and c.get("id") and c.get("name") for c in raw):
        raise ConfigurationError(f"SECOND_OPINION_CONSULTANTS must be a JSON list of {SHAPE}")
    return [Consultant(id=str(c["id"]), name=str(c["name"]), specialty=str(c.get("specialty") or "")) for c in raw]


def find_consultant(consultant_id: str | None, app: Flask | None = None) -> Consultant | None:
    """The configured consultant with this id, or None."""
    return next((c for c in configured_consultants(app) if c.id == consultant_id), None)


def require_consultant(consultant_id: str | None, app: Flask | None = None) -> Consultant | None:
    """The consultant a referral names (None when it names none); InvalidRequest (400) for an unknown id."""
    if consultant_id is None:
        return None
    consultant = find_consultant(consultant_id, app)
    if consultant is None:
        known = ", ".join(c.id for c in configured_consultants(app)) or "none are configured"
        raise InvalidRequest(f"'consultant' must be one of the configured consultants ({known})")
    return consultant


def display(consultant: Consultant) -> str:
    """How the order names the consultant (ServiceRequest.performer, Task.owner)."""
    return f"{consultant.name} ({consultant.specialty})" if consultant.specialty else consultant.name
