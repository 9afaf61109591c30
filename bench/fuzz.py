"""Fuzz the referral and consult endpoints at scale: random and mutated inputs through the Flask test client.

Run as `python bench/fuzz.py --n 10000 [--seed 1]` (nothing beyond 127.0.0.1: the sandbox EHR runs in-process).
Inputs: random bytes and JSON; the corpus (../shared/corpus: every C-CDA, the FHIR JSON and XML examples) and the
fixture consultant's valid answers (FHIR JSON, FHIR XML, C-CDA) and the hostile XML of fixtures/consults, each
mutated byte-wise (delete, insert, replace, duplicate, truncate), element-wise (XML: delete, copy, move, rename,
re-value) or field-wise (JSON: a value replaced by junk), under a matching or a wrong Content-Type; and referral
requests with fuzzed fields. 85% go to POST /api/referrals/<id>/consult (a sent referral; a fresh one after each
accepted consult), 15% to POST /api/referrals.

Checks per request: no 5xx; a 4xx is an OperationOutcome; a rejected consult stores nothing. Progress goes to
stderr; the last line is JSON: {"requests", "5xx", "tracebacks", "half_stored", "not_outcome", "seconds",
"by_status", "accepted"} (targets: 5xx 0, tracebacks 0, half_stored 0, not_outcome 0).
"""

import argparse
import json
import logging
import random
import sys
import tempfile
import time
import traceback
from collections import Counter
from copy import deepcopy
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir.resources.R4B.bundle import Bundle  # noqa: E402
from lxml import etree  # noqa: E402

