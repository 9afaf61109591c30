"""EHR and standalone launches against the sandbox's SMART server, over real HTTP, and the ways they fail."""

import base64
import hashlib
import json

import pytest

from tests.auth.conftest import (PATIENT_A, PATIENT_B, ehr_launch, expire_tokens, query, smart_registry,
                                 standalone_launch, step)
from tests.conftest import assert_outcome

QUESTION = "Is this multiple sclerosis or B12 deficiency?"


def outcome(resp, status: int, code: str) -> dict:  # noqa: ANN001
    """An OperationOutcome over HTTP (requests.Response)."""
    assert resp.status_code == status, resp.text[:500]
    assert resp.headers["Content-Type"].startswith("application/fhir+json")
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == code, body
    return body


def test_ehr_launch_lands_on_the_patients_page_with_a_session_bound_to_that_patient(smart_ehr, serve, browser):
    app, url = serve(FHIR_BASE_URL=smart_ehr.base_url)
    page = ehr_launch(browser, smart_ehr, url)
    assert page.status_code == 200 and page.url == f"{url}/patient", page.text[:300]
    assert "Renata Joy Halvorsen" in page.text and f"Patient/{PATIENT_A}" in page.text
    authorize = query(page.history[1].headers["Location"])  # what /launch sent the browser to
    assert authorize["response_type"] == "code" and authorize["client_id"] == "second-opinion"
    assert authorize["aud"] == smart_ehr.base_url and authorize["launch"] and authorize["state"]
    assert authorize["code_challenge_method"] == "S256" and len(authorize["code_challenge"]) == 43
    assert authorize["redirect_uri"] == f"{url}/callback"
    scopes = authorize["scope"].split()
    assert {"launch", "openid", "fhirUser", "offline_access", "patient/Condition.rs", "patient/Observation.rs",
            "user/DocumentReference.c", "user/Task.cu"} <= set(scopes)
    assert not [s for s in scopes if s.startswith("system/") or "*" in s]  # only what we use

    created = browser.post(f"{url}/api/referrals", json={"patient": PATIENT_A, "question": QUESTION}, timeout=120)
    assert created.status_code == 201, created.text[:500]
    assert created.json()["ehr"] == smart_ehr.base_url
    sent = browser.post(f"{url}/api/referrals/{created.json()['id']}/send", timeout=60)
    assert sent.status_code == 200 and sent.json()["status"] == "requested", sent.text[:300]
    fhir = [e for e in smart_ehr.requests if e["path"].startswith("/fhir/")
            and not e["path"].endswith(("/metadata", "/smart-configuration"))]
    assert fhir and all(e["headers"].get("authorization", "").startswith("Bearer ") for e in fhir)
    assert all(e["status"] < 400 for e in fhir), [(e["path"], e["status"]) for e in fhir if e["status"] >= 400]

    other = browser.post(f"{url}/api/referrals", json={"patient": PATIENT_B, "question": QUESTION}, timeout=60)
    outcome(other, 403, "forbidden")


def test_the_browser_holds_only_an_opaque_session_id(smart_ehr, serve, browser):
    _, url = serve(FHIR_BASE_URL=smart_ehr.base_url)
    page = ehr_launch(browser, smart_ehr, url)
    assert page.status_code == 200
    cookie = browser.cookies.get("second_opinion_session")
    payload = cookie.split(".")[0]
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert set(data) == {"sid"}
    seen = " ".join([cookie, page.text, page.url, *(r.headers.get("Location", "") for r in page.history[3:])])
    reg = smart_registry(smart_ehr)
    assert reg.access_tokens and reg.refresh_tokens
    for secret in [*reg.access_tokens, *reg.refresh_tokens, *reg.codes]:
        assert secret not in seen


def test_standalone_launch_picks_the_patient_and_binds_the_session(make_smart_ehr, serve, browser):
    ehr = make_smart_ehr(standalone_patient=PATIENT_B)
    _, url = serve(FHIR_BASE_URL=ehr.base_url)
    page = standalone_launch(browser, ehr, url)
    assert page.status_code == 200 and page.url == f"{url}/patient", page.text[:300]
    assert f"Patient/{PATIENT_B}" in page.text
    scopes = query(page.history[0].headers["Location"])["scope"].split()
    assert "launch/patient" in scopes and "launch" not in scopes
    assert "launch" not in query(page.history[0].headers["Location"])
    created = browser.post(f"{url}/api/referrals", json={"patient": PATIENT_B, "question": "CABG or PCI?"},
                           timeout=120)
    assert created.status_code == 201, created.text[:300]
    other = browser.post(f"{url}/api/referrals", json={"patient": PATIENT_A, "question": "q"}, timeout=30)
    outcome(other, 403, "forbidden")


