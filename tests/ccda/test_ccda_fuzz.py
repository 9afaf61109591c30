"""Property tests: random bytes and mutated corpus C-CDA never raise anything but MappingError."""

import copy
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from mappers.ccda.document import map_ccda_consult
from mappers.ccda.parser import parse_ccda
from mappers.ccda.text import check_xhtml
from mappers.errors import MappingError
from mappers.ids import sequential_ids
from mappers.validation import check_document_bundle

CORPUS_DIR = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "ccda"
SEEDS = [CORPUS_DIR / name for name in (
    "hl7-examples_Consultation_Note.xml", "hl7-ccda3_consultation-note-complete-example.xml",
    "onc_NetsmartMyAvatar_Bates_Referral_Note.xml", "ccda-on-fhir_OracleCerner_MyraJonesFhirToCDA.xml",
    "chb_Kareo_SummaryOfCare_Joey_Miller.xml", "onc_MeditechMagic_Test1_WrightSample2RN.xml",
    "hl7-examples_Consult_Document_Closing_Referral.xml", "onc_McKessonParagon_wright-rn.xml",
)]
SEED_BYTES = [p.read_bytes() for p in SEEDS]
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)
FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"

ATTRIBUTES = ["value", "code", "codeSystem", "nullFlavor", "unit", "root", "extension", "moodCode", "negationInd",
              XSI_TYPE, "typeCode", "classCode", "mediaType", "representation", "href", "ID", "styleCode",
              "listType", "use", "displayName", "operator", "institutionSpecified", "inversionInd", "colspan"]
INTERESTING = ["", " ", "NI", "UNK", "OTH", "-0500", "2024", "20240601", "99999999999999", "20241301",
               "20240601143000-0500", "00000101", "PIVL_TS", "EIVL_TS", "IVL_TS", "PQ", "IVL_PQ", "CD", "ST",
               "INT", "BL", "TS", "RTO", "true", "false", "x:y", "1e999", "NaN", "Infinity", "-1", "0", "1.5",
               "#ref", "#", "javascript:alert(1)", "https://example.org/x", "B64", "TXT", "application/pdf",
               "EVN", "INT", "RQO", "SUBJ", "REFR", "MFST", "h", "d", "furlongs", "2.16.840.1.113883.6.96",
               "2.16.840.1.113883.6.1", "not an oid", "<&>\"'", "\u00e9\u4e2d", "a" * 300]
XML_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xD7FF), max_size=40)
VALUES = st.one_of(st.sampled_from(INTERESTING), XML_TEXT)


def _map(data: bytes, *, allow_recover: bool = False) -> None:
    """Parse and map; only MappingError may escape, and what maps must be a valid document."""
    try:
        mapping = map_ccda_consult(parse_ccda(data, allow_recover=allow_recover), None, now=NOW,
                                   new_id=sequential_ids())
    except MappingError as exc:
        assert 400 <= exc.status < 500
        return
    problems = [p for p in check_document_bundle(mapping.bundle) if "Bundle.timestamp is before" not in p]
    assert problems == []
    for entry in mapping.bundle.entry:
        for section in getattr(entry.resource, "section", None) or []:
            if section.text is not None:
                assert check_xhtml(section.text.div) == []


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_only_raise_mapping_error(data: bytes) -> None:
    _map(data)
    _map(data, allow_recover=True)


@FUZZ
@given(seed=st.sampled_from(range(len(SEED_BYTES))), cuts=st.lists(
    st.tuples(st.floats(0, 1), st.integers(0, 64), st.binary(max_size=16)), min_size=1, max_size=4))
def test_byte_mutated_corpus_only_raises_mapping_error(seed: int, cuts: list[tuple[float, int, bytes]]) -> None:
    data = bytearray(SEED_BYTES[seed])
    for where, length, insert in cuts:
        start = int(where * len(data))
        data[start:start + length] = insert
    _map(bytes(data), allow_recover=True)


@FUZZ
@given(seed=st.sampled_from(range(len(SEED_BYTES))), data=st.data())
def test_tree_mutated_corpus_only_raises_mapping_error(seed: int, data: st.DataObject) -> None:
    root = etree.fromstring(SEED_BYTES[seed], etree.XMLParser(remove_comments=True, resolve_entities=False,
                                                              no_network=True))
    elements = [el for el in root.iter() if isinstance(el.tag, str)]
    for _ in range(data.draw(st.integers(1, 8), label="mutations")):
        target = elements[data.draw(st.integers(0, len(elements) - 1), label="element")]
        _mutate(target, data)
    _map(etree.tostring(root))


def _mutate(target: etree._Element, data: st.DataObject) -> None:
    """Apply one random mutation to an element: set/remove an attribute, drop, duplicate or retext it."""
    operation = data.draw(st.sampled_from(["set", "set", "set", "remove", "drop", "duplicate", "text"]),
                          label="operation")
    parent = target.getparent()
    if operation == "set":
        target.set(data.draw(st.sampled_from(ATTRIBUTES), label="attribute"), data.draw(VALUES, label="value"))
    elif operation == "remove" and target.attrib:
        del target.attrib[data.draw(st.sampled_from(sorted(target.attrib)), label="removed")]
    elif operation == "drop" and parent is not None:
        parent.remove(target)
    elif operation == "duplicate" and parent is not None:
        parent.append(copy.deepcopy(target))
    elif operation == "text":
        target.text = data.draw(XML_TEXT, label="text")


@pytest.mark.parametrize("seed", SEEDS, ids=[p.name for p in SEEDS])
def test_seeds_map_cleanly(seed: Path) -> None:
    _map(seed.read_bytes())
