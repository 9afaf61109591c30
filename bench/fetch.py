"""Benchmark: how fast the service pulls a big record into a packet, against the physical floor.

Run as `python bench/fetch.py` (no network beyond 127.0.0.1). Against the sandbox with 50 ms latency and
20-entry pages it loads the largest corpus Synthea patient and prints, last, one JSON line:
  wall_s        POST /api/referrals through the running service, request to packet stored (median of --runs)
  floor_s       (1 + ceil(P / C)) * latency: P = pages the one-search-per-type plan needs, C = 4, +1 for /metadata
  sequential_s  the same searches one page at a time, as a simple client does
  requests, resources, model_resources_per_s, and peak RSS for a generated 20,000-resource patient.
  everything_wall_s  wall_s against a hapi-profile sandbox (same latency and page size), which advertises
                     Patient/$everything: the fetch takes it (paged) instead of the per-type searches
  service_cpu_s  CPU time the service process spent per referral (median), to read wall_s against
With --busy-cores N, N other processes spin on the CPU while wall_s and sequential_s are measured (a busy host, or a
slow minute of a shared VM: the service and the sandbox then share the cores that are left); busy_cores is printed.
"""

import argparse
import json
import math
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir.resources.R4B import get_fhir_model_class  # noqa: E402

from service import create_app  # noqa: E402
from service.ehr.client import FhirClient, build_session, forget_capabilities  # noqa: E402
from service.ehr.fetch import MAX_CONCURRENCY  # noqa: E402
from service.ehr.plan import plan_searches  # noqa: E402
from service.serving import ServiceServer, settle_process  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "fhir-patients"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


