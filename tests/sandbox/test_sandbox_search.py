"""Search: by patient with paging, includes, token and date filters, and refusal of what is not supported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from fixtures.sandbox import SandboxServer

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
TERMINOLOGY = "http://terminology.hl7.org/CodeSystem"
US_CORE = "http://hl7.org/fhir/us/core/CodeSystem"
CLINICAL = f"{TERMINOLOGY}/condition-clinical"
CONDITION_CATEGORY = f"{TERMINOLOGY}/condition-category"
OBSERVATION_CATEGORY = f"{TERMINOLOGY}/observation-category"
MRN = "urn:oid:2.16.840.1.113883.19.5"
ENCOUNTER_CLASS = {"system": f"{TERMINOLOGY}/v3-ActCode", "code": "AMB"}
DOCUMENT_ID = "urn:uuid:00000000-0000-4000-8000-00000000d0c1"
ALICE_OBSERVATIONS = 23
PAGE = 5


def urn(number: int) -> str:
    """A fixed urn:uuid for entry ``number``."""
    return f"urn:uuid:00000000-0000-4000-8000-{number:012d}"


ALICE, BOB, MEDICATION = urn(1), urn(2), urn(3)


def coded(system: str, code: str) -> dict[str, Any]:
    """A CodeableConcept with one coding."""
    return {"coding": [{"system": system, "code": code}]}


def resource(resource_type: str, subject: str | None = None, **elements: Any) -> dict[str, Any]:
    """A resource of ``resource_type`` about ``subject`` (a urn:uuid of the transaction) with ``elements``."""
    about = {"subject": {"reference": subject}} if subject else {}
    return {"resourceType": resource_type, **about, **elements}


def entry(item: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    """A transaction entry that POSTs ``item``."""
    posted: dict[str, Any] = {"resource": item, "request": {"method": "POST", "url": item["resourceType"]}}
    return {"fullUrl": full_url, **posted} if full_url else posted


def patient(family: str, mrn: str) -> dict[str, Any]:
    """A synthetic patient."""
    return resource("Patient", identifier=[{"system": MRN, "value": mrn}], birthDate="1970-01-01",
                    name=[{"family": family, "given": ["Test"]}])


def condition(subject: str, status: str, category: str, **date: str) -> dict[str, Any]:
    """A Condition with a clinical status, a category and a date element."""
    return resource("Condition", subject, clinicalStatus=coded(CLINICAL, status), code=coded(SNOMED, "44054006"),
                    category=[coded(CONDITION_CATEGORY, category)], **date)


def observation(subject: str, index: int) -> dict[str, Any]:
    """A vital-sign (even index) or laboratory (odd) Observation, dated one per month from 2022-01."""
    vital = index % 2 == 0
    return resource("Observation", subject, status="amended" if index % 5 == 0 else "final",
                    category=[coded(OBSERVATION_CATEGORY, "vital-signs" if vital else "laboratory")],
                    code=coded(LOINC, "8867-4" if vital else "2345-7"),
                    effectiveDateTime=f"{2022 + index // 12}-{index % 12 + 1:02d}-15T09:30:00Z",
                    valueQuantity={"value": 72.50, "unit": "/min"})


def alice_records(observations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One or two of each resource type the service pulls, about alice."""
    results = [{"reference": observations[1]["fullUrl"]}, {"reference": observations[3]["fullUrl"]}]
    return [
        resource("DiagnosticReport", ALICE, status="final", code=coded(LOINC, "58410-2"), result=results,
                 category=[coded(f"{TERMINOLOGY}/v2-0074", "LAB")], effectiveDateTime="2022-02-15"),
        resource("DiagnosticReport", ALICE, status="final", code=coded(LOINC, "24323-8"), result=results[1:],
                 effectivePeriod={"start": "2022-04-01", "end": "2022-04-20"}),
        resource("MedicationRequest", ALICE, status="active", intent="order", authoredOn="2024-01-10",
                 medicationReference={"reference": MEDICATION}),
        resource("MedicationRequest", ALICE, status="stopped", intent="plan", authoredOn="2021-06-01",
                 medicationCodeableConcept=coded(RXNORM, "314076")),
        resource("MedicationStatement", ALICE, status="active", medicationCodeableConcept=coded(RXNORM, "314076"),
                 effectiveDateTime="2023-03-01"),
        resource("AllergyIntolerance", patient={"reference": ALICE}, code=coded(SNOMED, "91936005"),
                 clinicalStatus=coded(f"{TERMINOLOGY}/allergyintolerance-clinical", "active"), category=["medication"]),
        resource("CarePlan", ALICE, status="active", intent="plan", period={"start": "2024-01-01"},
                 category=[coded(f"{US_CORE}/careplan-category", "assess-plan")]),
        resource("Encounter", ALICE, status="finished", **{"class": ENCOUNTER_CLASS},
                 period={"start": "2024-05-01T08:00:00Z", "end": "2024-05-02T17:00:00Z"}),
        resource("Procedure", ALICE, status="completed", code=coded(SNOMED, "80146002"),
                 performedPeriod={"start": "2020-07-01T10:00:00+02:00", "end": "2020-07-01T12:00:00+02:00"}),
        resource("DocumentReference", ALICE, status="current", type=coded(LOINC, "18842-5"),
                 date="2024-06-01T12:00:00Z", identifier=[{"system": "urn:ietf:rfc:3986", "value": DOCUMENT_ID}],
                 category=[coded(f"{US_CORE}/us-core-documentreference-category", "clinical-note")],
                 content=[{"attachment": {"contentType": "text/plain", "data": "c3ludGhldGlj"}}]),
        resource("Claim", patient={"reference": ALICE}, status="active", use="claim", created="2024-05-02",
                 type=coded(f"{TERMINOLOGY}/claim-type", "professional"), provider={"display": "Clinic"},
                 priority=coded(f"{TERMINOLOGY}/processpriority", "normal"),
                 insurance=[{"sequence": 1, "focal": True, "coverage": {"display": "self-pay"}}]),
    ]


