"""The sandbox's SMART authorization server emulation, exercised over HTTP without the service."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fixtures.sandbox import SandboxServer, SmartOptions

PATIENT = "so-ms-patient"
OTHER = "so-cad-patient"
REDIRECT = "http://127.0.0.1:9/callback"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def smart() -> Iterator[SandboxServer]:
    with SandboxServer(auth="smart") as server:
        yield server


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorize(server: SandboxServer, scope: str, *, launch: str | None = None, verifier: str = "v" * 64,
              **overrides: str) -> dict[str, str]:
    """Ask the authorize endpoint; return the redirect's query (code/state or error)."""
    params = {"response_type": "code", "client_id": "any-app", "redirect_uri": REDIRECT, "scope": scope,
              "state": "s1", "aud": server.base_url, "code_challenge": s256(verifier),
              "code_challenge_method": "S256", **({"launch": launch} if launch else {}), **overrides}
    resp = requests.get(f"{server.root_url}/auth/authorize", params=params, allow_redirects=False, timeout=10)
    assert resp.status_code == 302, resp.text
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def exchange(server: SandboxServer, code: str, verifier: str = "v" * 64, **overrides: str) -> requests.Response:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": "any-app",
            "code_verifier": verifier, **overrides}
    return requests.post(f"{server.root_url}/auth/token", data=form, timeout=10)


def mint_launch(server: SandboxServer, **spec: object) -> str:
    resp = requests.post(f"{server.root_url}/_sandbox/launch", json={"patient": PATIENT, **spec}, timeout=10)
    assert resp.status_code == 201, resp.text
    assert resp.json()["iss"] == server.base_url
    return resp.json()["launch"]


def launched_token(server: SandboxServer, scope: str = "launch openid fhirUser offline_access patient/*.rs",
                   **spec: object) -> dict:
    code = authorize(server, scope, launch=mint_launch(server, **spec))["code"]
    resp = exchange(server, code)
    assert resp.status_code == 200, resp.text
    return resp.json()


def fhir_get(server: SandboxServer, path: str, token: str | None, **params: str) -> requests.Response:
    headers = {"Accept": "application/fhir+json", **({"Authorization": f"Bearer {token}"} if token else {})}
    return requests.get(f"{server.base_url}/{path}", params=params, headers=headers, timeout=10)


def test_discovery_documents(smart):
    config = requests.get(f"{smart.base_url}/.well-known/smart-configuration", timeout=10).json()
    assert config["token_endpoint"] == f"{smart.root_url}/auth/token"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert {"launch-ehr", "launch-standalone", "permission-v2", "client-confidential-asymmetric"} <= set(
        config["capabilities"])
    security = fhir_get(smart, "metadata", None).json()["rest"][0]["security"]
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris == {"authorize": config["authorization_endpoint"], "token": config["token_endpoint"]}


def test_auth_none_keeps_the_sandbox_open():
    with SandboxServer(load_fixtures=True) as open_server:
        assert fhir_get(open_server, f"Patient/{PATIENT}", None).status_code == 200
        assert requests.post(f"{open_server.root_url}/auth/token", timeout=10).status_code == 404
        assert "security" not in fhir_get(open_server, "metadata", None).json()["rest"][0]


def test_ehr_launch_token_response_carries_the_context(smart):
    body = launched_token(smart, encounter="so-ms-enc-pcp", user="so-ms-neurologist")
    assert body["token_type"] == "Bearer" and body["patient"] == PATIENT and body["encounter"] == "so-ms-enc-pcp"
    assert body["fhirContext"] == [{"reference": "Encounter/so-ms-enc-pcp"}] and body["need_patient_banner"] is True
    assert body["refresh_token"] and body["expires_in"] == 3600
    claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert claims["fhirUser"].endswith("/Practitioner/so-ms-neurologist") and claims["aud"] == "any-app"
    jwks = requests.get(f"{smart.root_url}/auth/jwks", timeout=10).json()
    key = jwt.PyJWK(jwks["keys"][0]).key
    assert jwt.decode(body["id_token"], key, algorithms=["RS256"], audience="any-app")["sub"] == "so-ms-neurologist"


