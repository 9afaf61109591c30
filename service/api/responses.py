"""Building API responses: FHIR resources as application/fhir+json, plain JSON for our own objects."""

import json

from flask import Response

FHIR_JSON = "application/fhir+json"


def fhir_response(resource_json: str | dict, status: int = 200, headers: dict | None = None) -> Response:
    """A FHIR resource response (JSON)."""
    body = resource_json if isinstance(resource_json, str) else json.dumps(resource_json)
    return Response(body, status=status, content_type=f"{FHIR_JSON}; charset=utf-8", headers=headers)


def json_response(data: object, status: int = 200, headers: dict | None = None) -> Response:
    """A plain JSON response."""
    return Response(json.dumps(data), status=status, content_type="application/json", headers=headers)
