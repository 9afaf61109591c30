"""GET packet/consult as HTML and PDF over the API, for every fixture patient: every problem, every medication
with its dose and the questions are there (PDF text via pdftotext), the PDF has its running header and page
numbers; negotiation (Accept, _format), 406 for what is not served, errors as FHIR JSON, reads audited."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import lxml.html
import pytest
from flask.testing import FlaskClient

from fixtures.consultant import DEFAULT_PLAN
from tests.conftest import assert_outcome, fixture_questions

PATIENTS = sorted(fixture_questions())
HTML_UTF8 = "text/html; charset=utf-8"
PDF = "application/pdf"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
PROBLEMS, MEDICATIONS = "11450-4", "10160-0"


# --- what the packet holds (read from its FHIR JSON, independently of the renderer) ----------------------

def packet_json(client: FlaskClient, referral_id: str) -> dict:
    return client.get(f"/api/referrals/{referral_id}/packet").get_json()


def concept_name(concept: dict) -> str:
    return concept.get("text") or next(c["display"] for c in concept["coding"] if c.get("display"))


def problems(packet: dict) -> list[tuple[str, str]]:
    """(name, clinical status) of every Condition."""
    return [(concept_name(r["code"]), r["clinicalStatus"]["coding"][0]["code"])
            for r in resources(packet, "Condition")]


def medications(packet: dict) -> list[tuple[str, list[str]]]:
    """(drug name, dosage texts) of every MedicationStatement and MedicationRequest."""
    found = []
    for r in resources(packet, "MedicationStatement", "MedicationRequest"):
        name = concept_name(r["medicationCodeableConcept"]) if "medicationCodeableConcept" in r else \
            r["medicationReference"]["display"]
        found.append((name, [d["text"] for d in r.get("dosage") or r.get("dosageInstruction") or []]))
    assert found
    return found


def resources(packet: dict, *types: str) -> list[dict]:
    return [e["resource"] for e in packet["entry"] if e["resource"]["resourceType"] in types]


def squashed(text: str) -> str:
    """Text without white space (a PDF wraps lines, also inside words at '/')."""
    return "".join(text.split())


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    assert shutil.which("pdftotext"), "the PDF tests need pdftotext (Debian: poppler-utils)"
    path = tmp_path / "rendition.pdf"
    path.write_bytes(pdf)
    done = subprocess.run(["pdftotext", "-raw", "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True,
                          timeout=60)
    return done.stdout.decode("utf-8")


def rows(html: str, loinc: str) -> dict[str, str]:
    """The section's table rows: item → the whole row's text."""
    tree = lxml.html.fromstring(html)
    return {" ".join(tr.xpath('./td[@class="item"]')[0].text_content().split()): " ".join(tr.text_content().split())
            for tr in tree.xpath(f'//section[@data-loinc="{loinc}"]//tbody/tr[@class="entry"]')}


# --- the packet -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("patient", PATIENTS)
def test_packet_html_shows_every_problem_medication_with_its_dose_and_the_questions(
        rendition_client: FlaskClient, referrals: dict[str, str], patient: str) -> None:
    referral_id = referrals[patient]
    resp = rendition_client.get(f"/api/referrals/{referral_id}/packet", headers={"Accept": "text/html"})
    assert resp.status_code == 200 and resp.headers["Content-Type"] == HTML_UTF8
    assert "Accept" in resp.headers["Vary"] and "style-src 'self'" in resp.headers["Content-Security-Policy"]
    html = resp.get_data(as_text=True)
    packet = packet_json(rendition_client, referral_id)
    problem_rows = rows(html, PROBLEMS)
    for name, status in problems(packet):
        assert name in problem_rows and status in problem_rows[name], name
    medication_rows = rows(html, MEDICATIONS)
    for name, doses in medications(packet):
        assert name in medication_rows, name
        assert all(dose in medication_rows[name] for dose in doses), (name, doses)
    tree = lxml.html.fromstring(html)
    asked = fixture_questions()[patient]
    assert tree.xpath('//dd[@class="question"]')[0].text_content() == asked["question"]
    assert [li.text_content() for li in tree.xpath('//ul[@class="patient-questions"]/li')] == asked["patient_questions"]
    assert referral_id in tree.xpath('//dd[@class="running-referral"]')[0].text_content()


@pytest.mark.parametrize("patient", PATIENTS)
def test_packet_pdf_has_every_problem_medication_question_a_running_header_and_page_numbers(
        rendition_client: FlaskClient, referrals: dict[str, str], patient: str, tmp_path: Path) -> None:
    referral_id = referrals[patient]
    resp = rendition_client.get(f"/api/referrals/{referral_id}/packet", headers={"Accept": PDF})
    assert resp.status_code == 200 and resp.headers["Content-Type"] == PDF
    assert resp.headers["Content-Disposition"] == f'inline; filename="referral-{referral_id}-packet.pdf"'
    assert resp.data.startswith(b"%PDF-")
    text = pdf_text(resp.data, tmp_path)
    flat = squashed(text)
    packet = packet_json(rendition_client, referral_id)
    for name, _ in problems(packet):
        assert squashed(name) in flat, name
    for name, doses in medications(packet):
        assert squashed(name) in flat and all(squashed(dose) in flat for dose in doses), name
    asked = fixture_questions()[patient]
    for question in [asked["question"], *asked["patient_questions"]]:
        assert squashed(question) in flat, question
    pages = int(re.search(r"Page 1 of (\d+)", text).group(1))
    assert all(f"Page {n} of {pages}" in text for n in range(1, pages + 1))
    assert text.count(f"Referral {referral_id}") == pages  # the running header, on every page
    patient_name = lxml.html.fromstring(rendition_client.get(f"/api/referrals/{referral_id}/packet?_format=html")
                                        .get_data(as_text=True)).xpath('//dd[@class="running-patient"]')[0].text_content()
    assert text.count(patient_name) >= pages


# --- the consult ----------------------------------------------------------------------------------------

def test_consult_renditions_show_the_second_opinion_and_the_consultant_s_words(
        rendition_client: FlaskClient, referrals: dict[str, str], tmp_path: Path) -> None:
    referral_id = referrals["so-cad-patient"]
    concordance = rendition_client.get(f"/api/referrals/{referral_id}").get_json()["concordance"]
    assert concordance["confirmed"] and concordance["revised"] and concordance["new"]
    resp = rendition_client.get(f"/api/referrals/{referral_id}/consult?_format=html")
    assert resp.status_code == 200 and resp.headers["Content-Type"] == HTML_UTF8
    tree = lxml.html.fromstring(resp.get_data(as_text=True))
    groups = {h.get("class").split()[-1]: " ".join(h.getnext().text_content().split())
              for h in tree.xpath('//section[@data-loinc="55110-1"]/*[contains(@class, "concordance ")]')}
    assert set(groups) >= {"concordance-confirmed", "concordance-revised", "concordance-refuted", "concordance-new"}
    assert all(item["display"] in groups["concordance-confirmed"] for item in concordance["confirmed"])
    assert all(item["to"]["display"] in groups["concordance-revised"] for item in concordance["revised"])
    assert all(item["display"] in groups["concordance-new"] for item in concordance["new"])
    assert DEFAULT_PLAN in tree.text_content()  # the consultant's own words, as text

    pdf = rendition_client.get(f"/api/referrals/{referral_id}/consult", headers={"Accept": PDF})
    assert pdf.status_code == 200 and pdf.headers["Content-Type"] == PDF
    assert pdf.headers["Content-Disposition"] == f'inline; filename="referral-{referral_id}-consult.pdf"'
    text = pdf_text(pdf.data, tmp_path)
    assert f"Referral {referral_id}" in text and "Page 1 of" in text
    assert squashed(concordance["new"][0]["display"]) in squashed(text) and squashed(DEFAULT_PLAN) in squashed(text)


# --- negotiation, errors, audit -------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "query", "expected"), [
    ({"Accept": "text/html"}, "", HTML_UTF8),
    ({"Accept": BROWSER_ACCEPT}, "", HTML_UTF8),
    ({}, "?_format=html", HTML_UTF8),
    ({}, "?_format=text/html", HTML_UTF8),
    ({"Accept": "application/pdf"}, "", PDF),
    ({"Accept": "text/html"}, "?_format=pdf", PDF),
    ({}, "", "application/fhir+json; charset=utf-8"),
    ({"Accept": "*/*"}, "", "application/fhir+json; charset=utf-8"),
    ({"Accept": "application/fhir+xml"}, "", "application/fhir+xml; charset=utf-8"),
    ({"Accept": "application/pdf"}, "?_format=json", "application/fhir+json; charset=utf-8"),
], ids=["accept-html", "browser", "format-html", "format-text-html", "accept-pdf", "format-wins", "default",
        "any", "fhir-xml", "format-json"])
@pytest.mark.parametrize("document", ["packet", "consult"])
def test_accept_and_format_choose_the_representation(rendition_client: FlaskClient, referrals: dict[str, str],
                                                     document: str, headers: dict, query: str, expected: str) -> None:
    resp = rendition_client.get(f"/api/referrals/{referrals['so-ms-patient']}/{document}{query}", headers=headers)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == expected


@pytest.mark.parametrize(("headers", "query"), [({"Accept": "image/png"}, ""), ({"Accept": "application/msword"}, ""),
                                                ({}, "?_format=docx"), ({}, "?_format=image/png")],
                         ids=["accept-png", "accept-word", "format-docx", "format-png"])
@pytest.mark.parametrize("document", ["packet", "consult"])
def test_what_is_not_served_is_406_as_an_operation_outcome(rendition_client: FlaskClient, referrals: dict[str, str],
                                                           document: str, headers: dict, query: str) -> None:
    resp = rendition_client.get(f"/api/referrals/{referrals['so-ms-patient']}/{document}{query}", headers=headers)
    body = assert_outcome(resp, 406, "not-supported")
    assert "text/html" in body["issue"][0]["diagnostics"]


def test_other_routes_keep_answering_406_for_html_and_pdf(rendition_client: FlaskClient) -> None:
    from service.api.responses import NotAcceptable, fhir_format

    for headers, query in [({"Accept": "text/html"}, ""), ({"Accept": PDF}, ""), ({}, "?_format=html"),
                           ({}, "?_format=pdf")]:
        with rendition_client.application.test_request_context(f"/fhir-route{query}", headers=headers):
            with pytest.raises(NotAcceptable):
                fhir_format()
            assert fhir_format(renditions=True) in ("html", "pdf")


@pytest.mark.parametrize("accept", ["text/html", PDF])
def test_errors_stay_fhir_json_whatever_was_asked_for(rendition_client: FlaskClient, make_app, accept: str) -> None:  # noqa: ANN001
    assert_outcome(rendition_client.get("/api/referrals/no-such-referral/packet", headers={"Accept": accept}),
                   404, "not-found")
    fresh = make_app(worker=False, WRITEBACK="off").test_client()
    created = fresh.post("/api/referrals", json={"patient": "so-ms-patient", "question": "Which diagnosis?"})
    assert_outcome(fresh.get(f"/api/referrals/{created.get_json()['id']}/consult", headers={"Accept": accept}),
                   404, "not-found")


def test_rendition_reads_are_audited_as_such(rendition_client: FlaskClient, referrals: dict[str, str]) -> None:
    referral_id = referrals["so-breast-patient"]
    rendition_client.get(f"/api/referrals/{referral_id}/packet?_format=pdf")
    rendition_client.get(f"/api/referrals/{referral_id}/consult?_format=html")
    audit = rendition_client.get(f"/api/referrals/{referral_id}/audit").get_json()
    reads = [(e["action"], e["detail"]) for e in audit if e["action"].endswith(".read")]
    assert ("packet.read", "as pdf") in reads and ("consult.read", "as html") in reads
    assert ("packet.read", None) in reads  # the FHIR JSON reads (the fixture's) stay as they were
    assert "Thistle" not in json.dumps(audit)  # ids and statuses only


def test_the_stylesheet_is_served_and_nothing_else(rendition_client: FlaskClient) -> None:
    with rendition_client.get("/render/static/render.css") as css:  # closing it closes the file it streams
        assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
        assert b"@page" in css.data and b"counter(pages)" in css.data
    for path in ("/render/static/missing.css", "/render/static/../__init__.py", "/render/static/%2e%2e/html.py"):
        assert_outcome(rendition_client.get(path), 404)