class SandboxProcess:
    """`second-opinion sandbox` in its own process, so its work does not share the service's GIL or memory."""

    def __init__(self, *options: str) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.root_url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root_url}/fhir"
        self.proc = subprocess.Popen([sys.executable, "-m", "service.cli", "sandbox", "--empty", "--port", str(port),
                                      *options], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self) -> "SandboxProcess":
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.root_url}/_sandbox/health", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                time.sleep(0.2)
        raise RuntimeError("the sandbox did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class BusyCores:
    """n processes that spin on the CPU until the block ends (nothing else: no I/O, no memory to speak of)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "BusyCores":
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(timeout=30)


def largest_patient() -> Path:
    return max(CORPUS.glob("*.json"), key=lambda p: len(json.loads(p.read_bytes())["entry"]))


def load(ehr: SandboxProcess, bundle: bytes) -> str:
    resp = requests.post(ehr.base_url, data=bundle, headers=FHIR_JSON, timeout=600)
    resp.raise_for_status()
    location = next(e["response"]["location"] for e in resp.json()["entry"]
                    if e["response"]["location"].startswith("Patient/"))
    return location.split("/")[1]


def plan_pages(ehr: SandboxProcess, patient_id: str, page_size: int) -> int:
    """P: the fewest pages the one-search-per-type plan needs (an empty result is still one page)."""
    client = FhirClient(ehr.base_url, build_session())
    pages = 0
    for search in plan_searches(patient_id, client.capabilities()):
        params = {k: v for k, v in search.params.items() if k != "_include"}
        total = requests.get(f"{ehr.base_url}/{search.resource_type}", params={**params, "_summary": "count"},
                             headers=FHIR_JSON, timeout=60).json()["total"]
        pages += max(1, math.ceil(total / page_size))
    return pages


def sequential_seconds(ehr: SandboxProcess, patient_id: str) -> float:
    """The same searches (and /metadata and the Patient read) one page at a time."""
    forget_capabilities()
    client = FhirClient(ehr.base_url, build_session())
    start = time.perf_counter()
    searches = plan_searches(patient_id, client.capabilities())
    client.read("Patient", patient_id)
    for search in searches:
        client.search_all(search.resource_type, search.params)
    return time.perf_counter() - start


def wall_seconds(ehr: SandboxProcess, patient_id: str, tmp: Path, runs: int = 1) -> tuple[float, int, dict, dict]:
    """POST /api/referrals through the running service (median of runs, after one warm-up referral).

    Each run starts with its capability cache expired, so it reads /metadata as the floor assumes; the warm-up keeps
    one-off costs of a new process (loading model classes, validating the server's CapabilityStatement) out of the
    figure. Also returns the spread of the runs and the CPU time this process (the service) spent per referral: on
    a machine whose speed varies, and with every resource validated under one GIL, that says how much of the wall
    time is work rather than waiting.
    """
    app = create_app({"FHIR_BASE_URL": ehr.base_url, "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
                      "LOG_LEVEL": "WARNING"})
    settle_process()  # as `serve`, the worker and wsgi.py do once the app is made
    walls, counts, cpus = [], [], []
    with ServiceServer(app) as service:
        for _ in range(runs + 1):
            forget_capabilities()
            requests.delete(f"{ehr.root_url}/_sandbox/requests", timeout=5)
            cpu = time.process_time()
            start = time.perf_counter()
            resp = requests.post(f"{service.url}/api/referrals", json={"patient": patient_id, "question": "Benchmark"},
                                 timeout=600)
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - cpu)
            resp.raise_for_status()
            counts.append(len(requests.get(f"{ehr.root_url}/_sandbox/requests", timeout=5).json()))
        packet = requests.get(f"{service.url}/api/referrals/{resp.json()['id']}/packet", timeout=60).json()
    measured, cpu = (walls[1:], cpus[1:]) if runs else (walls, cpus)
    spread = {"min": min(measured), "max": max(measured), "cpu": statistics.median(cpu)}
    return statistics.median(measured), counts[-1], packet, spread


def model_rate(packet: dict) -> float:
    """R4B models validated per second, over the packet's resources."""
    resources = [e["resource"] for e in packet["entry"]]
    start = time.perf_counter()
    for data in resources:
        get_fhir_model_class(data["resourceType"]).model_validate(data)
    return len(resources) / (time.perf_counter() - start)


def generated_patient(n: int) -> bytes:
    """A synthetic transaction of about n resources: conditions, procedures, reports with results, medications."""
    patient = "urn:uuid:00000000-0000-4000-8000-000000000000"
    entries = [{"fullUrl": patient, "resource": {"resourceType": "Patient", "gender": "unknown"},
                "request": {"method": "POST", "url": "Patient"}}]
    subject = {"reference": patient}
    i = 0

    def add(resource: dict) -> str:
        nonlocal i
        i += 1
        url = f"urn:uuid:00000000-0000-4000-8000-{i:012d}"
        entries.append({"fullUrl": url, "resource": resource,
                        "request": {"method": "POST", "url": resource["resourceType"]}})
        return url

    lab = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
    while len(entries) < n:
        add({"resourceType": "Condition", "subject": subject, "code": {"text": f"Condition {i}"},
             "recordedDate": "2024-01-01"})
        add({"resourceType": "Procedure", "status": "completed", "subject": subject, "code": {"text": f"Procedure {i}"},
             "performedDateTime": "2024-02-01"})
        results = [add({"resourceType": "Observation", "status": "final", "category": [lab], "subject": subject,
                        "code": {"text": f"Analyte {k}"}, "effectiveDateTime": "2024-03-01",
                        "valueQuantity": {"value": 4.2, "unit": "mmol/L", "system": "http://unitsofmeasure.org",
                                          "code": "mmol/L"}}) for k in range(4)]
        add({"resourceType": "DiagnosticReport", "status": "final", "subject": subject, "code": {"text": "Panel"},
             "effectiveDateTime": "2024-03-01", "result": [{"reference": r} for r in results]})
        add({"resourceType": "MedicationRequest", "status": "active", "intent": "order", "subject": subject,
             "medicationCodeableConcept": {"text": f"Drug {i}"}, "dosageInstruction": [{"text": "1 tablet daily"}]})
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}).encode()


