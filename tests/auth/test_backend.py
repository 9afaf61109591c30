"""SMART Backend Services: our signed client assertions against the sandbox and sekmet-fhir, and our JWKS."""

import json
import secrets
import time
import uuid
from pathlib import Path

import jwt
import pytest
import requests

from service.auth.backend import ASSERTION_TYPE, client_assertion, request_backend_token
from service.auth.keys import load_signing_key, public_jwks
from service.ehr.client import build_session
from tests.auth.conftest import PATIENT_A, SekmetWithSmart, expire_tokens, register_client, write_key
from tests.conftest import assert_outcome

CLIENT_ID = "second-opinion-backend"


def _backend_app(make_app, ehr, key: Path, **tenant):  # noqa: ANN001, ANN202
    tenants = [{"iss": ehr.base_url, "auth": "backend", "backend_client_id": CLIENT_ID,
                "private_key_file": str(key), **tenant}]
    return make_app(FHIR_BASE_URL=ehr.base_url, TENANTS=json.dumps(tenants))


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_client_assertion_claims(tmp_path, alg):
    key = load_signing_key(str(write_key(tmp_path, alg)))
    token_url = "https://ehr.example/oauth2/token"
    first, second = client_assertion(CLIENT_ID, token_url, key), client_assertion(CLIENT_ID, token_url, key)
    header = jwt.get_unverified_header(first)
    assert header["alg"] == alg and header["kid"] == key.kid and header["typ"] == "JWT"
    verify = jwt.PyJWK(key.public_jwk).key
    claims = jwt.decode(first, verify, algorithms=[alg], audience=token_url)
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert 0 < claims["exp"] - claims["iat"] <= 300 and claims["exp"] <= time.time() + 300
    assert claims["jti"] != jwt.decode(second, verify, algorithms=[alg], audience=token_url)["jti"]


def test_jwks_serves_public_keys_only(tmp_path, smart_ehr, make_app):
    rsa_key, ec_key = write_key(tmp_path, "RS384"), write_key(tmp_path, "ES384")
    client = make_app(FHIR_BASE_URL=smart_ehr.base_url, JWT_KEY_FILES=str(ec_key),
                      TENANTS=json.dumps([{"iss": smart_ehr.base_url, "auth": "backend",
                                           "private_key_file": str(rsa_key)}])).test_client()
    resp = client.get("/.well-known/jwks.json")
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    keys = resp.get_json()["keys"]
    assert {k["kty"] for k in keys} == {"RSA", "EC"} and {k["alg"] for k in keys} == {"RS384", "ES384"}
    assert all(not {"d", "p", "q", "dp", "dq", "qi"} & set(k) for k in keys)
    assert {k["kid"] for k in keys} == {load_signing_key(str(rsa_key)).kid, load_signing_key(str(ec_key)).kid}
    assert "PRIVATE" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_service_reads_with_a_backend_token_from_the_sandbox(tmp_path, smart_ehr, make_app, alg):
    key = write_key(tmp_path, alg)
    register_client(smart_ehr, CLIENT_ID, public_jwks([load_signing_key(str(key))]), "system/*.rs system/*.cu")
    client = _backend_app(make_app, smart_ehr, key).test_client()
    created = client.post("/api/referrals", json={"patient": PATIENT_A, "question": "Second opinion?"})
    assert created.status_code == 201, created.get_data(as_text=True)[:300]
    token_requests = [e for e in smart_ehr.requests
                      if not e["path"].endswith(("/metadata", "/.well-known/smart-configuration"))]
    assert token_requests
    assert all(e["headers"].get("authorization", "").startswith("Bearer ") for e in token_requests)
    # An expired token is replaced (a new assertion, a new jti) and the request retried once.
    expire_tokens(smart_ehr, access=True)
    assert client.get(f"/api/referrals/{created.get_json()['id']}").status_code == 200
    sent = client.post(f"/api/referrals/{created.get_json()['id']}/send")
    assert sent.status_code == 200, sent.get_data(as_text=True)[:300]
    assert len(smart_ehr.app.extensions["sandbox.smart"].used_jtis) == 2


