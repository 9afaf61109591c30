"""C-CDA data types (CD, II, PQ, PN, AD, TEL) to FHIR data types."""

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from fhir.resources.R4B.address import Address
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.contactpoint import ContactPoint
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.quantity import Quantity
from lxml import etree

from mappers import systems
from mappers.ccda import ccda
from mappers.oids import CODE_SYSTEMS, IDENTIFIER_SYSTEMS

UCUM = "http://unitsofmeasure.org"
_OID = re.compile(r"^[0-2](\.(0|[1-9]\d*))+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NAME_USE = {"L": "official", "P": "nickname", "A": "nickname", "ASGN": "usual", "C": "usual", "I": "anonymous"}
_ADDRESS_USE = {"H": "home", "HP": "home", "HV": "home", "WP": "work", "DIR": "work", "PUB": "work",
                "TMP": "temp", "OLD": "old", "BAD": "old"}
_TELECOM_USE = {"H": "home", "HP": "home", "HV": "home", "WP": "work", "DIR": "work", "PUB": "work",
                "MC": "mobile", "PG": "mobile", "TMP": "temp", "BAD": "old"}
_TELECOM_SCHEMES = {"tel": "phone", "fax": "fax", "mailto": "email", "http": "url", "https": "url"}


@dataclass
class NarrativeIndex:
    """The document's narrative elements by @ID, to resolve originalText/reference and text/reference."""

    root: etree._Element
    _by_id: dict[str, etree._Element] | None = field(default=None, repr=False)

    def resolve(self, reference: str | None) -> str | None:
        """Return the text of the element a '#id' reference points at, or None."""
        if not reference or not reference.startswith("#"):
            return None
        if self._by_id is None:
            self._by_id = {el.get("ID"): el for el in self.root.iterfind(".//*[@ID]")}
        return ccda.text_of(self._by_id.get(reference[1:]))


def system_uri(oid: str | None) -> str | None:
    """Return the FHIR URI for a code system OID (urn:oid:<oid> when unknown; the value itself if already a URI)."""
    oid = (oid or "").strip()
    if not oid:
        return None
    if oid in CODE_SYSTEMS:
        return CODE_SYSTEMS[oid]
    if _OID.match(oid):
        return f"urn:oid:{oid}"
    if _UUID.match(oid):
        return f"urn:uuid:{oid.lower()}"
    return oid if ":" in oid and " " not in oid else None


def code_value(value: str | None) -> str | None:
    """Return a FHIR code (no leading/trailing or doubled whitespace), or None."""
    return ccda.clean(value)


def coding(el: etree._Element | None) -> Coding | None:
    """Map a CD/CE/CV/CO element (or translation) to a Coding; None without a code."""
    code = code_value(ccda.attr(el, None, "code"))
    if code is None:
        return None
    return Coding(system=system_uri(el.get("codeSystem")), code=code, display=ccda.clean(el.get("displayName")))


def original_text(el: etree._Element | None, index: NarrativeIndex | None = None) -> str | None:
    """Return the originalText of a coded element: its reference resolved in the narrative, else its own text."""
    text_el = ccda.first(el, "hl7:originalText")
    if text_el is None:
        return None
    reference = ccda.attr(text_el, "hl7:reference", "value")
    resolved = index.resolve(reference) if index is not None else None
    own = ccda.clean("".join(t for t in text_el.xpath("text()")))
    return resolved or own


def codeable_concept(el: etree._Element | None, index: NarrativeIndex | None = None) -> CodeableConcept | None:
    """Map a CD to a CodeableConcept: the code, its translations, and originalText as text.

    A nullFlavor code (e.g. OTH) still contributes its translations and originalText (C-CDA R2.1 CD rules).
    """
    if el is None:
        return None
    codings: list[Coding] = []
    for candidate in [el, *ccda.each(el, "hl7:translation")]:
        mapped = coding(candidate)
        if mapped is not None and all((c.system, c.code) != (mapped.system, mapped.code) for c in codings):
            codings.append(mapped)
    text = original_text(el, index)
    if not codings and text is None:
        return None
    return CodeableConcept(coding=codings or None, text=text)


def identifier(el: etree._Element | None) -> Identifier | None:
    """Map an II: root+extension → system/value; a lone root is itself the value (urn:oid / urn:uuid)."""
    if ccda.is_null(el):
        return None
    root = (el.get("root") or "").strip()
    extension = ccda.clean(el.get("extension"))
    if not root:
        return None
    if extension:
        system = IDENTIFIER_SYSTEMS.get(root) or _identifier_system(root)
        return Identifier(system=system, value=extension) if system else None
    if _OID.match(root):
        return Identifier(system=systems.URN_IETF_RFC_3986, value=f"urn:oid:{root}")
    if _UUID.match(root):
        return Identifier(system=systems.URN_IETF_RFC_3986, value=f"urn:uuid:{root.lower()}")
    return None


def _identifier_system(root: str) -> str | None:
    """Return urn:oid:<root> / urn:uuid:<root> for an II root used as an identifier namespace."""
    if _OID.match(root):
        return f"urn:oid:{root}"
    if _UUID.match(root):
        return f"urn:uuid:{root.lower()}"
    return None


def identifiers(el: etree._Element | None, path: str = "hl7:id") -> list[Identifier]:
    """Map every II at path under el, skipping nullFlavor and unusable ones."""
    result: list[Identifier] = []
    for id_el in ccda.each(el, path):
        mapped = identifier(id_el)
        if mapped is not None and all((i.system, i.value) != (mapped.system, mapped.value) for i in result):
            result.append(mapped)
    return result


def decimal(value: str | None) -> Decimal | None:
    """Parse a finite decimal, or return None."""
    try:
        number = Decimal((value or "").strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def quantity(el: etree._Element | None) -> Quantity | None:
    """Map a PQ to a Quantity; the unit is UCUM per C-CDA, so it is also the code (unless it has spaces)."""
    if ccda.is_null(el):
        return None
    value = decimal(el.get("value"))
    if value is None:
        return None
    unit = ccda.clean(el.get("unit"))
    if unit is None:
        return Quantity(value=value)
    if " " in unit:
        return Quantity(value=value, unit=unit)
    return Quantity(value=value, unit=unit, system=UCUM, code=unit)


def human_name(el: etree._Element | None) -> HumanName | None:
    """Map a PN: family, given, prefix, suffix and use; a name with no parts keeps its text."""
    if ccda.is_null(el):
        return None
    family = ccda.text_of(ccda.first(el, "hl7:family"))
    given = [g for g in (ccda.text_of(x) for x in ccda.each(el, "hl7:given")) if g]
    prefix = [p for p in (ccda.text_of(x) for x in ccda.each(el, "hl7:prefix")) if p]
    suffix = [s for s in (ccda.text_of(x) for x in ccda.each(el, "hl7:suffix")) if s]
    use = _NAME_USE.get((el.get("use") or "").split(" ")[0])
    if not (family or given or prefix or suffix):
        text = ccda.text_of(el)
        return HumanName(text=text, use=use) if text else None
    return HumanName(family=family, given=given or None, prefix=prefix or None, suffix=suffix or None, use=use)


def address(el: etree._Element | None) -> Address | None:
    """Map an AD to an Address."""
    if ccda.is_null(el):
        return None
    lines = [line for line in (ccda.text_of(x) for x in ccda.each(el, "hl7:streetAddressLine")) if line]
    parts = {
        "city": ccda.text_of(ccda.first(el, "hl7:city")),
        "state": ccda.text_of(ccda.first(el, "hl7:state")),
        "postalCode": ccda.text_of(ccda.first(el, "hl7:postalCode")),
        "country": ccda.text_of(ccda.first(el, "hl7:country")),
        "district": ccda.text_of(ccda.first(el, "hl7:county")),
    }
    use = _ADDRESS_USE.get((el.get("use") or "").split(" ")[0])
    if not lines and not any(parts.values()):
        text = ccda.text_of(el)
        return Address(text=text, use=use) if text else None
    return Address(line=lines or None, use=use, **parts)


def telecom(el: etree._Element | None) -> ContactPoint | None:
    """Map a TEL (tel:, fax:, mailto:, http:) to a ContactPoint."""
    value = ccda.attr(el, None, "value")
    if value is None:
        return None
    scheme, _, rest = value.partition(":")
    system = _TELECOM_SCHEMES.get(scheme.lower())
    if system is None or not rest.strip():
        return ContactPoint(system="other", value=value)
    shown = value if system == "url" else rest.strip()
    return ContactPoint(system=system, value=shown, use=_TELECOM_USE.get((el.get("use") or "").split(" ")[0]))


def telecoms(el: etree._Element | None) -> list[ContactPoint]:
    """Map every telecom child of el."""
    return [cp for cp in (telecom(t) for t in ccda.each(el, "hl7:telecom")) if cp is not None]


def addresses(el: etree._Element | None) -> list[Address]:
    """Map every addr child of el."""
    return [a for a in (address(x) for x in ccda.each(el, "hl7:addr")) if a is not None]


def names(el: etree._Element | None) -> list[HumanName]:
    """Map every name child of el."""
    return [n for n in (human_name(x) for x in ccda.each(el, "hl7:name")) if n is not None]
