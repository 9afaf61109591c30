"""Safe XHTML narrative: section tables and paragraphs built with lxml, plus the FHIR txt-1/txt-2 checks.

Every text taken from a resource is set as an lxml text node, so it is escaped on serialisation; nothing is
concatenated into markup.
"""

import dataclasses
import re
from collections.abc import Callable, Collection, Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from fhir.resources.R4B.careplan import CarePlan, CarePlanActivity
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.domainresource import DomainResource
from fhir.resources.R4B.dosage import Dosage
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.narrative import Narrative
from fhir.resources.R4B.observation import Observation, ObservationReferenceRange
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.range import Range
from fhir.resources.R4B.ratio import Ratio
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.timing import Timing, TimingRepeat
from lxml import etree

from mappers import systems
from mappers.references import reference_key, reference_type

XHTML_NS = "http://www.w3.org/1999/xhtml"
_XHTML_PREFIX = f"{{{XHTML_NS}}}"  # lxml writes a namespaced tag as "{ns}local"
NONE_RECORDED = "None recorded"
Resolver = Callable[[str], Resource | None]


class DocumentView:
    """A Resolver for narratives built from the EHR's resources as a document carries them (references rewritten).

    A reference that the document resolves (by its literal, else its "Type/id" key, in `targets`) shows its
    target; any other (but `#contained`) shows as the document's copy does, display only: "<Type> (not included)"
    when it has no display, and never its own display when it points at something left out (`redacted`).
    This mirrors mappers.references.rewrite_references, so the narrative needs no rewritten copies.
    """

    def __init__(self, targets: Mapping[str, Resource], *, base_url: str = "",
                 redacted: Collection[str] = frozenset(),
                 rows: Mapping[int, tuple[Resource, "Row"]] | None = None) -> None:
        self.targets, self.base_url, self.redacted = targets, base_url, redacted
        self.rows = rows or {}  # standalone_row of resources, worked out before (by id(); the resource kept too)

    def known_row(self, resource: Resource) -> "Row | None":
        """The row worked out before for this very resource (standalone_row), if any."""
        found = self.rows.get(id(resource))
        return found[1] if found is not None and found[0] is resource else None

    def __call__(self, literal: str) -> Resource | None:
        return self.targets.get(literal) or self.targets.get(reference_key(literal, self.base_url) or "")

    def display(self, ref: Reference) -> str | None:
        """The display of the document's copy of ref."""
        literal = ref.reference
        if not literal or literal.startswith("#") or self(literal) is not None:
            return ref.display
        if ref.display and reference_key(literal, self.base_url) not in self.redacted:
            return ref.display
        return f"{reference_type(ref) or 'Resource'} (not included)"

