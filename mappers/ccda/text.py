"""C-CDA narrative blocks (section <text>) to safe FHIR XHTML <div>s, and a checker for R4 Narrative rules.

The CDA narrative block (CDA R2 4.3.5, NarrativeBlock.xsd) is mapped element by element to the XHTML subset
FHIR allows (R4 Narrative, txt-1/txt-2 and "Narrative XHTML rules"): paragraph→p, content→span, list→ul/ol,
item→li, table parts→same names, br, sub, sup, caption; linkHtml→a only for http(s) or local '#id' hrefs
(else a span); styleCode→class; ID→id; renderMultiMedia is dropped with a visible note; footnote→span,
footnoteRef→sup. Anything else is unwrapped (its text kept, its tag dropped). Text is always escaped by lxml.
"""

import re
from dataclasses import dataclass, field

from fhir.resources.R4B.narrative import Narrative
from lxml import etree

from mappers.ccda import ccda
from mappers.oids import CDA_NS

XHTML_NS = "http://www.w3.org/1999/xhtml"
_X = f"{{{XHTML_NS}}}"
_MAX_DEPTH = 48

_SIMPLE = {"content": "span", "sub": "sub", "sup": "sup", "br": "br", "item": "li", "table": "table",
           "thead": "thead", "tbody": "tbody", "tfoot": "tfoot", "tr": "tr", "th": "th", "td": "td",
           "colgroup": "colgroup", "col": "col", "caption": "caption", "footnote": "span"}
_CONTAINERS = {_X + t for t in ("ul", "ol", "table", "thead", "tbody", "tfoot", "tr", "colgroup")}
_STRUCTURAL = {"component", "section", "entry", "structuredBody", "nonXMLBody"}
_BLOCK_SOURCES = {"paragraph", "list", "table", "item"}
_TABLE_ATTRS = {"colspan", "rowspan", "align", "valign", "span", "width", "border", "cellpadding",
                "cellspacing", "scope", "abbr", "headers", "char", "charoff", "frame", "rules", "summary"}
_SAFE_ATTR_VALUE = re.compile(r"^[\w%.\- ]{1,40}$")
_SAFE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")
_SAFE_CLASS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
_SAFE_HREF = re.compile(r"^(https?://[^\s\"'<>\\`]+|#[A-Za-z_][A-Za-z0-9_.:-]*)$", re.IGNORECASE)

# FHIR R4 Narrative: basic HTML 4.0 formatting elements (chapters 7-11, 15), <a>, <img>, no scripts/forms.
ALLOWED_ELEMENTS = frozenset(
    "a abbr acronym b big blockquote br caption cite code col colgroup dd dfn div dl dt em h1 h2 h3 h4 h5 h6 "
    "hr i img kbd li ol p pre q samp small span strong sub sup table tbody td tfoot th thead tr tt ul var".split()
)
ALLOWED_ATTRIBUTES = frozenset({"id", "class", "title", "lang", "dir", "href", "name", "src", "alt", "style",
                                *_TABLE_ATTRS})


@dataclass
class Converted:
    """The XHTML div (serialised) and notes on what was dropped."""

    div: str
    dropped: list[str] = field(default_factory=list)


def section_narrative(text_el: etree._Element | None) -> tuple[Narrative | None, list[str]]:
    """Convert a section <text> to a Narrative (status additional); None when it has no visible content."""
    if text_el is None:
        return None, []
    converted = convert(text_el)
    if converted is None:
        return None, []
    return Narrative(status="additional", div=converted.div), converted.dropped


def generated_narrative(lines: list[str], *, heading: str | None = None) -> Narrative:
    """Build a generated Narrative: an optional heading paragraph and a list of escaped lines."""
    div = etree.Element(_X + "div", nsmap={None: XHTML_NS})
    if heading:
        etree.SubElement(div, _X + "p").text = heading
    if lines:
        ul = etree.SubElement(div, _X + "ul")
        for line in lines:
            etree.SubElement(ul, _X + "li").text = line
    return Narrative(status="generated", div=etree.tostring(div, encoding="unicode"))