def test_fhir_requests_need_a_token_within_scope_and_patient(smart):
    assert fhir_get(smart, f"Patient/{PATIENT}", None).status_code == 401
    assert fhir_get(smart, f"Patient/{PATIENT}", "made-up").status_code == 401
    token = launched_token(smart, scope="launch patient/Patient.rs patient/Condition.rs")["access_token"]
    assert fhir_get(smart, f"Patient/{PATIENT}", token).status_code == 200
    assert fhir_get(smart, "Condition", token, patient=PATIENT).status_code == 200
    assert fhir_get(smart, "Condition", token, patient=OTHER).status_code == 403  # another patient
    assert fhir_get(smart, "Condition", token).status_code == 403  # a search that names no patient
    assert fhir_get(smart, f"Patient/{OTHER}", token).status_code == 403
    denied = fhir_get(smart, "Procedure", token, patient=PATIENT)  # a type outside the scopes
    assert denied.status_code == 403 and denied.json()["issue"][0]["code"] == "forbidden"
    write = requests.post(f"{smart.base_url}/Condition", json={"resourceType": "Condition",
                                                               "subject": {"reference": f"Patient/{PATIENT}"}},
                          headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert write.status_code == 403  # read scopes do not allow create


def test_v1_and_user_scopes(smart):
    token = launched_token(smart, scope="launch user/Condition.read user/Task.write")["access_token"]
    assert fhir_get(smart, "Condition", token, patient=OTHER).status_code == 200  # user/ is not patient-bound
    task = {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": f"Patient/{OTHER}"}}
    created = requests.post(f"{smart.base_url}/Task", json=task, timeout=10,
                            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})
    assert created.status_code == 201, created.text


@pytest.mark.parametrize("overrides, error", [
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge": ""}, "invalid_request"),
    ({"aud": "https://elsewhere.example/fhir"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"scope": "launch patient/Condition.rsx"}, "invalid_scope"),
    ({"scope": "launch system/Condition.rs"}, "invalid_scope"),
    ({"launch": "unknown"}, "invalid_request"),
], ids=["pkce-plain", "pkce-missing", "wrong-aud", "implicit", "bad-scope", "system-scope-in-launch", "bad-launch"])
def test_authorize_errors_redirect_back_with_the_state(smart, overrides, error):
    overrides = {"scope": "launch openid", "launch": mint_launch(smart), **overrides}
    answer = authorize(smart, **overrides)
    assert answer["error"] == error and answer["state"] == "s1" and "code" not in answer


def test_invalid_client_and_redirect_uri_get_an_error_page_not_a_redirect(smart):
    launch = mint_launch(smart, sim_error="auth_invalid_client_id")
    resp = requests.get(f"{smart.root_url}/auth/authorize", allow_redirects=False, timeout=10, params={
        "response_type": "code", "client_id": "x", "redirect_uri": REDIRECT, "launch": launch, "state": "s"})
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_client"
    resp = requests.get(f"{smart.root_url}/auth/authorize", allow_redirects=False, timeout=10,
                        params={"response_type": "code", "client_id": "x", "redirect_uri": "javascript:alert(1)"})
    assert resp.status_code == 400 and "Location" not in resp.headers


def test_code_exchange_checks_pkce_client_redirect_and_replay(smart):
    code = authorize(smart, "launch offline_access patient/*.rs", launch=mint_launch(smart))["code"]
    wrong = exchange(smart, code, verifier="w" * 64)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    code = authorize(smart, "launch offline_access patient/*.rs", launch=mint_launch(smart))["code"]
    assert exchange(smart, code, client_id="another-app").status_code == 401
    code = authorize(smart, "launch offline_access patient/*.rs", launch=mint_launch(smart))["code"]
    assert exchange(smart, code, redirect_uri="http://127.0.0.1:9/other").json()["error"] == "invalid_grant"
    code = authorize(smart, "launch offline_access patient/*.rs", launch=mint_launch(smart))["code"]
    assert exchange(smart, code, code_verifier="").json()["error"] == "invalid_request"

    code = authorize(smart, "launch offline_access patient/*.rs", launch=mint_launch(smart))["code"]
    first = exchange(smart, code)
    assert first.status_code == 200
    replay = exchange(smart, code)
    assert replay.status_code == 400 and "already used" in replay.json()["error_description"]
    assert fhir_get(smart, f"Patient/{PATIENT}", first.json()["access_token"]).status_code == 401  # revoked


def test_refresh_rotates_and_expired_refresh_tokens_fail(smart):
    body = launched_token(smart)
    refresh = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": "any-app"}
    rotated = requests.post(f"{smart.root_url}/auth/token", data=refresh, timeout=10)
    assert rotated.status_code == 200 and rotated.json()["refresh_token"] != body["refresh_token"]
    assert rotated.json()["patient"] == PATIENT
    again = requests.post(f"{smart.root_url}/auth/token", data=refresh, timeout=10)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"  # the old one is retired
    assert requests.post(f"{smart.root_url}/_sandbox/smart/expire", json={}, timeout=10).json()["expired"] >= 2
    assert fhir_get(smart, f"Patient/{PATIENT}", rotated.json()["access_token"]).status_code == 401
    dead = requests.post(f"{smart.root_url}/auth/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": rotated.json()["refresh_token"]})
    assert dead.status_code == 400 and "expired" in dead.json()["error_description"]


def test_simulated_failures(smart):
    expired = launched_token(smart, sim_error="request_expired_token")
    resp = fhir_get(smart, f"Patient/{PATIENT}", expired["access_token"])
    assert resp.status_code == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    no_refresh = launched_token(smart, sim_error="token_expired_refresh_token")
    dead = requests.post(f"{smart.root_url}/auth/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": no_refresh["refresh_token"]})
    assert dead.json()["error"] == "invalid_grant"
    bad_scope = authorize(smart, "launch openid", launch=mint_launch(smart, sim_error="auth_invalid_scope"))
    assert bad_scope["error"] == "invalid_scope"


