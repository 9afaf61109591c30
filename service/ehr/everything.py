"""`Patient/$everything` as a fast path: when to take it, what to ask for, and what to keep of the answer.

The answer (the patient, its compartment and what those reference) holds more than the per-type plan would fetch.
`select_like_plan` keeps exactly what the plan would have: per planned search, the resources its parameters match
and what its `_include`s bring; then, one level down from those and the Patient (as the fetch notes references),
the referenced Practitioners, Organizations, Medications... it would have read in `_id` batches, and the keys of
those the answer did not bring, for the usual batches. It does no I/O.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from mappers.references import json_references, json_resource_key, reference_key
from service.ehr.capability import has_operation
from service.ehr.plan import INCLUDES, REFERENCED_TYPES, PlannedSearch

EVERYTHING_MODES = ("auto", "never")  # FHIR_EVERYTHING: "auto" = where the CapabilityStatement advertises it
EVERYTHING_COUNT = 100  # _count asked of $everything (a server may cap it; the pages say how they go on)
# The patient a planned search's `patient` parameter names (R4: <Type>.subject, AllergyIntolerance.patient).
PATIENT_ELEMENTS = ("subject", "patient")
# Token parameters of the plan, by type: parameter → element (a code, Coding or CodeableConcept).
TOKEN_ELEMENTS: dict[str, dict[str, str]] = {
    "MedicationRequest": {"intent": "intent"},
    "DocumentReference": {"type": "type"},
    "Encounter": {"class": "class"},
}
FALLBACK_STATUSES = frozenset({*range(400, 429), *range(430, 500), 501})  # refused: not retried, use the plan


@dataclass(frozen=True)
class Selection:
    """What the per-type plan would have fetched, taken from a $everything answer (the JSON objects it holds)."""

    matched: list[list[dict]]  # per planned search: what it matches, then what its includes bring
    referenced: list[dict]  # what the plan would have read by _id and the answer brought
    unresolved: list[str]  # "Type/id" the plan would have read by _id and the answer did not bring


def advertises_everything(capability: CapabilityStatement) -> bool:
    """Whether the CapabilityStatement lists Patient/$everything (on Patient or server-wide)."""
    return has_operation(capability, "Patient", "everything")


def selectable(search: PlannedSearch) -> bool:
    """Whether select_like_plan can apply every parameter of this search (else it runs as a search)."""
    tokens = TOKEN_ELEMENTS.get(search.resource_type, {})
    known = INCLUDES.get(search.resource_type, {})
    return (all(name in ("patient", "_include") or name in tokens for name in search.params)
            and "patient" in search.params and all(name in known for name in search.include_names()))


def everything_types(searches: Sequence[PlannedSearch]) -> list[str]:
    """The `_type` to ask for: the Patient, the types the searches look for and the types they reference."""
    return list(dict.fromkeys(["Patient", *(s.resource_type for s in searches), *REFERENCED_TYPES]))


def select_like_plan(searches: Sequence[PlannedSearch], patient_id: str, resources: Iterable[dict],
                     base_url: str = "") -> Selection:
    """Pick from a $everything answer what the searches (all `selectable`) and their reference reads would bring."""
    by_key: dict[str, dict] = {}
    for data in resources:
        key = json_resource_key(data)
        if key and key not in by_key:
            by_key[key] = data
    chosen: set[str] = set()
    followed = [d for k, d in by_key.items() if k == f"Patient/{patient_id}"]  # the fetch notes the Patient's too
    matched: list[list[dict]] = []
    for search in searches:
        own = [d for d in by_key.values()
               if d.get("resourceType") == search.resource_type and matches_search(search, d, base_url)]
        found = list(own)
        keys = {json_resource_key(d) for d in own}
        for data in own:
            for key in included_keys(search, data, base_url):
                if key in by_key and key not in keys:
                    keys.add(key)
                    found.append(by_key[key])
        matched.append(found)
        chosen.update(k for k in keys if k)
        followed += found
    referenced: list[dict] = []
    unresolved: list[str] = []
    for data in followed:
        for ref in json_references(data):
            key = reference_key(ref["reference"], base_url)
            if key and key.split("/")[0] in REFERENCED_TYPES and key not in chosen:
                chosen.add(key)
                if key in by_key:
                    referenced.append(by_key[key])
                else:
                    unresolved.append(key)
    return Selection(matched, referenced, unresolved)


def matches_search(search: PlannedSearch, data: dict, base_url: str = "") -> bool:
    """Whether a resource of the search's type matches its parameters (patient, then token parameters)."""
    tokens = TOKEN_ELEMENTS.get(search.resource_type, {})
    for name, value in search.params.items():
        if name == "_include":
            continue
        if name == "patient":
            if not _about_patient(data, str(value), base_url):
                return False
        elif name in tokens:
            if not _token_matches(data.get(tokens[name]), str(value)):
                return False
        else:
            raise ValueError(f"{search.resource_type} parameter {name!r} cannot be applied to $everything")
    return True


def included_keys(search: PlannedSearch, data: dict, base_url: str = "") -> list[str]:
    """"Type/id" of what the search's includes bring for one matched resource (in include, then element order)."""
    keys = []
    for name in search.include_names():
        path, types = INCLUDES[search.resource_type][name]
        for ref in _references_at(data, path):
            key = reference_key(ref, base_url)
            if key and key.split("/")[0] in types:
                keys.append(key)
    return keys


def _about_patient(data: dict, patient: str, base_url: str) -> bool:
    wanted = patient if patient.startswith("Patient/") else f"Patient/{patient}"
    return any(reference_key(ref, base_url) == wanted for element in PATIENT_ELEMENTS
               for ref in _references_at(data, (element,)))


def _references_at(data: object, path: tuple[str, ...]) -> list[str]:
    """The reference strings at an element path (lists are walked at every step)."""
    items = [data]
    for step in path:
        items = [v for item in items if isinstance(item, dict)
                 for v in (item.get(step) if isinstance(item.get(step), list) else [item.get(step)])]
    return [item["reference"] for item in items if isinstance(item, dict) and isinstance(item.get("reference"), str)]


def _token_matches(element: object, value: str) -> bool:
    """FHIR token search on one element: any of the comma-separated `[system|]code` values matches a coding."""
    codings = _codings(element)
    for token in value.split(","):
        system, code = token.split("|", 1) if "|" in token else (None, token)
        for coding_system, coding_code in codings:
            if coding_code == code and (system is None or (system or None) == coding_system):
                return True
    return False


def _codings(element: object) -> list[tuple[str | None, str]]:
    if isinstance(element, str):
        return [(None, element)]
    if not isinstance(element, dict):
        return []
    codings = element.get("coding") if "coding" in element else [element]
    return [(c.get("system"), c["code"]) for c in codings or []
            if isinstance(c, dict) and isinstance(c.get("code"), str)]