def convert(text_el: etree._Element) -> Converted | None:
    """Convert a CDA narrative block element to an XHTML div string; None if nothing visible remains."""
    div = etree.Element(_X + "div", nsmap={None: XHTML_NS})
    dropped: list[str] = []
    _append_text(div, text_el.text)
    for child in text_el:
        _convert_node(child, div, dropped, 1)
    if not _has_content(div):
        return None
    return Converted(div=etree.tostring(div, encoding="unicode"), dropped=dropped)


def _convert_node(node: etree._Element, parent: etree._Element, dropped: list[str], depth: int) -> None:
    """Convert one source node (and its tail) into parent."""
    if isinstance(node.tag, str):
        _convert_element(node, parent, dropped, depth)
    _append_text(parent, node.tail)


def _convert_element(el: etree._Element, parent: etree._Element, dropped: list[str], depth: int) -> None:
    """Convert a CDA narrative element into parent (or unwrap it when it has no XHTML counterpart)."""
    name = ccda.local_name(el) if etree.QName(el).namespace == CDA_NS else ""
    if depth > _MAX_DEPTH:
        _append_text(parent, " ".join(el.itertext()))
        return
    if name in _STRUCTURAL:  # CDA body markup inside a narrative (only after recovering malformed XML)
        return
    if name == "renderMultiMedia":
        dropped.append("renderMultiMedia")
        _note(parent, "[multimedia content not included]")
        return
    if name == "footnoteRef":
        _styled(etree.SubElement(parent, _X + "sup"), el).text = "*"
        return
    target = _target_element(el, name, parent, dropped)
    if target is None:  # unknown or foreign element: keep its text, drop its tag
        target = parent
        _append_text(target, el.text)
    else:
        target.text = _collapse(el.text)
    for child in el:
        _convert_node(child, target, dropped, depth + 1)


def _target_element(el: etree._Element, name: str, parent: etree._Element,
                    dropped: list[str]) -> etree._Element | None:
    """Create the XHTML element for a CDA element (None to unwrap it)."""
    if name == "list":
        tag = "ol" if (el.get("listType") or "").strip().lower() == "ordered" else "ul"
        return _styled(etree.SubElement(parent, _X + tag), el)
    if name in ("paragraph", "content") and _contains_blocks(el):
        return _styled(etree.SubElement(parent, _X + "div"), el)
    if name == "paragraph":
        return _styled(etree.SubElement(parent, _X + "p"), el)
    if name == "linkHtml":
        return _link(el, parent, dropped)
    if name == "caption" and parent.tag in (_X + "ul", _X + "ol"):
        caption = _styled(etree.Element(_X + "p"), el, extra_class="caption")
        parent.addprevious(caption)  # XHTML lists cannot hold a caption: put it just before the list
        return caption
    if name == "caption" and parent.tag != _X + "table":
        return _styled(etree.SubElement(parent, _X + "span"), el, extra_class="caption")
    if name == "item" and parent.tag not in (_X + "ul", _X + "ol"):
        return _styled(etree.SubElement(parent, _X + "div"), el)
    if name in _SIMPLE:
        target = etree.SubElement(parent, _X + _SIMPLE[name])
        _styled(target, el, extra_class="footnote" if name == "footnote" else None)
        _copy_table_attributes(el, target)
        return target
    return None


def _link(el: etree._Element, parent: etree._Element, dropped: list[str]) -> etree._Element:
    """Map linkHtml to <a href> when the href is http(s) or a local anchor, else to a span."""
    href = (el.get("href") or "").strip()
    if href and _SAFE_HREF.match(href):
        link = _styled(etree.SubElement(parent, _X + "a"), el)
        link.set("href", href)
        return link
    if href:
        dropped.append("linkHtml href")
    return _styled(etree.SubElement(parent, _X + "span"), el)


