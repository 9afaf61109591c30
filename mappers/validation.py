"""Checks the models do not make: FHIR document invariants (bdl-7/9/10/11, references) and timezone-aware clocks."""

import re
from datetime import date, datetime

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.composition import Composition, CompositionSection
from fhir.resources.R4B.resource import Resource

from mappers.narrative import check_narrative
from mappers.references import iter_references, rest_base

_RELATIVE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_HISTORY = re.compile(r"/_history/[A-Za-z0-9\-.]{1,64}$")


def require_aware(now: datetime) -> datetime:
    """Return now, refusing a naive datetime (FHIR instants need a timezone)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now


def check_document_bundle(bundle: Bundle) -> list[str]:
    """Problems that make a Bundle an invalid FHIR document (an empty list means valid)."""
    problems = _header_problems(bundle)
    entries = bundle.entry or []
    full_urls = [e.fullUrl for e in entries]
    for index, entry in enumerate(entries):
        if not entry.fullUrl:
            problems.append(f"Bundle.entry[{index}] has no fullUrl")
        if entry.resource is None:
            problems.append(f"Bundle.entry[{index}] has no resource")
    problems += _duplicate_full_urls(bundle)
    known = {u for u in full_urls if u}
    for index, entry in enumerate(entries):
        if entry.resource is not None:
            problems += _reference_problems(index, entry.resource, entry.fullUrl or "", known)
            problems += _narrative_problems(index, entry.resource)
    composition = entries[0].resource if entries else None
    if isinstance(composition, Composition):
        problems += _composition_problems(bundle, composition, entries[0].fullUrl or "", known)
    return problems


def _header_problems(bundle: Bundle) -> list[str]:
    """bdl-9, bdl-10, bdl-11 and the Bundle type."""
    problems = []
    if bundle.type != "document":
        problems.append(f"Bundle.type is {bundle.type}, not document")
    if bundle.identifier is None or not bundle.identifier.system or not bundle.identifier.value:
        problems.append("a document must have an identifier with a system and a value (bdl-9)")
    if bundle.timestamp is None:
        problems.append("a document must have a timestamp (bdl-10)")
    entries = bundle.entry or []
    if not entries or not isinstance(entries[0].resource, Composition):
        problems.append("a document must have a Composition as the first resource (bdl-11)")
    return problems


def _duplicate_full_urls(bundle: Bundle) -> list[str]:
    """bdl-7: fullUrl unique (unless the entries are different versions of one resource)."""
    seen: dict[tuple[str, str | None], int] = {}
    problems = []
    for index, entry in enumerate(bundle.entry or []):
        meta = getattr(entry.resource, "meta", None)
        key = (entry.fullUrl or "", meta.versionId if meta is not None else None)
        if entry.fullUrl and key in seen:
            problems.append(f"Bundle.entry[{index}].fullUrl repeats Bundle.entry[{seen[key]}].fullUrl (bdl-7)")
        seen.setdefault(key, index)
    return problems


def _reference_problems(index: int, resource: Resource, full_url: str, known: set[str]) -> list[str]:
    """Literal references of one entry that do not resolve inside the Bundle (or to a contained resource)."""
    contained = {c.id for c in getattr(resource, "contained", None) or [] if c.id}
    problems = []
    for ref in iter_references(resource):
        literal = ref.reference
        if not literal:
            continue
        if literal.startswith("#"):
            if literal != "#" and literal[1:] not in contained:
                problems.append(f"Bundle.entry[{index}] refers to {literal}, which is not a contained resource")
        elif resolve_in_bundle(literal, full_url, known) is None:
            problems.append(f"Bundle.entry[{index}] ({resource.get_resource_type()}) refers to {literal}, "
                            "which is not in the Bundle")
    return problems


def resolve_in_bundle(literal: str, full_url: str, known: set[str]) -> str | None:
    """The fullUrl a literal reference resolves to (FHIR R4 bundle.html#references), or None."""
    literal = _HISTORY.sub("", literal)
    if literal in known:
        return literal
    base = rest_base(full_url)
    if base and _RELATIVE.match(literal) and f"{base}/{literal}" in known:
        return f"{base}/{literal}"
    return None


def _narrative_problems(index: int, resource: Resource) -> list[str]:
    """txt-1/txt-2 problems of an entry's narrative and, for a Composition, of its sections."""
    texts = [("text", getattr(resource, "text", None))]
    if isinstance(resource, Composition):
        texts += [(f"section[{i}].text", s.text) for i, s in _numbered_sections(resource.section or [])]
    return [f"Bundle.entry[{index}].{where}: {problem}"
            for where, text in texts if text is not None and text.div is not None
            for problem in check_narrative(text.div)]


def _numbered_sections(sections: list[CompositionSection], prefix: str = "") -> list[tuple[str, CompositionSection]]:
    """Sections and nested sections with their paths ("2", "2].section[0")."""
    numbered: list[tuple[str, CompositionSection]] = []
    for i, section in enumerate(sections):
        path = f"{prefix}{i}"
        numbered.append((path, section))
        numbered += _numbered_sections(section.section or [], f"{path}].section[")
    return numbered


def _composition_problems(bundle: Bundle, composition: Composition, full_url: str, known: set[str]) -> list[str]:
    """The Composition's subject resolves; the timestamp is not before the Composition's date."""
    problems = []
    subject = composition.subject.reference if composition.subject is not None else None
    if not subject or resolve_in_bundle(subject, full_url, known) is None:
        problems.append("Composition.subject does not resolve to an entry in the Bundle")
    timestamp, date_ = bundle.timestamp, composition.date
    if timestamp is not None and date_ is not None and instant_before(timestamp, date_):
        problems.append("Bundle.timestamp is before Composition.date")
    return problems


def instant_before(timestamp: datetime, value: object) -> bool:
    """Whether an instant is before a FHIR dateTime (compared at the dateTime's precision)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return timestamp.replace(tzinfo=None) < value
        return timestamp < value
    if isinstance(value, date):
        return timestamp.date() < value
    parts = tuple(int(p) for p in str(value).split("-")[:2] if p.isdigit())
    return (timestamp.year, timestamp.month)[: len(parts)] < parts