def rss_child(base_url: str, patient_id: str) -> None:
    """In a child process: the service builds a packet for the generated patient; print its peak RSS (MB)."""
    with tempfile.TemporaryDirectory() as tmp:
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ehr = argparse.Namespace(base_url=base_url, root_url=base_url.rsplit("/fhir", 1)[0])
        wall, _, packet, _ = wall_seconds(ehr, patient_id, Path(tmp), runs=0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"resources": len(packet["entry"]), "peak_rss_mb": round(peak, 1),
                      "rss_before_mb": round(baseline, 1), "wall_s": round(wall, 2)}))


def rss_run(resources: int) -> dict:
    """Load a generated patient into a sandbox process and measure the service in a child process."""
    with SandboxProcess("--page-size", "1000") as ehr:
        patient_id = load(ehr, generated_patient(resources))
        child = subprocess.run([sys.executable, __file__, "--rss-child", ehr.base_url, patient_id],
                               capture_output=True, text=True, check=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--page-size", type=int, default=20)
    parser.add_argument("--rss-resources", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=7, help="measured referrals (after a warm-up); the median counts")
    parser.add_argument("--busy-cores", type=int, default=0,
                        help="processes spinning on the CPU while wall_s and sequential_s are measured")
    parser.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    path = largest_patient()
    with SandboxProcess("--latency-ms", str(args.latency_ms), "--page-size", str(args.page_size),
                        "--max-page-size", str(args.page_size)) as ehr, tempfile.TemporaryDirectory() as tmp:
        patient_id = load(ehr, path.read_bytes())
        pages = plan_pages(ehr, patient_id, args.page_size)
        floor = (1 + math.ceil(pages / MAX_CONCURRENCY)) * args.latency_ms / 1000
        with BusyCores(args.busy_cores):
            wall, count, packet, spread = wall_seconds(ehr, patient_id, Path(tmp), runs=args.runs)
            sequential = sequential_seconds(ehr, patient_id)
    with SandboxProcess("--profile", "hapi", "--latency-ms", str(args.latency_ms), "--page-size", str(args.page_size),
                        "--max-page-size", str(args.page_size)) as hapi, tempfile.TemporaryDirectory() as tmp:
        everything_wall, everything_count, everything_packet, _ = wall_seconds(hapi, load(hapi, path.read_bytes()),
                                                                               Path(tmp), runs=3)
    rate = model_rate(packet)
    print(f"patient: Patient/{patient_id}, the corpus's largest ({len(packet['entry'])} packet entries), "
          f"plan pages P={pages}, C={MAX_CONCURRENCY}, latency {args.latency_ms} ms, page size {args.page_size}")
    print(f"wall {wall:.3f} s = {wall / floor:.2f} x floor {floor:.3f} s (median of {args.runs}; "
          f"{spread['min']:.3f}-{spread['max']:.3f} s); sequential {sequential:.3f} s = {sequential / wall:.2f} x "
          f"wall; {count} requests; service CPU {spread['cpu']:.3f} s per referral"
          + (f"; {args.busy_cores} other process(es) spinning on the CPU meanwhile" if args.busy_cores else ""))
    print(f"by Patient/$everything (hapi profile): wall {everything_wall:.3f} s, {everything_count} requests, "
          f"{len(everything_packet['entry'])} packet entries")
    rss = rss_run(args.rss_resources)
    print(f"generated patient: {rss['resources']} resources in the packet, peak RSS {rss['peak_rss_mb']} MB "
          f"(before the fetch {rss['rss_before_mb']} MB), wall {rss['wall_s']} s")
    print(json.dumps({"wall_s": round(wall, 3), "floor_s": round(floor, 3), "sequential_s": round(sequential, 3),
                      "requests": count, "resources": len(packet["entry"]),
                      "model_resources_per_s": round(rate), "rss_resources": rss["resources"],
                      "peak_rss_mb": rss["peak_rss_mb"], "everything_wall_s": round(everything_wall, 3),
                      "service_cpu_s": round(spread["cpu"], 3), "busy_cores": args.busy_cores}))


if __name__ == "__main__":
    main()
