"""Generated narrative: escaped, allowed XHTML (txt-1), never empty (txt-2), one summary per resource type."""

import json
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.dosage import Dosage
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.medicationstatement import MedicationStatement
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.resource import Resource
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from mappers import narrative
from mappers.narrative import (
    NONE_RECORDED,
    XHTML_NS,
    Row,
    check_narrative,
    dosage_text,
    resource_rows,
    sanitize_div,
    section_narrative,
    text_narrative,
    xml_text,
)

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "fhir-examples"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCRIPT = "<script>alert(1)</script>"
CORPUS_RESOURCES = [
    "us-core/condition-duodenal-ulcer.json", "us-core/condition-encounter-diagnosis-example1.json",
    "us-core/DiagnosticReport-chest-xray-report.json", "us-core/DiagnosticReport-cardiology-report.json",
    "us-core/medicationrequest-contained-oral-axid.json", "us-core/medicationrequest-self-tylenol.json",
    "us-core/procedure-rehab.json", "us-core/documentreference-discharge-summary.json",
    "us-core/servicerequest-rehab.json", "core-r4/medicationstatementexample1.json",
    "core-r4/medicationstatementexample2.json", "core-r4/documentreference-example.json",
    "core-r4/task-example1.json", "core-r4/provenance-example.json",
]


def parse(data: dict[str, Any]) -> Resource:
    """An R4B model from JSON-like data."""
    return get_fhir_model_class(data["resourceType"]).model_validate(data)


def div_text(div: str) -> str:
    """The text content of a narrative div."""
    return "".join(etree.fromstring(div.encode()).itertext())


def medication(resource_type: str, *, code: str | None = None, text: str = "Metformin 500 MG Oral Tablet",
               **extra: Any) -> MedicationStatement | MedicationRequest:
    """A MedicationStatement or MedicationRequest for one drug."""
    concept: dict[str, Any] = {"text": text}
    if code:
        concept["coding"] = [{"system": RXNORM, "code": code}]
    data: dict[str, Any] = {"resourceType": resource_type, "status": "active", "subject": {"reference": "Patient/p"},
                            "medicationCodeableConcept": concept, **extra}
    if resource_type == "MedicationRequest":
        data["intent"] = "order"
    return parse(data)  # type: ignore[return-value]


def test_ehr_text_is_escaped_and_the_narrative_stays_valid() -> None:
    condition = Condition.model_validate({"resourceType": "Condition", "subject": {"reference": "Patient/p"},
                                          "code": {"text": SCRIPT}})
    narrative = section_narrative(f"Problems {SCRIPT}", [condition])
    assert "<script" not in narrative.div
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in narrative.div
    assert SCRIPT in div_text(narrative.div)
    assert check_narrative(narrative.div) == []
    assert narrative.status == "generated"


def test_characters_xml_cannot_carry_are_removed() -> None:
    condition = Condition.model_validate({"resourceType": "Condition", "subject": {"reference": "Patient/p"},
                                          "code": {"text": "bad\x00\x0bchars"}})
    assert "badchars" in div_text(section_narrative("Problems", [condition]).div)


@pytest.mark.parametrize("name", CORPUS_RESOURCES, ids=[Path(n).stem for n in CORPUS_RESOURCES])
def test_every_summariser_makes_allowed_non_empty_xhtml(name: str) -> None:
    resource = parse(json.loads((CORPUS / name).read_text(encoding="utf-8")))
    narrative = section_narrative("Section", [resource])
    assert check_narrative(narrative.div) == []
    assert narrative.div.startswith(f'<div xmlns="{XHTML_NS}">')


def test_the_xml_serialisation_accepts_the_generated_narrative() -> None:
    condition = Condition.model_validate({"resourceType": "Condition", "subject": {"reference": "Patient/p"},
                                          "code": {"text": "Asthma & <wheeze>"}})
    condition.text = section_narrative("Problems", [condition])
    xml = etree.fromstring(condition.model_dump_xml())
    cells = xml.findall(f".//{{{XHTML_NS}}}td")
    assert cells[0].text == "Asthma & <wheeze>"


def test_an_empty_section_says_none_recorded() -> None:
    div = section_narrative("Allergies", []).div
    assert div_text(div) == NONE_RECORDED
    assert check_narrative(div) == []


def test_text_narrative_escapes_paragraphs_and_is_never_empty() -> None:
    assert div_text(text_narrative(["a < b", "  "]).div) == "a < b"
    assert div_text(text_narrative([]).div) == NONE_RECORDED