def seed_bundle() -> dict[str, Any]:
    """A transaction with two synthetic patients and a record for each resource type the service pulls."""
    observations = [entry(observation(ALICE, index), urn(100 + index)) for index in range(ALICE_OBSERVATIONS)]
    entries = [
        entry(patient("Alpha", "MRN-1"), ALICE), entry(patient("Bravo", "MRN-2"), BOB),
        entry(resource("Medication", code=coded(RXNORM, "197361")), MEDICATION),
        entry(condition(ALICE, "active", "problem-list-item", onsetDateTime="2024-05-01")),
        entry(condition(ALICE, "resolved", "encounter-diagnosis", onsetDateTime="2019-03")),
        entry(condition(ALICE, "active", "problem-list-item", recordedDate="2023-02-10")),
        entry(condition(BOB, "active", "problem-list-item", onsetDateTime="2024-05-01")),
        *observations,
        entry(observation(BOB, 0)), entry(observation(BOB, 1)),
        *(entry(record) for record in alice_records(observations)),
        entry(resource("MedicationRequest", BOB, status="active", intent="order",
                       medicationReference={"reference": MEDICATION})),
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def document_bundle(subject: str, identifier: str, *, patient_id: str | None) -> dict[str, Any]:
    """A referral document Bundle whose Composition is about ``subject`` (with a Patient entry if ``patient_id``)."""
    composition = resource("Composition", subject, status="final", type=coded(LOINC, "57133-1"), title="Referral note",
                           date="2024-06-02T10:00:00Z", author=[{"display": "Dr. Example"}])
    entries = [{"fullUrl": urn(900), "resource": composition}]
    if patient_id:
        entries.append({"fullUrl": subject, "resource": {**patient("Alpha", "MRN-1"), "id": patient_id}})
    return resource("Bundle", type="document", identifier={"system": "urn:ietf:rfc:3986", "value": identifier},
                    timestamp="2024-06-02T10:00:00Z", entry=entries)


@pytest.fixture(scope="module")
def seeded() -> Iterator[tuple[SandboxServer, requests.Session, dict[str, str]]]:
    """One sandbox seeded with the synthetic records (read-only for these tests), its session and the patient ids."""
    with SandboxServer(load_fixtures=False, page_size=PAGE, max_page_size=10) as server, requests.Session() as session:
        response = session.post(server.base_url, json=seed_bundle(), timeout=30)
        assert response.status_code == 200, response.text
        locations = [item["response"]["location"] for item in response.json()["entry"]]
        ids = {"alice": locations[0].split("/")[1], "bob": locations[1].split("/")[1]}
        for subject, identifier in ((ALICE, urn(901)), (f"Patient/{ids['alice']}", urn(902))):
            document = document_bundle(subject, identifier, patient_id=ids["alice"] if subject == ALICE else None)
            assert session.post(f"{server.base_url}/Bundle", json=document, timeout=30).status_code == 201
        yield server, session, ids


@pytest.fixture
def fhir(seeded: tuple[SandboxServer, requests.Session, dict[str, str]], make_fhir: Any) -> Any:
    """A client of the seeded sandbox."""
    return make_fhir(seeded[0])


@pytest.fixture
def ids(seeded: tuple[SandboxServer, requests.Session, dict[str, str]]) -> dict[str, str]:
    """The server ids of alice and bob."""
    return seeded[2]


@pytest.fixture
def store(seeded: tuple[SandboxServer, requests.Session, dict[str, str]]) -> Any:
    """The seeded store."""
    return seeded[0].store


def search(fhir: Any, path: str, **params: Any) -> dict[str, Any]:
    """Search and return the Bundle, asserting 200."""
    response = fhir.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("form", ["Patient/{id}", "{id}", "{base}/Patient/{id}"], ids=["relative", "bare", "absolute"])
@pytest.mark.parametrize("param", ["patient", "subject"])
def test_search_by_patient_pages_to_the_end_without_duplicates(
        fhir: Any, ids: dict[str, str], store: Any, form: str, param: str) -> None:
    value = form.format(id=ids["alice"], base=fhir.base)
    entries = fhir.search_all("Observation", **{param: value, "_count": 4})
    resource_ids = [item["resource"]["id"] for item in entries]
    assert len(resource_ids) == store.count("Observation", patient=ids["alice"]) == ALICE_OBSERVATIONS
    assert len(set(resource_ids)) == len(resource_ids)
    assert all(item["search"]["mode"] == "match" for item in entries)
    assert all(item["fullUrl"] == f"{fhir.base}/Observation/{item['resource']['id']}" for item in entries)


def test_paging_links_stay_on_the_same_origin_and_carry_the_query(fhir: Any, ids: dict[str, str]) -> None:
    bundle = search(fhir, "Observation", patient=ids["alice"], category="laboratory", _count=3)
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    assert bundle["total"] == ALICE_OBSERVATIONS // 2
    assert links["self"].startswith(f"{fhir.base}/Observation?")
    assert links["next"].startswith(f"{fhir.base}/Observation?")
    assert "category=laboratory" in links["next"] and "_getpagesoffset=3" in links["next"]
    second = fhir.get(links["next"]).json()
    assert {link["relation"] for link in second["link"]} == {"self", "next", "previous"}
    first_ids = {item["resource"]["id"] for item in bundle["entry"]}
    assert not first_ids & {item["resource"]["id"] for item in second["entry"]}


def test_default_page_size_and_max_page_size_apply(fhir: Any, ids: dict[str, str]) -> None:
    assert len(search(fhir, "Observation", patient=ids["alice"])["entry"]) == PAGE
    capped = search(fhir, "Observation", patient=ids["alice"], _count=500)
    assert len(capped["entry"]) == 10
    assert "_count=10" in next(link["url"] for link in capped["link"] if link["relation"] == "next")


@pytest.mark.parametrize("resource_type", [
    "Patient", "Condition", "Observation", "DiagnosticReport", "MedicationRequest", "MedicationStatement",
    "AllergyIntolerance", "CarePlan", "Encounter", "Procedure", "DocumentReference", "Claim", "Bundle",
])
def test_every_stored_type_is_searchable_by_patient(
        fhir: Any, ids: dict[str, str], store: Any, resource_type: str) -> None:
    bundle = search(fhir, resource_type, patient=f"Patient/{ids['alice']}", _count=100)
    assert bundle["total"] == store.count(resource_type, patient=ids["alice"]) > 0
    for item in bundle["entry"]:
        text = json.dumps(item["resource"])
        assert ids["alice"] in text and ids["bob"] not in text


def test_document_bundles_are_found_by_patient_through_urn_uuid_subjects(fhir: Any, ids: dict[str, str]) -> None:
    bundle = search(fhir, "Bundle", patient=ids["alice"], type="document")
    assert bundle["total"] == 2
    by_identifier = search(fhir, "Bundle", identifier=f"urn:ietf:rfc:3986|{urn(901)}")
    assert by_identifier["total"] == 1
    assert search(fhir, "Bundle", patient=ids["bob"])["total"] == 0


def test_include_diagnostic_report_result_adds_each_observation_once(fhir: Any, ids: dict[str, str]) -> None:
    bundle = search(fhir, "DiagnosticReport", patient=ids["alice"], _include="DiagnosticReport:result")
    matches = [item["resource"] for item in bundle["entry"] if item["search"]["mode"] == "match"]
    included = [item["resource"] for item in bundle["entry"] if item["search"]["mode"] == "include"]
    assert bundle["total"] == len(matches) == 2
    wanted = {ref["reference"] for report in matches for ref in report["result"]}
    assert {f"Observation/{resource['id']}" for resource in included} == wanted
    assert len(included) == len(wanted) == 2


def test_include_medication_request_medication_adds_the_medication(fhir: Any, ids: dict[str, str]) -> None:
    bundle = search(fhir, "MedicationRequest", patient=ids["alice"], _include="MedicationRequest:medication")
    included = [item["resource"] for item in bundle["entry"] if item["search"]["mode"] == "include"]
    assert bundle["total"] == 2
    assert [resource["resourceType"] for resource in included] == ["Medication"]
    without = search(fhir, "MedicationRequest", patient=ids["alice"])
    assert all(item["search"]["mode"] == "match" for item in without["entry"])


def test_includes_follow_nested_paths_and_target_types(make_fhir: Any) -> None:
    """Procedure:performer is Procedure.performer.actor (a backbone list); Encounter:practitioner only Practitioners."""
    from fixtures.sandbox import SandboxServer

    with SandboxServer() as server:
        fhir = make_fhir(server)
        patient = "so-prostate-patient"
        procedures = search(fhir, "Procedure", patient=patient, _include="Procedure:performer", _count="100")
        matches = [e["resource"] for e in procedures["entry"] if e["search"]["mode"] == "match"]
        wanted = {p["actor"]["reference"] for m in matches for p in m.get("performer", []) if "actor" in p}
        included = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in procedures["entry"]
                    if e["search"]["mode"] == "include"}
        assert wanted and included == wanted
        only = search(fhir, "Procedure", patient=patient, _include="Procedure:performer:Organization", _count="100")
        assert {e["resource"]["resourceType"] for e in only["entry"] if e["search"]["mode"] == "include"} <= {
            "Organization"}
        statement = fhir.get("metadata").json()
        procedure = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Procedure")
        assert "Procedure:performer" in procedure["searchInclude"]


