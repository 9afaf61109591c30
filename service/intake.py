"""Reading and checking what callers send: referral requests and consults (as FHIR models)."""

import json
import re
from dataclasses import dataclass
from datetime import date

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.composition import Composition
from lxml import etree
from pydantic import ValidationError

from mappers.errors import MappingError, describe_validation_error
from mappers.fhirxml import FHIR_NS, declares_dtd, parse_fhir_xml
from service.errors import InvalidRequest, UnsupportedMediaType

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
REFERENCE_KEY = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
MAX_QUESTION_CHARS = 4000
MAX_PATIENT_QUESTIONS = 20
JSON_TYPES = ("application/fhir+json", "application/json")
FHIR_XML_TYPES = ("application/fhir+xml",)
CCDA_TYPES = ("application/cda+xml",)
GENERIC_XML_TYPES = ("application/xml", "text/xml")  # FHIR XML when the root is in the FHIR namespace, else C-CDA
CONSULT_TYPES = JSON_TYPES + FHIR_XML_TYPES + CCDA_TYPES + GENERIC_XML_TYPES
CONSULT_ROOTS = ("Bundle", "Composition")


@dataclass(frozen=True)
class ReferralInput:
    """A checked `POST /api/referrals` body."""

    patient: str
    question: str
    patient_questions: list[str]
    exclude: list[str]
    since: date | None = None
    consultant: str | None = None  # the id of a configured consultant (service/consultants.py)


def parse_referral_input(body: object) -> ReferralInput:
    """Check a referral request body; InvalidRequest names the first problem."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = set(body) - {"patient", "question", "patient_questions", "exclude", "since", "consultant"}
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
    since = body.get("since")
    try:
        since_date = date.fromisoformat(since) if since is not None else None
    except (TypeError, ValueError):
        since_date = None
    if since is not None and (since_date is None or not isinstance(since, str) or len(since) != 10):
        raise InvalidRequest("'since' must be a date (YYYY-MM-DD): history before it is left out")
    consultant = body.get("consultant")
    if consultant is not None and (not isinstance(consultant, str) or not FHIR_ID.match(consultant)):
        raise InvalidRequest("'consultant' must be the id of a configured consultant")
    return ReferralInput(patient, question.strip(), [q.strip() for q in patient_questions],
                         list(dict.fromkeys(exclude)), since_date, consultant)


def parse_json_body(data: bytes) -> object:
    """Decode a JSON body; InvalidRequest when it is not JSON."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc.__class__.__name__} at position "
                             f"{getattr(exc, 'pos', '?')}") from exc
    except RecursionError as exc:  # e.g. 100,000 nested arrays
        raise InvalidRequest("the body is not usable JSON: nested too deeply") from exc


def media_type(content_type: str | None) -> str:
    """'application/fhir+json; charset=utf-8' → 'application/fhir+json'."""
    return (content_type or "").split(";")[0].strip().lower()


def consult_format(data: bytes, content_type: str | None) -> str:
    """What a consult body is, from its media type: "fhir-json", "fhir-xml" or "ccda" (415 for anything else).

    application/xml and text/xml are read as FHIR XML when the root element is in the FHIR namespace and as
    C-CDA otherwise (RFC 7303 leaves the vocabulary to the root element; FHIR R4 http.html#mime-type lists
    application/fhir+xml as the FHIR type; HL7 registers application/cda+xml for CDA).
    """
    kind = media_type(content_type)
    if kind in JSON_TYPES:
        return "fhir-json"
    if kind in FHIR_XML_TYPES:
        return "fhir-xml"
    if kind in CCDA_TYPES:
        return "ccda"
    if kind in GENERIC_XML_TYPES:
        return "fhir-xml" if root_namespace(data) == FHIR_NS else "ccda"
    raise UnsupportedMediaType(f"a consult must be sent as {', '.join(CONSULT_TYPES)}, "
                               f"not {kind or 'no Content-Type'}")


def root_namespace(data: bytes) -> str | None:
    """The namespace of an XML document's root element, read with the hardened parser up to that element."""
    if declares_dtd(data):
        raise MappingError("the XML declares a DTD (DOCTYPE), which is not allowed", status=400, issue_code="security")
    parser = etree.XMLPullParser(events=("start",), resolve_entities=False, no_network=True, load_dtd=False,
                                 huge_tree=False)
    try:
        for start in range(0, len(data), 4096):
            parser.feed(data[start:start + 4096])
            for _event, element in parser.read_events():
                return etree.QName(element).namespace
        parser.close()
    except etree.XMLSyntaxError as exc:
        raise MappingError(f"the body is not well-formed XML: {str(exc)[:200]}", status=400,
                           issue_code="invalid") from exc
    return None


def parse_fhir_xml_consult(data: bytes) -> Bundle | Composition:
    """Parse a consult sent as FHIR XML (hardened: no DTDs, entities or network; see mappers/fhirxml.py)."""
    resource = parse_fhir_xml(data, CONSULT_ROOTS)
    assert isinstance(resource, Bundle | Composition)  # parse_fhir_xml allows only those roots
    return resource


def parse_fhir_json_consult(data: bytes) -> Bundle | Composition:
    """Parse a consult sent as FHIR JSON: a document Bundle, a Bundle holding a Composition, or a Composition."""
    body = parse_json_body(data)
    if not isinstance(body, dict) or body.get("resourceType") not in ("Bundle", "Composition"):
        raise MappingError("a consult must be a FHIR Bundle (document) or a Composition")
    model = Bundle if body["resourceType"] == "Bundle" else Composition
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise MappingError(f"the consult is not valid FHIR R4: {describe_validation_error(exc)}") from exc
    except RecursionError as exc:
        raise MappingError("the consult is not usable FHIR: nested too deeply") from exc
    except (TypeError, LookupError, AttributeError) as exc:  # fhir_core validators that assume the JSON type
        raise MappingError("the consult is not valid FHIR R4: an element holds a value of the wrong JSON type, "
                           "or a resource has a missing or unknown resourceType") from exc
