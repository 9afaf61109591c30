"""Server-to-server API callers (API_AUTH=token): tokens from POST /auth/token, used within their granted scopes.

Over real HTTP: the service on a 127.0.0.1 port, the session sandbox EHR behind it, API clients signing their
assertions with keys made at run time (our own backend-services signer plays the caller).
"""

import json
import logging
import time
import uuid
from pathlib import Path

import jwt
import pytest
import requests

from service.auth.api_access import REQUIRED_SCOPES
from service.auth.backend import client_assertion
from service.auth.keys import load_signing_key, public_jwks
from tests.auth.conftest import write_key
from tests.conftest import assert_outcome, fixture_questions

PATIENT = "so-prostate-patient"
FULL = "full-client"
READER = "reader-client"
ELSEWHERE = "other-ehr-client"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def keys(tmp_path: Path) -> dict:
    return {name: load_signing_key(str(write_key(tmp_path, alg, name)))
            for name, alg in ((FULL, "RS384"), (READER, "ES384"), (ELSEWHERE, "RS384"), ("stranger", "RS384"))}


@pytest.fixture
def api(serve, ehr, keys):  # noqa: ANN001, ANN201
    """The service with API_AUTH=token and three registered callers."""
    clients = [
        {"client_id": FULL, "jwks": public_jwks([keys[FULL]]), "scopes": ["system/*.cruds"]},
        {"client_id": READER, "jwks": public_jwks([keys[READER]]),
         "scopes": ["system/ServiceRequest.rs", "system/Bundle.r"]},
        {"client_id": ELSEWHERE, "jwks": public_jwks([keys[ELSEWHERE]]), "scopes": ["system/*.cruds"],
         "fhir_servers": ["http://127.0.0.1:1/fhir"]},
    ]
    app, url = serve(FHIR_BASE_URL=ehr.base_url, API_AUTH="token", API_CLIENTS=json.dumps(clients))
    return app, url


def get_token(url: str, client_id: str, key, scope: str = "system/*.cruds") -> requests.Response:  # noqa: ANN001
    assertion = client_assertion(client_id, f"{url}/auth/token", key)
    return requests.post(f"{url}/auth/token", data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion, "scope": scope}, timeout=30)


def bearer(url: str, client_id: str, key, scope: str = "system/*.cruds") -> dict:  # noqa: ANN001
    resp = get_token(url, client_id, key, scope)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Cache-Control"] == "no-store"
    body = resp.json()
    assert body["token_type"] == "bearer" and body["scope"] == scope and 0 < body["expires_in"] <= 300
    return {"Authorization": f"Bearer {body['access_token']}"}


def create(url: str, headers: dict) -> requests.Response:
    asked = fixture_questions()[PATIENT]
    return requests.post(f"{url}/api/referrals", json={"patient": PATIENT, "question": asked["question"]},
                         headers=headers, timeout=120)


def test_a_full_client_runs_the_referral_loop_and_is_recorded_as_the_actor(api, keys) -> None:
    app, url = api
    headers = bearer(url, FULL, keys[FULL])
    created = create(url, headers)
    assert created.status_code == 201, created.text
    rid = created.json()["id"]
    assert requests.post(f"{url}/api/referrals/{rid}/send", headers=headers, timeout=60).status_code == 200
    packet = requests.get(f"{url}/api/referrals/{rid}/packet", headers=headers, timeout=60)
    assert packet.status_code == 200 and packet.json()["type"] == "document"
    history = requests.get(f"{url}/api/referrals/{rid}/history", headers=headers, timeout=60).json()
    assert {h["actor"] for h in history} == {f"client/{FULL}"}
    audit = requests.get(f"{url}/api/referrals/{rid}/audit", headers=headers, timeout=60).json()
    assert any(e["action"] == "packet.read" and e["actor"] == f"client/{FULL}" for e in audit)