@pytest.mark.parametrize("resource_type, include", [
    ("Observation", "Observation:subject"), ("MedicationRequest", "DiagnosticReport:result"), ("DiagnosticReport", "*"),
])
def test_unsupported_includes_are_refused(fhir: Any, resource_type: str, include: str) -> None:
    response = fhir.get(resource_type, params={"_include": include})
    assert response.status_code == 400
    assert fhir.outcome_codes(response) == ["not-supported"]


@pytest.mark.parametrize("resource_type, params, expected", [
    ("Condition", {"clinical-status": "active"}, 2),
    ("Condition", {"clinical-status": f"{CLINICAL}|resolved"}, 1),
    ("Condition", {"clinical-status": "inactive,resolved"}, 1),
    ("Condition", {"category": f"{CONDITION_CATEGORY}|problem-list-item"}, 2),
    ("Condition", {"category": "http://example.org/other|problem-list-item"}, 0),
    ("Observation", {"status": "final,amended"}, ALICE_OBSERVATIONS),
    ("Observation", {"status": "amended"}, 5),
    ("Observation", {"code": f"{LOINC}|8867-4"}, 12),
    ("Observation", {"code": "|8867-4"}, 0),
    ("Observation", {"code": f"{LOINC}|"}, ALICE_OBSERVATIONS),
    ("Observation", {"category": "vital-signs", "status": "amended"}, 3),
    ("DiagnosticReport", {"category": "LAB"}, 1),
    ("MedicationRequest", {"intent": "order"}, 1),
    ("MedicationRequest", {"intent": "order,plan", "status": "active"}, 1),
    ("MedicationRequest", {"code": "314076"}, 1),
    ("AllergyIntolerance", {"category": "medication", "clinical-status": "active"}, 1),
    ("CarePlan", {"category": "assess-plan"}, 1),
    ("DocumentReference", {"type": f"{LOINC}|18842-5"}, 1),
    ("DocumentReference", {"type": f"{LOINC}|11488-4"}, 0),
    ("DocumentReference", {"category": "clinical-note", "status": "current"}, 1),
    ("DocumentReference", {"identifier": f"urn:ietf:rfc:3986|{DOCUMENT_ID}"}, 1),
    ("DocumentReference", {"identifier": DOCUMENT_ID}, 1),
    ("DocumentReference", {"identifier": "urn:ietf:rfc:3986|"}, 1),
    ("DocumentReference", {"identifier": "urn:ietf:rfc:3986|urn:uuid:other"}, 0),
    ("Patient", {"identifier": f"{MRN}|MRN-1"}, 1),
    ("Patient", {"family": "alp"}, 1),
    ("Patient", {"name": "test"}, 1),
])
def test_token_filters_match_the_obvious_element(
        fhir: Any, ids: dict[str, str], resource_type: str, params: dict[str, str], expected: int) -> None:
    patient_param = {"_id": ids["alice"]} if resource_type == "Patient" else {"patient": ids["alice"]}
    assert search(fhir, resource_type, **patient_param, **params)["total"] == expected


