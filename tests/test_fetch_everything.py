"""Patient/$everything as a fast path: the pure selection, and the same packet over real HTTP (sandbox profiles)."""

import math
from collections.abc import Iterator

import pytest
import requests
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from fixtures.sandbox import SandboxServer
from mappers import systems
from service.ehr.client import Page
from service.ehr.everything import (advertises_everything, everything_types, included_keys, matches_search,
                                    select_like_plan, selectable)
from service.ehr.fetch import _incomplete
from service.ehr.plan import REPORT_TYPES, PlannedSearch
from tests.conftest import FIXTURE_PATIENTS, SYNTHEA_FILES

PATIENT = "p1"
PAGE_SIZE = 5
PLAN_TYPES = ("Condition", "Procedure", "DiagnosticReport", "MedicationStatement", "MedicationRequest",
              "AllergyIntolerance", "CarePlan", "DocumentReference", "Encounter")
DOC_TYPES = ",".join(f"{systems.LOINC}|{c}" for c in REPORT_TYPES)
PLAN = [
    PlannedSearch("Condition", {"patient": PATIENT}),
    PlannedSearch("DiagnosticReport", {"patient": PATIENT, "_include": "DiagnosticReport:result"}),
    PlannedSearch("MedicationRequest", {"patient": PATIENT, "intent": "order,plan",
                                        "_include": "MedicationRequest:medication"}),
    PlannedSearch("DocumentReference", {"patient": PATIENT, "type": DOC_TYPES}),
    PlannedSearch("Encounter", {"patient": PATIENT, "class": "IMP,ACUTE,NONAC"}),
]


# -- the selection (pure) ----------------------------------------------------------------------------------------

def res(resource_type: str, rid: str, **fields: object) -> dict:
    return {"resourceType": resource_type, "id": rid, **fields}


def ref(key: str) -> dict:
    return {"reference": key}


def me(patient: str = PATIENT) -> dict:
    return {"subject": ref(f"Patient/{patient}")}


def keys(found: list[dict]) -> list[str]:
    return [f"{d['resourceType']}/{d['id']}" for d in found]