# FHIR R4 narrative (txt-1): the basic HTML 4.0 formatting elements, tables, lists, <a> and <img>
# (fhir-xhtml.xsd); no head/body, scripts, forms, frames, objects, style elements or event attributes.
ALLOWED_ELEMENTS = frozenset(
    "a abbr acronym address b bdo big blockquote br caption cite code col colgroup dd del dfn div dl dt em "
    "h1 h2 h3 h4 h5 h6 hr i img ins kbd li ol p pre q samp small span strong sub sup table tbody td tfoot "
    "th thead tr tt ul var".split()
)
ALLOWED_ATTRIBUTES = frozenset(
    "abbr align alt axis border cellpadding cellspacing char charoff cite class colspan compact datetime "
    "dir frame headers height href hreflang id lang name rel rev rowspan rules scope span src start "
    "style summary title type valign value width".split()
)
_PLAIN_ATTRIBUTES = ALLOWED_ATTRIBUTES - {"href", "src"}  # allowed whatever their value (no namespace)
_ALLOWED_TAGS = frozenset(f"{_XHTML_PREFIX}{name}" for name in ALLOWED_ELEMENTS)  # as lxml writes them
_DROP_WITH_CONTENT = frozenset(
    "script style iframe object embed form head title meta link base applet frame frameset noscript "
    "template svg math audio video canvas input button select textarea".split()
)
_UNSAFE_URL = re.compile(r"^\s*(javascript|vbscript|data)\s*:", re.IGNORECASE)
_SAFE_IMAGE_SRC = re.compile(r"^\s*(#|data:image/)", re.IGNORECASE)
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of a section table: what it is, its status, its date, details and nested rows."""

    what: str
    status: str = ""
    date: str = ""
    details: tuple[str, ...] = ()
    children: tuple["Row", ...] = ()


# --- public builders ------------------------------------------------------------------------------------


def section_narrative(title: str, resources: list[Resource], *, resolve: Resolver | None = None) -> Narrative:
    """A generated narrative: a table with one row per resource ("None recorded" when empty).

    The table is written as text, as lxml would serialise it (a large record has thousands of cells, and building
    them as elements took about half the time of a packet's narratives).
    """
    rows = resource_rows(resources, resolve)
    if not rows:
        root = _element("div")
        _sub(root, "p", NONE_RECORDED)
        return _narrative(root)
    parts = [f'<div xmlns="{XHTML_NS}"><table><caption>', _escaped(title), "</caption><thead><tr>",
             *(f"<th>{heading}</th>" for heading in _HEADINGS), "</tr></thead><tbody>"]
    for row in rows:
        _add_row(parts, row, nested=False)
    parts.append("</tbody></table></div>")
    return Narrative(status="generated", div="".join(parts))


def text_narrative(paragraphs: list[str]) -> Narrative:
    """A generated narrative of plain paragraphs ("None recorded" when there are none)."""
    root = _element("div")
    texts = [p for p in (xml_text(p).strip() for p in paragraphs) if p] or [NONE_RECORDED]
    for text in texts:
        _sub(root, "p", text)
    return _narrative(root)


def resource_rows(resources: list[Resource], resolve: Resolver | None = None) -> list[Row]:
    """Summarise resources as rows; an order for a drug already in a MedicationStatement joins its row.

    The de-duplication keys on the RxNorm code, else the drug text (case- and space-insensitive).
    """
    statement_keys = {
        key: r for r in resources
        if r.get_resource_type() == "MedicationStatement" and (key := medication_key(r, resolve))
    }
    notes: dict[int, list[str]] = {}
    rows: list[tuple[Resource, Row]] = []
    for resource in resources:
        key = medication_key(resource, resolve) if resource.get_resource_type() == "MedicationRequest" else None
        if key in statement_keys:
            notes.setdefault(id(statement_keys[key]), []).append(_also_ordered(resource))
            continue
        rows.append((resource, summarise(resource, resolve)))
    return [dataclasses.replace(row, details=row.details + tuple(notes[id(r)])) if id(r) in notes else row
            for r, row in rows]


def summarise(resource: Resource, resolve: Resolver | None = None) -> Row:
    """Summarise one resource as a row (a generic summary for types without their own)."""
    if isinstance(resolve, DocumentView) and (known := resolve.known_row(resource)) is not None:
        return known
    summariser = _SUMMARISERS.get(resource.get_resource_type(), _summarise_generic)
    return summariser(resource, resolve)


class _NeedsDocument(Exception):
    """A summary asked about a reference: its row depends on the document it is in."""


class _NoDocument(DocumentView):
    """The resolver of standalone_row: any question about a reference ends the summary."""

    def __init__(self) -> None:
        super().__init__({})

    def __call__(self, literal: str) -> Resource | None:
        raise _NeedsDocument

    def display(self, ref: Reference) -> str | None:
        raise _NeedsDocument


def standalone_row(resource: Resource) -> Row | None:
    """The row of a resource whose summary asks nothing about its references, so that it is the same in any
    document (None when it asks). The fetch works these out while it waits on the network; a DocumentView given
    them (rows) hands them back instead of summarising again."""
    try:
        return summarise(resource, _NoDocument())
    except _NeedsDocument:
        return None


# --- the txt-1 / txt-2 checks and the sanitiser --------------------------------------------------------


def check_narrative(div: str) -> list[str]:
    """Problems that break FHIR's narrative rules txt-1 (allowed XHTML only) and txt-2 (not empty)."""
    try:
        root = etree.fromstring(div.encode("utf-8"), parser=_parser())
    except etree.XMLSyntaxError as exc:
        return [f"the narrative is not well-formed XML (line {exc.lineno}) (txt-1)"]
    problems: list[str] = []
    if root.tag != f"{{{XHTML_NS}}}div":
        problems.append("the narrative's root element must be an XHTML div (txt-1)")
    for node in root.iter():
        if node.tag in _ALLOWED_TAGS and not node.attrib:  # most nodes: nothing to look at (a section table has
            continue  # thousands, and the document check reads every one while its caller waits)
        problems.extend(_node_problems(node))
    if not any(text.strip() for text in root.itertext()) and root.find(f".//{{{XHTML_NS}}}img") is None:
        problems.append("the narrative has no content (txt-2)")
    return list(dict.fromkeys(problems))


def sanitize_div(div: str) -> etree._Element:
    """Parse a narrative div and strip everything txt-1 does not allow (and remote images) for display."""
    try:
        root = etree.fromstring(div.encode("utf-8"), parser=_parser())
    except etree.XMLSyntaxError:
        root = _element("div")
        _sub(root, "p", "(this narrative could not be read)")
        return root
    if root.tag != f"{{{XHTML_NS}}}div":
        wrapper = _element("div")
        wrapper.append(root)
        root = wrapper
    _strip_disallowed(root)
    return root


def _parser() -> etree.XMLParser:
    """A parser for untrusted XHTML: no entities, DTDs or network (one per call: lxml parsers are not
    thread-safe)."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def without_invalid_narrative(data: dict) -> dict:
    """A resource's JSON without a narrative that breaks txt-1/txt-2 (data itself when it has none or a valid one)."""
    text = data.get("text")
    if not isinstance(text, dict) or not narrative_breaks_rules(text.get("div")):
        return data
    return {name: value for name, value in data.items() if name != "text"}


def drop_invalid_narrative(resource: Resource) -> None:
    """Remove, in place, a resource narrative that breaks txt-1/txt-2 (unsafe or invalid XHTML from outside)."""
    if not isinstance(resource, DomainResource) or resource.text is None:
        return
    if narrative_breaks_rules(resource.text.div):
        resource.text = None


def narrative_breaks_rules(div: object) -> bool:
    """A narrative div that is missing, not text, or breaks txt-1/txt-2 (then the narrative is left out)."""
    return not div or not isinstance(div, str) or bool(check_narrative(div))


def _node_problems(node: etree._Element) -> list[str]:
    """The txt-1 problems of one node (element, comment or processing instruction)."""
    if isinstance(node, etree._ProcessingInstruction):
        return ["processing instructions are not allowed (txt-1)"]
    tag = node.tag
    if not isinstance(tag, str):  # comments are allowed
        return []
    if not tag.startswith(_XHTML_PREFIX):
        return [f"element <{etree.QName(node).localname}> is not in the XHTML namespace (txt-1)"]
    local = tag[len(_XHTML_PREFIX):]
    if local not in ALLOWED_ELEMENTS:
        return [f"element <{local}> is not allowed (txt-1)"]
    if not node.attrib:
        return []
    return [p for name, value in node.attrib.items() if (p := _attribute_problem(local, name, value))]


def _attribute_problem(element: str, name: str, value: str) -> str | None:
    """The txt-1 problem with one attribute, if any."""
    if name in _PLAIN_ATTRIBUTES:
        return None
    qname = etree.QName(name)
    if qname.namespace == "http://www.w3.org/XML/1998/namespace" and qname.localname == "lang":
        return None
    if qname.namespace or qname.localname not in ALLOWED_ATTRIBUTES:
        return f"attribute {qname.localname} on <{element}> is not allowed (txt-1)"
    if qname.localname == "href" and _UNSAFE_URL.match(value):
        return f"<{element}> links to a script or data URL (txt-1)"
    if qname.localname == "src" and _UNSAFE_URL.match(value) and not _SAFE_IMAGE_SRC.match(value):
        return f"<{element}> loads a script URL (txt-1)"
    return None


def _strip_disallowed(root: etree._Element) -> None:
    """Remove disallowed nodes and attributes in place (dropping script-like content, unwrapping the rest)."""
    unwrap: set[str] = set()
    for node in list(root.iter()):
        if node is root:
            continue
        if not isinstance(node.tag, str) or _local(node) in _DROP_WITH_CONTENT or _is_remote_image(node):
            _remove_keep_tail(node)
        elif etree.QName(node).namespace != XHTML_NS or _local(node) not in ALLOWED_ELEMENTS:
            unwrap.add(node.tag)
    if unwrap:
        etree.strip_tags(root, *unwrap)
    for node in root.iter():
        for name, value in list(node.attrib.items()):
            if _attribute_problem(_local(node), name, value):
                del node.attrib[name]


def _is_remote_image(node: etree._Element) -> bool:
    """An <img> that would load something from outside the document (a tracking risk when displayed)."""
    return _local(node) == "img" and not _SAFE_IMAGE_SRC.match(node.get("src", ""))


def _remove_keep_tail(node: etree._Element) -> None:
    """Remove a node but keep the text that follows it."""
    parent = node.getparent()
    if parent is None:
        return
    if node.tail:
        previous = node.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + node.tail
        else:
            parent.text = (parent.text or "") + node.tail
    parent.remove(node)


def _local(node: etree._Element) -> str:
    """The local name of an element (empty for comments and PIs)."""
    return etree.QName(node).localname if isinstance(node.tag, str) else ""


# --- XHTML building ------------------------------------------------------------------------------------


def _element(tag: str) -> etree._Element:
    """A root XHTML element with the default namespace."""
    return etree.Element(f"{{{XHTML_NS}}}{tag}", nsmap={None: XHTML_NS})


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    """Append an XHTML child with (escaped) text."""
    child = etree.SubElement(parent, f"{{{XHTML_NS}}}{tag}", attrib=attrs)
    if text is not None:
        child.text = xml_text(text)
    return child


_HEADINGS = ("Item", "Status", "Date", "Details")


def _escaped(text: str) -> str:
    """Text as XHTML element content: characters XML cannot carry removed, the rest escaped as lxml does (the
    markup characters, and the carriage return as a character reference). Chained replaces: for short strings
    that have none of them they are several times as fast as str.translate, and a section table has thousands."""
    return (xml_text(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\r", "&#13;"))


def _add_row(parts: list[str], row: Row, *, nested: bool) -> None:
    """Append a table row's XHTML and its nested rows'."""
    what = f"\u21b3 {row.what}" if nested else row.what
    details = "<br/>".join(_escaped(d) for d in row.details)
    tr = '<tr class="nested">' if nested else "<tr>"
    parts.append(f"{tr}<td>{_escaped(what)}</td><td>{_escaped(row.status)}</td><td>{_escaped(row.date)}</td>"
                 f"<td>{details}</td></tr>")
    for child in row.children:
        _add_row(parts, child, nested=True)


def _narrative(root: etree._Element) -> Narrative:
    """Wrap an XHTML div as a generated Narrative."""
    return Narrative(status="generated", div=etree.tostring(root, encoding="unicode"))


def xml_text(text: str) -> str:
    """Remove characters XML cannot carry (control characters, lone surrogates)."""
    return _XML_INVALID.sub("", text)


# --- formatting of data types --------------------------------------------------------------------------


def concept_text(concept: CodeableConcept | None) -> str:
    """The human text of a CodeableConcept: its text, else the first coding's display or code."""
    if concept is None:
        return ""
    if concept.text:
        return concept.text
    for coding in concept.coding or []:
        if coding.display:
            return coding.display
    return next((c.code for c in concept.coding or [] if c.code), "")


def status_code(concept: CodeableConcept | None) -> str:
    """The code (else text) of a status CodeableConcept such as Condition.clinicalStatus."""
    if concept is None:
        return ""
    return next((c.code for c in concept.coding or [] if c.code), concept.text or "")


def format_date(value: object) -> str:
    """A date or dateTime for people: 2024-06-01, or 2024-06-01 14:30 UTC / +02:00."""
    if isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M")
        if value.tzinfo is None:
            return text
        offset = value.utcoffset()
        return f"{text} UTC" if not offset else f"{text} {value.isoformat()[-6:]}"
    if isinstance(value, (date, time)):
        return value.isoformat()
    return str(value) if value else ""


def format_number(value: object) -> str:
    """A number as written (no float noise, no trailing .0 on whole numbers)."""
    if isinstance(value, Decimal):
        return str(value.to_integral_value()) if value == value.to_integral_value() else str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def format_quantity(quantity: Quantity | None) -> str:
    """A Quantity (also Age, Duration) as "< 5 mg"."""
    if quantity is None or quantity.value is None:
        return ""
    unit = quantity.unit or quantity.code or ""
    text = f"{quantity.comparator or ''}{format_number(quantity.value)}"
    return f"{text} {unit}".strip()


def format_period(period: Period | None) -> str:
    """A Period as "start – end" (either side may be open)."""
    if period is None:
        return ""
    start, end = format_date(period.start), format_date(period.end)
    if start and end and start != end:
        return f"{start} \u2013 {end}"
    return start or (f"until {end}" if end else "")


def format_range(value: Range | ObservationReferenceRange | None) -> str:
    """A Range (or a reference range) as "low – high"."""
    if value is None:
        return ""
    low, high = format_quantity(value.low), format_quantity(value.high)
    if low and high:
        return f"{low} \u2013 {high}"
    return f"\u2265 {low}" if low else (f"\u2264 {high}" if high else "")


def choice_text(resource: object, prefix: str) -> str:
    """Format a FHIR choice element (prefix[x]) whichever type it has."""
    # A model's set fields are in its __dict__; getattr on a name the model lacks goes through pydantic's slow
    # __getattr__ and an AttributeError (a tenth of a packet's narrative time).
    fields = getattr(resource, "__dict__", {})
    for suffix, formatter in _CHOICE_FORMATTERS:
        value = fields.get(prefix + suffix)
        if value is not None:
            return formatter(value)
    return ""


def _format_ratio(ratio: Ratio) -> str:
    """A Ratio as "numerator / denominator"."""
    return f"{format_quantity(ratio.numerator)} / {format_quantity(ratio.denominator)}"


_CHOICE_FORMATTERS: tuple[tuple[str, Callable[[Any], str]], ...] = (
    ("Quantity", format_quantity),
    ("CodeableConcept", concept_text),
    ("String", str),
    ("Boolean", lambda v: "yes" if v else "no"),
    ("Integer", str),
    ("DateTime", format_date),
    ("Instant", format_date),
    ("Date", format_date),
    ("Time", format_date),
    ("Period", format_period),
    ("Range", format_range),
    ("Age", format_quantity),
    ("Ratio", _format_ratio),
    ("SampledData", lambda v: "sampled data"),
)


def reference_label(ref: Reference | None, owner: Resource, resolve: Resolver | None) -> str:
    """A label for a reference: its display, else a name or code of the resource it points at."""
    if ref is None:
        return ""
    display = resolve.display(ref) if isinstance(resolve, DocumentView) else ref.display
    if display:
        return display
    target = resolve_reference(ref, owner, resolve)
    if target is not None:
        return resource_label(target)
    return reference_type(ref) or ""


def resolve_reference(ref: Reference | None, owner: Resource, resolve: Resolver | None) -> Resource | None:
    """Resolve a reference to a contained resource of owner, or through resolve."""
    if ref is None or not ref.reference:
        return None
    if ref.reference.startswith("#"):
        return next((c for c in getattr(owner, "contained", None) or [] if c.id == ref.reference[1:]), None)
    return resolve(ref.reference) if resolve else None


def resource_label(resource: Resource) -> str:
    """A short name for a resource: its name, title or code (else its type)."""
    for field in ("name", "title", "code", "type"):
        value = getattr(resource, field, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, HumanName):
            text = human_name(value)
        elif isinstance(value, CodeableConcept):
            text = concept_text(value)
        else:
            text = value if isinstance(value, str) else ""
        if text:
            return text
    return resource.get_resource_type()


def human_name(name: HumanName) -> str:
    """A HumanName as text: its text, else prefix given family suffix."""
    if name.text:
        return name.text
    parts = [*(name.prefix or []), *(name.given or []), name.family or "", *(name.suffix or [])]
    return " ".join(p for p in parts if p)


# --- dosage --------------------------------------------------------------------------------------------

_COUNT_UNITS = frozenset(
    "tablet capsule puff drop patch spray suppository application inhalation lozenge vial ampule pill dose "
    "actuation injection sachet scoop unit film".split()
)
_TIMES = {1: "once", 2: "twice", 3: "three times", 4: "four times"}
_EVERY_ONE = {"s": "every second", "min": "every minute", "h": "every hour", "d": "daily", "wk": "weekly",
              "mo": "monthly", "a": "yearly"}
_PER_ONE = {"s": "a second", "min": "a minute", "h": "an hour", "d": "daily", "wk": "weekly",
            "mo": "monthly", "a": "yearly"}
_UNIT_PLURAL = {"s": "seconds", "min": "minutes", "h": "hours", "d": "days", "wk": "weeks", "mo": "months",
                "a": "years"}
_WHEN = {"MORN": "in the morning", "AFT": "in the afternoon", "EVE": "in the evening", "NIGHT": "at night",
         "HS": "at bedtime", "WAKE": "on waking", "C": "with meals", "CM": "with breakfast", "CD": "with lunch",
         "CV": "with dinner", "AC": "before meals", "ACM": "before breakfast", "ACD": "before lunch",
         "ACV": "before dinner", "PC": "after meals", "PCM": "after breakfast", "PCD": "after lunch",
         "PCV": "after dinner"}


def dosage_text(dosage: Dosage) -> str:
    """A dosage for people: its text, else built from dose, timing, as-needed and route."""
    if dosage.text:
        return dosage.text
    parts = [p for p in (_dose_text(dosage), timing_text(dosage.timing), _as_needed_text(dosage)) if p]
    text = " ".join(parts)
    route = concept_text(dosage.route)
    if route:
        text = f"{text}, {route}" if text else route
    return text or (dosage.patientInstruction or "")


def _dose_text(dosage: Dosage) -> str:
    """The dose of the first doseAndRate, with a counted unit pluralised ("2 tablets")."""
    for dose_and_rate in dosage.doseAndRate or []:
        if dose_and_rate.doseQuantity is not None:
            return _counted(dose_and_rate.doseQuantity)
        if dose_and_rate.doseRange is not None:
            return format_range(dose_and_rate.doseRange)
    return ""


def _counted(quantity: Quantity) -> str:
    """A dose quantity, pluralising count nouns such as tablet when the value is not one."""
    unit = (quantity.unit or quantity.code or "").strip("{}")
    number = format_number(quantity.value) if quantity.value is not None else ""
    if unit.lower() in _COUNT_UNITS and quantity.value is not None and quantity.value != 1:
        unit = f"{unit}s"
    return f"{number} {unit}".strip()


def _as_needed_text(dosage: Dosage) -> str:
    """ "as needed" (for a reason when given)."""
    if dosage.asNeededCodeableConcept is not None:
        return f"as needed for {concept_text(dosage.asNeededCodeableConcept)}"
    return "as needed" if dosage.asNeededBoolean else ""


def timing_text(timing: Timing | None) -> str:
    """A Timing for people, e.g. "twice daily", "every 8 hours", "once daily at bedtime for 7 days"."""
    if timing is None:
        return ""
    repeat = timing.repeat
    if repeat is None:
        return concept_text(timing.code)
    parts = [_frequency_text(repeat) or concept_text(timing.code)]
    parts += [_WHEN.get(w, w) for w in repeat.when or []]
    if repeat.dayOfWeek:
        parts.append("on " + ", ".join(repeat.dayOfWeek))
    if repeat.timeOfDay:
        parts.append("at " + ", ".join(format_date(t)[:5] for t in repeat.timeOfDay))
    if repeat.boundsDuration is not None:
        parts.append(f"for {format_quantity(repeat.boundsDuration)}")
    if repeat.count:
        parts.append(f"for {repeat.count} doses")
    return " ".join(p for p in parts if p)


def _frequency_text(repeat: TimingRepeat) -> str:
    """frequency / period / periodUnit as words ("twice daily", "every 8 hours", "1-2 times every 4-6 hours")."""
    if not repeat.periodUnit or repeat.period is None:
        return ""
    unit, frequency = repeat.periodUnit, repeat.frequency or 1
    single_period = repeat.period == 1 and repeat.periodMax is None
    period_text = format_number(repeat.period)
    if repeat.periodMax is not None:
        period_text = f"{period_text}-{format_number(repeat.periodMax)}"
    every = f"every {period_text} {_UNIT_PLURAL.get(unit, unit)}"
    if frequency == 1 and repeat.frequencyMax is None:
        return _EVERY_ONE.get(unit, f"every {unit}") if single_period else every
    times = (f"{frequency}-{repeat.frequencyMax} times" if repeat.frequencyMax
             else _TIMES.get(frequency, f"{frequency} times"))
    return f"{times} {_PER_ONE.get(unit, unit)}" if single_period else f"{times} {every}"


# --- medication de-duplication -------------------------------------------------------------------------


def medication_concept(resource: Resource, resolve: Resolver | None) -> CodeableConcept | None:
    """The drug of a MedicationStatement / MedicationRequest (inline, contained or referenced Medication)."""
    concept = getattr(resource, "medicationCodeableConcept", None)
    if concept is not None:
        return concept
    medication = resolve_reference(getattr(resource, "medicationReference", None), resource, resolve)
    return getattr(medication, "code", None) if medication is not None else None


def medication_name(resource: Resource, resolve: Resolver | None) -> str:
    """The drug's name as the record gives it."""
    text = concept_text(medication_concept(resource, resolve))
    return text or reference_label(getattr(resource, "medicationReference", None), resource, resolve) or "Medication"


def medication_key(resource: Resource, resolve: Resolver | None) -> str | None:
    """What identifies a drug for de-duplication: its RxNorm code, else its normalised text."""
    concept = medication_concept(resource, resolve)
    for coding in (concept.coding if concept is not None else None) or []:
        if coding.system == systems.RXNORM and coding.code:
            return f"rxnorm:{coding.code}"
    text = " ".join(medication_name(resource, resolve).split()).casefold()
    return f"text:{text}" if text and text != "medication" else None


def _also_ordered(request: Resource) -> str:
    """The note a MedicationStatement row gets for an order of the same drug."""
    parts = [p for p in (getattr(request, "status", None), format_date(getattr(request, "authoredOn", None))) if p]
    dosage = "; ".join(dosage_text(d) for d in getattr(request, "dosageInstruction", None) or [] if dosage_text(d))
    note = f"Also ordered ({', '.join(parts)})" if parts else "Also ordered"
    return f"{note}: {dosage}" if dosage else note


# --- one summariser per resource type ------------------------------------------------------------------


def _joined(*values: str | None) -> str:
    """Join the non-empty values with ", "."""
    return ", ".join(v for v in values if v)


def _labelled(label: str, value: str) -> tuple[str, ...]:
    """A one-detail tuple "Label: value", or nothing when value is empty."""
    return (f"{label}: {value}",) if value else ()


def _concepts(concepts: list[CodeableConcept] | None) -> str:
    """Several CodeableConcepts as "a; b"."""
    return "; ".join(t for t in (concept_text(c) for c in concepts or []) if t)


def _summarise_condition(condition: Condition, resolve: Resolver | None) -> Row:
    """Condition: code, clinical + verification status, onset, stage, severity, abatement."""
    stages = "; ".join(_joined(concept_text(s.summary), concept_text(s.type)) for s in condition.stage or [])
    return Row(
        what=concept_text(condition.code) or "Condition",
        status=_joined(status_code(condition.clinicalStatus), status_code(condition.verificationStatus)),
        date=choice_text(condition, "onset"),
        details=(*_labelled("Stage", stages), *_labelled("Severity", concept_text(condition.severity)),
                 *_labelled("Abated", choice_text(condition, "abatement"))),
    )


def _summarise_procedure(procedure: Procedure, resolve: Resolver | None) -> Row:
    """Procedure: code, status, date performed, body site, outcome, reason."""
    return Row(
        what=concept_text(procedure.code) or "Procedure",
        status=procedure.status or "",
        date=choice_text(procedure, "performed"),
        details=(*_labelled("Body site", _concepts(procedure.bodySite)),
                 *_labelled("Outcome", concept_text(procedure.outcome)),
                 *_labelled("Reason", _concepts(procedure.reasonCode))),
    )


def _summarise_observation(observation: Observation, resolve: Resolver | None) -> Row:
    """Observation: code, status, date, value + unit (or components), interpretation, reference range."""
    value = choice_text(observation, "value")
    if not value and observation.dataAbsentReason is not None:
        value = f"no value ({concept_text(observation.dataAbsentReason)})"
    components = "; ".join(f"{concept_text(c.code)}: {choice_text(c, 'value')}" for c in observation.component or [])
    ranges = "; ".join(r.text or format_range(r) for r in observation.referenceRange or [])
    return Row(
        what=concept_text(observation.code) or "Observation",
        status=observation.status or "",
        date=choice_text(observation, "effective") or format_date(observation.issued),
        details=(*_labelled("Value", value), *_labelled("Components", components),
                 *_labelled("Interpretation", _concepts(observation.interpretation)),
                 *_labelled("Reference range", ranges)),
    )


def _summarise_diagnostic_report(report: DiagnosticReport, resolve: Resolver | None) -> Row:
    """DiagnosticReport: code, status, date, conclusion; its result Observations as nested rows."""
    children = []
    for ref in report.result or []:
        target = resolve_reference(ref, report, resolve)
        children.append(summarise(target, resolve) if target is not None
                        else Row(what=reference_label(ref, report, resolve) or "Result"))
    attached = "; ".join(a.title or a.contentType or "" for a in report.presentedForm or [])
    return Row(
        what=concept_text(report.code) or "Report",
        status=report.status or "",
        date=choice_text(report, "effective") or format_date(report.issued),
        details=(*_labelled("Conclusion", report.conclusion or ""),
                 *_labelled("Coded conclusion", _concepts(report.conclusionCode)),
                 *_labelled("Attached", attached)),
        children=tuple(children),
    )


def _summarise_medication_statement(statement: MedicationStatement, resolve: Resolver | None) -> Row:
    """MedicationStatement: drug, status, when, dosage."""
    return Row(
        what=medication_name(statement, resolve),
        status=statement.status or "",
        date=choice_text(statement, "effective") or format_date(statement.dateAsserted),
        details=tuple(t for d in statement.dosage or [] if (t := dosage_text(d))),
    )


def _summarise_medication_request(request: MedicationRequest, resolve: Resolver | None) -> Row:
    """MedicationRequest: drug, status and intent, authored, dosage instructions."""
    return Row(
        what=medication_name(request, resolve),
        status=_joined(request.status, request.intent),
        date=format_date(request.authoredOn),
        details=tuple(t for d in request.dosageInstruction or [] if (t := dosage_text(d))),
    )


def _summarise_allergy(allergy: AllergyIntolerance, resolve: Resolver | None) -> Row:
    """AllergyIntolerance: substance, statuses, onset, type, category, criticality, reactions."""
    reactions = "; ".join(
        _joined(", ".join(concept_text(m) for m in r.manifestation or []), r.severity) for r in allergy.reaction or []
    )
    return Row(
        what=concept_text(allergy.code) or "Allergy or intolerance",
        status=_joined(status_code(allergy.clinicalStatus), status_code(allergy.verificationStatus)),
        date=choice_text(allergy, "onset") or format_date(allergy.recordedDate),
        details=(*_labelled("Type", _joined(allergy.type, ", ".join(allergy.category or []))),
                 *_labelled("Criticality", allergy.criticality or ""),
                 *_labelled("Reactions", reactions)),
    )


def _summarise_care_plan(plan: CarePlan, resolve: Resolver | None) -> Row:
    """CarePlan: title or category, status and intent, period, what it addresses, its activities."""
    activities = "; ".join(a for a in (_activity_text(act, plan, resolve) for act in plan.activity or []) if a)
    addresses = "; ".join(reference_label(r, plan, resolve) for r in plan.addresses or [])
    return Row(
        what=plan.title or _concepts(plan.category) or "Care plan",
        status=_joined(plan.status, plan.intent),
        date=format_period(plan.period),
        details=(*_labelled("Description", plan.description or ""), *_labelled("Addresses", addresses),
                 *_labelled("Activities", activities)),
    )


def _activity_text(activity: CarePlanActivity, plan: CarePlan, resolve: Resolver | None) -> str:
    """One CarePlan activity: its detail code (and status) or the resource it references."""
    detail = activity.detail
    if detail is not None:
        return _joined(concept_text(detail.code) or detail.description, detail.status)
    return reference_label(activity.reference, plan, resolve)


def _summarise_document_reference(document: DocumentReference, resolve: Resolver | None) -> Row:
    """DocumentReference: type, status, date, description and what its attachments are."""
    attachments = "; ".join(_joined(c.attachment.title, c.attachment.contentType) for c in document.content or [])
    period = document.context.period if document.context is not None else None
    return Row(
        what=concept_text(document.type) or "Document",
        status=document.docStatus or document.status or "",
        date=format_date(document.date) or format_period(period),
        details=(*_labelled("Description", document.description or ""), *_labelled("Content", attachments)),
    )


def _summarise_encounter(encounter: Encounter, resolve: Resolver | None) -> Row:
    """Encounter: type (else class), status, period, reason, provider."""
    encounter_class = encounter.class_fhir
    class_text = (encounter_class.display or encounter_class.code or "") if encounter_class is not None else ""
    return Row(
        what=_concepts(encounter.type) or class_text or "Encounter",
        status=encounter.status or "",
        date=format_period(encounter.period),
        details=(*_labelled("Reason", _concepts(encounter.reasonCode)),
                 *_labelled("Provider", reference_label(encounter.serviceProvider, encounter, resolve))),
    )


def _summarise_service_request(request: ServiceRequest, resolve: Resolver | None) -> Row:
    """ServiceRequest: code, status and intent, authored, reason, performer, notes."""
    performers = "; ".join(reference_label(r, request, resolve) for r in request.performer or [])
    return Row(
        what=concept_text(request.code) or "Service request",
        status=_joined(request.status, request.intent),
        date=format_date(request.authoredOn),
        details=(*_labelled("Reason", _concepts(request.reasonCode)), *_labelled("Performer", performers),
                 *(n.text for n in request.note or [] if n.text)),
    )


def _summarise_generic(resource: Resource, resolve: Resolver | None) -> Row:
    """Any other resource: its type, its code (code, vaccineCode…) if it has one, status and id."""
    codes = (v for name, v in resource if (name == "code" or name.endswith("Code")) and isinstance(v, CodeableConcept))
    code_text = concept_text(next(codes, None))
    status = getattr(resource, "status", None)
    what = resource.get_resource_type() + (f": {code_text}" if code_text else "")
    return Row(what=what, status=status if isinstance(status, str) else "", details=_labelled("id", resource.id or ""))


_SUMMARISERS: dict[str, Callable[[Any, Resolver | None], Row]] = {
    "Condition": _summarise_condition,
    "Procedure": _summarise_procedure,
    "Observation": _summarise_observation,
    "DiagnosticReport": _summarise_diagnostic_report,
    "MedicationStatement": _summarise_medication_statement,
    "MedicationRequest": _summarise_medication_request,
    "AllergyIntolerance": _summarise_allergy,
    "CarePlan": _summarise_care_plan,
    "DocumentReference": _summarise_document_reference,
    "Encounter": _summarise_encounter,
    "ServiceRequest": _summarise_service_request,
}