def test_token_lifetimes_are_configurable():
    with SandboxServer(auth="smart", smart=SmartOptions(access_token_lifetime_s=1)) as server:
        token = launched_token(server)
        assert token["expires_in"] == 1
        assert fhir_get(server, f"Patient/{PATIENT}", token["access_token"]).status_code == 200
        time.sleep(1.1)
        assert fhir_get(server, f"Patient/{PATIENT}", token["access_token"]).status_code == 401


def test_standalone_launch_picks_the_configured_patient():
    with SandboxServer(auth="smart", smart=SmartOptions(standalone_patient=OTHER)) as server:
        code = authorize(server, "launch/patient openid fhirUser patient/*.rs")["code"]
        assert exchange(server, code).json()["patient"] == OTHER


def test_launch_app_redirects_like_a_chart_button(smart):
    resp = requests.get(f"{smart.root_url}/_sandbox/launch-app", allow_redirects=False, timeout=10,
                        params={"patient": PATIENT, "launch_url": "http://127.0.0.1:9/launch?x=1"})
    assert resp.status_code == 302
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert query["x"] == ["1"] and query["iss"] == [smart.base_url] and query["launch"][0]
    for params in ({"patient": "nobody", "launch_url": "http://a/launch"}, {"patient": PATIENT, "launch_url": "x"}):
        assert requests.get(f"{smart.root_url}/_sandbox/launch-app", params=params, timeout=10).status_code == 400
    assert requests.post(f"{smart.root_url}/_sandbox/launch", json={"patient": PATIENT, "sim_error": "nope"},
                         timeout=10).status_code == 400


# -- backend services ---------------------------------------------------------------------------------------
def _keypair(alg: str) -> tuple[object, dict]:
    if alg == "RS384":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        key = ec.generate_private_key(ec.SECP384R1())
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return key, {**jwk, "kid": f"k-{alg}", "alg": alg}


def _assertion(key: object, alg: str, token_url: str, client_id: str = "backend", **claims: object) -> str:
    now = int(time.time())
    body = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 240, "jti": str(uuid.uuid4()),
            **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg,
                      headers={"kid": f"k-{alg}"})


def _client_credentials(server: SandboxServer, assertion: str, scope: str = "system/Patient.rs") -> requests.Response:
    return requests.post(f"{server.root_url}/auth/token", timeout=10, data={
        "grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion})


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_backend_services_private_key_jwt(smart, alg):
    key, jwk = _keypair(alg)
    token_url = f"{smart.root_url}/auth/token"
    registered = requests.post(f"{smart.root_url}/_sandbox/clients", timeout=10, json={
        "client_id": "backend", "jwks": {"keys": [jwk]}, "scope": "system/Patient.rs system/Condition.rs"})
    assert registered.status_code == 201
    ok = _client_credentials(smart, _assertion(key, alg, token_url))
    assert ok.status_code == 200 and ok.json()["scope"] == "system/Patient.rs" and "refresh_token" not in ok.json()
    token = ok.json()["access_token"]
    assert fhir_get(smart, "Patient", token).status_code == 200  # system/ reaches every patient
    assert fhir_get(smart, "Procedure", token, patient=PATIENT).status_code == 403

    other_key, _ = _keypair(alg)
    cases = {
        "signature": _assertion(other_key, alg, token_url),
        "aud": _assertion(key, alg, f"{smart.base_url}/token"),
        "exp": _assertion(key, alg, token_url, exp=int(time.time()) + 600),
        "expired": _assertion(key, alg, token_url, exp=int(time.time()) - 100),
        "jti": _assertion(key, alg, token_url, jti=None),
        "client": _assertion(key, alg, token_url, client_id="stranger"),
        "sub": _assertion(key, alg, token_url, sub="someone-else"),
    }
    for name, assertion in cases.items():
        resp = _client_credentials(smart, assertion)
        assert resp.status_code == 401 and resp.json()["error"] == "invalid_client", (name, resp.text)
    hs = jwt.encode({"iss": "backend", "sub": "backend", "aud": token_url, "exp": int(time.time()) + 60,
                     "jti": "x"}, secrets.token_bytes(32), algorithm="HS256")
    assert _client_credentials(smart, hs).json()["error"] == "invalid_client"
    scope = _client_credentials(smart, _assertion(key, alg, token_url), scope="system/Observation.rs")
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"
    replayed = _assertion(key, alg, token_url)
    assert _client_credentials(smart, replayed).status_code == 200
    again = _client_credentials(smart, replayed)
    assert again.status_code == 401 and "jti" in again.json()["error_description"]


def test_client_registration_is_validated(smart):
    _, jwk = _keypair("RS384")
    bad = [{"jwks": {"keys": [jwk]}}, {"client_id": "c"}, {"client_id": "c", "jwks": {"keys": [{**jwk, "d": "x"}]}},
           {"client_id": "c", "jwks": {"keys": [jwk]}, "scope": "patient/*.rs"}]
    for body in bad:
        assert requests.post(f"{smart.root_url}/_sandbox/clients", json=body, timeout=10).status_code == 400, body