def test_unregistered_backend_client_is_a_clear_error(tmp_path, smart_ehr, make_app):
    client = _backend_app(make_app, smart_ehr, write_key(tmp_path)).test_client()
    body = assert_outcome(client.post("/api/referrals", json={"patient": PATIENT_A, "question": "q"}), 502)
    assert "invalid_client" in body["issue"][0]["diagnostics"] and CLIENT_ID in body["issue"][0]["diagnostics"]


def _replay(token_url: str, assertion: str, scope: str) -> tuple[requests.Response, requests.Response]:
    form = {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion}
    return requests.post(token_url, data=form, timeout=30), requests.post(token_url, data=form, timeout=30)


def _fixed_jti_assertion(key_path: Path, token_url: str) -> str:
    key = load_signing_key(str(key_path))
    now = int(time.time())
    claims = {"iss": CLIENT_ID, "sub": CLIENT_ID, "aud": token_url, "jti": str(uuid.uuid4()), "iat": now,
              "exp": now + 240}
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid})


def test_sandbox_rejects_a_reused_jti(tmp_path, smart_ehr):
    key = write_key(tmp_path)
    register_client(smart_ehr, CLIENT_ID, public_jwks([load_signing_key(str(key))]))
    token_url = f"{smart_ehr.root_url}/auth/token"
    first, second = _replay(token_url, _fixed_jti_assertion(key, token_url), "system/Patient.rs")
    assert first.status_code == 200 and first.json()["access_token"]
    assert second.status_code == 401 and second.json()["error"] == "invalid_client"
    assert "jti" in second.json()["error_description"]


@pytest.fixture
def sekmet_smart(tmp_path_factory, sekmet_executable_or_fail):  # noqa: ANN001, ANN201
    workdir = Path(tmp_path_factory.mktemp("sekmet-smart"))
    key = write_key(workdir, "RS384", "second-opinion")
    jwks = public_jwks([load_signing_key(str(key))])
    process = SekmetWithSmart(sekmet_executable_or_fail, workdir,
                              [{"client_id": CLIENT_ID, "jwks": jwks, "scopes": "system/*.rs system/*.cruds"}]).start()
    try:
        yield process, key
    finally:
        process.stop()


def test_backend_services_against_sekmet(sekmet_smart, make_app):
    process, key = sekmet_smart
    base = process.base_url
    assert requests.get(f"{base}/Patient", timeout=30).status_code == 401  # sekmet really requires a token
    config = requests.get(f"{base}/.well-known/smart-configuration", timeout=30).json()
    with build_session(max_retries=1) as http:
        token = request_backend_token(http, config["token_endpoint"], CLIENT_ID, load_signing_key(str(key)),
                                      "system/Patient.rs")
    assert token.access_token and token.expires_at > time.time()
    resp = requests.get(f"{base}/Patient", headers={"Authorization": f"Bearer {token.access_token}",
                                                    "Accept": "application/fhir+json"}, timeout=30)
    assert resp.status_code == 200 and resp.json()["resourceType"] == "Bundle"

    # The service itself, configured for sekmet as a backend tenant, reads through its client.
    app = make_app(FHIR_BASE_URL=base, TENANTS=json.dumps([{"iss": base, "auth": "backend",
                                                            "backend_client_id": CLIENT_ID,
                                                            "private_key_file": str(key)}]))
    with app.app_context():
        from service.ehr.connection import get_client

        bundle = get_client(app).search_page("Patient", {"_count": "1"})
    assert bundle.next_url is None or bundle.next_url.startswith(base)

    first, second = _replay(config["token_endpoint"], _fixed_jti_assertion(key, config["token_endpoint"]),
                            "system/Patient.rs")
    assert first.status_code == 200, first.text
    assert second.status_code == 401 and second.json()["error"] == "invalid_client"
    assert "jti" in second.json()["error_description"]


def test_assertion_lifetime_is_capped_at_five_minutes(tmp_path):
    key = load_signing_key(str(write_key(tmp_path)))
    assertion = client_assertion(CLIENT_ID, "https://x/token", key, lifetime_s=3600)
    claims = jwt.decode(assertion, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 300
    assert secrets.compare_digest(jwt.get_unverified_header(assertion)["kid"], key.kid)
