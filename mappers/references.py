"""Find, normalise and rewrite the references inside FHIR resources (R4B models, or the EHR's JSON as dicts).

In FHIR JSON a Reference is the only element with a string `reference`, so the JSON functions take any object
with one for a Reference.
"""

import re
from datetime import date, datetime, time
from decimal import Decimal
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import TypeVar

from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from fhir_core.fhirabstractmodel import FHIRAbstractModel

R = TypeVar("R", bound=Resource)
M = TypeVar("M", bound=FHIRAbstractModel)

# A relative literal reference: Type/id (FHIR id: letters, digits, '-', '.', up to 64), optionally versioned.
_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")
_REST_URL = re.compile(r"^(https?://.+)/[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


def iter_references(model: FHIRAbstractModel) -> Iterator[Reference]:
    """Yield every Reference element inside a resource or element (contained and extensions too), depth first."""
    for value in model.__dict__.values():  # the set values only: far cheaper than iterating every field
        if value is None or isinstance(value, _PRIMITIVES):
            continue
        if isinstance(value, list):
            for item in value:
                if isinstance(item, FHIRAbstractModel):
                    if isinstance(item, Reference):
                        yield item
                    yield from iter_references(item)
        elif isinstance(value, FHIRAbstractModel):
            if isinstance(value, Reference):
                yield value
            yield from iter_references(value)


_PRIMITIVES = (str, bool, int, float, bytes, Decimal, date, datetime, time)


def json_references(value: object) -> list[dict]:
    """Every Reference object inside a resource's JSON, in document order.

    json_reference_paths without the paths: the document check reads every entry's while its caller waits, and
    without building paths the walk takes half the time.
    """
    found: list[dict] = []
    try:
        _references_in((value,), found)
    except RecursionError:
        return [ref for _, ref in _reference_paths_by_stack(value)]
    return found


def _references_in(values: Iterable[object], found: list[dict]) -> None:
    for value in values:
        if value.__class__ is dict:
            if value.get("reference").__class__ is str:
                found.append(value)
            _references_in(value.values(), found)
        elif value.__class__ is list:
            _references_in(value, found)


def reference_key(ref: str | None, base_url: str = "") -> str | None:
    """Normalise a literal reference to "Type/id"; None for #contained, urn:, foreign or odd references."""
    if not ref or ref.startswith(("#", "urn:")):
        return None
    if "://" in ref:
        base = base_url.rstrip("/")
        if not base or not ref.startswith(base + "/"):
            return None
        ref = ref[len(base) + 1:]
    match = _RELATIVE.match(ref)
    if match is None:
        return None
    return ref if match.end(2) == len(ref) else f"{match.group(1)}/{match.group(2)}"  # without its _history part


def rest_base(url: str | None) -> str:
    """The server base of a RESTful URL "<base>/Type/id" ("" for urn: and other URLs)."""
    match = _REST_URL.match(url or "")
    return match.group(1) if match else ""


def reference_type(ref: Reference) -> str | None:
    """The resource type a reference points at, from its literal reference or its `type`."""
    return _referenced_type(ref.reference, ref.type)


def _referenced_type(reference: object, type_: object) -> str | None:
    literal = (reference if isinstance(reference, str) else "").split("/_history/", 1)[0]
    parts = literal.split("/")
    if len(parts) >= 2 and _RELATIVE.match("/".join(parts[-2:])):
        return parts[-2]
    return type_.rsplit("/", 1)[-1] if isinstance(type_, str) and type_ else None


def resource_key(resource: Resource) -> str | None:
    """Return "Type/id" for a resource that has an id."""
    return f"{resource.get_resource_type()}/{resource.id}" if resource.id else None


def json_resource_key(data: dict) -> str | None:
    """Return "Type/id" for a resource's JSON that has an id."""
    return f"{data.get('resourceType')}/{data['id']}" if data.get("id") else None


def rewrite_references(
    resource: R,
    mapping: Mapping[str, str],
    *,
    base_url: str = "",
    redact: Collection[str] = frozenset(),
    targets: Collection[str] | None = None,
) -> tuple[R, list[str]]:
    """Return a deep copy with references rewritten by mapping, and the references made display-only.

    A reference is looked up as written, then as its "Type/id" key. Values already in the mapping and
    `#contained` references stay. Anything else keeps its display and identifier and loses `reference`
    (display "<Type> (not included)" when it had none). References to `redact` keys (items the clinician
    left out) also lose display and identifier, so the left-out item's name does not travel with them.
    """
    copy = copy_reference_paths(resource)
    targets = set(mapping.values()) if targets is None else targets  # callers rewriting many pass it once
    dropped: list[str] = []
    for ref in iter_references(copy):
        literal = ref.reference
        if not literal or literal in targets:
            continue
        target, key = _lookup(literal, mapping, base_url)
        if target is not None:
            ref.reference = target
        elif not literal.startswith("#"):
            make_display_only(ref, redacted=key in redact)
            dropped.append(literal)
    return copy, dropped


Located = list[tuple[tuple[str | int, ...], dict]]  # (path from the resource, Reference object), document order


def json_reference_paths(value: object) -> Located:
    """Every Reference object inside a resource's JSON with its path (keys and list indexes) from value, in document
    order (for rewrite_json_references).

    Parsed JSON is plain dicts and lists, and exact class checks are the fast ones. The walk recurses, which is about
    twice as fast as keeping a stack of its own; JSON nested deeper than the interpreter's recursion limit allows
    from here is walked with an explicit stack instead.
    """
    found: Located = []
    try:
        if value.__class__ is dict:
            if value.get("reference").__class__ is str:
                found.append(((), value))
            _paths_in(value.items(), (), found)
        elif value.__class__ is list:
            _paths_in(enumerate(value), (), found)
    except RecursionError:
        return _reference_paths_by_stack(value)
    return found


def _paths_in(steps: Iterable[tuple[str | int, object]], path: tuple[str | int, ...], found: Located) -> None:
    for step, value in steps:
        if value.__class__ is dict:
            where = path + (step,)
            if value.get("reference").__class__ is str:
                found.append((where, value))
            _paths_in(value.items(), where, found)
        elif value.__class__ is list:
            _paths_in(enumerate(value), path + (step,), found)


def _reference_paths_by_stack(value: object) -> Located:
    """json_reference_paths without recursion, for JSON nested too deep to recurse through."""
    found: Located = []
    stack: list[tuple[tuple[str | int, ...], object]] = [((), value)]
    pop = stack.pop
    while stack:
        path, item = pop()
        if item.__class__ is dict:
            if item.get("reference").__class__ is str:
                found.append((path, item))
            children = [(path + (k,), v) for k, v in item.items() if v.__class__ is dict or v.__class__ is list]
        elif item.__class__ is list:
            children = [(path + (n,), v) for n, v in enumerate(item) if v.__class__ is dict or v.__class__ is list]
        else:
            continue
        if children:
            children.reverse()
            stack += children
    return found


def rewrite_json_references(
    data: dict,
    mapping: Mapping[str, str],
    *,
    located: Located | None = None,
    base_url: str = "",
    redact: Collection[str] = frozenset(),
    targets: Collection[str] | None = None,
) -> tuple[dict, list[str]]:
    """rewrite_references for a resource's JSON: a copy in which only the objects and arrays on the paths to the
    rewritten references are new. located: where data's references are (json_reference_paths), when known already.

    A reference nested in one that was redacted (inside the identifier it lost) goes with it.
    """
    targets = set(mapping.values()) if targets is None else targets
    dropped: list[str] = []
    copies: dict[int, dict | list] = {}  # id() of an original container → its copy in the result
    for path, ref in json_reference_paths(data) if located is None else located:
        literal = ref["reference"]
        if not literal or literal in targets or literal.startswith("#"):
            continue
        parent = _copied_parent(data, path, copies) if path else None
        if path and parent is None:
            continue  # inside a reference already made display-only and redacted
        new = dict(ref)
        target, key = _lookup(literal, mapping, base_url)
        if target is not None:
            new["reference"] = target
        else:
            make_json_display_only(new, redacted=key in redact)
            dropped.append(literal)
        if parent is not None:
            parent[path[-1]] = new  # type: ignore[index]
        copies[id(ref)] = new  # what is nested in it is copied into it
    return copies.get(id(data), data), dropped  # type: ignore[return-value]


def _lookup(literal: str, mapping: Mapping[str, str], base_url: str) -> tuple[str | None, str | None]:
    """What mapping rewrites a literal reference to (looked up as written, then as its "Type/id"), and that key
    (None when the literal as written was found: most are "Type/id" already, and the key costs a regex match)."""
    target = mapping.get(literal)
    if target:
        return target, None
    key = reference_key(literal, base_url)
    return (mapping.get(key) if key else None), key


def _copied_parent(data: dict, path: tuple[str | int, ...], copies: dict[int, dict | list]) -> dict | list | None:
    """The copy of the container holding path's last step (copying what leads there); None when a step is gone."""
    node = copies.get(id(data))
    if node is None:
        node = copies[id(data)] = dict(data)
    original: dict | list = data
    for step in path[:-1]:
        if node.__class__ is dict and step not in node:
            return None
        child = original[step]  # type: ignore[index]
        copy = copies.get(id(child))
        if copy is None:
            copy = copies[id(child)] = dict(child) if child.__class__ is dict else list(child)
            node[step] = copy  # type: ignore[index]
        node, original = copy, child
    if node.__class__ is dict and path[-1] not in node:
        return None
    return node


def make_json_display_only(ref: dict, *, redacted: bool = False) -> None:
    """make_display_only for a Reference's JSON (a dict the caller owns)."""
    type_name = _referenced_type(ref.get("reference"), ref.get("type")) or "Resource"
    ref.pop("reference", None)
    if redacted:
        ref.pop("identifier", None)
        ref.pop("display", None)
    if not ref.get("display"):
        ref["display"] = f"{type_name} (not included)"


def copy_reference_paths(model: M) -> M:
    """A copy in which every Reference, and every element on the way to one, is new; the rest is shared.

    Rewriting references mutates only those, so this is as safe as a deep copy at a fraction of its cost.
    """
    changes: dict[str, object] = {}
    for name, value in model.__dict__.items():
        if isinstance(value, list):
            if any(_holds_reference(item) for item in value):
                changes[name] = [copy_reference_paths(i) if _holds_reference(i) else i for i in value]
        elif _holds_reference(value):
            changes[name] = copy_reference_paths(value)
    return model.model_copy(update=changes)


def _holds_reference(value: object) -> bool:
    if not isinstance(value, FHIRAbstractModel):
        return False
    return isinstance(value, Reference) or next(iter_references(value), None) is not None


def make_display_only(ref: Reference, *, redacted: bool = False) -> None:
    """Drop a reference's literal target in place, keeping (unless redacted) its display and identifier."""
    type_name = reference_type(ref) or "Resource"
    ref.reference = None
    if redacted:
        ref.identifier = None
        ref.display = None
    if not ref.display:
        ref.display = f"{type_name} (not included)"
