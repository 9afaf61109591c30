"""Section dispatch: C-CDA sections (by templateId root, else LOINC code) → Composition.section + resources.

Structured: Problems, Medications, Allergies, Results, Procedures; narrative plus any planned/problem entries:
Assessment, Assessment and Plan, Plan of Treatment, Reason for Referral. Every other section is kept as a
narrative-only section (code and title from the source); an unknown one also earns a warning. A section with a
nullFlavor is recorded as empty (emptyReason from its nullFlavor). No section is ever dropped.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.composition import CompositionSection
from fhir.resources.R4B.narrative import Narrative
from fhir.resources.R4B.resource import Resource
from lxml import etree

from mappers import oids
from mappers.ccda import ccda
from mappers.ccda.allergies import map_allergy_entry
from mappers.ccda.assessment_plan import map_plan_entry
from mappers.ccda.context import EntryContext, Mapped, ref
from mappers.ccda.datatypes import codeable_concept
from mappers.ccda.medications import map_medication_entry
from mappers.ccda.problems import map_problem_entry
from mappers.ccda.procedures import map_procedure_entry
from mappers.ccda.results import map_result_entry
from mappers.ccda.text import generated_narrative, section_narrative
from mappers.oids import CDA_NS

LIST_EMPTY_REASON = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
_EMPTY_REASON = {"NASK": "notasked", "MSK": "withheld"}  # every other nullFlavor → "unavailable"
_MAX_DEPTH = 8
_SECTION = f"{{{CDA_NS}}}section"
_COMPONENT = f"{{{CDA_NS}}}component"
_STRUCTURED_BODY = f"{{{CDA_NS}}}structuredBody"
_TEXT = f"{{{CDA_NS}}}text"

EntryMapper = Callable[[etree._Element, EntryContext], list[Mapped]]
SectionStatus = Literal["structured", "narrative", "empty"]

_MAPPERS: dict[str, EntryMapper] = {
    "problems": map_problem_entry,
    "medications": map_medication_entry,
    "allergies": map_allergy_entry,
    "results": map_result_entry,
    "procedures": map_procedure_entry,
    "assessment-plan": map_plan_entry,
}


@dataclass(frozen=True)
class SectionReport:
    """What became of one source section (nested sections are reported too, after their parent)."""

    code: str | None
    title: str | None
    template: str | None
    status: SectionStatus
    entries: int


@dataclass
class SectionResult:
    """A mapped section: the Composition.section, the resources it brings and the reports."""

    section: CompositionSection
    resources: list[Resource] = field(default_factory=list)
    reports: list[SectionReport] = field(default_factory=list)


def map_sections(body: etree._Element, ctx: EntryContext) -> list[SectionResult]:
    """Map every top-level section of a structuredBody, in document order, then any stray section."""
    results = [map_section(section, ctx, 0) for section in ccda.each(body, "hl7:component/hl7:section")]
    strays = stray_sections(body.getroottree().getroot())
    if strays:
        ctx.warn(f"{len(strays)} sections found outside the structuredBody (broken structure): mapped as top-level")
    return results + [map_section(section, ctx, 0) for section in strays]


def stray_sections(root: etree._Element) -> list[etree._Element]:
    """Return the outermost sections outside the structuredBody/component/section chain (recovered XML)."""
    strays = []
    for section in root.iter(_SECTION):
        parent = section.getparent()
        grandparent = parent.getparent() if parent is not None else None
        if parent is not None and parent.tag == _COMPONENT and grandparent is not None and \
                grandparent.tag in (_STRUCTURED_BODY, _SECTION):
            continue
        if not any(a.tag == _SECTION for a in section.iterancestors()) or _inside_narrative(section):
            strays.append(section)
    return [s for s in strays if not any(a in strays for a in s.iterancestors())]


def _inside_narrative(section: etree._Element) -> bool:
    """Return True when a section sits inside a <text> element (recovered markup)."""
    return any(a.tag == _TEXT for a in section.iterancestors())


def map_section(section: etree._Element, ctx: EntryContext, depth: int) -> SectionResult:
    """Map one section (and its subsections) to a Composition.section."""
    kind, template = section_kind(section)
    code_el = ccda.first(section, "hl7:code")
    code_value = ccda.attr(code_el, None, "code")
    label = f"section {code_value or '-'} (template {template or '-'})"
    if kind is None:
        ctx.warn(f"{label} is not a known C-CDA section: kept as narrative")
    null = section.get("nullFlavor")
    narrative, dropped = section_narrative(ccda.first(section, "hl7:text"))
    if dropped:
        ctx.warn(f"{label}: narrative content dropped ({', '.join(sorted(set(dropped)))})")
    mapped = [] if null else _map_entries(section, kind, label, ctx)
    children = [map_section(s, ctx, depth + 1) for s in ccda.each(section, "hl7:component/hl7:section")
                ] if depth < _MAX_DEPTH else []
    if null and ccda.each(section, "hl7:entry"):
        ctx.warn(f"{label} has a nullFlavor but entries: recorded as empty, entries not mapped")
    narrative, status = _narrative_and_status(section, narrative, mapped, null, bool(children))
    title = ccda.text_of(ccda.first(section, "hl7:title"))
    composed = CompositionSection(
        title=title,
        code=codeable_concept(code_el, ctx.narrative),
        text=narrative,
        entry=[ref(m.entry) for m in mapped] or None,
        emptyReason=empty_reason(null) if status == "empty" and not mapped else None,
        section=[c.section for c in children] or None,
    )
    report = SectionReport(code=code_value, title=title, template=template, status=status, entries=len(mapped))
    resources = [r for m in mapped for r in (m.entry, *m.related)]
    return SectionResult(
        section=composed,
        resources=resources + [r for c in children for r in c.resources],
        reports=[report, *[r for c in children for r in c.reports]],
    )


def section_kind(section: etree._Element) -> tuple[str | None, str | None]:
    """Return (kind, template): kind is a structured kind, 'narrative' for known others, None if unknown."""
    roots = ccda.templates(section)
    for root in roots:
        if root in oids.STRUCTURED_BY_TEMPLATE:
            return oids.STRUCTURED_BY_TEMPLATE[root], root
    for root in roots:
        if root in oids.NARRATIVE_SECTIONS:
            return "narrative", root
    code = ccda.attr(section, "hl7:code", "code")
    template = roots[0] if roots else None
    if code in oids.STRUCTURED_BY_LOINC:
        return oids.STRUCTURED_BY_LOINC[code], template
    if code in oids.KNOWN_SECTION_LOINC:
        return "narrative", template
    return None, template


def _map_entries(section: etree._Element, kind: str | None, label: str, ctx: EntryContext) -> list[Mapped]:
    """Map the entries of a section with its kind's entry mapper; warn about what stays narrative-only."""
    entries = ccda.each(section, "hl7:entry")
    mapper = _MAPPERS.get(kind or "")
    if mapper is None:
        if entries:
            ctx.warn(f"{label}: {len(entries)} entries kept as narrative only")
        return []
    mapped: list[Mapped] = []
    unmapped = 0
    for entry in entries:
        try:
            result = mapper(entry, ctx)
        except ValueError as exc:  # pydantic ValidationError: the entry holds values FHIR cannot carry
            ctx.warn(f"{label}: an entry could not be mapped ({_error_fields(exc)}): skipped")
            result = []
        mapped.extend(result)
        unmapped += not result
    if unmapped:
        ctx.warn(f"{label}: {unmapped} of {len(entries)} entries not converted (kept in the narrative)")
    return mapped