def test_v1_scopes_when_the_server_does_not_advertise_permission_v2(make_smart_ehr, serve, browser):
    ehr = make_smart_ehr(permission_versions=("v1",))
    _, url = serve(FHIR_BASE_URL=ehr.base_url)
    page = ehr_launch(browser, ehr, url)
    assert page.status_code == 200, page.text[:300]
    scopes = query(page.history[1].headers["Location"])["scope"].split()
    assert {"patient/Condition.read", "user/DocumentReference.write", "user/Task.write"} <= set(scopes)
    assert not [s for s in scopes if s.endswith((".rs", ".c", ".cu"))]


def test_discovery_falls_back_to_the_capability_statement(make_smart_ehr, serve, browser):
    ehr = make_smart_ehr(well_known=False)
    _, url = serve(FHIR_BASE_URL=ehr.base_url)
    page = ehr_launch(browser, ehr, url)
    assert page.status_code == 200 and f"Patient/{PATIENT_A}" in page.text, page.text[:300]
    assert any(e["path"] == "/fhir/metadata" for e in ehr.requests)


def _to_callback(browser, ehr, url, patient=PATIENT_A, **authorize_changes):  # noqa: ANN001, ANN202
    """Walk a launch by hand up to (not including) the callback; return the callback URL."""
    launch = browser.post(f"{ehr.root_url}/_sandbox/launch", json={"patient": patient}, timeout=10).json()
    to_authorize = step(browser, f"{url}/launch", iss=launch["iss"], launch=launch["launch"])
    assert to_authorize.status_code == 302, to_authorize.text[:300]
    authorize_url = to_authorize.headers["Location"]
    if authorize_changes:
        params = {**query(authorize_url), **authorize_changes}
        authorize_url = authorize_url.split("?")[0]
        to_callback = step(browser, authorize_url, **params)
    else:
        to_callback = step(browser, authorize_url)
    assert to_callback.status_code == 302
    return to_callback.headers["Location"]


def test_tampered_state_is_refused_and_the_genuine_callback_still_works(smart_ehr, serve, browser):
    _, url = serve(FHIR_BASE_URL=smart_ehr.base_url)
    callback = _to_callback(browser, smart_ehr, url)
    params = query(callback)
    tampered = browser.get(f"{url}/callback", params={**params, "state": params["state"] + "x"}, timeout=30)
    assert tampered.status_code == 400 and "state does not match" in tampered.text
    assert tampered.headers["Content-Type"].startswith("text/html")
    genuine = browser.get(callback, timeout=30)
    assert genuine.status_code == 200 and genuine.url == f"{url}/patient"


def test_a_callback_in_another_browser_is_refused(smart_ehr, serve, browser):
    import requests

    _, url = serve(FHIR_BASE_URL=smart_ehr.base_url)
    callback = _to_callback(browser, smart_ehr, url)
    with requests.Session() as other:
        resp = other.get(callback, timeout=30)
    assert resp.status_code == 400 and "another browser session" in resp.text


def test_replayed_callback_code_is_refused(smart_ehr, serve, browser):
    _, url = serve(FHIR_BASE_URL=smart_ehr.base_url)
    callback = _to_callback(browser, smart_ehr, url)
    assert browser.get(callback, timeout=30).status_code == 200
    replay = browser.get(callback, timeout=30)
    assert replay.status_code == 400 and "already used" in replay.text


def test_wrong_code_verifier_is_a_clear_error(smart_ehr, serve, browser):
    """An attacker swaps the PKCE challenge: the code is bound to it, so our verifier no longer matches."""
    _, url = serve(FHIR_BASE_URL=smart_ehr.base_url)
    other_challenge = base64.urlsafe_b64encode(hashlib.sha256(b"x" * 64).digest()).rstrip(b"=").decode()
    callback = _to_callback(browser, smart_ehr, url, code_challenge=other_challenge)
    resp = browser.get(callback, timeout=30)
    assert resp.status_code == 400 and "code_verifier does not match" in resp.text, resp.text[:300]
    assert "launch the app again" in resp.text


@pytest.mark.parametrize("tenant_scopes, sim_error", [("launch openid patient/Condition.bogus", None),
                                                       (None, "auth_invalid_scope")],
                         ids=["malformed-scope", "server-refuses-scope"])
def test_invalid_scope_is_a_clear_error(smart_ehr, serve, browser, tenant_scopes, sim_error):
    tenants = [{"iss": smart_ehr.base_url, "scopes": tenant_scopes}] if tenant_scopes else None
    _, url = serve(FHIR_BASE_URL=smart_ehr.base_url, TENANTS=json.dumps(tenants) if tenants else None)
    resp = ehr_launch(browser, smart_ehr, url, **({"sim_error": sim_error} if sim_error else {}))
    assert resp.status_code == 400 and "invalid_scope" in resp.text and "permissions (scopes)" in resp.text
    assert resp.url.startswith(f"{url}/callback")


