"""FHIR XML ⇄ fhir.resources.R4B models, with untrusted XML parsed safely (no entities, DTDs or network).

Parsing: DOCTYPEs are refused (before parsing when the prolog is readable, and again from the parsed tree), so
billion-laughs, XXE and external DTDs never reach a resolver; the parser also never resolves entities, loads DTDs
or touches the network (OWASP XXE Prevention Cheat Sheet, lxml). The tree must be FHIR XML as FHIR R4 xml.html
describes it: every element in the FHIR namespace except the XHTML narrative `div`, values in `@value`, no text
content; namespace prefixes are refused (fhir_core reads only default-namespace FHIR XML, which is what FHIR
servers write). It is then read by R4B's `model_validate_xml` (fhir_core) with the same hardened parser; the
exceptions fhir_core raises on odd trees (KeyError, TypeError, ...) become 422s naming the problem.

Serialising: `model_dump_xml` writes decimals through `float` (100.00 → "100.0", 34 → "34.0"), which changes
the value's precision; `dump_fhir_xml` writes every decimal exactly as held. Reading: fhir_core keeps XHTML as
lxml serialises it (`<td/>`, `&#8627;`); `parse_fhir_xml` re-serialises each narrative `div` as UTF-8 text with
non-void empty elements written `<td></td>` (XHTML polyglot), the form the JSON twin carries. With both, a
resource survives JSON → XML → JSON unchanged (tests/test_xml_format.py).
"""

import decimal
import re
from collections.abc import Iterator

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.narrative import Narrative
from fhir.resources.R4B.resource import Resource
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from lxml import etree
from pydantic import ValidationError

from mappers.errors import MappingError, describe_validation_error
from mappers.narrative import XHTML_NS

FHIR_NS = "http://hl7.org/fhir"
MAX_FHIR_XML_BYTES = 20 * 1024 * 1024
_MAX_REASON = 200
# HTML void elements: written <br/>; every other empty element is written <x></x>.
_VOID = frozenset("area base br col embed hr img input link meta param source track wbr".split())

XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                             remove_comments=True, remove_pis=True)
_PROLOG_ITEM = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->)", re.DOTALL)
_BOMS = {b"\xef\xbb\xbf": "utf-8", b"\xff\xfe": "utf-16", b"\xfe\xff": "utf-16"}


def parse_fhir_xml(data: bytes, allowed: tuple[str, ...], *, max_bytes: int = MAX_FHIR_XML_BYTES) -> Resource:
    """Read one FHIR XML resource of an allowed type; MappingError 400 (not XML), 413 (too big), 422 (not FHIR)."""
    if len(data) > max_bytes:
        raise MappingError(f"the FHIR XML document is larger than {max_bytes} bytes", status=413,
                           issue_code="too-costly")
    if declares_dtd(data):
        raise MappingError("the XML declares a DTD (DOCTYPE), which is not allowed", status=400, issue_code="security")
    root = _parse(data)
    name = etree.QName(root)
    if name.namespace != FHIR_NS or name.localname not in allowed:
        raise MappingError(f"expected a FHIR {' or '.join(allowed)} (namespace {FHIR_NS}), found <{name.localname}>"
                           + (f" in namespace {name.namespace}" if name.namespace else " in no namespace"))
    _check_fhir_tree(root)
    model_class = get_fhir_model_class(name.localname)
    try:
        resource = model_class.model_validate_xml(data, xmlparser=XML_PARSER)
    except ValidationError as exc:
        raise MappingError(f"the XML is not valid FHIR R4: {describe_validation_error(exc)}") from exc
    except KeyError as exc:
        raise MappingError(f"the XML is not valid FHIR R4: unknown element {exc.args[0]!s:.80}") from exc
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise MappingError(f"the XML is not valid FHIR R4 ({type(exc).__name__})") from exc
    normalise_narratives(resource)
    return resource


def dump_fhir_xml(resource: Resource) -> bytes:
    """Serialise a resource as FHIR XML (UTF-8, with an XML declaration), decimals written exactly."""
    copy = resource.model_copy(deep=True)
    _exact_decimals(copy)
    xml = copy.model_dump_xml()
    return xml if isinstance(xml, bytes) else xml.encode("utf-8")


