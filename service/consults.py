"""Consult intake by media type (FHIR JSON, FHIR XML, C-CDA) → our consult document, and what it concluded."""

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from fhir.resources.R4B.bundle import Bundle

from mappers.ccda.document import map_ccda_consult
from mappers.ccda.parser import parse_ccda
from mappers.consult import build_consult_bundle
from mappers.consult_context import ConsultContext
from mappers.errors import MappingError
from mappers.ids import IdFactory
from mappers.summary import add_summary_section, summarise_consult
from mappers.validation import check_document_bundle
from service.intake import consult_format, parse_fhir_json_consult, parse_fhir_xml_consult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConsultDocument:
    """Our consult document (Composition 11488-4, summary section first), where it came from, and its verdict."""

    bundle: Bundle
    source_format: str  # "fhir-json" | "fhir-xml" | "ccda"
    warnings: list[str]  # from the C-CDA mapping (templates and codes, never patient data)
    concordance: dict


def build_consult_document(body: bytes, content_type: str | None, context: ConsultContext, packet: Bundle, *,
                           now: datetime, new_id: IdFactory) -> ConsultDocument:
    """Read a consult in any accepted form and build our consult document with its second-opinion summary.

    Errors leave as MappingError/ServiceError: 400 unparseable or hostile XML, 413 too large, 415 media type,
    422 not a consult about this patient or not a valid document. Nothing is stored here.
    """
    fmt = consult_format(body, content_type)
    warnings: list[str] = []
    if fmt == "ccda":
        mapping = map_ccda_consult(parse_ccda(body), context, now=now, new_id=new_id)
        document, warnings = mapping.bundle, list(mapping.warnings)
    else:
        source = parse_fhir_json_consult(body) if fmt == "fhir-json" else parse_fhir_xml_consult(body)
        document = build_consult_bundle(source, context, now=now, new_id=new_id)
    document, summary = add_summary_section(document, packet)
    problems = check_document_bundle(document)
    if problems:
        raise MappingError(f"the consult does not make a valid FHIR document: {problems[0]}")
    if warnings:
        log.info("consult for referral %s mapped from C-CDA with %d warnings", context.referral_id, len(warnings))
    return ConsultDocument(document, fmt, warnings, summary.concordance)


def concordance_of(document_json: str, packet_json: str) -> dict:
    """The concordance object of a stored consult document against its referral's frozen packet."""
    return json.loads(_concordance_text(document_json, packet_json))


@lru_cache(maxsize=64)
def _concordance_text(document_json: str, packet_json: str) -> str:
    """Both inputs are immutable once stored, so the answer is cached (as text, so callers cannot change it)."""
    document = Bundle.model_validate_json(document_json)
    packet = Bundle.model_validate_json(packet_json)
    return json.dumps(summarise_consult(document, packet).concordance)
