"""Consult intake by media type (FHIR JSON, FHIR XML, C-CDA) → our consult document, and what it concluded."""

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime

from fhir.resources.R4B.bundle import Bundle

from mappers.ccda.document import map_ccda_consult
from mappers.ccda.parser import parse_ccda
from mappers.consult import build_consult_bundle
from mappers.consult_context import ConsultContext
from mappers.errors import MappingError
from mappers.ids import IdFactory
from mappers.references import rewrite_references
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
        # the C-CDA mapper copies the packet's Patient as is: its references (GP, organisation) point into the
        # packet, so they keep only their display and identifier here (as mappers/consult.py does for FHIR)
        patient, _ = rewrite_references(context.patient, {})
        mapping = map_ccda_consult(parse_ccda(body), replace(context, patient=patient), now=now, new_id=new_id)
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
    """The concordance object of a stored consult document against its referral's frozen packet.

    Both are immutable once stored, so answers are kept (by a digest of the two, as JSON text so that callers
    cannot change them) for the next GET of the same referral.
    """
    key = hashlib.sha256(f"{len(document_json)}:{document_json}{packet_json}".encode()).hexdigest()
    with _CACHE_LOCK:
        text = _CACHE.get(key)
        if text is not None:
            _CACHE.move_to_end(key)
    if text is None:
        document = Bundle.model_validate_json(document_json)
        packet = Bundle.model_validate_json(packet_json)
        text = json.dumps(summarise_consult(document, packet).concordance)
        with _CACHE_LOCK:
            _CACHE[key] = text
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return json.loads(text)


_CACHE: OrderedDict[str, str] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 256
