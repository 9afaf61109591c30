"""Trusting CDS clients (CDS Hooks 2.0 §Trusting CDS Clients): signed JWTs, issuer allowlist, JWK Sets, replay."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from service import create_app
from service.errors import ConfigurationError
from tests.conftest import assert_outcome
from tests.test_cds_hooks_support import (  # noqa: F401 - fixtures
    ISSUER, KID, SELECT_URL, SIGN_URL, ClientKey, cds_app, client_key, hook_call, jwks_server, post_hook)

AUD = "http://localhost" + SIGN_URL


def no_referral_call() -> dict:
    return hook_call("order-sign", "so-cad-patient", orders=[])


def assert_401(resp, message: str) -> None:  # noqa: ANN001
    body = assert_outcome(resp, 401, "login")
    assert message in body["issue"][0]["diagnostics"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_signed_es384_jwt_from_a_trusted_client_is_accepted(cds_app, client_key) -> None:  # noqa: ANN001
    resp = post_hook(cds_app, SIGN_URL, no_referral_call(), token=client_key.sign(AUD))
    assert resp.status_code == 200 and resp.get_json() == {"cards": []}


def test_rs384_keys_from_a_jwks_url_are_fetched_once_and_cached(make_app, jwks_server) -> None:  # noqa: ANN001
    key = ClientKey("RS384", kid="rsa-1")
    jwks_server.sets["/jwks.json"] = key.jwks()
    app = make_app(worker=False, WRITEBACK="off", CDS_CLIENTS=[{"iss": "https://rsa-ehr.example.org",
                                                   "jwks_url": jwks_server.url("/jwks.json")}])
    for _ in range(2):
        token = key.sign(AUD, iss="https://rsa-ehr.example.org")
        assert post_hook(app, SIGN_URL, no_referral_call(), token=token).status_code == 200
    assert jwks_server.requested == ["/jwks.json"]


def test_a_jku_header_equal_to_the_configured_url_is_accepted(
        make_app, jwks_server, client_key) -> None:  # noqa: ANN001
    jwks_server.sets["/jwks.json"] = client_key.jwks()
    app = make_app(worker=False, WRITEBACK="off",
                   CDS_CLIENTS=[{"iss": ISSUER, "jwks_url": jwks_server.url("/jwks.json")}])
    token = client_key.sign(AUD, headers={"jku": jwks_server.url("/jwks.json")})
    assert post_hook(app, SIGN_URL, no_referral_call(), token=token).status_code == 200


def test_a_jku_header_elsewhere_is_refused_and_never_fetched(make_app, jwks_server, client_key) -> None:  # noqa: ANN001
    jwks_server.sets["/jwks.json"] = client_key.jwks()
    attacker = ClientKey("ES384")
    jwks_server.sets["/attacker.json"] = attacker.jwks()
    app = make_app(worker=False, WRITEBACK="off",
                   CDS_CLIENTS=[{"iss": ISSUER, "jwks_url": jwks_server.url("/jwks.json")}])
    token = attacker.sign(AUD, headers={"jku": jwks_server.url("/attacker.json")})
    assert_401(post_hook(app, SIGN_URL, no_referral_call(), token=token), "jku is not the JWK Set URL")
    assert "/attacker.json" not in jwks_server.requested


def test_an_unreachable_jwks_url_is_401(make_app, jwks_server, client_key) -> None:  # noqa: ANN001
    app = make_app(worker=False, WRITEBACK="off",
                   CDS_CLIENTS=[{"iss": ISSUER, "jwks_url": jwks_server.url("/missing.json")}])
    assert_401(post_hook(app, SIGN_URL, no_referral_call(), token=client_key.sign(AUD)),
               "could not fetch the CDS client's JWK Set")


def _unsigned(aud: str) -> str:
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": aud, "exp": now + 300, "iat": now, "jti": "u1"}, None,
                      algorithm="none", headers={"kid": KID})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hmac_with_public_key(client_key: ClientKey) -> str:
    """The key-confusion attack: HS256 'signed' with the public key's PEM (built by hand: PyJWT refuses)."""
    now = int(time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
    payload = _b64(json.dumps({"iss": ISSUER, "aud": AUD, "exp": now + 300, "iat": now, "jti": "h1"}).encode())
    pem = client_key.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    signature = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


@pytest.mark.parametrize("make_token, message", [
    (lambda key: None, "Authorization: Bearer <JWT>"),
    (lambda key: "not-a-jwt", "not a JWT"),
    (lambda key: _unsigned(AUD), "JWT alg must be one of ES384, RS384"),
    (_hmac_with_public_key, "JWT alg must be one of ES384, RS384"),
    (lambda key: ClientKey("ES384").sign(AUD), "Signature verification failed"),
    (lambda key: key.sign(AUD, iss="https://stranger.example.org/"), "issuer is not a trusted CDS client"),
    (lambda key: key.sign("http://localhost/cds-services/other"), "aud is not this endpoint's URL"),
    (lambda key: key.sign("http://localhost" + SELECT_URL), "aud is not this endpoint's URL"),
    (lambda key: key.sign(AUD, exp=int(time.time()) - 120), "expired"),
    (lambda key: key.sign(AUD, iat=int(time.time()) + 600), "iat"),
    (lambda key: key.sign(AUD, drop=("jti",)), "jti"),
    (lambda key: key.sign(AUD, drop=("exp",)), "exp"),
    (lambda key: key.sign(AUD, headers={"kid": None}), "kid is required"),
    (lambda key: key.sign(AUD, headers={"kid": "rotated-away"}), "no key with this kid"),
    (lambda key: key.sign(AUD, headers={"typ": "at+jwt"}), "typ must be JWT"),
], ids=["missing", "not-a-jwt", "unsigned-none", "hmac-key-confusion", "wrong-key", "unknown-issuer", "wrong-aud",
        "other-service-aud", "expired", "issued-in-future", "no-jti", "no-exp", "no-kid", "unknown-kid", "wrong-typ"])
def test_bad_client_jwts_are_401(cds_app, client_key, make_token, message) -> None:  # noqa: ANN001
    token = make_token(client_key)
    assert_401(post_hook(cds_app, SIGN_URL, no_referral_call(), token=token), message)


def test_a_replayed_jti_is_refused(cds_app, client_key) -> None:  # noqa: ANN001
    token = client_key.sign(AUD)
    assert post_hook(cds_app, SIGN_URL, no_referral_call(), token=token).status_code == 200
    assert_401(post_hook(cds_app, SIGN_URL, no_referral_call(), token=token), "jti replayed")


def test_aud_may_be_an_array_and_follows_public_url(make_app, client_key) -> None:  # noqa: ANN001
    app = make_app(worker=False, WRITEBACK="off", PUBLIC_URL="https://cds.example.org/second-opinion",
                   CDS_CLIENTS=[{"iss": ISSUER, "jwks": client_key.jwks()}])
    public_aud = "https://cds.example.org/second-opinion" + SIGN_URL
    token = client_key.sign(["https://elsewhere.example.org", public_aud])
    assert post_hook(app, SIGN_URL, no_referral_call(), token=token).status_code == 200
    assert_401(post_hook(app, SIGN_URL, no_referral_call(), token=client_key.sign(AUD)),
               f"expected {public_aud}")


def test_feedback_needs_a_jwt_for_its_own_url_or_the_service_url(cds_app, client_key) -> None:  # noqa: ANN001
    feedback = {"feedback": [{"card": "c-1", "outcome": "overridden", "outcomeTimestamp": "2026-11-22T10:00:00Z"}]}
    path = SIGN_URL + "/feedback"
    assert_401(post_hook(cds_app, path, feedback), "Authorization: Bearer <JWT>")
    assert post_hook(cds_app, path, feedback, token=client_key.sign("http://localhost" + path)).status_code == 200
    assert post_hook(cds_app, path, feedback, token=client_key.sign(AUD)).status_code == 200


def test_without_trusted_clients_hook_calls_are_refused_with_what_to_configure(
        make_app, client_key) -> None:  # noqa: ANN001
    app = make_app(worker=False, WRITEBACK="off")
    assert_401(post_hook(app, SIGN_URL, no_referral_call(), token=client_key.sign(AUD)),
               "set SECOND_OPINION_CDS_CLIENTS")
    assert app.test_client().get("/cds-services").status_code == 200  # discovery stays open


def test_the_development_flag_accepts_calls_without_a_jwt(make_app) -> None:  # noqa: ANN001
    app = make_app(worker=False, WRITEBACK="off", CDS_ALLOW_UNAUTHENTICATED=True)
    resp = post_hook(app, SIGN_URL, no_referral_call())
    assert resp.status_code == 200 and resp.get_json() == {"cards": []}


def test_clients_come_from_the_environment_as_json(make_app, client_key, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("SECOND_OPINION_CDS_CLIENTS", json.dumps([{"iss": ISSUER, "jwks": client_key.jwks()}]))
    app = make_app(worker=False, WRITEBACK="off")
    assert post_hook(app, SIGN_URL, no_referral_call(), token=client_key.sign(AUD)).status_code == 200


def test_a_fhir_server_outside_the_clients_allowlist_is_403(make_app, client_key, ehr) -> None:  # noqa: ANN001
    app = make_app(worker=False, WRITEBACK="off", CDS_CLIENTS=[{"iss": ISSUER, "jwks": client_key.jwks(),
                                                   "fhir_servers": ["https://fhir.example.org/r4"]}])
    call = hook_call("order-sign", "so-cad-patient", fhir_server=ehr.base_url, access_token="t")
    body = assert_outcome(post_hook(app, SIGN_URL, call, client_key), 403, "forbidden")
    assert "fhirServer" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize("clients, message", [
    ("not json", "not valid JSON"),
    ({"iss": ISSUER}, "JSON array"),
    ([{"iss": ISSUER}], "exactly one of 'jwks_url' and 'jwks'"),
    ([{"iss": ISSUER, "jwks_url": "file:///etc/keys"}], "http(s) URL"),
    ([{"iss": ISSUER, "jwks": {"keys": [{"kty": "EC", "d": "secret"}]}}], "no private parts"),
    ([{"iss": ISSUER, "jwks_url": "https://a.example/j"}, {"iss": ISSUER, "jwks_url": "https://b.example/j"}],
     "issuer listed twice"),
    ([{"iss": ISSUER, "jwks_url": "https://a.example/j", "jku": "x"}], "unknown field"),
], ids=["not-json", "not-array", "no-keys", "file-url", "private-key", "duplicate", "unknown-field"])
def test_a_bad_client_list_fails_at_startup(tmp_path, clients, message) -> None:  # noqa: ANN001
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        create_app({"TESTING": True, "WRITEBACK": "off", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                    "CDS_CLIENTS": clients})


def test_symmetric_algorithms_cannot_be_configured(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ConfigurationError, match="asymmetric"):
        create_app({"TESTING": True, "WRITEBACK": "off", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
                    "CDS_JWT_ALGORITHMS": ["HS256"]})


def test_cds_calls_need_no_browser_session_when_the_api_requires_one(make_app, client_key) -> None:  # noqa: ANN001
    app = make_app(worker=False, WRITEBACK="off", API_AUTH="session",
                   CDS_CLIENTS=[{"iss": ISSUER, "jwks": client_key.jwks()}])
    assert app.test_client().get("/api/referrals/x").status_code == 401  # the REST API wants a launched session
    assert app.test_client().get("/cds-services").status_code == 200
    assert app.test_client().get("/openapi.json").status_code == 200
    resp = post_hook(app, SIGN_URL, no_referral_call(), token=client_key.sign(AUD))
    assert resp.status_code == 200 and resp.get_json() == {"cards": []}
