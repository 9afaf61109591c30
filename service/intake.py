"""Reading and checking what callers send: referral requests and consults (as FHIR models)."""

import json
import re
from dataclasses import dataclass

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.composition import Composition
from pydantic import ValidationError

from mappers.errors import MappingError
from service.errors import InvalidRequest, UnsupportedMediaType

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
REFERENCE_KEY = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
MAX_QUESTION_CHARS = 4000
MAX_PATIENT_QUESTIONS = 20
JSON_TYPES = ("application/fhir+json", "application/json")


@dataclass(frozen=True)
class ReferralInput:
    """A checked `POST /api/referrals` body."""

    patient: str
    question: str
    patient_questions: list[str]
    exclude: list[str]


def parse_referral_input(body: object) -> ReferralInput:
    """Check a referral request body; InvalidRequest names the first problem."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = set(body) - {"patient", "question", "patient_questions", "exclude"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    patient = body.get("patient")
    if not isinstance(patient, str) or not FHIR_ID.match(patient):
        raise InvalidRequest("'patient' must be a FHIR Patient id (letters, digits, '-', '.'; up to 64)")
    question = body.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InvalidRequest("'question' (the clinical question for the consultant) is required")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidRequest(f"'question' is longer than {MAX_QUESTION_CHARS} characters")
    patient_questions = body.get("patient_questions", [])
    if (not isinstance(patient_questions, list) or len(patient_questions) > MAX_PATIENT_QUESTIONS
            or not all(isinstance(q, str) and q.strip() and len(q) <= MAX_QUESTION_CHARS for q in patient_questions)):
        raise InvalidRequest(f"'patient_questions' must be a list of up to {MAX_PATIENT_QUESTIONS} non-empty strings")
    exclude = body.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(x, str) and REFERENCE_KEY.match(x) for x in exclude):
        raise InvalidRequest("'exclude' must be a list of references like 'Condition/123'")
    return ReferralInput(patient, question.strip(), [q.strip() for q in patient_questions], list(dict.fromkeys(exclude)))


def parse_json_body(data: bytes) -> object:
    """Decode a JSON body; InvalidRequest when it is not JSON."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc.__class__.__name__} at position "
                             f"{getattr(exc, 'pos', '?')}") from exc


def media_type(content_type: str | None) -> str:
    """'application/fhir+json; charset=utf-8' → 'application/fhir+json'."""
    return (content_type or "").split(";")[0].strip().lower()


def parse_fhir_consult(data: bytes, content_type: str | None) -> Bundle | Composition:
    """Parse a consult sent as FHIR JSON: a document Bundle, a Bundle holding a Composition, or a Composition."""
    if media_type(content_type) not in JSON_TYPES:
        raise UnsupportedMediaType(f"a consult must be sent as {' or '.join(JSON_TYPES)}, "
                                   f"not {media_type(content_type) or 'no Content-Type'}")
    body = parse_json_body(data)
    if not isinstance(body, dict) or body.get("resourceType") not in ("Bundle", "Composition"):
        raise MappingError("a consult must be a FHIR Bundle (document) or a Composition")
    model = Bundle if body["resourceType"] == "Bundle" else Composition
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise MappingError(f"the consult is not valid FHIR R4: {describe_validation_error(exc)}") from exc


def describe_validation_error(exc: ValidationError) -> str:
    """The first few problems of a pydantic ValidationError as 'path: message' (no input values)."""
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(parts) + more