def test_without_a_valid_token_the_api_answers_401(api, keys) -> None:
    app, url = api
    for headers in ({}, {"Authorization": "Bearer not-a-token-we-issued"}, {"Authorization": "Basic eDp5"}):
        resp = requests.get(f"{url}/api/referrals/anything", headers=headers, timeout=30)
        outcome = assert_outcome(resp, 401)
        assert "POST /auth/token" in outcome["issue"][0]["diagnostics"]
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert requests.post(f"{url}/api/referrals", json={"patient": PATIENT, "question": "q"}, headers=headers,
                             timeout=30).status_code == 401


def test_an_expired_token_is_refused(serve, ehr, keys) -> None:
    clients = [{"client_id": FULL, "jwks": public_jwks([keys[FULL]]), "scopes": ["system/*.cruds"]}]
    app, url = serve(FHIR_BASE_URL=ehr.base_url, API_AUTH="token", API_CLIENTS=json.dumps(clients),
                     API_TOKEN_LIFETIME_S=1)
    headers = bearer(url, FULL, keys[FULL])
    assert requests.get(f"{url}/api/referrals/none", headers=headers, timeout=30).status_code == 404
    time.sleep(1.5)
    outcome = assert_outcome(requests.get(f"{url}/api/referrals/none", headers=headers, timeout=30), 401)
    assert "expired" in outcome["issue"][0]["diagnostics"]


def test_a_reader_acts_only_within_its_granted_scopes(api, keys) -> None:
    app, url = api
    rid = create(url, bearer(url, FULL, keys[FULL])).json()["id"]
    reader = bearer(url, READER, keys[READER], "system/ServiceRequest.rs system/Bundle.r")
    assert requests.get(f"{url}/api/referrals/{rid}", headers=reader, timeout=30).status_code == 200
    assert requests.get(f"{url}/api/referrals/{rid}/packet", headers=reader, timeout=30).status_code == 200
    refused = {
        "create": create(url, reader),
        "send": requests.post(f"{url}/api/referrals/{rid}/send", headers=reader, timeout=30),
        "cancel": requests.post(f"{url}/api/referrals/{rid}/cancel", json={"reason": "x"}, headers=reader,
                                timeout=30),
        "audit": requests.get(f"{url}/api/referrals/{rid}/audit", headers=reader, timeout=30),
    }
    for action, resp in refused.items():
        assert "scopes do not include" in assert_outcome(resp, 403)["issue"][0]["diagnostics"], action
    # a narrower token than registered is fine; a wider one is refused at the token endpoint
    narrow = bearer(url, READER, keys[READER], "system/Bundle.r")
    assert_outcome(requests.get(f"{url}/api/referrals/{rid}", headers=narrow, timeout=30), 403)
    wide = get_token(url, READER, keys[READER], "system/ServiceRequest.cruds")
    assert wide.status_code == 400 and wide.json()["error"] == "invalid_scope"
    assert requests.get(f"{url}/api/referrals/{rid}", headers=reader, timeout=30).json()["status"] == "draft"


def test_a_client_bound_to_another_ehr_touches_none_of_this_ones_referrals(api, keys) -> None:
    app, url = api
    rid = create(url, bearer(url, FULL, keys[FULL])).json()["id"]
    other = bearer(url, ELSEWHERE, keys[ELSEWHERE])
    assert_outcome(requests.get(f"{url}/api/referrals/{rid}", headers=other, timeout=30), 403)
    assert_outcome(create(url, other), 403)


def _assertion(key, url: str, **changes) -> str:  # noqa: ANN001
    now = int(time.time())
    claims = {"iss": FULL, "sub": FULL, "aud": f"{url}/auth/token", "exp": now + 240, "iat": now,
              "jti": uuid.uuid4().hex}
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid, "typ": "JWT"})


