"""Checks the models do not make: FHIR document invariants (bdl-7/9/10/11, references) and timezone-aware clocks."""

import re
from datetime import date, datetime

from fhir.resources.R4B.bundle import Bundle

from mappers.narrative import check_narrative
from mappers.references import json_references, rest_base

_RELATIVE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_HISTORY = re.compile(r"/_history/[A-Za-z0-9\-.]{1,64}$")


def require_aware(now: datetime) -> datetime:
    """Return now, refusing a naive datetime (FHIR instants need a timezone)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now


def check_document_bundle(bundle: Bundle) -> list[str]:
    """Problems that make a Bundle an invalid FHIR document (an empty list means valid)."""
    return check_document_json(bundle.model_dump(mode="json", exclude_none=True))


def check_document_json(bundle: dict) -> list[str]:
    """check_document_bundle for a Bundle's JSON (a packet as it is stored and sent)."""
    problems = _header_problems(bundle)
    entries = _objects(bundle.get("entry"))
    full_urls = [e.get("fullUrl") for e in entries]
    for index, entry in enumerate(entries):
        if not entry.get("fullUrl"):
            problems.append(f"Bundle.entry[{index}] has no fullUrl")
        if not isinstance(entry.get("resource"), dict):
            problems.append(f"Bundle.entry[{index}] has no resource")
    problems += _duplicate_full_urls(entries)
    known = {u for u in full_urls if u}
    for index, entry in enumerate(entries):
        resource = entry.get("resource")
        if isinstance(resource, dict):
            problems += _reference_problems(index, resource, entry.get("fullUrl") or "", known)
            problems += _narrative_problems(index, resource)
    composition = entries[0].get("resource") if entries else None
    if _is_composition(composition):
        problems += _composition_problems(bundle, composition, entries[0].get("fullUrl") or "", known)
    return problems


def _objects(value: object) -> list[dict]:
    """A JSON array's objects (anything else counts as an empty object, so that it is reported)."""
    return [v if isinstance(v, dict) else {} for v in value] if isinstance(value, list) else []


def _is_composition(resource: object) -> bool:
    return isinstance(resource, dict) and resource.get("resourceType") == "Composition"


def _header_problems(bundle: dict) -> list[str]:
    """bdl-9, bdl-10, bdl-11 and the Bundle type."""
    problems = []
    if bundle.get("type") != "document":
        problems.append(f"Bundle.type is {bundle.get('type')}, not document")
    identifier = bundle.get("identifier")
    if not isinstance(identifier, dict) or not identifier.get("system") or not identifier.get("value"):
        problems.append("a document must have an identifier with a system and a value (bdl-9)")
    if not bundle.get("timestamp"):
        problems.append("a document must have a timestamp (bdl-10)")
    entries = _objects(bundle.get("entry"))
    if not entries or not _is_composition(entries[0].get("resource")):
        problems.append("a document must have a Composition as the first resource (bdl-11)")
    return problems


def _duplicate_full_urls(entries: list[dict]) -> list[str]:
    """bdl-7: fullUrl unique (unless the entries are different versions of one resource)."""
    seen: dict[tuple[str, str | None], int] = {}
    problems = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource")
        meta = resource.get("meta") if isinstance(resource, dict) else None
        key = (entry.get("fullUrl") or "", meta.get("versionId") if isinstance(meta, dict) else None)
        if entry.get("fullUrl") and key in seen:
            problems.append(f"Bundle.entry[{index}].fullUrl repeats Bundle.entry[{seen[key]}].fullUrl (bdl-7)")
        seen.setdefault(key, index)
    return problems


def _reference_problems(index: int, resource: dict, full_url: str, known: set[str]) -> list[str]:
    """Literal references of one entry that do not resolve inside the Bundle (or to a contained resource)."""
    contained = {c.get("id") for c in _objects(resource.get("contained")) if c.get("id")}
    problems = []
    for ref in json_references(resource):
        literal = ref["reference"]
        if not literal:
            continue
        if literal.startswith("#"):
            if literal != "#" and literal[1:] not in contained:
                problems.append(f"Bundle.entry[{index}] refers to {literal}, which is not a contained resource")
        elif resolve_in_bundle(literal, full_url, known) is None:
            problems.append(f"Bundle.entry[{index}] ({resource.get('resourceType')}) refers to {literal}, "
                            "which is not in the Bundle")
    return problems


def resolve_in_bundle(literal: str, full_url: str, known: set[str]) -> str | None:
    """The fullUrl a literal reference resolves to (FHIR R4 bundle.html#references), or None."""
    if "/_history/" in literal:
        literal = _HISTORY.sub("", literal)
    if literal in known:
        return literal
    base = rest_base(full_url)
    if base and _RELATIVE.match(literal) and f"{base}/{literal}" in known:
        return f"{base}/{literal}"
    return None


def _narrative_problems(index: int, resource: dict) -> list[str]:
    """txt-1/txt-2 problems of an entry's narrative and, for a Composition, of its sections."""
    texts = [("text", resource.get("text"))]
    if _is_composition(resource):
        texts += [(f"section[{i}].text", s.get("text")) for i, s in _numbered_sections(resource.get("section"))]
    return [f"Bundle.entry[{index}].{where}: {problem}"
            for where, text in texts if isinstance(text, dict) and isinstance(text.get("div"), str)
            for problem in check_narrative(text["div"])]


def _numbered_sections(sections: object, prefix: str = "") -> list[tuple[str, dict]]:
    """Sections and nested sections with their paths ("2", "2].section[0")."""
    numbered: list[tuple[str, dict]] = []
    for i, section in enumerate(_objects(sections)):
        path = f"{prefix}{i}"
        numbered.append((path, section))
        numbered += _numbered_sections(section.get("section"), f"{path}].section[")
    return numbered


def _composition_problems(bundle: dict, composition: dict, full_url: str, known: set[str]) -> list[str]:
    """The Composition's subject resolves; the timestamp is not before the Composition's date."""
    problems = []
    subject = composition.get("subject")
    literal = subject.get("reference") if isinstance(subject, dict) else None
    if not literal or resolve_in_bundle(literal, full_url, known) is None:
        problems.append("Composition.subject does not resolve to an entry in the Bundle")
    timestamp, date_ = _instant(bundle.get("timestamp")), _date_time(composition.get("date"))
    if timestamp is not None and date_ is not None and instant_before(timestamp, date_):
        problems.append("Bundle.timestamp is before Composition.date")
    return problems


def _instant(value: object) -> datetime | None:
    """A FHIR instant's JSON as a datetime (None when absent or unreadable)."""
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _date_time(value: object) -> object:
    """A FHIR dateTime's JSON at its precision: a datetime, a date, or the partial text ("2024", "2024-06")."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value) if len(value) > 10 else date.fromisoformat(value) \
            if len(value) == 10 else value
    except ValueError:
        return None


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
