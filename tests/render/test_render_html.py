"""HTML renditions from a packet built in the test: sections from structured data, everything escaped, nothing
inline (no script, no style), the EHR's narrative never inserted, and the fragment is only an <article>."""

from datetime import UTC, datetime
from typing import Any

import lxml.html
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource
from fhir.resources.R4B import get_fhir_model_class

from mappers.ids import sequential_ids
from mappers.packet import ReferralRequest, build_referral_bundle
from mappers.record import PatientRecord
from service.render import render_consult_html, render_packet_html
from service.render.narrative_text import narrative_lines

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
SCRIPT = "<script>alert(1)</script>"
BOLD = "<b>x</b>"
NARRATIVE_MARKER = "EHR-NARRATIVE-MARKER-7f3a"
XHTML = "http://www.w3.org/1999/xhtml"
REFERRAL_ID = "3f1c2e9a-0000-4000-8000-000000000001"


def resource(data: dict[str, Any]) -> Resource:
    return get_fhir_model_class(data["resourceType"]).model_validate(data)


def hostile_record() -> PatientRecord:
    """A synthetic record whose display texts are markup, and whose Condition carries its own narrative."""
    patient = Patient.model_validate({"resourceType": "Patient", "id": "p1", "name": [{"text": f"Pat {BOLD}"}],
                                      "birthDate": "1960-02-03", "gender": "female"})
    subject = {"reference": "Patient/p1"}
    condition = {"resourceType": "Condition", "id": "c1", "subject": subject,
                 "text": {"status": "generated", "div": f'<div xmlns="{XHTML}"><p>{NARRATIVE_MARKER}</p></div>'},
                 "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                "code": "active"}]},
                 "code": {"text": SCRIPT}, "onsetDateTime": "2023-04-05"}
    statement = {"resourceType": "MedicationStatement", "id": "m1", "status": "active", "subject": subject,
                 "medicationCodeableConcept": {"text": BOLD},
                 "dosage": [{"doseAndRate": [{"doseQuantity": {"value": 2, "unit": "tablet"}}],
                             "timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}}}]}
    report = {"resourceType": "DiagnosticReport", "id": "r1", "status": "final", "subject": subject,
              "code": {"text": "Basic metabolic panel"}, "effectiveDateTime": "2024-05-02",
              "result": [{"reference": "Observation/o1"}]}
    observation = {"resourceType": "Observation", "id": "o1", "status": "final", "subject": subject,
                   "code": {"text": "Potassium"}, "effectiveDateTime": "2024-05-02",
                   "valueQuantity": {"value": 5.9, "unit": "mmol/L"},
                   "interpretation": [{"text": "High"}],
                   "referenceRange": [{"low": {"value": 3.5, "unit": "mmol/L"}, "high": {"value": 5.1, "unit": "mmol/L"}}]}
    document = {"resourceType": "DocumentReference", "id": "d1", "status": "current", "subject": subject,
                "type": {"text": "Pathology study"}, "date": "2024-05-20T10:00:00Z",
                "content": [{"attachment": {"contentType": "text/plain", "title": "Biopsy report"}}]}
    return PatientRecord(patient, [patient, *(resource(r) for r in (condition, statement, report, observation,
                                                                     document))], base_url="http://ehr.test/fhir")


def hostile_packet() -> dict:
    request = ReferralRequest(referral_id=REFERRAL_ID, question=f"Is it {SCRIPT}?", patient_questions=[BOLD])
    packet = build_referral_bundle(hostile_record(), request, now=NOW, new_id=sequential_ids())
    return packet.bundle.model_dump(mode="json", exclude_none=True)


def text_of(html: str) -> str:
    return " ".join(lxml.html.fromstring(html).text_content().split())


def section(html: str, loinc: str) -> lxml.html.HtmlElement:
    found = lxml.html.fromstring(html).xpath(f'//section[@data-loinc="{loinc}"]')
    assert len(found) == 1, f"one section {loinc}"
    return found[0]


def test_markup_in_the_record_is_shown_as_text_and_never_becomes_an_element() -> None:
    html = render_packet_html(hostile_packet(), referral_id=REFERRAL_ID)
    tree = lxml.html.fromstring(html)
    assert not tree.xpath("//script") and not tree.xpath("//b"), "markup from the record became an element"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;b&gt;x&lt;/b&gt;" in html
    text = text_of(html)
    assert SCRIPT in text and f"Pat {BOLD}" in text  # the problem, the drug, the question, the patient's name
    assert text.count(BOLD) >= 3 and text.count(SCRIPT) >= 2


def test_the_ehr_narrative_is_not_inserted() -> None:
    packet = hostile_packet()
    assert NARRATIVE_MARKER in str(packet)  # the Condition still carries its own narrative in the Bundle
    assert NARRATIVE_MARKER not in render_packet_html(packet, referral_id=REFERRAL_ID)


@pytest.mark.parametrize("fragment", [False, True], ids=["page", "fragment"])
def test_nothing_inline_and_nothing_from_outside(fragment: bool) -> None:
    html = render_packet_html(hostile_packet(), referral_id=REFERRAL_ID, fragment=fragment)
    tree = lxml.html.fromstring(html)
    assert not tree.xpath("//script | //style | //*[@style] | //iframe | //img | //object")
    assert not [a for el in tree.iter() if isinstance(el.tag, str) for a in el.attrib if a.startswith("on")]
    links = tree.xpath("//link")
    assert [(link.get("rel"), link.get("href")) for link in links] == ([] if fragment else
                                                                       [("stylesheet", "/render/static/render.css")])
    assert "http://" not in html and "https://" not in html  # no CDN, no web font, no remote anything


def test_the_fragment_is_only_the_article() -> None:
    html = render_packet_html(hostile_packet(), referral_id=REFERRAL_ID, fragment=True).strip()
    assert html.startswith("<article") and html.endswith("</article>")
    assert not any(tag in html for tag in ("<html", "<head>", "<body", "<link", "<title"))
    page = render_packet_html(hostile_packet(), referral_id=REFERRAL_ID)
    assert page.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in page and html in page


def test_each_section_shows_its_resources_from_the_structured_data() -> None:
    html = render_packet_html(hostile_packet(), referral_id=REFERRAL_ID)
    header = " ".join(lxml.html.fromstring(html).xpath("//header")[0].text_content().split())
    assert "1960-02-03" in header and REFERRAL_ID in header and "2024-06-01 12:00 UTC" in header
    reason = section(html, "42349-1")
    assert reason.xpath('.//dd[@class="question"]')[0].text_content() == f"Is it {SCRIPT}?"
    assert [li.text_content() for li in reason.xpath('.//ul[@class="patient-questions"]/li')] == [BOLD]
    problem = " ".join(section(html, "11450-4").xpath(".//tbody/tr")[0].text_content().split())
    assert problem.startswith(SCRIPT) and "active" in problem and "2023-04-05" in problem
    medication = " ".join(section(html, "10160-0").text_content().split())
    assert BOLD in medication and "2 tablets twice daily" in medication  # structured dose and timing
    results = section(html, "30954-2")
    report, value = (" ".join(tr.text_content().split()) for tr in results.xpath(".//tbody/tr"))
    assert report.startswith("Basic metabolic panel") and "2024-05-02" in report
    for expected in ("Potassium", "Value: 5.9 mmol/L", "Interpretation: High", "Reference range: 3.5 mmol/L"):
        assert expected in value
    documents = " ".join(section(html, "77599-9").text_content().split())
    assert "Pathology study" in documents and "Biopsy report" in documents and "2024-05-20" in documents
    assert "None recorded (Nil Known)" in section(html, "48765-2").text_content()  # no allergies: emptyReason
    readiness = section(html, "48767-8").text_content()
    assert "No current treatment plan" in readiness  # the readiness report, as text


def test_consult_narrative_is_plain_text_and_markup_in_it_is_dropped() -> None:
    packet = Bundle.model_validate(hostile_packet())
    composition = packet.entry[0].resource
    composition.section[1].text.div = (f'<div xmlns="{XHTML}"><p>Keep &lt;b&gt;this&lt;/b&gt;</p>'
                                       f'<script>alert(1)</script><p onclick="x()">and <i>this</i></p></div>')
    html = render_consult_html(packet.model_dump(mode="json", exclude_none=True), referral_id=REFERRAL_ID)
    tree = lxml.html.fromstring(html)
    assert not tree.xpath("//script | //i | //b | //*[@onclick]")
    lines = [p.text_content() for p in tree.xpath('//section[@data-loinc="11450-4"]/p[@class="narrative-line"]')]
    assert lines == ["Keep <b>this</b>", "and this"]  # a script's content is dropped with the script


def test_narrative_lines_give_one_line_per_block_and_join_table_cells() -> None:
    div = (f'<div xmlns="{XHTML}"><p>One <b>two</b></p><table><tr><td>a</td><td>b</td></tr></table>'
           "<ul><li>x</li><li>y<br/>z</li></ul></div>")
    assert narrative_lines(div) == ["One two", "a; b", "x", "y", "z"]
    assert narrative_lines("<div><p>not xhtml") == ["(this narrative could not be read)"]
    assert narrative_lines(None) == []