from fixtures.consultant import ccda_consult_for_packet, consult_for_packet, consult_xml_for_packet  # noqa: E402
from fixtures.sandbox import SandboxServer  # noqa: E402
from mappers.fhirxml import XML_PARSER  # noqa: E402
from service import create_app  # noqa: E402
from service.store.repository import get_repository  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
HOSTILE = ROOT / "fixtures" / "consults"
FHIR_JSON, FHIR_XML, CDA_XML = "application/fhir+json", "application/fhir+xml", "application/cda+xml"
CONTENT_TYPES = [FHIR_JSON, "application/json", FHIR_XML, "application/xml", "text/xml", CDA_XML, "text/plain", "",
                 "application/fhir+json; charset=utf-16", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"]
JUNK_BYTES = [b"<", b">", b"&", b'"', b"'", b"{", b"}", b"[", b"]", b",", b":", b"\x00", b"\xff\xfe", b"\xc3\x28",
              b"<!DOCTYPE x>", b"<!ENTITY e 'x'>", b"&e;", b"null", b"true", b"-0", b"1e999", b"</section>",
              b"<entry>", b"\"resourceType\":", b"99999999999999999999", b"<![CDATA[", b"]]>", b"<?pi x?>"]
JUNK_VALUES: list[object] = [None, True, 0, -1, 1e308, "", " ", "x", "urn:uuid:", "#", "Condition/", "2026-13-45",
                             "\u21b3", "<div>", [], {}, [None], {"resourceType": "Patient"}, {"resourceType": None},
                             {"reference": "urn:uuid:nowhere"}, "a" * 5000]
JUNK_ATTRIBUTES = ["value", "code", "codeSystem", "root", "extension", "nullFlavor", "negationInd", "moodCode",
                   "classCode", "typeCode", "url", "id", "{http://www.w3.org/2001/XMLSchema-instance}type"]
JUNK_TEXT = ["", "x", "-1", "1e400", "2026-13-45", "20261345", "true", "urn:uuid:x", "NI", "\u21b3"]


class TracebackCounter(logging.Handler):
    """Counts log records that carry a traceback (the error handler logs one for every unexpected 500)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or "Traceback" in record.getMessage():
            self.count += 1
            if record.exc_info and len(self.samples) < 5:  # where it happened: the innermost frames
                self.samples.append("".join(traceback.format_exception(*record.exc_info)[-4:]))


def corpus_seeds() -> list[tuple[str, bytes]]:
    """(kind, bytes) for every corpus C-CDA and FHIR example small enough to fuzz quickly (≤ 1 MB)."""
    seeds = [("xml", p.read_bytes()) for p in sorted((CORPUS / "ccda").glob("*.xml"))]
    for path in sorted((CORPUS / "fhir-examples").rglob("*")):
        if path.is_file() and path.stat().st_size <= 1_000_000 and path.suffix in (".json", ".xml"):
            seeds.append(("json" if path.suffix == ".json" else "xml", path.read_bytes()))
    for path in sorted(HOSTILE.glob("*.xml")):
        seeds.append(("xml", path.read_bytes().replace(b"@FILE_URL@", b"file:///nonexistent/secret").replace(
            b"@DTD_URL@", b"http://127.0.0.1:9/consult.dtd")))
    return seeds


class Fuzzer:
    """One app against the sandbox, a sent referral to answer, and the tallies."""

    def __init__(self, ehr: SandboxServer, database: Path, rng: random.Random) -> None:
        self.app = create_app({"TESTING": False, "FHIR_BASE_URL": ehr.base_url, "WRITEBACK": "off",
                               "DATABASE_URL": f"sqlite:///{database}", "LOG_LEVEL": "ERROR"})
        self.client = self.app.test_client()
        self.rng = rng
        self.corpus = corpus_seeds()
        self.by_status: Counter[int] = Counter()
        self.half_stored = self.not_outcome = self.accepted = 0
        self.failures: list[str] = []
        self.renew()

    def renew(self) -> None:
        """A fresh sent referral and the fixture consultant's valid answers to it."""
        patient = self.rng.choice(["so-ms-patient", "so-prostate-patient", "so-breast-patient", "so-cad-patient"])
        created = self.client.post("/api/referrals", json={"patient": patient, "question": "Second opinion?"})
        self.referral_id = created.get_json()["id"]
        self.client.post(f"/api/referrals/{self.referral_id}/send")
        packet = Bundle.model_validate(self.client.get(f"/api/referrals/{self.referral_id}/packet").get_json())
        now = datetime.now(UTC)
        self.valid = [("json", consult_for_packet(packet, now=now, refute=True).model_dump_json().encode()),
                      ("xml", consult_xml_for_packet(packet, now=now)),
                      ("xml", ccda_consult_for_packet(packet, now=now))]

    # --- inputs ---------------------------------------------------------------------------------------------

    def consult_input(self) -> tuple[bytes, str]:
        """A body and Content-Type for the consult endpoint."""
        roll = self.rng.random()
        if roll < 0.10:
            return self.rng.randbytes(self.rng.randint(0, 2000)), self.rng.choice(CONTENT_TYPES)
        kind, seed = self.rng.choice(self.valid) if roll < 0.55 else self.rng.choice(self.corpus)
        mutate = self.rng.choice([self.bytewise, self.structural, self.structural, self.truncate])
        body = mutate(kind, seed)
        natural = {"json": [FHIR_JSON, "application/json"], "xml": [FHIR_XML, CDA_XML, "application/xml", "text/xml"]}
        content_type = self.rng.choice(natural[kind]) if self.rng.random() < 0.8 else self.rng.choice(CONTENT_TYPES)
        return body, content_type

    def bytewise(self, _kind: str, seed: bytes) -> bytes:
        data = bytearray(seed)
        for _ in range(self.rng.randint(1, 4)):
            start = self.rng.randrange(max(len(data), 1))
            end = min(len(data), start + self.rng.randint(1, 64))
            op = self.rng.choice(["delete", "insert", "replace", "duplicate"])
            if op == "delete":
                del data[start:end]
            elif op == "insert":
                data[start:start] = self.rng.choice(JUNK_BYTES)
            elif op == "replace":
                data[start:end] = self.rng.choice(JUNK_BYTES)
            else:
                data[start:start] = data[start:end]
        return bytes(data)

    def truncate(self, _kind: str, seed: bytes) -> bytes:
        return seed[: self.rng.randrange(max(len(seed), 1))]

    def structural(self, kind: str, seed: bytes) -> bytes:
        return self.json_fields(seed) if kind == "json" else self.xml_elements(seed)

    def json_fields(self, seed: bytes) -> bytes:
        """Replace, delete or duplicate a few values at random paths of a JSON document."""
        try:
            document = json.loads(seed)
        except ValueError:
            return self.bytewise("json", seed)
        for _ in range(self.rng.randint(1, 3)):
            paths = list(_paths(document))
            if not paths:
                break
            path = self.rng.choice(paths)
            holder = document
            for key in path[:-1]:
                holder = holder[key]
            op = self.rng.random()
            if op < 0.6:
                holder[path[-1]] = deepcopy(self.rng.choice(JUNK_VALUES))
            elif op < 0.8 and isinstance(holder, dict):
                del holder[path[-1]]
            elif isinstance(holder, list):
                holder.append(deepcopy(holder[path[-1]]))
        return json.dumps(document).encode()

    def xml_elements(self, seed: bytes) -> bytes:
        """Delete, copy, move, rename or re-value a few elements of an XML document (it stays well-formed)."""
        try:
            root = etree.fromstring(seed, XML_PARSER)
        except etree.XMLSyntaxError:
            return self.bytewise("xml", seed)
        for _ in range(self.rng.randint(1, 6)):
            elements = [e for e in root.iter() if isinstance(e.tag, str)]
            element = self.rng.choice(elements)
            parent = element.getparent()
            op = self.rng.choice(["delete", "copy", "move", "rename", "attribute", "text"])
            if op == "delete" and parent is not None:
                parent.remove(element)
            elif op == "copy" and parent is not None:
                parent.insert(parent.index(element), deepcopy(element))
            elif op == "move" and parent is not None:
                destination = self.rng.choice(elements)
                if destination is not element and element not in destination.iterancestors():
                    destination.append(element)
            elif op == "rename":
                element.tag = self.rng.choice(elements).tag
            elif op == "attribute":
                element.set(self.rng.choice(JUNK_ATTRIBUTES), self.rng.choice(JUNK_TEXT))
            else:
                element.text = self.rng.choice(JUNK_TEXT)
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    def referral_input(self) -> tuple[bytes, str]:
        """A body for POST /api/referrals: fuzzed fields (sometimes a real patient), or random bytes/JSON."""
        if self.rng.random() < 0.2:
            return self.rng.randbytes(self.rng.randint(0, 300)), self.rng.choice(["application/json", "text/plain"])
        body: dict[str, object] = {}
        fields = {"patient": ["so-ms-patient", "no-such-patient", "", "a b", "x" * 65, "../etc", None, 7],
                  "question": ["Second opinion?", "", " ", "q" * 4001, None, ["q"]],
                  "patient_questions": [[], ["ok?"], [""], "no", [None], ["q"] * 21],
                  "exclude": [[], ["Condition/so-ms-cond-paresthesia"], ["nope"], "Condition/x"],
                  "since": ["2020-01-01", "2020-13-01", "yesterday", 2020, None], "extra": [1]}
        for key, values in fields.items():
            if self.rng.random() < (0.85 if key in ("patient", "question") else 0.3):
                body[key] = self.rng.choice(values)
        if body.get("patient") == "so-ms-patient" and body.get("question") == "Second opinion?" and self.rng.random() < 0.7:
            body["patient"] = "no-such-patient"  # keep accepted referrals (each a full fetch) rare
        return json.dumps(body).encode(), self.rng.choice(["application/json", FHIR_JSON])

    # --- requests -------------------------------------------------------------------------------------------

    def one(self) -> None:
        if self.rng.random() < 0.85:
            body, content_type = self.consult_input()
            resp = self.client.post(f"/api/referrals/{self.referral_id}/consult", data=body,
                                    headers={"Content-Type": content_type})
            self.tally(resp, body, content_type)
            if resp.status_code == 202:
                self.accepted += 1
                self.renew()
            elif get_repository(self.app).find_consult(self.referral_id) is not None:
                self.half_stored += 1
                self.renew()
        else:
            body, content_type = self.referral_input()
            self.tally(self.client.post("/api/referrals", data=body, headers={"Content-Type": content_type}),
                       body, content_type)

    def tally(self, resp, body: bytes, content_type: str) -> None:  # noqa: ANN001
        self.by_status[resp.status_code] += 1
        if resp.status_code >= 500 and len(self.failures) < 5:
            self.failures.append(f"{resp.status_code} for {content_type!r} {body[:120]!r}")
        if resp.status_code >= 400:
            try:
                outcome = json.loads(resp.get_data())
                ok = outcome.get("resourceType") == "OperationOutcome" and resp.headers["Content-Type"].startswith(
                    FHIR_JSON)
            except ValueError:
                ok = False
            self.not_outcome += 0 if ok else 1


def _paths(value: object, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (the root excluded)."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += [(*path, key), *_paths(item, (*path, key))]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += [(*path, index), *_paths(item, (*path, index))]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="requests to send")
    parser.add_argument("--seed", type=int, default=1, help="random seed (the run is reproducible)")
    args = parser.parse_args()
    counter = TracebackCounter()
    logging.getLogger().addHandler(counter)
    rng = random.Random(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp, SandboxServer() as ehr:
        fuzzer = Fuzzer(ehr, Path(tmp) / "fuzz.sqlite3", rng)
        for index in range(args.n):
            fuzzer.one()
            if (index + 1) % 1000 == 0:
                print(f"{index + 1} requests, {sum(v for k, v in fuzzer.by_status.items() if k >= 500)} 5xx, "
                      f"{counter.count} tracebacks, {time.monotonic() - started:.0f} s", file=sys.stderr)
        get_repository(fuzzer.app).engine.dispose()
    for failure in fuzzer.failures:
        print(f"5xx: {failure}", file=sys.stderr)
    for sample in counter.samples:
        print(f"traceback:\n{sample}", file=sys.stderr)
    print(json.dumps({"requests": args.n, "5xx": sum(v for k, v in fuzzer.by_status.items() if k >= 500),
                      "tracebacks": counter.count, "half_stored": fuzzer.half_stored,
                      "not_outcome": fuzzer.not_outcome, "seconds": round(time.monotonic() - started, 1),
                      "by_status": dict(sorted(fuzzer.by_status.items())), "accepted": fuzzer.accepted}))


if __name__ == "__main__":
    main()
