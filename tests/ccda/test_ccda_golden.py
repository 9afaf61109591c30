"""Golden tests over every third-party C-CDA file in the corpus, plus document-level invariants."""

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.composition import CompositionSection
from lxml import etree

from mappers.ccda import ccda
from mappers.ccda.document import CcdaMapping
from mappers.ccda.parser import parse_ccda
from mappers.ccda.text import check_xhtml
from mappers.errors import MappingError
from mappers.validation import check_document_bundle

CORPUS_DIR = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "ccda"
GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
CORPUS = sorted(CORPUS_DIR.glob("*.xml"))
BROKEN = {"hl7-companion_CCD_MALFORMED.xml": "AttValue", "jdd_MDLogic_CCD_MUBatJer_BADNS.xml": "not a valid URI"}
WELL_FORMED = [p for p in CORPUS if p.name not in BROKEN]

EXPECTED_KINDS = {
    "ccda-on-fhir_Input_Myra_Jones_v2.xml": "ccd",
    "ccda-on-fhir_OracleCerner_MyraJonesFhirToCDA.xml": "ccd",
    "chb_Cerner_Transition_of_Care_Referral_Summary.xml": "ccd",
    "chb_Kareo_SummaryOfCare_Joey_Miller.xml": "ccd",
    "chb_Kinsights_sample-timmy.xml": "ccd",
    "chb_Vitera_CCDA_SMART_Sample.xml": "ccd",
    "hl7-ccda21_C-CDA_R2-1_CCD.xml": "ccd",
    "hl7-ccda3_consultation-note-complete-example.xml": "consultation-note",
    "hl7-examples_Consult_Document_Closing_Referral.xml": "consultation-note",
    "hl7-examples_Consultation_Note.xml": "consultation-note",
    "hl7-examples_Discharge_Summary.xml": "discharge-summary",
    "hl7-examples_Referral_Note.xml": "referral-note",
    "hl7-examples_Unstructured_Document_embed_PDF.xml": "discharge-summary",
    "jdd_Amrita_Larson_PRIVACY_SEGMENTED.xml": "ccd",
    "jdd_KeyChart_CCDA_723061.xml": "referral-note",
    "jdd_NextGen_AliceNewmanRN.xml": "referral-note",
    "jdd_iPatientCare_RN_B1_Sample2_2.1.xml": "referral-note",
    "onc_AllscriptsProfessional_Referral_Summary.xml": "referral-note",
    "onc_McKessonParagon_wright-ds.xml": "discharge-summary",
    "onc_McKessonParagon_wright-rn.xml": "referral-note",
    "onc_MeditechMagic_Test1_WrightSample2RN.xml": "referral-note",
    "onc_NetsmartMyAvatar_Bates_Referral_Note.xml": "referral-note",
}


def serialise(mapping: CcdaMapping) -> str:
    """The golden form: model_dump(mode="json", exclude_none=True), sorted keys, indent 2."""
    return json.dumps(mapping.bundle.model_dump(mode="json", exclude_none=True), sort_keys=True, indent=2,
                      ensure_ascii=False) + "\n"


@pytest.fixture(scope="module")
def mapped_corpus() -> dict[str, CcdaMapping]:
    """Every well-formed corpus file mapped once (context None, fixed clock, sequential ids)."""
    from mappers.ccda.document import map_ccda_consult
    from mappers.ids import sequential_ids
    from datetime import datetime, timezone

    now = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc)
    return {p.name: map_ccda_consult(parse_ccda(p.read_bytes()), None, now=now, new_id=sequential_ids())
            for p in WELL_FORMED}


