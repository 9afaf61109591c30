"""Per-EHR configuration: environment JSON or a file, a zero-config default, and clear errors at startup."""

import json

import pytest

from service import create_app
from service.auth import get_auth
from service.auth.tenants import load_tenants
from service.errors import ConfigurationError
from tests.auth.conftest import PATIENT_A


def test_zero_config_is_the_fhir_base_url_without_auth():
    tenants = load_tenants({"FHIR_BASE_URL": "http://127.0.0.1:9/fhir/", "CLIENT_ID": "second-opinion"}, {})
    (tenant,) = tenants.values()
    assert tenant.iss == "http://127.0.0.1:9/fhir" and tenant.auth == "none" and tenant.client_id == "second-opinion"


def test_tenants_from_a_file_with_secrets_from_the_environment(tmp_path):
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"tenants": [
        {"iss": "https://EHR.example/fhir/", "auth": "bearer", "token_env": "EHR_TOKEN", "client_id": "app-1",
         "writeback_profile": "cerner", "scope_version": "v1", "access": "online"},
        {"iss": "https://other.example/R4", "auth": "smart"}]}))
    tenants = load_tenants({"TENANTS_FILE": str(path)}, {"EHR_TOKEN": "t0ken"})
    first = tenants["https://ehr.example/fhir"]
    assert (first.auth, first.token, first.client_id, first.writeback_profile) == ("bearer", "t0ken", "app-1", "cerner")
    assert "t0ken" not in repr(first)
    assert tenants["https://other.example/R4"].client_id == "second-opinion"


@pytest.mark.parametrize("config, message", [
    ({"TENANTS": "[{"}, "not valid JSON"),
    ({"TENANTS": json.dumps([{"iss": "ehr"}])}, "iss must be the FHIR base URL"),
    ({"TENANTS": json.dumps([{"iss": "https://e/fhir", "auth": "magic"}])}, "auth must be one of"),
    ({"TENANTS": json.dumps([{"iss": "https://e/fhir", "token": "x"}])}, "unknown setting(s) token"),
    ({"TENANTS": json.dumps([{"iss": "https://e/fhir", "auth": "bearer"}])}, "needs token_env"),
    ({"TENANTS": json.dumps([{"iss": "https://e/fhir", "auth": "bearer", "token_env": "NOPE"}])}, "NOPE is not set"),
    ({"TENANTS": json.dumps([{"iss": "https://e/fhir", "auth": "backend"}])}, "needs private_key_file"),
    ({"TENANTS": json.dumps([{"iss": "https://e/fhir", "alg": "HS256"}])}, "alg must be RS384 or ES384"),
    ({"TENANTS": json.dumps([{"iss": "https://e/fhir"}, {"iss": "https://e/fhir/"}])}, "configured twice"),
    ({"TENANTS": "[]", "TENANTS_FILE": "/x"}, "not both"),
    ({"TENANTS_FILE": "/nonexistent/tenants.json"}, "cannot read"),
], ids=["json", "iss", "auth", "unknown-key", "bearer-no-token", "env-missing", "backend-no-key", "alg", "twice",
        "both", "file"])
def test_bad_tenant_configuration_fails_at_startup(config, message):
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_tenants(config, {})


def test_bad_key_file_fails_at_startup(tmp_path, ehr):
    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    tenants = json.dumps([{"iss": ehr.base_url, "auth": "backend", "private_key_file": str(bad)}])
    with pytest.raises(ConfigurationError, match="not an unencrypted PEM private key"):
        create_app({"TESTING": True, "FHIR_BASE_URL": ehr.base_url, "TENANTS": tenants,
                    "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"})


def test_static_bearer_token_is_sent_to_an_open_ehr(ehr, make_app):
    client = make_app(FHIR_TOKEN="sandbox-token").test_client()
    ehr.state.request_log.clear()
    assert client.post("/api/referrals", json={"patient": PATIENT_A, "question": "q"}).status_code == 201
    sent = [e for e in ehr.requests if e["path"].startswith("/fhir/")]
    assert sent and all(e["headers"].get("authorization") == "Bearer sandbox-token" for e in sent)


def test_no_auth_sends_no_authorization_header(ehr, make_app):
    client = make_app().test_client()
    ehr.state.request_log.clear()
    assert client.post("/api/referrals", json={"patient": PATIENT_A, "question": "q"}).status_code == 201
    sent = [e for e in ehr.requests if e["path"].startswith("/fhir/")]
    assert sent and not [e for e in sent if "authorization" in e["headers"]]


def test_secret_key_is_generated_once_in_the_instance_folder(make_app):
    first, second = make_app(), make_app()
    assert first.config["SECRET_KEY"] and first.config["SECRET_KEY"] == second.config["SECRET_KEY"]
    assert get_auth(first).tenants


def test_a_tenants_own_write_back_profile_is_used_for_its_referrals(make_app) -> None:  # noqa: ANN001
    from service import writeback

    app = make_app(worker=False, WRITEBACK_PROFILE="document",
                   TENANTS=[{"iss": "https://cerner.example.org/r4/t1", "writeback_profile": "cerner"}])
    assert writeback.profile_for(app, "https://cerner.example.org/r4/t1").name == "cerner"
    assert writeback.profile_for(app, "https://other.example.org/fhir").name == "document"
    assert writeback.profile_for(app).name == "document"


def test_a_tenant_with_an_unknown_write_back_profile_stops_startup(make_app) -> None:  # noqa: ANN001
    from service.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown write-back profile 'generic'"):
        make_app(worker=False, TENANTS=[{"iss": "https://x.example.org/fhir", "writeback_profile": "generic"}])