def declares_dtd(data: bytes) -> bool:
    """Return True if the prolog (before the root element) holds a DOCTYPE declaration."""
    for bom, encoding in _BOMS.items():
        if data.startswith(bom):
            data = data.decode(encoding, errors="ignore").encode("utf-8", errors="ignore")
            break
    pos = 0
    while (match := _PROLOG_ITEM.match(data, pos)) and match.end() > pos:
        pos = match.end()
    return data[pos:].lstrip()[:9].upper() == b"<!DOCTYPE"


def _parse(data: bytes) -> etree._Element:
    """Parse strictly with the hardened parser; refuse DTDs and entity references found in the tree."""
    try:
        root = etree.fromstring(data, XML_PARSER)
    except etree.XMLSyntaxError as exc:
        message = str(exc.msg if getattr(exc, "msg", None) else exc).strip()[:_MAX_REASON]
        raise MappingError(f"the body is not well-formed XML: {message}", status=400, issue_code="invalid") from exc
    if root is None:
        raise MappingError("the body is not well-formed XML: empty document", status=400, issue_code="invalid")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise MappingError("the XML declares a DTD (DOCTYPE), which is not allowed", status=400, issue_code="security")
    if any(True for _ in root.iter(etree.Entity)):
        raise MappingError("the XML uses entity references, which are not allowed", status=400, issue_code="security")
    return root


def _check_fhir_tree(root: etree._Element) -> None:
    """FHIR XML rules fhir_core does not check: FHIR namespace (unprefixed), XHTML only as div, no text content."""
    for element in _fhir_elements(root):
        name = etree.QName(element)
        if name.namespace == XHTML_NS and name.localname == "div":
            if element.prefix is not None:
                raise MappingError("the narrative div must use the XHTML namespace as its default namespace")
            continue
        if name.namespace != FHIR_NS:
            raise MappingError(f"element <{name.localname}> is not in the FHIR namespace ({FHIR_NS})")
        if element.prefix is not None:
            raise MappingError("FHIR XML must use the FHIR namespace as the default namespace (no prefixes)")
        if (element.text or "").strip() or any((child.tail or "").strip() for child in element):
            raise MappingError(f"element <{name.localname}> has text content; FHIR XML carries values in @value")


def _fhir_elements(root: etree._Element) -> Iterator[etree._Element]:
    """The elements of the tree, not descending into narrative divs (depth first, without recursion)."""
    stack = [root]
    while stack:
        element = stack.pop()
        if not isinstance(element.tag, str):
            continue
        yield element
        if etree.QName(element).namespace != XHTML_NS:
            stack.extend(reversed(element))


def normalise_narratives(model: FHIRAbstractModel) -> None:
    """Re-serialise every narrative div in place as UTF-8 text with <x></x> for non-void empty elements."""
    for narrative in _models_of(model, Narrative):
        if narrative.div:
            div = etree.fromstring(narrative.div, XML_PARSER)
            for element in div.iter():
                if (isinstance(element.tag, str) and element.text is None and len(element) == 0
                        and etree.QName(element).localname not in _VOID):
                    element.text = ""
            narrative.__dict__["div"] = etree.tostring(div, encoding="unicode")


def _exact_decimals(model: FHIRAbstractModel) -> None:
    """Hold every decimal as its exact text, which fhir_core's XML writer then writes unchanged (no float)."""
    for item in _models_of(model, FHIRAbstractModel):
        for key, value in list(item.__dict__.items()):
            if isinstance(value, decimal.Decimal):
                item.__dict__[key] = _decimal_text(value)
            elif isinstance(value, list) and any(isinstance(v, decimal.Decimal) for v in value):
                item.__dict__[key] = [_decimal_text(v) if isinstance(v, decimal.Decimal) else v for v in value]


def _decimal_text(value: decimal.Decimal) -> str:
    """A decimal as FHIR writes it: plain notation, precision kept (1E+2 → 100, 100.00 → 100.00)."""
    return format(value, "f")


def _models_of(model: FHIRAbstractModel, kind: type) -> Iterator:
    """Every model of a kind inside a model (itself included), without recursion."""
    stack: list[object] = [model]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, FHIRAbstractModel):
            if isinstance(item, kind):
                yield item
            stack.extend(v for v in item.__dict__.values() if isinstance(v, list | FHIRAbstractModel))
