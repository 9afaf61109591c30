"""Hardened parsing of untrusted C-CDA bytes into an lxml tree."""

import re
from dataclasses import dataclass, field

from lxml import etree

from mappers.errors import MappingError
from mappers.oids import CDA_NS

MAX_CCDA_BYTES = 20 * 1024 * 1024
CLINICAL_DOCUMENT = f"{{{CDA_NS}}}ClinicalDocument"
_MAX_REASON = 200

_PARSER_OPTIONS = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
}
XML_PARSER = etree.XMLParser(**_PARSER_OPTIONS)  # built once; shared (lxml serialises its use)

# The prolog may hold an XML declaration, processing instructions, comments and whitespace before the root.
_PROLOG_ITEM = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->)", re.DOTALL)
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass
class CcdaDocument:
    """A parsed C-CDA document: its root element, parse warnings, and whether lxml had to recover."""

    root: etree._Element
    warnings: list[str] = field(default_factory=list)
    recovered: bool = False


def parse_ccda(data: bytes, *, max_bytes: int = MAX_CCDA_BYTES, allow_recover: bool = False) -> CcdaDocument:
    """Parse C-CDA bytes safely, rejecting DTDs, entities, oversize and non-CDA input.

    DTDs are refused outright (before parsing when the prolog is readable as ASCII/UTF-8/UTF-16, and again
    from the parsed tree's docinfo), which stops billion-laughs and XXE regardless of parser options; the
    parser also never resolves entities, loads DTDs or touches the network (OWASP XXE Prevention Cheat Sheet).
    """
    if not isinstance(data, bytes | bytearray):
        raise MappingError("C-CDA input must be bytes", status=400, issue_code="invalid")
    if len(data) > max_bytes:
        raise MappingError(f"C-CDA document is larger than {max_bytes} bytes", status=413, issue_code="too-costly")
    if _declares_dtd(bytes(data)):
        raise MappingError("C-CDA document declares a DTD (DOCTYPE), which is not allowed", status=400,
                           issue_code="security")
    root, warnings = _parse_xml(bytes(data), allow_recover)
    _reject_dtd(root)
    if root.tag != CLINICAL_DOCUMENT:
        raise MappingError(f"root element is not {CLINICAL_DOCUMENT}", status=400, issue_code="invalid")
    return CcdaDocument(root=root, warnings=warnings, recovered=bool(warnings))


def _parse_xml(data: bytes, allow_recover: bool) -> tuple[etree._Element, list[str]]:
    """Parse strictly; on a syntax error either fail (400) or re-parse with recover=True and warn."""
    try:
        root = etree.fromstring(data, XML_PARSER)
    except etree.XMLSyntaxError as exc:
        if not allow_recover:
            raise MappingError(f"C-CDA is not well-formed XML: {_reason(exc)}", status=400,
                               issue_code="invalid") from exc
        return _parse_recovering(data, _reason(exc))
    if root is None:
        raise MappingError("C-CDA is not well-formed XML: empty document", status=400, issue_code="invalid")
    return root, []


def _parse_recovering(data: bytes, first_error: str) -> tuple[etree._Element, list[str]]:
    """Parse with recover=True (a fresh parser, so its error log is ours alone) and record a warning."""
    parser = etree.XMLParser(recover=True, **_PARSER_OPTIONS)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise MappingError(f"C-CDA is not well-formed XML: {_reason(exc)}", status=400,
                           issue_code="invalid") from exc
    if root is None:
        raise MappingError(f"C-CDA is not well-formed XML: {first_error}", status=400, issue_code="invalid")
    return root, [f"recovered from malformed XML: {first_error}"]


def _reason(exc: etree.XMLSyntaxError) -> str:
    """Return lxml's message (markup positions and names, not document text), shortened."""
    message = str(exc.msg if getattr(exc, "msg", None) else exc).strip()
    return message[:_MAX_REASON]


def _declares_dtd(data: bytes) -> bool:
    """Return True if the prolog (before the root element) contains a DOCTYPE declaration."""
    if data.startswith(_UTF16_BOMS):
        data = data.decode("utf-16", errors="ignore").encode("utf-8", errors="ignore")
    elif data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    pos = 0
    while match := _PROLOG_ITEM.match(data, pos):
        if match.end() == pos:
            break
        pos = match.end()
    rest = data[pos:].lstrip()
    return rest[:9].upper() == b"<!DOCTYPE"


def _reject_dtd(root: etree._Element) -> None:
    """Refuse any tree that carries a DTD, an internal subset or entity references."""
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise MappingError("C-CDA document declares a DTD (DOCTYPE), which is not allowed", status=400,
                           issue_code="security")
    if any(True for _ in root.iter(etree.Entity)):
        raise MappingError("C-CDA document uses entity references, which are not allowed", status=400,
                           issue_code="security")
