"""Small helpers for reading C-CDA with lxml: paths, attributes, templates, text and timestamps."""

import re
from datetime import date, datetime, timedelta, timezone

from fhir.resources.R4B.period import Period
from lxml import etree

from mappers.oids import CDA_NS, SDTC_NS, XSI_NS

NS = {"hl7": CDA_NS, "sdtc": SDTC_NS, "xsi": XSI_NS}
XSI_TYPE = f"{{{XSI_NS}}}type"

_TS = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?"
    r"(?:(?P<h>\d{2})(?P<mi>\d{2})?(?P<s>\d{2})?(?P<f>\.\d{1,6})?)?(?P<tz>[+-]\d{4})?$"
)


def first(el: etree._Element | None, path: str) -> etree._Element | None:
    """Return the first element at path under el (None when el is None or nothing matches)."""
    return None if el is None else el.find(path, NS)


def each(el: etree._Element | None, path: str) -> list[etree._Element]:
    """Return every element at path under el (empty when el is None)."""
    return [] if el is None else el.findall(path, NS)


def is_null(el: etree._Element | None) -> bool:
    """Return True when el is absent or carries a nullFlavor."""
    return el is None or el.get("nullFlavor") is not None


def attr(el: etree._Element | None, path: str | None, name: str) -> str | None:
    """Return an attribute (stripped) of el or of the element at path; None if absent, empty or nullFlavor."""
    target = first(el, path) if path else el
    if target is None or target.get("nullFlavor") is not None:
        return None
    value = (target.get(name) or "").strip()
    return value or None


def templates(el: etree._Element | None) -> list[str]:
    """Return the templateId roots of el in document order, without duplicates (extensions ignored)."""
    roots: list[str] = []
    for template in each(el, "hl7:templateId"):
        root = (template.get("root") or "").strip()
        if root and root not in roots:
            roots.append(root)
    return roots


def has_template(el: etree._Element | None, *oids: str) -> bool:
    """Return True when el declares any of the template roots."""
    return any(root in oids for root in templates(el))


def with_template(el: etree._Element | None, path: str, *oids: str) -> list[etree._Element]:
    """Return the elements at path under el that declare one of the templates."""
    return [child for child in each(el, path) if has_template(child, *oids)]


def local_name(el: etree._Element) -> str:
    """Return the element's tag without its namespace."""
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def xsi_type(el: etree._Element | None) -> str | None:
    """Return the xsi:type of el without any prefix (e.g. 'PQ'), or None."""
    value = None if el is None else el.get(XSI_TYPE)
    return value.split(":")[-1].strip() if value else None


def clean(value: str | None) -> str | None:
    """Collapse whitespace; return None for empty strings."""
    if value is None:
        return None
    value = " ".join(value.split())
    return value or None


def text_of(el: etree._Element | None) -> str | None:
    """Return el's text content with whitespace collapsed, or None."""
    if el is None:
        return None
    return clean("".join(el.itertext()))


def ts_to_fhir(value: str | None) -> str | None:
    """Convert an HL7 TS (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]) to a FHIR date/dateTime, keeping its precision.

    FHIR dateTime requires a zone whenever a time is given (R4 2.24.0.13 dateTime), and C-CDA times often lack
    one; since we never invent a zone, a time without a zone is cut back to its date (and an hour-only time
    gets ":00" minutes, which FHIR requires and which adds no precision). Invalid values return None.
    """
    match = _TS.match((value or "").strip())
    if not match:
        return None
    y, mo, d, h = match["y"], match["mo"], match["d"], match["h"]
    if not _valid_date(y, mo, d):
        return None
    day = "-".join(part for part in (y, mo, d) if part)
    if h is None or d is None or match["tz"] is None:
        return day if (h is None or d is not None) else None
    return _date_time(day, match)


def _valid_date(y: str, mo: str | None, d: str | None) -> bool:
    """Return True for a real calendar date (year 0001+)."""
    try:
        date(int(y), int(mo or 1), int(d or 1))
    except ValueError:
        return False
    return int(y) > 0


def _date_time(day: str, match: re.Match[str]) -> str | None:
    """Build the dateTime part of ts_to_fhir (time and zone present)."""
    h, mi, s = int(match["h"]), int(match["mi"] or 0), int(match["s"] or 0)
    tz = match["tz"]
    tz_h, tz_m = int(tz[1:3]), int(tz[3:5])
    if h > 23 or mi > 59 or s > 59 or tz_h > 14 or tz_m > 59:
        return None
    try:
        timezone(timedelta(hours=tz_h, minutes=tz_m))
    except ValueError:
        return None
    fraction = match["f"] or ""
    return f"{day}T{h:02d}:{mi:02d}:{s:02d}{fraction}{tz[0]}{tz[1:3]}:{tz[3:5]}"


def ts(el: etree._Element | None, path: str | None = None) -> str | None:
    """Return the FHIR date/dateTime of the @value of el (or of the element at path)."""
    return ts_to_fhir(attr(el, path, "value"))


def period(el: etree._Element | None) -> Period | None:
    """Map an IVL_TS (low/high, or a single @value as start) to a Period."""
    if is_null(el):
        return None
    start = ts(el, "hl7:low") or ts(el)
    end = ts(el, "hl7:high")
    if start is None and end is None:
        return None
    if start and end and inverted(start, end):
        end = None  # FHIR per-1: start <= end; an inverted range keeps only its start
    return Period(start=start, end=end)


def effective(el: etree._Element | None) -> tuple[str | None, Period | None]:
    """Return (dateTime, Period) for an effectiveTime: @value or center → dateTime, low/high → Period."""
    if is_null(el):
        return None, None
    point = ts(el) or ts(el, "hl7:center")
    if point:
        return point, None
    low, high = ts(el, "hl7:low"), ts(el, "hl7:high")
    if low and low == high:
        return low, None
    return None, period(el)


def inverted(start: str, end: str) -> bool:
    """Return True when end is certainly before start (compared at their common precision, in UTC if timed)."""
    if "T" in start and "T" in end:
        try:
            return datetime.fromisoformat(end) < datetime.fromisoformat(start)
        except ValueError:
            return False
    size = min(len(start.split("T")[0]), len(end.split("T")[0]))
    return end[:size] < start[:size]


def later_than(value: str, moment: datetime) -> bool:
    """Return True when a FHIR date/dateTime is certainly after an aware datetime."""
    if "T" in value:
        try:
            return datetime.fromisoformat(value) > moment
        except ValueError:
            return False
    size = len(value)
    return value > moment.date().isoformat()[:size]