def test_condition_row_has_code_statuses_onset_and_stage() -> None:
    condition = Condition.model_validate({
        "resourceType": "Condition", "subject": {"reference": "Patient/p"}, "code": {"text": "Breast cancer"},
        "clinicalStatus": {"coding": [{"code": "active"}]}, "verificationStatus": {"coding": [{"code": "provisional"}]},
        "onsetDateTime": "2023-02-01", "stage": [{"summary": {"text": "Stage IIA"}}]})
    [row] = resource_rows([condition])
    assert (row.what, row.status, row.date) == ("Breast cancer", "active, provisional", "2023-02-01")
    assert "Stage: Stage IIA" in row.details


def test_report_results_are_nested_rows_with_value_interpretation_and_range() -> None:
    hemoglobin = Observation.model_validate({
        "resourceType": "Observation", "id": "hb", "status": "final", "code": {"text": "Hemoglobin"},
        "valueQuantity": {"value": 10.2, "unit": "g/dL"}, "interpretation": [{"text": "Low"}],
        "referenceRange": [{"low": {"value": 12, "unit": "g/dL"}, "high": {"value": 16, "unit": "g/dL"}}]})
    report = DiagnosticReport.model_validate({
        "resourceType": "DiagnosticReport", "status": "final", "code": {"text": "CBC"},
        "conclusion": "Anaemia", "result": [{"reference": "urn:uuid:hb"}, {"display": "Platelets (not included)"}]})
    [row] = resource_rows([report], {"urn:uuid:hb": hemoglobin}.get)
    assert "Conclusion: Anaemia" in row.details
    hb_row, platelets = row.children
    assert hb_row.details == ("Value: 10.2 g/dL", "Interpretation: Low", "Reference range: 12 g/dL \u2013 16 g/dL")
    assert platelets.what == "Platelets (not included)"
    assert check_narrative(section_narrative("Results", [report], resolve={"urn:uuid:hb": hemoglobin}.get).div) == []


