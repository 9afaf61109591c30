"""Benchmark: write-back latency, from a consult accepted (202) to its DocumentReference visible in the EHR.

Run as `python bench/writeback.py` (nothing beyond 127.0.0.1). The sandbox EHR and `second-opinion serve` (its
in-process queue consumer, SQLite in a temporary folder, default settings) run as their own processes; this
script drafts and sends the referrals, then posts the consults one after another and polls the EHR's
DocumentReference?identifier= search until each appears. It prints the figures and, last, one JSON line:
  consults, p50_s, p95_s, max_s, mean_s, target_p95_s (2.0), met, profile, burst_* (the same, all posted at once).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir.resources.R4B.bundle import Bundle  # noqa: E402

from fixtures.consultant import consult_for_packet  # noqa: E402

TARGET_P95_S = 2.0
POLL_S = 0.01
FHIR_JSON = "application/fhir+json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_up(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def start(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "service.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def prepare(http: requests.Session, service: str, patients: list[str], count: int) -> list[tuple[str, str]]:
    """Draft and send `count` referrals (round-robin over the fixture patients); each with its consult body."""
    answers: dict[str, str] = {}

    def one(index: int) -> tuple[str, str]:
        patient = patients[index % len(patients)]
        created = http.post(f"{service}/api/referrals", json={"patient": patient, "question": "Second opinion?"},
                            timeout=120)
        created.raise_for_status()
        referral_id = created.json()["id"]
        http.post(f"{service}/api/referrals/{referral_id}/send", timeout=60).raise_for_status()
        if patient not in answers:
            packet = Bundle.model_validate(http.get(f"{service}/api/referrals/{referral_id}/packet", timeout=60).json())
            answers[patient] = consult_for_packet(packet, now=datetime.now(UTC)).model_dump_json(exclude_none=True)
        return referral_id, answers[patient]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(count)))


def write_back_latency(http: requests.Session, service: str, ehr: str, referral_id: str, body: str,
                       timeout_s: float = 60) -> float:
    """Seconds from the consult's 202 until the EHR answers a search for its DocumentReference with a match."""
    resp = http.post(f"{service}/api/referrals/{referral_id}/consult", data=body,
                     headers={"Content-Type": FHIR_JSON}, timeout=60)
    accepted = time.monotonic()
    if resp.status_code != 202:
        raise RuntimeError(f"consult for {referral_id} answered {resp.status_code}: {resp.text[:200]}")
    identifier = f"urn:ietf:rfc:3986|urn:uuid:{resp.json()['consult']['id']}"
    while time.monotonic() - accepted < timeout_s:
        found = http.get(f"{ehr}/DocumentReference", params={"identifier": identifier}, timeout=30).json()
        if found.get("entry"):
            return time.monotonic() - accepted
        time.sleep(POLL_S)
    raise RuntimeError(f"the DocumentReference for {referral_id} did not appear within {timeout_s} s")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def figures(latencies: list[float]) -> dict[str, float]:
    return {"p50_s": round(statistics.median(latencies), 3), "p95_s": round(percentile(latencies, 95), 3),
            "max_s": round(max(latencies), 3), "mean_s": round(statistics.fmean(latencies), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--consults", type=int, default=100)
    parser.add_argument("--burst", type=int, default=20, help="consults posted at once after the sequential run")
    parser.add_argument("--profile", default="document", choices=["document", "docref-only", "cerner"])
    args = parser.parse_args()
    patients = list(json.loads((ROOT / "fixtures" / "patients" / "questions.json").read_text("utf-8")))
    ehr_port, service_port = free_port(), free_port()
    ehr_root, service = f"http://127.0.0.1:{ehr_port}", f"http://127.0.0.1:{service_port}"
    sandbox_profile = "cerner" if args.profile == "cerner" else "generic"
    with tempfile.TemporaryDirectory(prefix="bench-writeback-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SECOND_OPINION_")}
        env.update(SECOND_OPINION_FHIR_BASE_URL=f"{ehr_root}/fhir", SECOND_OPINION_LOG_LEVEL="WARNING",
                   SECOND_OPINION_DATABASE_URL=f"sqlite:///{Path(tmp) / 'bench.sqlite3'}",
                   SECOND_OPINION_WRITEBACK_PROFILE=args.profile)
        sandbox = start(["sandbox", "--port", str(ehr_port), "--profile", sandbox_profile])
        server = None
        try:
            wait_up(f"{ehr_root}/_sandbox/health")
            server = start(["serve", "--port", str(service_port)], env)
            wait_up(f"{service}/health")
            http = requests.Session()
            http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))
            began = time.monotonic()
            prepared = prepare(http, service, patients, args.consults + args.burst)
            print(f"{len(prepared)} referrals drafted and sent in {time.monotonic() - began:.1f} s", flush=True)
            sequential = [write_back_latency(http, service, f"{ehr_root}/fhir", r, b)
                          for r, b in prepared[:args.consults]]
            with ThreadPoolExecutor(args.burst) as pool:
                burst = list(pool.map(lambda p: write_back_latency(http, service, f"{ehr_root}/fhir", *p),
                                      prepared[args.consults:]))
        finally:
            for process in (server, sandbox):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)
    result = {"consults": len(sequential), "profile": args.profile, **figures(sequential),
              "target_p95_s": TARGET_P95_S, "met": figures(sequential)["p95_s"] <= TARGET_P95_S,
              **{f"burst_{k}": v for k, v in figures(burst).items()}, "burst": len(burst)}
    print(f"write-back latency, consult accepted → DocumentReference visible ({args.profile} profile):")
    print(f"  one at a time ({result['consults']}): p50 {result['p50_s']} s, p95 {result['p95_s']} s, "
          f"max {result['max_s']} s (target p95 ≤ {TARGET_P95_S} s: {'met' if result['met'] else 'NOT met'})")
    print(f"  {result['burst']} posted at once: p50 {result['burst_p50_s']} s, p95 {result['burst_p95_s']} s, "
          f"max {result['burst_max_s']} s")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
