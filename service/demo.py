"""The demo: the service against the built-in sandbox EHR, one referral end to end, over real HTTP."""

import json
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import requests
from fhir.resources.R4B.bundle import Bundle

from service import create_app
from service.consultants import configured_consultants
from service.queue import start_consumer
from service.serving import ServiceServer, settle_process

COMPLETION_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DemoResult:
    patient: str
    referral: dict
    counts: dict[str, int]
    document_reference: str | None


def default_questions() -> dict:
    """The suggested questions per fixture patient (fixtures/patients/questions.json)."""
    return json.loads(resources.files("fixtures").joinpath("patients/questions.json").read_text("utf-8"))


def run_referral(service_url: str, patient_id: str, question: str, patient_questions: list[str],
                 say=print, http: requests.Session | None = None,  # noqa: ANN001
                 consultant: str | None = None) -> DemoResult:
    """Draft, send, answer and write back one referral through the service's REST API (in `http`'s session)."""
    from fixtures.consultant import consult_for_packet

    http = http or requests.Session()
    asked = {"patient": patient_id, "question": question, "patient_questions": patient_questions}
    created = _ok(http.post(f"{service_url}/api/referrals", json={**asked, **({"consultant": consultant}
                                                                                 if consultant else {})}, timeout=120))
    referral_id = created["id"]
    say(f"  drafted referral {referral_id} ({created['status']})")
    _ok(http.post(f"{service_url}/api/referrals/{referral_id}/send", timeout=60))
    packet = Bundle.model_validate(_ok(http.get(f"{service_url}/api/referrals/{referral_id}/packet", timeout=60)))
    say(f"  sent: packet {packet.identifier.value} with {len(packet.entry)} entries")
    consult = consult_for_packet(packet, now=datetime.now(UTC))
    _ok(http.post(f"{service_url}/api/referrals/{referral_id}/consult", data=consult.model_dump_json(exclude_none=True),
                  headers={"Content-Type": "application/fhir+json"}, timeout=60))
    say("  consult returned by the consultant; writing back to the EHR ...")
    referral = _wait_until_closed(http, f"{service_url}/api/referrals/{referral_id}")
    return DemoResult(patient_id, referral, section_counts(packet),
                      (referral.get("writeback") or {}).get("document_reference"))


def section_counts(packet: Bundle) -> dict[str, int]:
    """Entries per section of the packet, keyed by 'Title (LOINC code)'."""
    counts = {}
    for section in packet.entry[0].resource.section or []:
        code = section.code.coding[0].code if section.code and section.code.coding else "no code"
        counts[f"{section.title} ({code})"] = len(section.entry or [])
    return counts


