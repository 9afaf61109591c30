"""Benchmark: how fast the CDS Hooks services answer for each fixture patient on the sandbox (target < 1 s).

Run as `python bench/cds_hooks.py` (nothing beyond 127.0.0.1). The service runs on a real socket and trusts one
CDS client (ES384, inline JWK Set); each call carries a freshly signed client JWT (signed before the clock
starts). Per patient, two ways of calling:
  prefetch      order-sign with every prefetch key filled (built beforehand from the sandbox), no fhirServer
  no-prefetch   order-select with fhirServer and fhirAuthorization only: the service runs the 8 reads itself
It prints median / p95 / max per patient and way, and last one JSON line with every figure (seconds).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fixtures.sandbox import SandboxServer  # noqa: E402
from service import create_app  # noqa: E402
from service.cds.services import PREFETCH, SERVICE_ID_SELECT, SERVICE_ID_SIGN, expand_prefetch  # noqa: E402
from service.serving import ServiceServer  # noqa: E402

PATIENTS = ["so-prostate-patient", "so-breast-patient", "so-ms-patient", "so-cad-patient"]
ISSUER = "https://bench-ehr.example.org/"
FHIR_JSON = {"Accept": "application/fhir+json"}
TARGET_S = 1.0


def prefetch_for(ehr: SandboxServer, patient_id: str) -> dict:
    """Every prefetch template run on the sandbox, each search as one searchset page."""
    prefetch: dict = {}
    for key in PREFETCH:
        query = expand_prefetch(key, {"patientId": patient_id})
        if query.resource_id:
            prefetch[key] = requests.get(f"{ehr.base_url}/{query.resource_type}/{query.resource_id}",
                                         headers=FHIR_JSON, timeout=30).json()
            continue
        entries, url, params = [], f"{ehr.base_url}/{query.resource_type}", dict(query.params)
        while url:
            page = requests.get(url, params=params, headers=FHIR_JSON, timeout=30).json()
            entries += page.get("entry") or []
            url = next((l["url"] for l in page.get("link") or [] if l.get("relation") == "next"), None)
            params = None
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return prefetch


def hook_call(hook: str, patient_id: str, **extra: object) -> dict:
    referral = {"resourceType": "ServiceRequest", "id": "bench-referral", "status": "draft", "intent": "order",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "3457005"}]},
                "subject": {"reference": f"Patient/{patient_id}"}}
    context = {"userId": "PractitionerRole/123", "patientId": patient_id,
               "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": referral}]}}
    if hook == "order-select":
        context["selections"] = ["ServiceRequest/bench-referral"]
    return {"hookInstance": str(uuid.uuid4()), "hook": hook, "context": context, **extra}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed calls per patient and way (after 2 warm-ups)")
    parser.add_argument("--latency-ms", type=int, default=0, help="sandbox latency per request")
    args = parser.parse_args()

    key = ec.generate_private_key(ec.SECP384R1())
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "bench", "alg": "ES384", "use": "sig"}
    results: dict[str, dict[str, dict[str, float]]] = {}
    with SandboxServer(latency_ms=args.latency_ms) as ehr, tempfile.TemporaryDirectory() as tmp:
        app = create_app({"FHIR_BASE_URL": ehr.base_url, "DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.sqlite3'}",
                          "WRITEBACK": "off", "LOG_LEVEL": "WARNING",
                          "CDS_CLIENTS": [{"iss": ISSUER, "jwks": {"keys": [jwk]}}]})
        with ServiceServer(app) as service, requests.Session() as http:
            for patient_id in PATIENTS:
                prefetch = prefetch_for(ehr, patient_id)
                ways = {
                    "prefetch": (SERVICE_ID_SIGN, lambda: hook_call("order-sign", patient_id, prefetch=prefetch)),
                    "no-prefetch": (SERVICE_ID_SELECT, lambda: hook_call(
                        "order-select", patient_id, fhirServer=ehr.base_url,
                        fhirAuthorization={"access_token": f"bench-{uuid.uuid4()}", "token_type": "Bearer",
                                           "expires_in": 300, "scope": "patient/*.read", "subject": "bench"})),
                }
                for way, (service_id, make_call) in ways.items():
                    url = f"{service.url}/cds-services/{service_id}"
                    times = []
                    for run in range(args.runs + 2):
                        body = json.dumps(make_call())
                        now = int(time.time())
                        token = jwt.encode({"iss": ISSUER, "aud": url, "exp": now + 300, "iat": now,
                                            "jti": str(uuid.uuid4())}, key, algorithm="ES384",
                                           headers={"kid": "bench", "typ": "JWT"})
                        start = time.perf_counter()
                        resp = http.post(url, data=body, timeout=30, headers={
                            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                        elapsed = time.perf_counter() - start
                        resp.raise_for_status()
                        (card,) = resp.json()["cards"]
                        if run >= 2:
                            times.append(elapsed)
                    results.setdefault(patient_id, {})[way] = {
                        "median_s": round(statistics.median(times), 4), "p95_s": round(percentile(times, 0.95), 4),
                        "max_s": round(max(times), 4)}
                    print(f"{patient_id:22} {way:12} median {statistics.median(times) * 1000:7.1f} ms  "
                          f"p95 {percentile(times, 0.95) * 1000:7.1f} ms  max {max(times) * 1000:7.1f} ms  "
                          f"| {card['summary']}")
    worst = max(v["max_s"] for per in results.values() for v in per.values())
    print(f"worst call {worst * 1000:.1f} ms; target < {TARGET_S * 1000:.0f} ms: "
          f"{'met' if worst < TARGET_S else 'NOT met'} ({args.runs} runs per line, sandbox latency "
          f"{args.latency_ms} ms)")
    print(json.dumps({"target_s": TARGET_S, "worst_s": worst, "runs": args.runs, "latency_ms": args.latency_ms,
                      "results": results}))


if __name__ == "__main__":
    main()