@pytest.mark.parametrize("resource_type, dates, expected", [
    ("Condition", ["2024"], 1),
    ("Condition", ["2024-05-01"], 1),
    ("Condition", ["eq2024-05"], 1),
    ("Condition", ["ge2023-01-01"], 2),
    ("Condition", ["lt2020"], 1),
    ("Condition", ["gt2019-03-31"], 2),
    ("Condition", ["ge2019-03-15"], 3),
    ("Condition", ["le2019-03-01"], 1),
    ("Condition", ["ge2019", "le2019-12-31"], 1),
    ("Condition", ["ne2024"], 2),
    ("Encounter", ["2024-05-02"], 0),
    ("Encounter", ["ge2024-05-02"], 1),
    ("Encounter", ["le2024-05-01T07:59:59Z"], 0),
    ("Procedure", ["2020-07-01T08:00:00Z"], 0),
    ("Procedure", ["2020-07-01"], 1),
    ("Procedure", ["gt2020-07-01T09:59:59Z"], 1),
    ("DiagnosticReport", ["2022-04"], 1),
    ("DiagnosticReport", ["ge2022-02-15", "lt2022-03"], 1),
    ("Observation", ["ge2023"], ALICE_OBSERVATIONS - 12),
    ("Observation", ["2022-03-15T09:30:00Z"], 1),
    ("MedicationRequest", ["gt2022"], 1),
    ("MedicationStatement", ["2023-03"], 1),
    ("CarePlan", ["ge2030"], 1),
    ("DocumentReference", ["2024-06"], 1),
    ("Claim", ["2024-05-02"], 1),
])
def test_date_filters_compare_ranges_with_prefixes(
        fhir: Any, ids: dict[str, str], resource_type: str, dates: list[str], expected: int) -> None:
    response = fhir.get(resource_type, params=[("patient", ids["alice"]), *(("date", value) for value in dates)])
    assert response.status_code == 200, response.text
    assert response.json()["total"] == expected


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "sa2024", "2024-05-01T25:00:00Z"])
def test_malformed_dates_are_refused(fhir: Any, value: str) -> None:
    response = fhir.get("Condition", params={"date": value})
    assert response.status_code == 400
    assert fhir.outcome_codes(response) == ["invalid"]