@pytest.mark.parametrize(("make", "message"), [
    (lambda keys, url: _assertion(keys[FULL], url, aud="http://127.0.0.1/elsewhere/token"), "aud"),
    (lambda keys, url: _assertion(keys[FULL], url, sub="someone-else"), "sub must equal iss"),
    (lambda keys, url: _assertion(keys[FULL], url, exp=int(time.time()) + 3600), "at most 300 seconds"),
    (lambda keys, url: _assertion(keys[FULL], url, exp=int(time.time()) - 120), "expired"),
    (lambda keys, url: _assertion(keys[FULL], url, jti=None), "jti"),
    (lambda keys, url: _assertion(keys[FULL], url, iss="unknown", sub="unknown"), "not a trusted API client"),
    (lambda keys, url: _assertion(keys["stranger"], url), "no key with this kid"),
    (lambda keys, url: "not.a.jwt", "not a JWT"),
], ids=["wrong-aud", "sub-not-iss", "exp-too-far", "expired", "no-jti", "unknown-client", "unknown-key", "garbage"])
def test_bad_client_assertions_are_invalid_client(api, keys, make, message) -> None:
    app, url = api
    resp = requests.post(f"{url}/auth/token", data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": make(keys, url), "scope": "system/*.cruds"}, timeout=30)
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client", resp.text
    assert message in resp.json()["error_description"]
    assert resp.headers["Cache-Control"] == "no-store"


def test_a_reused_jti_is_refused(api, keys) -> None:
    app, url = api
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": _assertion(keys[FULL], url), "scope": "system/*.cruds"}
    assert requests.post(f"{url}/auth/token", data=form, timeout=30).status_code == 200
    again = requests.post(f"{url}/auth/token", data=form, timeout=30)
    assert again.status_code == 401 and "jti replayed" in again.json()["error_description"]


@pytest.mark.parametrize(("form", "error"), [
    ({"grant_type": "password"}, "unsupported_grant_type"),
    ({"grant_type": "client_credentials"}, "invalid_client"),
    ({"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": "x.y.z",
      "scope": ""}, "invalid_client"),
])
def test_malformed_token_requests_get_oauth_errors(api, form, error) -> None:
    app, url = api
    resp = requests.post(f"{url}/auth/token", data=form, timeout=30)
    assert resp.status_code in (400, 401) and resp.json()["error"] == error
    as_json = requests.post(f"{url}/auth/token", json=form, timeout=30)
    assert as_json.status_code == 400 and as_json.json()["error"] == "invalid_request"


def test_every_api_route_names_the_scope_it_needs(api) -> None:
    """Deny by default: a route under /api without an entry in REQUIRED_SCOPES is refused to API callers."""
    app, url = api
    api_endpoints = {rule.endpoint for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/")}
    assert api_endpoints, "no /api routes found"
    assert api_endpoints <= set(REQUIRED_SCOPES), api_endpoints - set(REQUIRED_SCOPES)
    assert set(REQUIRED_SCOPES) <= {rule.endpoint for rule in app.url_map.iter_rules()}


def test_a_route_without_a_scope_entry_is_refused(serve, ehr, keys) -> None:
    from flask import Flask

    clients = [{"client_id": FULL, "jwks": public_jwks([keys[FULL]]), "scopes": ["system/*.cruds"]}]

    def extra_route(app: Flask) -> None:
        app.add_url_rule("/api/unlisted", "unlisted", lambda: {"secret": "data"})

    app, url = serve(FHIR_BASE_URL=ehr.base_url, API_AUTH="token", API_CLIENTS=json.dumps(clients),
                     before_start=extra_route)
    resp = requests.get(f"{url}/api/unlisted", headers=bearer(url, FULL, keys[FULL]), timeout=30)
    assert "not available to API clients" in assert_outcome(resp, 403)["issue"][0]["diagnostics"]


def test_tokens_and_assertions_never_reach_the_logs(api, keys, caplog) -> None:
    app, url = api
    caplog.set_level(logging.DEBUG)
    assertion = client_assertion(FULL, f"{url}/auth/token", keys[FULL])
    resp = requests.post(f"{url}/auth/token", data={
        "grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion, "scope": "system/*.cruds"}, timeout=30)
    token = resp.json()["access_token"]
    requests.get(f"{url}/api/referrals/none", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    requests.post(f"{url}/auth/token", data={"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
                                             "client_assertion": assertion, "scope": "system/*.cruds"}, timeout=30)
    logged = caplog.text
    assert "access token issued" in logged and "jti replayed" in logged  # the flows were logged ...
    assert token not in logged and assertion not in logged  # ... without their secrets