def _error_fields(exc: ValueError) -> str:
    """Name the fields of a validation error without echoing input values (they may be patient data)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return type(exc).__name__
    locations = {".".join(str(p) for p in e.get("loc", ())) for e in errors()}
    return ", ".join(sorted(loc for loc in locations if loc)) or type(exc).__name__


def _narrative_and_status(section: etree._Element, narrative: Narrative | None, mapped: list[Mapped],
                          null: str | None, has_children: bool) -> tuple[Narrative, SectionStatus]:
    """Return the section's Narrative (generated when the source has none) and its report status."""
    if null:
        return narrative or generated_narrative([], heading="No information (the source section is empty)."), "empty"
    status: SectionStatus = "structured" if mapped else "narrative"
    if narrative is not None:
        return narrative, status
    summary = [line for line in (_entry_summary(e) for e in ccda.each(section, "hl7:entry")) if line]
    if summary:
        return generated_narrative(summary, heading="Entries of the source section (it has no narrative):"), status
    if mapped:
        return generated_narrative([], heading="Structured entries (the source section has no narrative)."), status
    if has_children:
        return generated_narrative([], heading="See the subsections."), status
    return generated_narrative([], heading="No information (the source section is empty)."), "empty"


def _entry_summary(entry: etree._Element) -> str | None:
    """Return a one-line description of an entry (its main code's display name) for generated narratives."""
    for path in (".//hl7:manufacturedMaterial/hl7:code", ".//hl7:playingEntity/hl7:code", "*/hl7:value",
                 "*/hl7:code", ".//hl7:observation/hl7:value", ".//hl7:observation/hl7:code"):
        for el in ccda.each(entry, path):
            text = ccda.clean(el.get("displayName")) or ccda.text_of(ccda.first(el, "hl7:originalText"))
            if text:
                when = ccda.ts(entry, "*/hl7:effectiveTime") or ccda.ts(entry, "*/hl7:effectiveTime/hl7:low")
                return f"{text} ({when})" if when else text
    return None


def empty_reason(null: str | None) -> CodeableConcept:
    """Map a section nullFlavor to a list-empty-reason (NASK → notasked, MSK → withheld, else unavailable)."""
    code = _EMPTY_REASON.get((null or "").strip(), "unavailable")
    return CodeableConcept(coding=[Coding(system=LIST_EMPTY_REASON, code=code)])
