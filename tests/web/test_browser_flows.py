"""The clinician's and the consultant's pages in Chromium (Playwright), over real HTTP on 127.0.0.1.

One referral end to end: the chart's app button → SMART launch → the patient's page → a draft → two items unticked
and the question written → sent; then the consultant's link → accept → confirm one diagnosis, revise another →
submitted; then the clinician's page shows the concordance and the sandbox EHR holds the DocumentReference.
Every page is checked for labels and keyboard order, and photographed into screenshots/.
"""

import re

import requests

from tests.web.a11y import check_page_accessibility
from tests.web.conftest import PATIENT, launch_url, screenshot

UNTICKED = ("Condition/so-prostate-cond-kidney-stone", "MedicationStatement/so-prostate-oxycodone-acetaminophen-statement")
QUESTION = "Is active surveillance reasonable instead of radical prostatectomy for Gleason 3+4 disease?"


def test_clinician_and_consultant_flow_in_a_browser(stack, page_factory):  # noqa: ANN001
    clinician = page_factory()
    # The EHR's app button: the SMART EHR launch lands on the patient's page.
    clinician.goto(launch_url(stack))
    assert clinician.url == f"{stack.url}/patient"
    assert clinician.get_by_label("patient banner").get_by_text("Harold Penbrook Ashdown").is_visible()
    check_page_accessibility(clinician)
    screenshot(clinician, "clinician-1-patient")

    clinician.get_by_role("link", name="Start a second-opinion referral").click()
    clinician.wait_for_url(re.compile(r"/referrals/new$"))
    check_page_accessibility(clinician)
    clinician.get_by_label("Clinical question for the consultant").fill("Second opinion, please.")
    clinician.get_by_label("Ask for the opinion of").select_option("demo-urology")
    screenshot(clinician, "clinician-2-new-referral")
    clinician.get_by_role("button", name="Build the draft packet").click()
    clinician.wait_for_url(re.compile(r"/referrals/[0-9a-f-]{36}$"))

    # The draft: sections with checkboxes, the readiness report, the questions.
    assert clinician.get_by_role("heading", name="Readiness for a second opinion").is_visible()
    for heading in ("Problems", "Procedures", "Results", "Reports", "Medications", "Allergies", "Plan of treatment"):
        assert clinician.get_by_role("heading", name=heading, exact=True).is_visible(), heading
    assert clinician.get_by_text("PSA").first.is_visible()  # results with their values
    check_page_accessibility(clinician)
    screenshot(clinician, "clinician-3-draft")
    draft_url = clinician.url
    for key in UNTICKED:
        box = clinician.locator(f'input[name="include"][value="{key}"]')
        assert box.is_checked()
        box.uncheck()
    clinician.get_by_label("Clinical question for the consultant").fill(QUESTION)
    clinician.get_by_role("button", name="Send to the consultant").click()
    clinician.wait_for_selector("#referral-status")
    assert clinician.url != draft_url  # the draft was rebuilt with the choices, then sent
    assert clinician.locator("#referral-status").inner_text() == "requested"
    check_page_accessibility(clinician)
    screenshot(clinician, "clinician-4-sent")

    referral_id = clinician.url.rsplit("/", 1)[1]
    sent = requests.get(f"{stack.url}/api/referrals/{referral_id}", timeout=30).json()
    assert sent["status"] == "requested" and sent["question"] == QUESTION
    assert {e["reference"] for e in sent["excluded"]} == set(UNTICKED)
    packet = requests.get(f"{stack.url}/api/referrals/{referral_id}/packet", timeout=30).json()
    in_packet = {f"{e['resource']['resourceType']}/{e['resource'].get('id')}" for e in packet["entry"]}
    assert not in_packet & set(UNTICKED) and "Condition/so-prostate-cond-prostate-cancer" in in_packet

    # The consultant opens the link in another browser.
    link = clinician.locator("#consultant-link").get_attribute("href")
    consultant = page_factory()
    consultant.goto(link)
    assert consultant.get_by_text(QUESTION).first.is_visible()
    check_page_accessibility(consultant)
    screenshot(consultant, "consultant-1-request")
    consultant.get_by_role("button", name="Accept this referral").click()
    consultant.wait_for_selector("#referral-status")
    assert consultant.locator("#referral-status").inner_text() == "accepted"

    verdicts = consultant.locator("fieldset.verdict")
    cancer = verdicts.filter(has=consultant.locator("legend", has_text="adenocarcinoma"))
    lipids = verdicts.filter(has=consultant.locator("legend", has_text="Hyperlipidemia"))
    cancer.get_by_label("Confirm").check()
    lipids.get_by_label("Revise", exact=True).check()
    lipids.locator("input[type=text]").fill("Mixed hyperlipidemia")
    consultant.get_by_label("Recommended treatment").fill("Active surveillance with MRI and PSA every 6 months.")
    consultant.get_by_label("Alternatives (one per line)").fill("Focal therapy\nExternal beam radiotherapy")
    consultant.get_by_label(QUESTION).fill("Yes: favourable intermediate risk with 15% pattern 4.")
    consultant.get_by_label("Assessment (free text)").fill("Low-volume Grade Group 2 disease.")
    check_page_accessibility(consultant)
    screenshot(consultant, "consultant-2-form")
    consultant.get_by_role("button", name="Submit the consult").click()
    consultant.wait_for_selector("p.notice")
    assert "Your consult was received" in consultant.locator("p.notice").inner_text()
    screenshot(consultant, "consultant-3-received")

    # Back in the clinician's app: the concordance, plainly, beside what was sent.
    clinician.reload()
    assert clinician.locator("#referral-status").inner_text() == "completed"
    rows = clinician.locator(".concordance tbody tr")
    cancer_row = rows.filter(has_text="adenocarcinoma")
    assert cancer_row.locator(".verdict").inner_text() == "Confirmed"
    assert rows.filter(has_text="Hyperlipidemia").locator(".verdict").inner_text() == \
        "Revised to Mixed hyperlipidemia"
    assert rows.filter(has_text="Essential hypertension").locator(".verdict").inner_text() == "Not addressed"
    timeline = clinician.locator(".timeline").inner_text()
    assert all(s in timeline for s in ("requested", "accepted", "in-progress", "completed"))
    check_page_accessibility(clinician)
    screenshot(clinician, "clinician-5-concordance")

    # The EHR has the consult's DocumentReference, linked to the referral's ServiceRequest.
    body = requests.get(f"{stack.url}/api/referrals/{referral_id}", timeout=30).json()
    assert body["concordance"]["confirmed"][0]["condition"] == "Condition/so-prostate-cond-prostate-cancer"
    assert body["concordance"]["revised"][0]["to"]["display"] == "Mixed hyperlipidemia"
    location = body["writeback"]["document_reference"]
    docref = stack.fhir_get(location.split("/_history")[0])
    assert docref.status_code == 200, docref.text[:300]
    docref = docref.json()
    assert docref["resourceType"] == "DocumentReference" and docref["subject"]["reference"] == f"Patient/{PATIENT}"
    assert docref["type"]["coding"][0]["code"] == "11488-4"
    assert docref["context"]["related"][0]["reference"] == body["service_request"]