@pytest.mark.parametrize(
    ("dosage", "expected"),
    [
        ({"doseAndRate": [{"doseQuantity": {"value": 2, "unit": "tablet"}}],
          "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}}}, "2 tablets twice daily"),
        ({"text": "Take two tablets by mouth twice a day", "timing": {"repeat": {"frequency": 1, "period": 1,
                                                                                 "periodUnit": "d"}}},
         "Take two tablets by mouth twice a day"),
        ({"doseAndRate": [{"doseQuantity": {"value": 500, "unit": "mg"}}], "route": {"text": "Oral"},
          "timing": {"repeat": {"frequency": 1, "period": 8, "periodUnit": "h"}}}, "500 mg every 8 hours, Oral"),
        ({"doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
          "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "when": ["HS"]}}},
         "1 tablet daily at bedtime"),
        ({"doseAndRate": [{"doseRange": {"low": {"value": 1, "unit": "puff"}, "high": {"value": 2, "unit": "puff"}}}],
          "timing": {"repeat": {"frequency": 1, "period": 4, "periodMax": 6, "periodUnit": "h"}},
          "asNeededCodeableConcept": {"text": "wheeze"}}, "1 puff \u2013 2 puff every 4-6 hours as needed for wheeze"),
        ({"timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d", "boundsDuration":
                                {"value": 7, "unit": "days"}}}}, "three times daily for 7 days"),
        ({"timing": {"code": {"text": "BID"}}}, "BID"),
        ({"asNeededBoolean": True}, "as needed"),
        ({"doseAndRate": [{"doseQuantity": {"value": 10, "unit": "mg"}}],
          "timing": {"repeat": {"frequency": 1, "frequencyMax": 2, "period": 1, "periodUnit": "wk"}}},
         "10 mg 1-2 times weekly"),
    ],
    ids=["two-tablets-twice-daily", "text-wins", "every-8-hours-with-route", "at-bedtime", "range-prn-reason",
         "bounded-duration", "timing-code", "prn-only", "frequency-range"],
)
def test_dosage_text_is_built_from_structured_dosage(dosage: dict[str, Any], expected: str) -> None:
    assert dosage_text(Dosage.model_validate(dosage)) == expected


@pytest.mark.parametrize(
    ("statement", "order"),
    [({"code": "860975"}, {"code": "860975", "text": "metformin (brand)"}),
     ({"text": "Lisinopril 10 MG"}, {"text": "  lisinopril   10 mg "})],
    ids=["same-rxnorm-code", "same-text"],
)
def test_an_order_for_a_drug_already_in_a_statement_is_listed_once(statement: dict, order: dict) -> None:
    rows = resource_rows([medication("MedicationStatement", **statement),
                          medication("MedicationRequest", authoredOn="2024-01-02", **order)])
    assert len(rows) == 1
    assert rows[0].details[-1] == "Also ordered (active, 2024-01-02)"


def test_different_drugs_get_their_own_rows_and_orders_alone_are_listed() -> None:
    rows = resource_rows([medication("MedicationStatement", code="1"), medication("MedicationRequest", code="2"),
                          medication("MedicationRequest", code="2")])
    assert len(rows) == 3


def test_a_referenced_medication_names_the_drug() -> None:
    request = parse({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                     "subject": {"reference": "Patient/p"}, "medicationReference": {"reference": "urn:uuid:m"}})
    drug = parse({"resourceType": "Medication", "code": {"coding": [{"system": RXNORM, "code": "1",
                                                                     "display": "Warfarin 5 MG"}]}})
    [row] = resource_rows([request], {"urn:uuid:m": drug}.get)
    assert row.what == "Warfarin 5 MG"



def test_a_row_that_asks_nothing_of_the_document_stands_alone_and_a_view_hands_it_back() -> None:
    condition = Condition.model_validate({"resourceType": "Condition", "subject": {"reference": "Patient/p"},
                                          "code": {"text": "Breast cancer"}, "onsetDateTime": "2023-02-01"})
    row = narrative.standalone_row(condition)
    assert row == narrative.summarise(condition)
    worked_out = Row("worked out before")
    view = narrative.DocumentView({}, rows={id(condition): (condition, worked_out)})
    assert resource_rows([condition], view) == [worked_out]
    twin = condition.model_copy(deep=True)  # an equal resource is not the one the row was worked out for
    assert narrative.DocumentView({}, rows={id(twin): (condition, worked_out)}).known_row(twin) is None


def test_a_row_that_shows_a_referenced_resource_does_not_stand_alone() -> None:
    report = DiagnosticReport.model_validate({"resourceType": "DiagnosticReport", "status": "final",
                                              "code": {"text": "CBC"}, "result": [{"reference": "Observation/hb"}]})
    request = parse({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                     "subject": {"reference": "Patient/p"}, "medicationReference": {"reference": "Medication/m"}})
    assert narrative.standalone_row(report) is None
    assert narrative.standalone_row(request) is None

@pytest.mark.parametrize(
    ("div", "problem"),
    [
        (f'<div xmlns="{XHTML_NS}"><p>ok</p><script>alert(1)</script></div>', "element <script> is not allowed"),
        (f'<div xmlns="{XHTML_NS}"><p onclick="alert(1)">x</p></div>', "attribute onclick on <p>"),
        (f'<div xmlns="{XHTML_NS}"><a href="javascript:alert(1)">x</a></div>', "script or data URL"),
        (f'<div xmlns="{XHTML_NS}"><form><input/></form>x</div>', "element <form> is not allowed"),
        (f'<div xmlns="{XHTML_NS}"><iframe src="https://example.org"/>x</div>', "element <iframe>"),
        ("<div><p>no namespace</p></div>", "not in the XHTML namespace"),
        (f'<p xmlns="{XHTML_NS}">not a div</p>', "root element must be an XHTML div"),
        (f'<div xmlns="{XHTML_NS}">  <p> </p></div>', "no content (txt-2)"),
        (f'<div xmlns="{XHTML_NS}"><p>unclosed</div>', "not well-formed"),
    ],
    ids=["script", "event-attribute", "javascript-link", "form", "iframe", "no-namespace", "not-a-div", "empty",
         "malformed"],
)
def test_check_narrative_reports_what_txt1_and_txt2_forbid(div: str, problem: str) -> None:
    assert any(problem in p for p in check_narrative(div))


def test_check_narrative_accepts_tables_links_images_and_styles() -> None:
    div = (f'<div xmlns="{XHTML_NS}"><table border="1"><tr><td style="color:red" colspan="2">x</td></tr></table>'
           '<a href="https://example.org">l</a><img src="#pic" alt="p"/><span xml:lang="en">y</span></div>')
    assert check_narrative(div) == []


def test_sanitize_div_removes_scripts_events_and_remote_images_but_keeps_text() -> None:
    div = (f'<div xmlns="{XHTML_NS}">a<script>steal()</script>b<font>c</font>'
           '<p onclick="x()" style="color:red">d<img src="https://tracker.example/p.png"/></p></div>')
    cleaned = etree.tostring(sanitize_div(div), encoding="unicode")
    assert "script" not in cleaned and "onclick" not in cleaned and "tracker" not in cleaned
    assert "font" not in cleaned
    assert "".join(sanitize_div(div).itertext()) == "abcd"
    assert check_narrative(cleaned) == []


@pytest.mark.parametrize(
    ("data", "what", "status", "date", "detail"),
    [
        ({"resourceType": "AllergyIntolerance", "patient": {"reference": "Patient/p"}, "code": {"text": "Penicillin"},
          "clinicalStatus": {"coding": [{"code": "active"}]}, "criticality": "high", "recordedDate": "2020-03-04",
          "reaction": [{"manifestation": [{"text": "Hives"}], "severity": "severe"}]},
         "Penicillin", "active", "2020-03-04", "Reactions: Hives, severe"),
        ({"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p"},
          "category": [{"text": "Diabetes self management plan"}], "period": {"start": "2021-01-01"},
          "addresses": [{"reference": "#c"}], "contained": [{"resourceType": "Condition", "id": "c",
                                                             "subject": {"reference": "Patient/p"},
                                                             "code": {"text": "Diabetes"}}],
          "activity": [{"detail": {"status": "in-progress", "code": {"text": "Diabetic diet"}}}]},
         "Diabetes self management plan", "active, plan", "2021-01-01", "Addresses: Diabetes"),
        ({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB", "display": "ambulatory"},
          "period": {"start": "2022-05-01T09:00:00Z", "end": "2022-05-01T09:30:00Z"},
          "reasonCode": [{"text": "Chest pain"}]},
         "ambulatory", "finished", "2022-05-01 09:00 UTC \u2013 2022-05-01 09:30 UTC", "Reason: Chest pain"),
        ({"resourceType": "Immunization", "id": "imm1", "status": "completed", "vaccineCode": {"text": "Influenza"},
          "patient": {"reference": "Patient/p"}, "occurrenceDateTime": "2020-10-01"},
         "Immunization: Influenza", "completed", "", "id: imm1"),
        ({"resourceType": "Goal", "id": "g1", "lifecycleStatus": "active", "description": {"text": "HbA1c < 7"},
          "subject": {"reference": "Patient/p"}},
         "Goal", "", "", "id: g1"),
    ],
    ids=["allergy", "care-plan", "encounter", "generic-immunization", "generic-goal"],
)
def test_summary_rows_state_the_key_facts(data: dict[str, Any], what: str, status: str, date: str,
                                          detail: str) -> None:
    [row] = resource_rows([parse(data)])
    assert (row.what, row.status, row.date) == (what, status, date)
    assert detail in row.details