def everything_answer() -> list[dict]:
    loinc = lambda code: {"coding": [{"system": systems.LOINC, "code": code}]}  # noqa: E731
    return [
        res("Patient", PATIENT, generalPractitioner=[ref("Practitioner/gp")]),
        res("Condition", "c1", **me(), asserter=ref("Practitioner/dr")),
        res("Condition", "c-other", **me("p2")),
        res("Condition", "c-asserted-only", asserter=ref(f"Patient/{PATIENT}")),  # in the compartment, not ours
        res("DiagnosticReport", "dr1", **me(), result=[ref("Observation/o1")], performer=[ref("Organization/lab")]),
        res("Observation", "o1", **me(), performer=[ref("Practitioner/tech")], hasMember=[ref("Observation/o3")]),
        res("Observation", "o2", **me()),  # a vital sign no report names: the plan never fetches it
        res("Observation", "o3", **me(), performer=[ref("Practitioner/never-followed")]),
        res("MedicationRequest", "mr-order", **me(), intent="order", medicationReference=ref("Medication/m1")),
        res("MedicationRequest", "mr-proposal", **me(), intent="proposal", medicationReference=ref("Medication/m2")),
        res("Medication", "m1"), res("Medication", "m2"),
        res("DocumentReference", "pathology", **me(), type=loinc("11526-1")),
        res("DocumentReference", "progress-note", **me(), type=loinc("11506-3")),
        res("Encounter", "stay", **me(), **{"class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                                      "code": "IMP"}}, serviceProvider=ref("Organization/hosp")),
        res("Encounter", "visit", **me(), **{"class": {"code": "AMB"}}, serviceProvider=ref("Organization/clinic")),
        res("Practitioner", "gp"), res("Practitioner", "dr"), res("Practitioner", "tech"),
        res("Practitioner", "never-followed"), res("Organization", "hosp"), res("Organization", "clinic"),
        res("Claim", "claim", patient=ref(f"Patient/{PATIENT}")),
    ]


def test_selection_keeps_what_each_search_and_its_includes_would_bring() -> None:
    selection = select_like_plan(PLAN, PATIENT, everything_answer())
    assert [keys(found) for found in selection.matched] == [
        ["Condition/c1"],
        ["DiagnosticReport/dr1", "Observation/o1"],
        ["MedicationRequest/mr-order", "Medication/m1"],
        ["DocumentReference/pathology"],
        ["Encounter/stay"],
    ]


def test_selection_resolves_one_level_of_references_like_the_id_batches() -> None:
    selection = select_like_plan(PLAN, PATIENT, everything_answer())
    # from the Patient, the matches and what the includes brought; not from what those references bring
    assert sorted(keys(selection.referenced)) == ["Observation/o3", "Organization/hosp", "Practitioner/dr",
                                                  "Practitioner/gp", "Practitioner/tech"]
    assert selection.unresolved == ["Organization/lab"]  # not in the answer: read by _id as usual


def test_selection_reads_absolute_references_of_the_server_only() -> None:
    base = "http://ehr.example/fhir"
    answer = [res("Condition", "c1", subject=ref(f"{base}/Patient/{PATIENT}"), asserter=ref(f"{base}/Practitioner/a")),
              res("Condition", "c2", subject=ref(f"http://elsewhere/fhir/Patient/{PATIENT}")),
              res("Practitioner", "a")]
    selection = select_like_plan(PLAN[:1], PATIENT, answer, base)
    assert keys(selection.matched[0]) == ["Condition/c1"] and keys(selection.referenced) == ["Practitioner/a"]


@pytest.mark.parametrize(("value", "element", "expected"), [
    ("order,plan", "plan", True),
    ("order,plan", "proposal", False),
    (f"{systems.LOINC}|18842-5",
     {"coding": [{"system": "x", "code": "1"}, {"system": systems.LOINC, "code": "18842-5"}]}, True),
    (f"{systems.LOINC}|18842-5", {"coding": [{"code": "18842-5"}]}, False),
    ("|IMP", {"code": "IMP"}, True),
    ("|IMP", {"system": "s", "code": "IMP"}, False),
    ("IMP,ACUTE", {"system": "s", "code": "ACUTE"}, True),
    ("IMP", None, False),
], ids=["code-in-list", "code-not-in-list", "system-and-code-any-coding", "system-required", "no-system-matches",
        "no-system-refuses-a-system", "code-any-system", "absent"])
def test_token_parameters_match_like_a_fhir_token_search(value: str, element: object, expected: bool) -> None:
    element_name = {"order,plan": "intent"}.get(value, "type" if "|18842" in value else "class")
    resource_type = {"intent": "MedicationRequest", "type": "DocumentReference", "class": "Encounter"}[element_name]
    data = res(resource_type, "x", **me(), **({element_name: element} if element is not None else {}))
    search = PlannedSearch(resource_type, {"patient": PATIENT, element_name: value})
    assert matches_search(search, data) is expected


def test_only_searches_whose_every_parameter_it_can_apply_are_selectable() -> None:
    assert all(selectable(s) for s in PLAN)
    assert not selectable(PlannedSearch("Condition", {"patient": PATIENT, "clinical-status": "active"}))
    assert not selectable(PlannedSearch("Condition", {"patient": PATIENT, "_include": "Condition:evidence"}))
    assert not selectable(PlannedSearch("Condition", {"subject": f"Patient/{PATIENT}"}))


def test_type_asks_for_the_patient_the_searched_and_the_referenced_types() -> None:
    types = everything_types(PLAN)
    assert types[:6] == ["Patient", "Condition", "DiagnosticReport", "MedicationRequest", "DocumentReference",
                         "Encounter"]
    assert {"Practitioner", "Organization", "Medication", "Observation"} <= set(types)


def test_procedure_performer_include_follows_its_actor() -> None:
    search = PlannedSearch("Procedure", {"patient": PATIENT, "_include": ["Procedure:performer"]})
    data = res("Procedure", "p", **me(), performer=[{"actor": ref("Practitioner/a")}, {"actor": ref("Patient/x")}])
    assert included_keys(search, data) == ["Practitioner/a"]


def test_advertised_on_patient_or_server_wide() -> None:
    def statement(rest: dict) -> CapabilityStatement:
        return CapabilityStatement.model_validate({"status": "active", "date": "2024-01-01", "kind": "instance",
                                                   "fhirVersion": "4.0.1", "format": ["json"],
                                                   "rest": [{"mode": "server", **rest}]})

    on_patient = {"resource": [{"type": "Patient", "operation": [
        {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]}]}
    assert advertises_everything(statement(on_patient))
    assert advertises_everything(statement({"operation": [
        {"name": "patient-everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}]}))
    assert not advertises_everything(statement({"resource": [{"type": "Patient"}]}))


@pytest.mark.parametrize(("next_url", "total", "matches", "complete"), [
    ("http://x/fhir/Patient/p/$everything?_getpagesoffset=5", 50, 5, True),  # paged
    (None, 52, 52, True),  # unpaged and whole, as sekmet-fhir 0.1.1 answers (it ignores _count and _type)
    (None, 300, 100, False),  # cut off at a page with nowhere to go on
    (None, None, 100, False),  # a full page, no total, no next link: cannot tell
    (None, None, 12, True),
], ids=["paged", "unpaged-whole", "cut-off", "full-page-no-total", "short-page-no-total"])
def test_a_first_page_without_a_next_link_must_hold_the_whole_answer(next_url: str | None, total: int | None,
                                                                     matches: int, complete: bool) -> None:
    page = Page([], [], next_url, total, matches)
    assert (_incomplete(page, 100) is None) is complete


# -- over HTTP against the sandbox --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hapi() -> Iterator[tuple[SandboxServer, str]]:
    """A hapi-profile sandbox with small pages (so $everything pages in parallel) and a corpus Synthea patient."""
    with SandboxServer(profile="hapi", page_size=PAGE_SIZE, max_page_size=PAGE_SIZE) as server:
        path = min(SYNTHEA_FILES, key=lambda p: p.stat().st_size)
        loaded = requests.post(server.base_url, data=path.read_bytes(), timeout=120,
                               headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"})
        assert loaded.status_code == 200, loaded.text[:300]
        synthea = next(e["response"]["location"].split("/")[1] for e in loaded.json()["entry"]
                       if e["response"]["location"].startswith("Patient/"))
        yield server, synthea


def fixture_patient_ids() -> list[str]:
    import json

    return sorted(next(e["resource"]["id"] for e in json.loads(p.read_text("utf-8"))["entry"]
                       if e["resource"]["resourceType"] == "Patient")
                  for p in FIXTURE_PATIENTS.glob("*.json") if p.name != "questions.json")


def referral_and_packet(client, patient: str) -> tuple[dict, dict]:  # noqa: ANN001
    resp = client.post("/api/referrals", json={"patient": patient, "question": "Second opinion?"})
    assert resp.status_code == 201, resp.get_data(as_text=True)[:500]
    referral = resp.get_json()
    return referral, client.get(f"/api/referrals/{referral['id']}/packet").get_json()


def entry_keys(packet: dict) -> set[tuple[str, str]]:
    """The EHR's resources in the packet (not what the service makes: the Composition and the ServiceRequest)."""
    return {(e["resource"]["resourceType"], e["resource"]["id"]) for e in packet["entry"]
            if e["resource"]["resourceType"] not in ("Composition", "ServiceRequest")}


def request_log(server: SandboxServer) -> list[dict]:
    return requests.get(f"{server.root_url}/_sandbox/requests", timeout=5).json()


def clear_log(server: SandboxServer) -> None:
    requests.delete(f"{server.root_url}/_sandbox/requests", timeout=5)


def test_hapi_fetches_by_everything_in_parallel_pages_and_searches_nothing_per_type(make_app, hapi) -> None:  # noqa: ANN001
    server, synthea = hapi
    client = make_app(FHIR_BASE_URL=server.base_url).test_client()
    clear_log(server)
    referral, _ = referral_and_packet(client, synthea)
    log = request_log(server)
    pages = [r for r in log if r["path"] == f"/fhir/Patient/{synthea}/$everything"]
    assert pages and all(r["status"] == 200 for r in pages)
    first = requests.get(f"{server.base_url}/Patient/{synthea}/$everything", params=pages[0]["query"], timeout=30,
                         headers={"Accept": "application/fhir+json"}).json()
    assert len(pages) == math.ceil(first["total"] / PAGE_SIZE) > 1
    assert len({tuple(sorted(r["query"].items())) for r in pages}) == len(pages)  # no page read twice
    assert set(pages[0]["query"]["_type"].split(",")) >= set(PLAN_TYPES)
    assert not [r for r in log if r["path"] in {f"/fhir/{t}" for t in PLAN_TYPES}]
    assert not any("everything" in w for w in referral["warnings"])


@pytest.mark.parametrize("patient", [*fixture_patient_ids(), "synthea"])
def test_everything_gives_the_same_packet_as_the_per_type_searches(make_app, hapi, patient: str) -> None:  # noqa: ANN001
    server, synthea = hapi
    patient = synthea if patient == "synthea" else patient
    fast_app = make_app(FHIR_BASE_URL=server.base_url, worker=False)
    plan_app = make_app(FHIR_BASE_URL=server.base_url, FHIR_EVERYTHING="never", worker=False)
    clear_log(server)
    fast, fast_packet = referral_and_packet(fast_app.test_client(), patient)
    assert any("$everything" in r["path"] for r in request_log(server))
    clear_log(server)
    plan, plan_packet = referral_and_packet(plan_app.test_client(), patient)
    assert not any("$everything" in r["path"] for r in request_log(server))
    assert entry_keys(fast_packet) == entry_keys(plan_packet)
    assert len(fast_packet["entry"]) == len(plan_packet["entry"])
    assert fast["packet"]["counts"] == plan["packet"]["counts"]
    assert sorted(fast["warnings"]) == sorted(plan["warnings"])


def test_a_server_that_advertises_it_but_refuses_it_gets_the_searches_and_a_warning(make_app, hapi) -> None:  # noqa: ANN001
    server, _ = hapi
    patient = "so-prostate-patient"
    client = make_app(FHIR_BASE_URL=server.base_url, worker=False).test_client()
    clean, clean_packet = referral_and_packet(client, patient)
    fault = {"status": 400, "count": 1, "methods": ["GET"], "path_contains": "$everything"}
    assert requests.post(f"{server.root_url}/_sandbox/faults", json=fault, timeout=5).status_code == 201
    clear_log(server)
    try:
        refused, refused_packet = referral_and_packet(client, patient)
    finally:
        requests.delete(f"{server.root_url}/_sandbox/faults", timeout=5)
    log = request_log(server)
    assert [r["status"] for r in log if "$everything" in r["path"]] == [400]
    assert {f"/fhir/{t}" for t in PLAN_TYPES} <= {r["path"] for r in log}
    assert "the EHR refused Patient/$everything (400); the record was fetched by per-type searches instead" \
        in refused["warnings"]
    assert entry_keys(refused_packet) == entry_keys(clean_packet) and refused["packet"]["counts"] == clean["packet"]["counts"]


def test_the_generic_profile_does_not_advertise_it_and_nothing_changes(client, ehr) -> None:  # noqa: ANN001
    clear_log(ehr)
    referral, _ = referral_and_packet(client, "so-prostate-patient")
    paths = {r["path"] for r in request_log(ehr)}
    assert not any("$everything" in p for p in paths)
    assert {f"/fhir/{t}" for t in PLAN_TYPES} <= paths
    assert not any("everything" in w for w in referral["warnings"])


def test_an_unknown_fhir_everything_setting_stops_startup(tmp_path) -> None:  # noqa: ANN001
    from service import create_app
    from service.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="FHIR_EVERYTHING must be one of auto, never"):
        create_app({"FHIR_EVERYTHING": "sometimes", "FHIR_BASE_URL": "http://127.0.0.1:1/fhir",
                    "DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"})


@pytest.mark.parametrize("everything", ["auto", "never"])
@pytest.mark.parametrize("patient", [*fixture_patient_ids(), "synthea"])
def test_rows_worked_out_during_the_fetch_give_the_same_packet(hapi, patient: str, everything: str) -> None:  # noqa: ANN001
    from dataclasses import replace
    from datetime import UTC, datetime

    from mappers.ids import sequential_ids
    from mappers.packet import ReferralRequest, build_referral_bundle
    from service.ehr.client import FhirClient, build_session
    from service.ehr.fetch import fetch_patient

    server, synthea = hapi
    fetched = fetch_patient(FhirClient(server.base_url, build_session(), timeout=30),
                            synthea if patient == "synthea" else patient, everything=everything)
    kinds = {m.get_resource_type() for m, _ in fetched.rows.values()}
    assert kinds and not kinds & {"DiagnosticReport", "DocumentReference"}
    assert all(key == id(model) for key, (model, _) in fetched.rows.items())
    with_rows = [m for m in fetched.record.resources if id(m) in fetched.rows]

    def document(exclude: list[str], rows: dict | None) -> dict:
        request = ReferralRequest("r1", "Second opinion?", exclude=exclude)
        return build_referral_bundle(fetched.record, request, now=datetime(2026, 1, 2, tzinfo=UTC),
                                     new_id=sequential_ids(), sources=fetched.sources,
                                     references=fetched.references, rows=rows).document

    for exclude in ([], [f"{with_rows[0].get_resource_type()}/{with_rows[0].id}"]):
        assert document(exclude, fetched.rows) == document(exclude, None)
    # and the packet does take them: a row changed here shows in its narrative
    listed = [m for m in with_rows if m.get_resource_type() in ("Condition", "Procedure")]  # a section's own rows
    model, row = fetched.rows[id(listed[-1])]
    marked = {**fetched.rows, id(model): (model, replace(row, what="row worked out during the fetch"))}
    sections = document([], marked)["entry"][0]["resource"]["section"]
    assert any("row worked out during the fetch" in s["text"]["div"] for s in sections)