def test_the_corpus_is_there() -> None:
    assert len(CORPUS) == 24, "the shared C-CDA corpus is missing or changed"
    assert set(BROKEN) <= {p.name for p in CORPUS}


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_corpus_file_matches_its_golden_file_or_is_rejected(path: Path, mapper: Callable[..., CcdaMapping],
                                                           update_golden: bool) -> None:
    if path.name in BROKEN:
        with pytest.raises(MappingError) as caught:
            parse_ccda(path.read_bytes())
        assert caught.value.status == 400
        assert "not well-formed XML" in caught.value.diagnostics
        assert BROKEN[path.name] in caught.value.diagnostics
        return
    actual = serialise(mapper(path.read_bytes()))
    golden = GOLDEN_DIR / f"{path.name}.fhir.json"
    if update_golden:
        golden.write_text(actual, encoding="utf-8")
    assert golden.exists(), f"missing golden file {golden.name} (run pytest --update-golden or UPDATE_GOLDEN=1)"
    assert actual == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_file_maps_when_recovery_is_allowed_and_says_so(name: str,
                                                               mapper: Callable[..., CcdaMapping]) -> None:
    mapping = mapper((CORPUS_DIR / name).read_bytes(), allow_recover=True)
    assert any(w.startswith("recovered from malformed XML: ") for w in mapping.warnings)
    assert check_document_bundle(mapping.bundle) == []
    assert mapping.sections, "the recovered document keeps its sections"


def test_malformed_ccd_recovery_keeps_the_sections_after_the_error(mapper: Callable[..., CcdaMapping]) -> None:
    mapping = mapper((CORPUS_DIR / "hl7-companion_CCD_MALFORMED.xml").read_bytes(), allow_recover=True)
    codes = {r.code for r in mapping.sections}
    assert {"10160-0", "47519-4", "30954-2", "18776-5"} <= codes  # these come after the broken attribute


@pytest.mark.parametrize("name", sorted(EXPECTED_KINDS), ids=sorted(EXPECTED_KINDS))
def test_document_kind_of_corpus_file(name: str, mapped_corpus: dict[str, CcdaMapping]) -> None:
    assert mapped_corpus[name].document_kind == EXPECTED_KINDS[name]


@pytest.mark.parametrize("path", WELL_FORMED, ids=[p.name for p in WELL_FORMED])
def test_bundle_is_a_valid_document(path: Path, mapped_corpus: dict[str, CcdaMapping]) -> None:
    bundle = mapped_corpus[path.name].bundle
    assert check_document_bundle(bundle) == []
    assert bundle.entry[0].resource.get_resource_type() == "Composition"
    urls = [e.fullUrl for e in bundle.entry]
    assert all(u.startswith("urn:uuid:") for u in urls) and len(set(urls)) == len(urls)
    assert Bundle.model_validate(bundle.model_dump()).model_dump() == bundle.model_dump()


@pytest.mark.parametrize("path", WELL_FORMED, ids=[p.name for p in WELL_FORMED])
def test_every_section_narrative_is_safe_xhtml(path: Path, mapped_corpus: dict[str, CcdaMapping]) -> None:
    composition = mapped_corpus[path.name].bundle.entry[0].resource
    for section in _walk(composition.section or []):
        assert section.text is not None or section.entry, "cmp-1: text, entries or sub-sections"
        if section.text is not None:
            assert check_xhtml(section.text.div) == [], section.title


@pytest.mark.parametrize("path", WELL_FORMED, ids=[p.name for p in WELL_FORMED])
def test_every_non_empty_source_section_appears_in_the_composition(path: Path,
                                                                   mapped_corpus: dict[str, CcdaMapping]) -> None:
    root = parse_ccda(path.read_bytes()).root
    composition = mapped_corpus[path.name].bundle.entry[0].resource
    output = {(_code(s), (s.title or "").strip()) for s in _walk(composition.section or [])}
    output_codes = {c for c, _ in output if c}
    output_titles = {t for _, t in output if t}
    for source in root.iter(f"{{{ccda.NS['hl7']}}}section"):
        if source.get("nullFlavor") or not (ccda.each(source, "hl7:entry") or ccda.first(source, "hl7:text")
                                            is not None):
            continue
        code = ccda.attr(source, "hl7:code", "code")
        title = ccda.text_of(ccda.first(source, "hl7:title"))
        assert code in output_codes or title in output_titles, f"section {code} / {title} is missing"


