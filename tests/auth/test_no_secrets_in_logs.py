"""No access token, refresh token, client assertion, id_token, code or private key in any log line."""

import json
import logging

import requests

from service.auth.keys import load_signing_key, public_jwks
from tests.auth.conftest import PATIENT_A, ehr_launch, expire_tokens, register_client, smart_registry, write_key


def test_launch_refresh_backend_and_relaunch_log_no_secrets(tmp_path, smart_ehr, serve, browser, caplog):
    caplog.set_level(logging.DEBUG)  # everything: our loggers, the sandbox's, authlib, urllib3, werkzeug
    key = write_key(tmp_path)
    register_client(smart_ehr, "so-backend", public_jwks([load_signing_key(str(key))]))
    tenants = [{"iss": smart_ehr.base_url, "auth": "smart", "backend_client_id": "so-backend",
                "private_key_file": str(key)}]
    _, url = serve(FHIR_BASE_URL=smart_ehr.base_url, TENANTS=json.dumps(tenants), LOG_LEVEL="DEBUG")

    assert ehr_launch(browser, smart_ehr, url).status_code == 200  # launch, code exchange, id_token
    made = browser.post(f"{url}/api/referrals", json={"patient": PATIENT_A, "question": "q"}, timeout=120)
    assert made.status_code == 201, made.text[:300]
    expire_tokens(smart_ehr, access=True)  # refresh on 401, with rotation
    assert browser.get(f"{url}/patient", timeout=30).status_code == 200
    backend = requests.post(f"{url}/api/referrals", json={"patient": PATIENT_A, "question": "q"}, timeout=120)
    assert backend.status_code == 201, backend.text[:300]  # no launch: backend services (client assertion)
    expire_tokens(smart_ehr, access=True, refresh=True)
    assert browser.get(f"{url}/patient", timeout=30).status_code == 401  # the refresh token is dead

    records = caplog.records
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in records)
    ours = "\n".join(f"{r.name} {r.getMessage()}" for r in records if not r.name.startswith("urllib3"))
    reg = smart_registry(smart_ehr)
    assert len(reg.access_tokens) >= 3 and len(reg.refresh_tokens) >= 2 and reg.codes and reg.used_jtis
    assert "refreshed the EHR access token" in text and "launch completed" in text  # the flows did log
    for secret in [*reg.access_tokens, *reg.refresh_tokens]:
        assert secret not in text
    for code in reg.codes:  # urllib3 logs the URL the test's own browser follows; our loggers never do
        assert code not in ours
    assert "eyJ" not in text  # no JWT at all: client assertions, id_tokens
    pem = key.read_text()
    assert "PRIVATE KEY" not in text
    assert all(line not in text for line in pem.splitlines()[1:-1])
