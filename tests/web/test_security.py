"""The pages' security over real HTTP: consultant links (scope, tampering, expiry), CSRF, CSP and cookies."""

import re
import time

import requests

from tests.web.conftest import PATIENT, csrf_token, launch_url, sent_referral_link

HTML = {"Accept": "text/html"}


def test_a_tampered_or_expired_consultant_link_is_a_403_page(stack, serve, smart_ehr):  # noqa: ANN001
    with requests.Session() as clinician:
        _, link = sent_referral_link(stack, clinician)
    ok = requests.get(link, headers=HTML, timeout=30)
    assert ok.status_code == 200 and "Second-opinion request" in ok.text
    token = link.rsplit("/", 1)[1]
    tampered_token = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for bad in (f"{stack.url}/consult/{tampered_token}", f"{stack.url}/consult/{tampered_token}/packet.json",
                f"{stack.url}/consult/not-a-token"):
        resp = requests.get(bad, headers=HTML, timeout=30)
        assert resp.status_code == 403 and resp.headers["Content-Type"].startswith("text/html"), resp.text[:200]
        assert "not valid" in resp.text and "Patient" not in resp.text

    # The same link on a service whose links last one second: after two seconds it has expired.
    app, url = serve(FHIR_BASE_URL=smart_ehr.base_url, CONSULTANT_LINK_MAX_AGE_S=1,
                     SECRET_KEY=stack.app.config["SECRET_KEY"], DATABASE_URL=stack.app.config["DATABASE_URL"])
    assert requests.get(f"{url}/consult/{token}", headers=HTML, timeout=30).status_code == 200
    time.sleep(2.2)
    expired = requests.get(f"{url}/consult/{token}", headers=HTML, timeout=30)
    assert expired.status_code == 403 and "expired" in expired.text


def test_a_consultant_link_grants_nothing_but_its_referral(stack, serve, smart_ehr):  # noqa: ANN001
    with requests.Session() as clinician:
        referral_page, link = sent_referral_link(stack, clinician)
    referral_id = referral_page.rsplit("/", 1)[1]
    # A service that needs a launched session for its API: the consultant's browser has none.
    _, url = serve(FHIR_BASE_URL=smart_ehr.base_url, API_AUTH="session",
                   SECRET_KEY=stack.app.config["SECRET_KEY"], DATABASE_URL=stack.app.config["DATABASE_URL"])
    token = link.rsplit("/", 1)[1]
    with requests.Session() as consultant:
        consultant.headers.update(HTML)
        assert consultant.get(f"{url}/consult/{token}", timeout=30).status_code == 200
        json_packet = consultant.get(f"{url}/consult/{token}/packet.json", timeout=30)
        assert json_packet.status_code == 200 and json_packet.json()["resourceType"] == "Bundle"
        xml_packet = consultant.get(f"{url}/consult/{token}/packet.xml", timeout=30)
        assert xml_packet.status_code == 200 and xml_packet.text.lstrip().startswith("<")
        assert "sid" not in _session_keys(consultant)  # no launch: only a CSRF secret
        assert consultant.get(f"{url}/api/referrals/{referral_id}", timeout=30).status_code == 401
        assert consultant.get(f"{url}/referrals/{referral_id}", timeout=30).status_code == 401
        assert consultant.get(f"{url}/patient", timeout=30).status_code == 401
        assert consultant.get(f"{url}/patient/{PATIENT}/referrals/new", timeout=30).status_code == 401


def test_decline_needs_a_reason_and_moves_the_referral(stack):  # noqa: ANN001
    with requests.Session() as clinician:
        referral_page, link = sent_referral_link(stack, clinician)
    with requests.Session() as consultant:
        consultant.headers.update(HTML)
        page = consultant.get(link, timeout=30)
        token = csrf_token(page.text)
        no_reason = consultant.post(f"{link}/decline", data={"csrf_token": token, "reason": " "}, timeout=30)
        assert no_reason.status_code == 400 and "Say why you decline" in no_reason.text
        declined = consultant.post(f"{link}/decline", data={"csrf_token": token, "reason": "Outside my field"},
                                   timeout=30)
        assert declined.status_code == 200 and 'id="referral-status">rejected<' in declined.text
        late = consultant.post(f"{link}/consult", data={"csrf_token": token, "assessment": "x"}, timeout=30)
        assert late.status_code == 409
    body = requests.get(f"{stack.url}/api/referrals/{referral_page.rsplit('/', 1)[1]}", timeout=30).json()
    assert body["status"] == "rejected" and body["status_reason"] == "Outside my field"