@pytest.mark.parametrize("path", WELL_FORMED, ids=[p.name for p in WELL_FORMED])
def test_section_reports_match_the_composition(path: Path, mapped_corpus: dict[str, CcdaMapping]) -> None:
    mapping = mapped_corpus[path.name]
    sections = list(_walk(mapping.bundle.entry[0].resource.section or []))
    assert len(mapping.sections) == len(sections)
    for report, section in zip(mapping.sections, sections, strict=True):
        assert report.entries == len(section.entry or [])
        assert report.status == ("structured" if section.entry else report.status)
        assert (report.status == "empty") == (section.emptyReason is not None)


def test_large_vitera_file_maps_quickly(mapper: Callable[..., CcdaMapping]) -> None:
    data = (CORPUS_DIR / "chb_Vitera_CCDA_SMART_Sample.xml").read_bytes()
    started = time.perf_counter()
    mapping = mapper(data)
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"876 KB Vitera file took {elapsed:.1f} s"
    assert len(mapping.bundle.entry) > 100


def test_null_flavor_sections_of_the_ccda3_consult_are_recorded_empty(mapped_corpus: dict[str, CcdaMapping]) -> None:
    mapping = mapped_corpus["hl7-ccda3_consultation-note-complete-example.xml"]
    assert len(mapping.sections) == 8
    assert {r.status for r in mapping.sections} == {"empty"}
    for section in mapping.bundle.entry[0].resource.section:
        assert section.emptyReason.coding[0].code == "unavailable"


def test_header_only_consult_closes_the_referral_with_an_order_extension(
        mapped_corpus: dict[str, CcdaMapping]) -> None:
    mapping = mapped_corpus["hl7-examples_Consult_Document_Closing_Referral.xml"]
    composition = mapping.bundle.entry[0].resource
    assert composition.section is None and mapping.sections == []
    assert "the document has no sections (empty structuredBody)" in mapping.warnings
    order = composition.extension[0]
    assert order.url == "http://hl7.org/fhir/us/ccda/StructureDefinition/OrderExtension"
    assert order.valueReference.type == "ServiceRequest"
    assert order.valueReference.identifier.value == "urn:uuid:9a6d1bac-17d3-4195-89a4-1121bc809b4e"


def test_unstructured_pdf_becomes_a_document_reference(mapped_corpus: dict[str, CcdaMapping]) -> None:
    mapping = mapped_corpus["hl7-examples_Unstructured_Document_embed_PDF.xml"]
    section = mapping.bundle.entry[0].resource.section[0]
    assert section.title == "Document"
    docref = next(e.resource for e in mapping.bundle.entry if e.resource.get_resource_type() == "DocumentReference")
    attachment = docref.content[0].attachment
    assert attachment.contentType == "application/pdf"
    assert attachment.data.startswith(b"%PDF-")  # the model holds base64Binary decoded
    assert attachment.size == len(attachment.data)
    serialised = docref.model_dump(mode="json")["content"][0]["attachment"]["data"]
    assert serialised.startswith("JVBERi0x")
    assert section.entry[0].reference == f"urn:uuid:{docref.id}"


def test_source_document_type_is_kept_in_category_and_relates_to(mapped_corpus: dict[str, CcdaMapping]) -> None:
    composition = mapped_corpus["chb_Vitera_CCDA_SMART_Sample.xml"].bundle.entry[0].resource
    assert composition.type.coding[0].code == "11488-4"
    assert composition.category[0].coding[0].code == "34133-9"
    assert composition.relatesTo[0].code == "transforms"


def _walk(sections: list[CompositionSection]):  # noqa: ANN202 - generator of sections, depth first
    for section in sections:
        yield section
        yield from _walk(section.section or [])


def _code(section: CompositionSection) -> str | None:
    if section.code is None or not section.code.coding:
        return None
    return section.code.coding[0].code


def test_golden_files_have_no_orphans() -> None:
    expected = {f"{p.name}.fhir.json" for p in WELL_FORMED}
    present = {p.name for p in GOLDEN_DIR.glob("*.fhir.json")}
    assert present <= expected, f"golden files without a corpus file: {sorted(present - expected)}"


def test_xml_namespace_constant_is_cda() -> None:
    assert etree.QName(f"{{{ccda.NS['hl7']}}}x").namespace == "urn:hl7-org:v3"