def test_expired_access_token_is_refreshed_on_401_and_the_refresh_token_rotates(smart_ehr, serve, browser):
    _, url = serve(FHIR_BASE_URL=smart_ehr.base_url)
    assert ehr_launch(browser, smart_ehr, url).status_code == 200
    reg = smart_registry(smart_ehr)
    for round_ in range(2):  # the second refresh must use the rotated refresh token
        first_refresh = {t for t, g in reg.refresh_tokens.items() if not g.retired}
        expire_tokens(smart_ehr, access=True, refresh=False)
        smart_ehr.state.request_log.clear()
        page = browser.get(f"{url}/patient", timeout=30)
        assert page.status_code == 200 and f"Patient/{PATIENT_A}" in page.text, (round_, page.text[:300])
        statuses = [e["status"] for e in smart_ehr.requests if e["path"] == f"/fhir/Patient/{PATIENT_A}"]
        assert statuses == [401, 200]
        assert all(reg.refresh_tokens[t].retired for t in first_refresh)


def test_a_token_about_to_expire_is_refreshed_before_use(make_smart_ehr, serve, browser):
    ehr = make_smart_ehr(access_token_lifetime_s=30)
    _, url = serve(FHIR_BASE_URL=ehr.base_url, TOKEN_REFRESH_MARGIN_S=60)
    assert ehr_launch(browser, ehr, url).status_code == 200
    before = len(smart_registry(ehr).access_tokens)
    assert browser.get(f"{url}/patient", timeout=30).status_code == 200
    assert len(smart_registry(ehr).access_tokens) > before
    assert all(e["status"] != 401 for e in ehr.requests)


def test_a_first_token_that_is_already_expired_is_refreshed(smart_ehr, serve, browser):
    _, url = serve(FHIR_BASE_URL=smart_ehr.base_url)
    page = ehr_launch(browser, smart_ehr, url, sim_error="request_expired_token")
    assert page.status_code == 200 and f"Patient/{PATIENT_A}" in page.text


@pytest.mark.parametrize("how", ["expired-everything", "server-refuses-refresh"])
def test_expired_refresh_token_asks_to_launch_again(smart_ehr, serve, browser, how):
    _, url = serve(FHIR_BASE_URL=smart_ehr.base_url)
    if how == "expired-everything":
        assert ehr_launch(browser, smart_ehr, url).status_code == 200
        expire_tokens(smart_ehr, access=True, refresh=True)
    else:
        assert ehr_launch(browser, smart_ehr, url, sim_error="token_expired_refresh_token").status_code == 200
        expire_tokens(smart_ehr, access=True, refresh=False)
    api = browser.post(f"{url}/api/referrals", json={"patient": PATIENT_A, "question": QUESTION}, timeout=60)
    body = outcome(api, 401, "login")
    assert "launch the app again" in body["issue"][0]["diagnostics"]
    page = browser.get(f"{url}/patient", timeout=30)
    assert page.status_code == 401 and "open the app from the patient" in page.text
    assert page.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path, params, status, words", [
    ("/launch", {}, 400, "no iss"),
    ("/launch", {"iss": "https://ehr.example/fhir", "launch": "x"}, 400, "not set up for the EHR"),
    ("/launch", {"iss": "{iss}"}, 400, "no launch parameter"),
    ("/callback", {}, 400, "no state or code"),
    ("/callback", {"state": "abc", "code": "def"}, 400, "state does not match"),
    ("/callback", {"error": "access_denied", "state": "abc"}, 403, "access was not granted"),
    ("/patient", {}, 401, "no launched session"),
], ids=["no-iss", "unknown-iss", "no-launch", "no-state", "unknown-state", "denied", "no-session"])
def test_browser_route_errors_are_readable_pages(smart_ehr, serve, browser, path, params, status, words):
    _, url = serve(FHIR_BASE_URL=smart_ehr.base_url)
    params = {k: v.replace("{iss}", smart_ehr.base_url) for k, v in params.items()}
    resp = browser.get(f"{url}{path}", params=params, allow_redirects=False, timeout=30)
    assert resp.status_code == status and words in resp.text, resp.text[:300]
    assert resp.headers["Content-Type"].startswith("text/html")


def test_api_needs_a_launch_when_api_auth_is_session(smart_ehr, make_app):
    client = make_app(FHIR_BASE_URL=smart_ehr.base_url, API_AUTH="session").test_client()
    body = assert_outcome(client.post("/api/referrals", json={"patient": PATIENT_A, "question": "q"}), 401, "login")
    assert "launched session" in body["issue"][0]["diagnostics"]
    assert client.get("/health").status_code == 200


def test_a_smart_tenant_without_backend_keys_refuses_calls_outside_a_launch(smart_ehr, make_app):
    tenants = json.dumps([{"iss": smart_ehr.base_url, "auth": "smart"}])
    client = make_app(FHIR_BASE_URL=smart_ehr.base_url, TENANTS=tenants).test_client()
    body = assert_outcome(client.post("/api/referrals", json={"patient": PATIENT_A, "question": "q"}), 401, "login")
    assert "needs a SMART launch" in body["issue"][0]["diagnostics"]
    assert not [e for e in smart_ehr.requests if e["status"] == 401]