def test_forms_without_a_csrf_token_are_refused_with_a_400_page(stack):  # noqa: ANN001
    with requests.Session() as clinician:
        referral_page, link = sent_referral_link(stack, clinician)
        clinician.headers.update(HTML)
        start = clinician.post(f"{stack.url}/patient/{PATIENT}/referrals", timeout=30,
                               data={"question": "q", "consultant": "demo-urology"})
        assert start.status_code == 400 and start.headers["Content-Type"].startswith("text/html")
        assert "security token" in start.text
        forged = clinician.post(f"{stack.url}/patient/{PATIENT}/referrals", timeout=30,
                                data={"csrf_token": "forged", "question": "q", "consultant": "demo-urology"})
        assert forged.status_code == 400
    with requests.Session() as consultant:
        consultant.headers.update(HTML)
        consultant.get(link, timeout=30)
        for action in ("accept", "decline", "consult"):
            resp = consultant.post(f"{link}/{action}", data={"reason": "r"}, timeout=30)
            assert resp.status_code == 400 and "security token" in resp.text, action
    body = requests.get(f"{stack.url}/api/referrals/{referral_page.rsplit('/', 1)[1]}", timeout=30).json()
    assert body["status"] == "requested"  # nothing above changed it
    # The JSON API stays exempt: programs post without a token.
    api = requests.post(f"{stack.url}/api/referrals/{body['id']}/accept", json={}, timeout=30)
    assert api.status_code == 200 and api.json()["status"] == "accepted"


def test_pages_carry_a_strict_csp_and_no_inline_script_or_style(stack):  # noqa: ANN001
    with requests.Session() as clinician:
        referral_page, link = sent_referral_link(stack, clinician)
        pages = [clinician.get(u, timeout=30) for u in (f"{stack.url}/patient", referral_page,
                                                         f"{stack.url}/patient/{PATIENT}/referrals/new")]
        cookie = next(c for c in clinician.cookies if c.name == "second_opinion_session")
        assert cookie.has_nonstandard_attr("HttpOnly") and not cookie.secure  # plain http here
    pages.append(requests.get(link, headers=HTML, timeout=30))
    for resp in pages:
        assert resp.status_code == 200
        csp = resp.headers["Content-Security-Policy"]
        for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'",
                          "base-uri 'none'", "form-action 'self'", "frame-ancestors 'self'"):
            assert directive in csp, directive
        assert "unsafe-inline" not in csp
        assert not re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=", resp.text, re.I)
        assert not re.search(r"(src|href)=\"https?://(?!127\.0\.0\.1)", resp.text)  # no CDN, no fonts
        assert resp.headers["Referrer-Policy"] == "same-origin" and resp.headers["Cache-Control"] == "no-store"
    css = requests.get(f"{stack.url}/static/web/app.css", timeout=30)
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")


