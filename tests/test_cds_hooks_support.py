"""Helpers for the CDS Hooks tests (no tests here): client keys and JWTs, a JWK Set server, spec-shaped calls.

The calls follow the CDS Hooks 2.0 examples' shape: §Calling a CDS Service (hookInstance, fhirServer, hook,
fhirAuthorization {access_token, token_type, expires_in, scope, subject}, context, prefetch) and the
order-select / order-sign "Example (R4)" contexts (userId, patientId, encounterId, [selections], draftOrders: a
Bundle without `type` holding a NutritionOrder and a MedicationRequest with an STU3-shaped dosage), to which a
second-opinion referral ServiceRequest is added.
"""

import copy
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from service.cds.services import PREFETCH, SERVICE_ID_SELECT, SERVICE_ID_SIGN, expand_prefetch

ISSUER = "https://ehr.example.org/"
KID = "ehr-key-1"
SELECT_URL = f"/cds-services/{SERVICE_ID_SELECT}"
SIGN_URL = f"/cds-services/{SERVICE_ID_SIGN}"
REFERRAL_ID = "so-referral-draft-1"

SNOMED = "http://snomed.info/sct"
V2_0336 = "http://terminology.hl7.org/CodeSystem/v2-0336"


class ClientKey:
    """A CDS client's signing key (EC P-384 / ES384 or RSA 2048 / RS384) and its public JWK."""

    def __init__(self, alg: str = "ES384", kid: str = KID) -> None:
        self.alg = alg
        self.kid = kid
        if alg.startswith("ES"):
            self.private = ec.generate_private_key(ec.SECP384R1())
            jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.public_jwk = {**jwk, "kid": kid, "alg": alg, "use": "sig"}

    def jwks(self) -> dict:
        return {"keys": [self.public_jwk]}

    def sign(self, aud: str | list[str], *, iss: str = ISSUER, headers: dict | None = None,
             drop: tuple[str, ...] = (), **claims: object) -> str:
        """A CDS client JWT (CDS Hooks 2.0 §Trusting CDS Clients) for the endpoint URL `aud`."""
        now = int(time.time())
        payload = {"iss": iss, "aud": aud, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4()),
                   "tenant": "2ddd6c3a-8e9a-44c6-a305-52111ad302a2", **claims}
        for name in drop:
            payload.pop(name, None)
        header = {"kid": self.kid, "typ": "JWT", **(headers or {})}
        for name in [k for k, v in header.items() if v is None]:
            header.pop(name)
        return jwt.encode(payload, self.private, algorithm=self.alg, headers=header)


class JwksServer:
    """A JWK Set on a tiny HTTP server on 127.0.0.1, which records the paths it was asked for."""

    def __init__(self) -> None:
        self.sets: dict[str, dict] = {}
        self.requested: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                owner.requested.append(self.path)
                body = owner.sets.get(self.path)
                data = json.dumps(body).encode() if body is not None else b"{}"
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def __enter__(self) -> "JwksServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="session")
def client_key() -> ClientKey:
    return ClientKey("ES384")


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


@pytest.fixture
def cds_app(make_app, client_key):  # noqa: ANN001, ANN201
    """An app that trusts one CDS client (inline JWK Set), pointed at the sandbox."""
    return make_app(worker=False, WRITEBACK="off", CDS_CLIENTS=[{"iss": ISSUER, "jwks": client_key.jwks()}])


def post_hook(app, path: str, body: object, key: ClientKey | None = None, *, token: str | None = None,  # noqa: ANN001
              base: str = "http://localhost"):  # noqa: ANN201 - a Flask test response
    """POST a hook (or feedback) call with a fresh client JWT whose aud is the endpoint's URL."""
    headers = {}
    if token is None and key is not None:
        token = key.sign(base + path)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return app.test_client().post(path, data=data, headers=headers, content_type="application/json")


# -- spec-shaped hook calls ------------------------------------------------------------------------------------

def _nutrition_order(patient_id: str) -> dict:
    """An order like the spec example's NutritionOrder (same elements, our own values)."""
    return {
        "resourceType": "NutritionOrder", "id": "diet-soft-1",
        "identifier": [{"system": "http://hospital.example.org/nutrition-requests", "value": "n-42"}],
        "status": "draft", "patient": {"reference": f"Patient/{patient_id}"}, "dateTime": "2026-11-20",
        "orderer": {"reference": "Practitioner/example", "display": "Dr Example"},
        "oralDiet": {
            "type": [{"coding": [{"system": SNOMED, "code": "435581000124102", "display": "Soft diet"}],
                      "text": "Soft diet"}],
            "schedule": [{"repeat": {"boundsPeriod": {"start": "2026-11-20"}, "frequency": 3, "period": 1,
                                     "periodUnit": "d"}}],
            "texture": [{"modifier": {"coding": [{"system": SNOMED, "code": "228055009",
                                                  "display": "Liquidized food"}], "text": "Soft"}}],
        },
        "supplement": [{"type": {"text": "High-energy drink"}, "productName": "Energy drink 200 mL",
                        "instruction": "With breakfast"}],
    }


