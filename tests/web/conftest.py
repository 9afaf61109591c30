"""Fixtures for the pages: the sandbox behind SMART, the service on a real port with backend keys for write-back,
Chromium driven by Playwright, and helpers that walk a referral through the API."""

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flask import Flask

from fixtures.sandbox import SandboxServer
from service.auth import get_auth
from service.auth.keys import load_signing_key, public_jwks
from tests.auth.conftest import make_smart_ehr, register_client, serve, smart_ehr, write_key  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "screenshots"
PATIENT = "so-prostate-patient"  # six Conditions, a complete packet
BACKEND_CLIENT = "second-opinion-backend"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@dataclass
class Stack:
    """The sandbox EHR (SMART) and the service, wired together."""

    ehr: SandboxServer
    app: Flask
    url: str

    def fhir_get(self, path: str, params: dict | None = None) -> requests.Response:
        """Read the sandbox over HTTP with the service's backend-services token (as the write-back does)."""
        with self.app.app_context():
            tenant = get_auth(self.app).tenant(self.ehr.base_url)
            token = get_auth(self.app).backend_tokens(tenant).access_token()
        return requests.get(f"{self.ehr.base_url}/{path}", params=params, timeout=30,
                            headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"})


@pytest.fixture
def stack(smart_ehr, serve, tmp_path) -> Stack:  # noqa: ANN001, F811
    """SMART sandbox + service; write-back with backend services (a key made for the test)."""
    key = write_key(tmp_path, "RS384", "backend")
    register_client(smart_ehr, BACKEND_CLIENT, public_jwks([load_signing_key(str(key))]))
    tenants = [{"iss": smart_ehr.base_url, "auth": "smart", "backend_client_id": BACKEND_CLIENT,
                "private_key_file": str(key)}]
    app, url = serve(FHIR_BASE_URL=smart_ehr.base_url, TENANTS=json.dumps(tenants))
    return Stack(smart_ehr, app, url)


@pytest.fixture(scope="session")
def chromium() -> Iterator[object]:
    """Debian's Chromium, headless (Playwright's own browser download cannot work here)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page_factory(chromium) -> Iterator[Callable[[], object]]:  # noqa: ANN001
    """New browser contexts (separate cookies: the clinician's browser, the consultant's)."""
    contexts = []

    def factory():  # noqa: ANN202
        context = chromium.new_context(viewport={"width": 1100, "height": 900})
        context.set_default_timeout(60_000)
        contexts.append(context)
        return context.new_page()

    yield factory
    for context in contexts:
        context.close()


def screenshot(page, name: str) -> Path:  # noqa: ANN001
    """A full-page screenshot in screenshots/ at the repository root (git-ignored)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000
    return path


def launch_url(stack: Stack, patient: str = PATIENT) -> str:
    """The sandbox chart's app button: it redirects the browser through the SMART EHR launch."""
    return (f"{stack.ehr.root_url}/_sandbox/launch-app?patient={patient}"
            f"&launch_url={stack.url}/launch")


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "the page has no CSRF token"
    return match.group(1)


def sent_referral_link(stack: Stack, browser: requests.Session, question: str = "Is active surveillance safe?",
                       exclude: int = 0) -> tuple[str, str]:
    """Walk the clinician's pages with requests: launch, start, send. Returns (referral page URL, consultant link)."""
    browser.headers["Accept"] = "text/html"
    assert browser.get(launch_url(stack), timeout=60).status_code == 200
    form = browser.get(f"{stack.url}/patient/{PATIENT}/referrals/new", timeout=30)
    token = csrf_token(form.text)
    draft = browser.post(f"{stack.url}/patient/{PATIENT}/referrals", timeout=120,
                         data={"csrf_token": token, "question": question, "consultant": "demo-urology"})
    assert draft.status_code == 200 and "/referrals/" in draft.url, draft.text[:300]
    items = re.findall(r'name="item" value="([^"]+)"', draft.text)
    sent = browser.post(draft.url, timeout=120, data={"csrf_token": token, "question": question,
                                                      "consultant": "demo-urology", "item": items,
                                                      "include": items[exclude:], "action": "send"})
    assert sent.status_code == 200, sent.text[:300]
    link = re.search(r'<a href="([^"]+)" id="consultant-link"', sent.text)
    assert link, sent.text[:500]
    return sent.url, link.group(1)