def test_cookie_policy_follows_the_settings_and_https(make_app, smart_ehr):  # noqa: ANN001
    framed = make_app(FHIR_BASE_URL=smart_ehr.base_url, SESSION_COOKIE_SAMESITE="None",
                      FRAME_ANCESTORS="https://ehr.example")
    client = framed.test_client()
    page = client.get("/patient", headers=HTML)
    assert page.status_code == 401 and "frame-ancestors https://ehr.example" in page.headers["Content-Security-Policy"]
    cookie = _session_cookie(client.get("/patient/x/referrals/new", headers=HTML))  # no cookie without a session
    assert cookie is None
    with framed.test_request_context("/", base_url="http://localhost"):
        from flask import session

        session["csrf_token"] = "x"
        response = framed.make_response("ok")
        framed.session_interface.save_session(framed, session, response)
        header = response.headers["Set-Cookie"]
    assert "SameSite=None" in header and "Secure" in header and "HttpOnly" in header
    lax = make_app(FHIR_BASE_URL=smart_ehr.base_url)
    for base, secure in (("http://localhost", False), ("https://localhost", True)):
        with lax.test_request_context("/", base_url=base):
            from flask import session

            session["csrf_token"] = "x"
            response = lax.make_response("ok")
            lax.session_interface.save_session(lax, session, response)
            header = response.headers["Set-Cookie"]
        assert "SameSite=Lax" in header and "HttpOnly" in header and ("Secure" in header) == secure, header


def _session_keys(session: requests.Session) -> set[str]:
    import base64
    import json
    import zlib

    value = session.cookies.get("second_opinion_session") or ""
    if not value:
        return set()
    compressed = value.startswith(".")
    payload = value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return set(json.loads(zlib.decompress(raw) if compressed else raw))


def _session_cookie(response) -> str | None:  # noqa: ANN001
    return next((v for k, v in response.headers.items() if k == "Set-Cookie" and "second_opinion_session" in v),
                None)


def test_the_launch_still_lands_with_only_a_session_id(stack):  # noqa: ANN001
    with requests.Session() as browser:
        page = browser.get(launch_url(stack), timeout=60)
        assert page.status_code == 200 and page.url == f"{stack.url}/patient"
        assert _session_keys(browser) == {"sid"}


def test_the_consultant_can_download_a_pdf_and_upload_a_ccda_consult(stack):  # noqa: ANN001
    from datetime import UTC, datetime

    from fhir.resources.R4B.bundle import Bundle

    from fixtures.consultant import ccda_consult_for_packet

    with requests.Session() as clinician:
        referral_page, link = sent_referral_link(stack, clinician)
    referral_id = referral_page.rsplit("/", 1)[1]
    with requests.Session() as consultant:
        consultant.headers.update(HTML)
        page = consultant.get(link, timeout=30)
        pdf = consultant.get(f"{link}/packet.pdf", timeout=120)
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
        assert pdf.headers["Content-Type"] == "application/pdf"
        packet = Bundle.model_validate(consultant.get(f"{link}/packet.json", timeout=30).json())
        ccda = ccda_consult_for_packet(packet, now=datetime.now(UTC))
        wrong = consultant.post(f"{link}/upload", data={"csrf_token": csrf_token(page.text)}, timeout=30,
                                files={"consult_file": ("consult.txt", b"hello", "text/plain")})
        assert wrong.status_code == 415 and "Upload a C-CDA" in wrong.text
        uploaded = consultant.post(f"{link}/upload", data={"csrf_token": csrf_token(page.text)}, timeout=60,
                                   files={"consult_file": ("consult.xml", ccda, "application/octet-stream")})
        assert uploaded.status_code == 200 and "Your consult was received" in uploaded.text
    body = requests.get(f"{stack.url}/api/referrals/{referral_id}", timeout=30).json()
    assert body["status"] == "completed" and body["consult"]["content_type"] == "application/xml"
    assert body["concordance"]["confirmed"]


def test_a_link_for_another_consultant_than_the_referral_asks_is_a_403_page(stack):  # noqa: ANN001
    """A link names its consultant; one minted (with the app's key) for a colleague opens nothing."""
    from service.web.links import sign_link_token

    with requests.Session() as clinician:
        referral_page, link = sent_referral_link(stack, clinician)
    referral_id = referral_page.rsplit("/", 1)[1]
    assert requests.get(link, headers=HTML, timeout=30).status_code == 200  # the referral's own consultant
    with stack.app.test_request_context():
        other = sign_link_token(referral_id, "demo-neurology")
    for path in ("", "/packet.json"):
        resp = requests.get(f"{stack.url}/consult/{other}{path}", headers=HTML, timeout=30)
        assert resp.status_code == 403 and "another consultant" in resp.text, resp.text[:200]