def _medication_request(patient_id: str, *, dose_and_rate_object: bool) -> dict:
    """An order like the spec example's MedicationRequest, with its non-R4 dosage shape kept."""
    dose = {"value": 5, "unit": "mL", "system": "http://unitsofmeasure.org", "code": "mL"}
    dosage = {"text": "5 mL twice a day for 10 days",
              "timing": {"repeat": {"boundsPeriod": {"start": "2026-11-20"}, "frequency": 2, "period": 1,
                                    "periodUnit": "d"}}}
    dosage.update({"doseAndRate": {"doseQuantity": dose}} if dose_and_rate_object else {"doseQuantity": dose})
    return {
        "resourceType": "MedicationRequest", "id": "draft-medication-7",
        "meta": {"lastUpdated": "2026-11-20T13:25:40.845-05:00"},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Amoxicillin</div>"},
        "status": "draft", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                  "code": "308182", "display": "Amoxicillin 250 MG Oral Capsule"}],
                                      "text": "Amoxicillin 250 MG Oral Capsule"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "dosageInstruction": [dosage],
        "dispenseRequest": {"numberOfRepeatsAllowed": 1,
                            "quantity": {"value": 1, "unit": "mL", "system": "http://unitsofmeasure.org",
                                         "code": "mL"}},
    }


def referral_order(patient_id: str, *, how: str = "code", order_id: str = REFERRAL_ID) -> dict:
    """A draft second-opinion referral (BSeR-style), recognised by its code, category or reason."""
    concept = {"coding": [{"system": SNOMED, "code": "3457005", "display": "Patient referral"}]}
    order = {"resourceType": "ServiceRequest", "id": order_id, "status": "draft", "intent": "order",
             "subject": {"reference": f"Patient/{patient_id}"}, "requester": {"reference": "PractitionerRole/123"},
             "identifier": [{"system": "http://hospital.example.org/orders", "value": f"ord-{order_id}"}]}
    if how == "code":
        order["code"] = concept
    elif how == "category":
        order["category"] = [concept]
        order["code"] = {"text": "Second opinion"}
    elif how == "reason":
        order["code"] = {"text": "Consultation"}
    order["reasonCode"] = [{"coding": [{"system": V2_0336, "code": "S", "display": "Second Opinion"}],
                            "text": "Is active surveillance reasonable?"}] if how in ("code", "reason") else None
    return {k: v for k, v in order.items() if v is not None}


def lab_order(patient_id: str) -> dict:
    return {"resourceType": "ServiceRequest", "id": "lab-psa-1", "status": "draft", "intent": "order",
            "code": {"coding": [{"system": "http://loinc.org", "code": "2857-1", "display": "PSA"}]},
            "subject": {"reference": f"Patient/{patient_id}"}}


def hook_call(hook: str, patient_id: str, *, orders: list[dict] | None = None, selections: list[str] | None = None,
              fhir_server: str | None = None, access_token: str | None = None,
              prefetch: dict | None = None) -> dict:
    """A call shaped like the CDS Hooks 2.0 examples, for order-select or order-sign."""
    if orders is None:
        orders = [referral_order(patient_id)]
    base_orders = [_nutrition_order(patient_id),
                   _medication_request(patient_id, dose_and_rate_object=hook == "order-select")]
    context: dict = {"userId": "PractitionerRole/123", "patientId": patient_id, "encounterId": "89284"}
    if hook == "order-select":
        context["selections"] = selections if selections is not None else (
            ["NutritionOrder/diet-soft-1"] + [f"{o['resourceType']}/{o['id']}" for o in orders])
    context["draftOrders"] = {"resourceType": "Bundle",
                              "entry": [{"resource": r} for r in base_orders + copy.deepcopy(orders)]}
    call: dict = {"hookInstance": str(uuid.uuid4()), "hook": hook, "context": context}
    if fhir_server is not None:
        call["fhirServer"] = fhir_server
    if access_token is not None:
        call["fhirAuthorization"] = {"access_token": access_token, "token_type": "Bearer", "expires_in": 300,
                                     "scope": "patient/Patient.read patient/Condition.read", "subject": "cds-service4"}
    if prefetch is not None:
        call["prefetch"] = prefetch
    return call


def build_prefetch(base_url: str, patient_id: str, keys: list[str] | None = None) -> dict:
    """What a CDS client would send for our prefetch templates: each one run on the sandbox, as one page."""
    prefetch: dict = {}
    for key in keys if keys is not None else list(PREFETCH):
        query = expand_prefetch(key, {"patientId": patient_id})
        if query.resource_id is not None:
            resp = requests.get(f"{base_url}/{query.resource_type}/{query.resource_id}", timeout=10,
                                headers={"Accept": "application/fhir+json"})
            prefetch[key] = resp.json() if resp.status_code == 200 else None
            continue
        entries: list = []
        url: str | None = f"{base_url}/{query.resource_type}"
        params: dict | None = query.params
        while url:
            page = requests.get(url, params=params, timeout=10, headers={"Accept": "application/fhir+json"}).json()
            entries += page.get("entry") or []
            url = next((link["url"] for link in page.get("link") or [] if link.get("relation") == "next"), None)
            params = None
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return prefetch


def requests_with_token(ehr, token: str) -> list[dict]:  # noqa: ANN001 - the SandboxServer
    """The sandbox requests that carried this bearer token."""
    return [r for r in ehr.requests if r["headers"].get("authorization") == f"Bearer {token}"]