def _wait_until_closed(http: requests.Session, url: str) -> dict:
    deadline = time.monotonic() + COMPLETION_TIMEOUT_S
    while True:
        referral = _ok(http.get(url, timeout=30))
        if referral["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return referral
        time.sleep(0.2)


def _ok(resp: requests.Response) -> dict:
    if resp.status_code >= 400:
        raise DemoError(f"{resp.request.method} {resp.url} answered {resp.status_code}: {resp.text[:500]}")
    return resp.json()


class DemoError(Exception):
    """A step of the demo failed; the message says which."""


def run_demo(*, once: bool, patient: str | None, auth: str = "none", say=print) -> int:  # noqa: ANN001
    """Start the sandbox and the service, run one referral, print a summary; serve on unless once.

    auth "smart": the sandbox runs its SMART authorization server; the referral is made in a session launched
    from the sandbox's chart (EHR launch with PKCE), and the write-back authenticates with backend services
    (a key made for this run, registered at the sandbox by our JWKS URL).
    """
    from fixtures.sandbox import SandboxServer

    questions = default_questions()
    patient_id = patient or next(iter(questions))
    asked = questions.get(patient_id, {"question": "Please review the diagnosis and the proposed treatment.",
                                       "patient_questions": []})
    with tempfile.TemporaryDirectory(prefix="second-opinion-demo-") as tmp, \
            SandboxServer(**({"auth": "smart"} if auth == "smart" else {})) as ehr:
        config = {"FHIR_BASE_URL": ehr.base_url, "DATABASE_URL": f"sqlite:///{Path(tmp) / 'demo.sqlite3'}",
                  "LOG_LEVEL": "WARNING"}
        if auth == "smart":
            key = write_demo_key(Path(tmp))
            config["TENANTS"] = json.dumps([{"iss": ehr.base_url, "auth": "smart", "backend_client_id": BACKEND_CLIENT,
                                             "private_key_file": str(key)}])
        app = create_app(config)
        settle_process()
        start_consumer(app)  # write-back runs in this process (the server's stop() ends it)
        with ServiceServer(app) as service, requests.Session() as http:
            say(f"Sandbox EHR:  {ehr.base_url}" + (" (SMART on FHIR)" if auth == "smart" else ""))
            say(f"Service:      {service.url}")
            if auth == "smart":
                launch_from_chart(http, ehr.root_url, service.url, patient_id, say)
            say(f"Referring Patient/{patient_id} for a second opinion ...")
            consultant = configured_consultants(app)[0] if configured_consultants(app) else None
            result = run_referral(service.url, patient_id, asked["question"], asked["patient_questions"], say, http,
                                  consultant.id if consultant else None)
            print_summary(result, service.url, ehr.base_url, say)
            print_pages(app, result, service.url, ehr.root_url, consultant, smart=auth == "smart", say=say)
            if result.referral["status"] != "completed":
                return 1
            if not once:
                say("\nServing until Ctrl-C ...")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    say("stopped")
    return 0


BACKEND_CLIENT = "second-opinion-backend"


def write_demo_key(folder: Path) -> Path:
    """A private key for this run only (PEM, mode 0600, in the run's temporary folder): nothing secret is kept."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "backend-RS384.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def launch_from_chart(http: requests.Session, ehr_root: str, service_url: str, patient_id: str,
                      say=print) -> None:  # noqa: ANN001
    """Register our backend client (by JWKS URL) at the sandbox, then click the app in the patient's chart."""
    _ok(http.post(f"{ehr_root}/_sandbox/clients", json={
        "client_id": BACKEND_CLIENT, "jwks_url": f"{service_url}/.well-known/jwks.json",
        "scope": "system/*.rs system/*.cu"}, timeout=30))
    say(f"  registered backend client {BACKEND_CLIENT} (JWKS: {service_url}/.well-known/jwks.json)")
    landed = http.get(f"{ehr_root}/_sandbox/launch-app", params={
        "patient": patient_id, "launch_url": f"{service_url}/launch"}, timeout=60)
    if landed.status_code != 200 or not landed.url.startswith(service_url):
        raise DemoError(f"the SMART launch did not complete: {landed.status_code} at {landed.url.split('?')[0]}")
    say(f"  launched from the chart (EHR launch, PKCE): session for Patient/{patient_id}")


def print_pages(app, result: DemoResult, service_url: str, ehr_root: str, consultant,  # noqa: ANN001
                smart: bool, say=print) -> None:  # noqa: ANN001
    """Where to look in a browser: the renditions, the consultant's page, and (with SMART) the chart's app button."""
    from service.web.links import consultant_link

    rid = result.referral["id"]
    say("\nIn a browser")
    say(f"  packet as a page / PDF:  {service_url}/api/referrals/{rid}/packet?_format=html  (or _format=pdf)")
    if consultant is not None:
        with app.test_request_context(base_url=service_url):
            say(f"  the consultant's page:   {consultant_link(rid, consultant.id)}")
    if smart:
        say(f"  the clinician app:       {ehr_root}/_sandbox/launch-app?patient={result.patient}"
            f"&launch_url={service_url}/launch")


def print_summary(result: DemoResult, service_url: str, ehr_url: str, say=print) -> None:  # noqa: ANN001
    """A short, readable account of the referral (ids and counts only)."""
    referral = result.referral
    say("\nSummary")
    say(f"  patient:            Patient/{result.patient}")
    say(f"  packet identifier:  {referral['packet']['identifier']}")
    say("  sections:")
    for section, count in result.counts.items():
        say(f"    {section:<52}{count:>4}")
    say(f"  service request:    {referral.get('service_request')}")
    say(f"  document reference: {result.document_reference}")
    say(f"  referral status:    {referral['status']}")
    if referral["status"] != "completed":
        say(f"  last error:         {(referral.get('writeback') or {}).get('last_error')}")
    rid = referral["id"]
    say("\nLook at")
    say(f"  {service_url}/api/referrals/{rid}")
    say(f"  {service_url}/api/referrals/{rid}/packet")
    say(f"  {service_url}/api/referrals/{rid}/consult")
    say(f"  {service_url}/api/referrals/{rid}/history")
    if result.document_reference:
        say(f"  {ehr_url}/{result.document_reference}")