# --- the section table is written as text: it must be what lxml writes for the same elements ---------------------

_CELL_TEXT = st.text(alphabet=st.sampled_from(list("ab &<>\"']\r\n\t\u00e9\u21b3\x00\x01\ud800\ufffe\U0001F600")),
                     max_size=8)
_ROWS = st.recursive(
    st.builds(Row, what=_CELL_TEXT, status=_CELL_TEXT, date=_CELL_TEXT, details=st.tuples(_CELL_TEXT, _CELL_TEXT)),
    lambda children: st.builds(Row, what=_CELL_TEXT, status=_CELL_TEXT, date=_CELL_TEXT,
                               details=st.lists(_CELL_TEXT, max_size=3).map(tuple),
                               children=st.lists(children, max_size=2).map(tuple)),
    max_leaves=6)


def _lxml_table(title: str, rows: list[Row]) -> str:
    """The oracle: the same table built as lxml elements and serialised by lxml."""
    ns = "{http://www.w3.org/1999/xhtml}"

    def sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
        child = etree.SubElement(parent, ns + tag, attrib=attrs)
        if text is not None:
            child.text = xml_text(text)
        return child

    def add(body: etree._Element, row: Row, nested: bool) -> None:
        tr = sub(body, "tr", **({"class": "nested"} if nested else {}))
        sub(tr, "td", f"\u21b3 {row.what}" if nested else row.what)
        sub(tr, "td", row.status)
        sub(tr, "td", row.date)
        cell = sub(tr, "td", row.details[0] if row.details else "")
        for detail in row.details[1:]:
            sub(cell, "br").tail = xml_text(detail)
        for child in row.children:
            add(body, child, True)

    root = etree.Element(ns + "div", nsmap={None: "http://www.w3.org/1999/xhtml"})
    table = sub(root, "table")
    sub(table, "caption", title)
    header = sub(sub(table, "thead"), "tr")
    for heading in ("Item", "Status", "Date", "Details"):
        sub(header, "th", heading)
    body = sub(table, "tbody")
    for row in rows:
        add(body, row, False)
    return etree.tostring(root, encoding="unicode")


@settings(max_examples=300, deadline=None)
@given(title=_CELL_TEXT.filter(bool), rows=st.lists(_ROWS, min_size=1, max_size=4))
def test_the_section_table_text_is_what_lxml_writes_for_the_same_elements(title: str, rows: list[Row]) -> None:
    with pytest.MonkeyPatch.context() as patch:  # the rows as given, whatever resources would summarise to
        patch.setattr(narrative, "resource_rows", lambda resources, resolve=None: rows)
        div = narrative.section_narrative(title, []).div
    assert div == _lxml_table(title, rows)
    assert check_narrative(div) == []