@pytest.mark.parametrize("params, name", [
    ({"bogus": "1"}, "bogus"),
    ({"code:text": "heart"}, "code:text"),
    ({"subject:Patient.name": "x"}, "subject:Patient.name"),
    ({"_revinclude": "Provenance:target"}, "_revinclude"),
    ({"birthdate": "2024"}, "birthdate"),  # not a Condition parameter
])
def test_unknown_search_params_are_refused_by_name(fhir: Any, params: dict[str, str], name: str) -> None:
    response = fhir.get("Condition", params=params)
    assert response.status_code == 400
    assert fhir.outcome_codes(response) == ["not-supported"]
    assert repr(name) in response.json()["issue"][0]["diagnostics"]


def test_formatting_params_are_ignored(fhir: Any, ids: dict[str, str]) -> None:
    bundle = search(fhir, "Condition", patient=ids["alice"], _format="json", _pretty="true", _elements="code",
                    _sort="-date", _total="accurate")
    assert bundle["total"] == 3


def test_summary_count_and_count_zero_return_only_the_total(fhir: Any, ids: dict[str, str]) -> None:
    for params in ({"_summary": "count"}, {"_count": "0"}):
        bundle = search(fhir, "Observation", patient=ids["alice"], **params)
        assert bundle["total"] == ALICE_OBSERVATIONS
        assert "entry" not in bundle
        assert [link["relation"] for link in bundle["link"]] == ["self"]


def test_id_takes_a_comma_separated_list(fhir: Any, ids: dict[str, str]) -> None:
    bundle = search(fhir, "Patient", _id=f"{ids['alice']},{ids['bob']},missing")
    assert sorted(item["resource"]["id"] for item in bundle["entry"]) == sorted(ids.values())


def test_post_search_with_a_form_body_equals_get(fhir: Any, ids: dict[str, str]) -> None:
    form = {"patient": ids["alice"], "category": "laboratory", "_count": "50"}
    posted = fhir.session.post(f"{fhir.base}/Observation/_search", data=form, timeout=30)
    assert posted.status_code == 200
    assert posted.headers["Content-Type"] == "application/fhir+json; charset=utf-8"
    got = search(fhir, "Observation", **form)
    assert [item["resource"] for item in posted.json()["entry"]] == [item["resource"] for item in got["entry"]]
