"""A section narrative's plain text, line by line, for renditions that must not trust the narrative's markup.

The XHTML is parsed with the same hardened parser as mappers.narrative.sanitize_div (no entities, DTDs or
network) and only its text is kept: one line per block element (paragraph, list item, heading, table row…), table
cells joined with "; ". The lines are then escaped by the templates like any other text; no element survives.
"""

import re

from lxml import etree

from mappers.narrative import sanitize_div

# HTML 4 block-level elements (and the table parts) that start a new line of text.
BLOCK_ELEMENTS = frozenset("p div li dt dd h1 h2 h3 h4 h5 h6 tr caption pre blockquote address table ul ol dl "
                           "thead tbody tfoot hr".split())
CELL_ELEMENTS = frozenset({"td", "th"})
_LINE_BREAK = "\n"
_CELL_BREAK = "\t"
_CELL_GAP = re.compile(r"\s*\t[\s\t]*")


def narrative_lines(div: str | None) -> list[str]:
    """The text of a narrative div as lines (empty lines dropped, white space collapsed)."""
    if not div:
        return []
    root = sanitize_div(div)
    for node in root.iter():
        if not isinstance(node.tag, str):
            continue
        name = etree.QName(node).localname
        if name in BLOCK_ELEMENTS or name == "br":
            node.tail = _LINE_BREAK + (node.tail or "")
            if name != "br":
                node.text = _LINE_BREAK + (node.text or "")
        elif name in CELL_ELEMENTS:
            node.tail = _CELL_BREAK + (node.tail or "")
    lines = []
    for raw in "".join(root.itertext()).split(_LINE_BREAK):
        line = " ".join(_CELL_GAP.sub("; ", raw.strip(" \t\r\f\v")).split()).strip("; ")
        if line:
            lines.append(line)
    return lines