def _styled(target: etree._Element, source: etree._Element, extra_class: str | None = None) -> etree._Element:
    """Copy a safe ID (as id) and styleCode (as class) from source to target."""
    source_id = (source.get("ID") or "").strip()
    if _SAFE_ID.match(source_id):
        target.set("id", source_id)
    classes = [c for c in (source.get("styleCode") or "").split() if _SAFE_CLASS.match(c)]
    if extra_class:
        classes.append(extra_class)
    if classes:
        target.set("class", " ".join(classes))
    return target


def _copy_table_attributes(source: etree._Element, target: etree._Element) -> None:
    """Copy the table layout attributes HTML 4 allows, when their values are simple tokens."""
    if target.tag not in {_X + t for t in ("table", "tr", "th", "td", "col", "colgroup", "thead", "tbody", "tfoot")}:
        return
    for name, value in source.attrib.items():
        if name in _TABLE_ATTRS and _SAFE_ATTR_VALUE.match(value.strip()):
            target.set(name, value.strip())


def _contains_blocks(el: etree._Element) -> bool:
    """Return True when el holds block content (lists, tables, paragraphs) that XHTML forbids inside p/span."""
    return any(ccda.local_name(d) in _BLOCK_SOURCES for d in el.iterdescendants())


def _note(parent: etree._Element, text: str) -> None:
    """Append a visible note in place of dropped content."""
    note = etree.SubElement(parent, _X + "span")
    note.set("class", "dropped")
    note.text = text


def _collapse(text: str | None) -> str | None:
    """Collapse runs of whitespace to one space (HTML renders them alike); keep None for no text."""
    if not text:
        return None
    return re.sub(r"\s+", " ", text)


def _append_text(parent: etree._Element, text: str | None) -> None:
    """Append text after parent's last child (or to its text when it has none); drop layout-only whitespace."""
    text = _collapse(text)
    if not text or (text == " " and parent.tag in _CONTAINERS):
        return
    if len(parent):
        last = parent[-1]
        last.tail = (last.tail or "") + text
    else:
        parent.text = (parent.text or "") + text


def _has_content(div: etree._Element) -> bool:
    """Return True when the div has some non-whitespace text (FHIR txt-2)."""
    return any(t.strip() for t in div.itertext())


def check_xhtml(div: str) -> list[str]:
    """Return the FHIR R4 Narrative rule violations of an XHTML div (empty list when it is acceptable)."""
    try:
        root = etree.fromstring(div.encode("utf-8"), etree.XMLParser(resolve_entities=False, no_network=True,
                                                                      load_dtd=False))
    except etree.XMLSyntaxError as exc:
        return [f"not well-formed: {exc}"]
    problems: list[str] = []
    if root.tag != _X + "div":
        problems.append("root is not an XHTML div")
    for el in root.iter():
        problems.extend(_element_problems(el))
    if not _has_content(root):
        problems.append("txt-2: no non-whitespace content")
    return problems


def _element_problems(el: etree._Element) -> list[str]:
    """Return the rule violations of one element of a narrative div."""
    if not isinstance(el.tag, str):
        return ["comments or processing instructions are not allowed"]
    qname = etree.QName(el)
    if qname.namespace != XHTML_NS or qname.localname not in ALLOWED_ELEMENTS:
        return [f"txt-1: element {qname.localname} is not allowed"]
    problems = [f"txt-3: attribute {name} is not allowed" for name in el.attrib if name not in ALLOWED_ATTRIBUTES]
    for name in ("href", "src"):
        value = (el.get(name) or "").strip().lower()
        if value and not (value.startswith(("http://", "https://", "#")) or (name == "src" and
                                                                            value.startswith("data:"))):
            problems.append(f"unsafe {name}")
    return problems
