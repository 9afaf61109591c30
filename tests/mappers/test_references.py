"""Finding, normalising and rewriting references."""

import pytest
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.reference import Reference

from mappers.references import iter_references, reference_key, reference_type, rest_base, rewrite_references

BASE = "https://ehr.example.org/fhir"


def condition_with_references() -> Condition:
    """A Condition with references at several depths: subject, evidence, assigner, extension, contained."""
    return Condition.model_validate({
        "resourceType": "Condition", "id": "c1",
        "contained": [{"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
                       "subject": {"reference": "Patient/p1"}}],
        "extension": [{"url": "http://example.org/ext", "valueReference": {"reference": "Encounter/e1"}}],
        "identifier": [{"value": "1", "assigner": {"reference": "Organization/org1"}}],
        "subject": {"reference": "Patient/p1"},
        "evidence": [{"detail": [{"reference": "#o1"}, {"reference": f"{BASE}/Observation/o2"}]}],
        "asserter": {"reference": "Practitioner/dr1", "display": "Dr One"},
    })


def test_iter_references_finds_every_reference_at_any_depth() -> None:
    found = [r.reference for r in iter_references(condition_with_references())]
    assert sorted(found) == sorted(["Patient/p1", "Encounter/e1", "Organization/org1", "Patient/p1", "#o1",
                                    f"{BASE}/Observation/o2", "Practitioner/dr1"])


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Patient/123", "Patient/123"),
        (f"{BASE}/Patient/123", "Patient/123"),
        (f"{BASE}/", None),
        ("Observation/a.b-1/_history/3", "Observation/a.b-1"),
        (f"{BASE}/Observation/o1/_history/2", "Observation/o1"),
        ("#contained", None),
        ("urn:uuid:6a1e1b2c-0000-4000-8000-000000000001", None),
        ("https://other.example.org/fhir/Patient/123", None),
        ("Patient?identifier=x|1", None),
        ("", None),
        (None, None),
    ],
    ids=["relative", "absolute-same-server", "base-only", "versioned", "absolute-versioned", "contained", "urn",
         "foreign-server", "conditional", "empty", "none"],
)
def test_reference_key_normalises_to_type_and_id(ref: str | None, expected: str | None) -> None:
    assert reference_key(ref, BASE) == expected


def test_reference_key_accepts_a_base_with_a_trailing_slash() -> None:
    assert reference_key(f"{BASE}/Encounter/e1", BASE + "/") == "Encounter/e1"


@pytest.mark.parametrize(
    ("url", "base"),
    [(f"{BASE}/Patient/1", BASE), ("urn:uuid:6a1e1b2c-0000-4000-8000-000000000001", ""), ("Patient/1", "")],
    ids=["rest", "urn", "relative"],
)
def test_rest_base_is_the_server_part_of_a_restful_url(url: str, base: str) -> None:
    assert rest_base(url) == base


@pytest.mark.parametrize(
    ("reference", "expected"),
    [({"reference": "Practitioner/1"}, "Practitioner"), ({"reference": f"{BASE}/Organization/1/_history/2"},
                                                          "Organization"),
     ({"type": "Patient", "identifier": {"value": "1"}}, "Patient"), ({"reference": "urn:uuid:1"}, None)],
    ids=["relative", "absolute-versioned", "typed-logical", "urn"],
)
def test_reference_type_reads_the_literal_or_the_type(reference: dict, expected: str | None) -> None:
    assert reference_type(Reference.model_validate(reference)) == expected


def test_rewrite_maps_known_references_and_keeps_contained_ones() -> None:
    mapping = {"Patient/p1": "urn:uuid:p", "Observation/o2": "urn:uuid:o2", "Encounter/e1": "urn:uuid:e",
               "Organization/org1": "urn:uuid:org", "Practitioner/dr1": "urn:uuid:dr"}
    copy, dropped = rewrite_references(condition_with_references(), mapping, base_url=BASE)
    assert dropped == []
    assert copy.subject.reference == "urn:uuid:p"
    assert [d.reference for d in copy.evidence[0].detail] == ["#o1", "urn:uuid:o2"]
    assert copy.contained[0].subject.reference == "urn:uuid:p"


def test_rewrite_makes_unmapped_references_display_only_and_reports_them() -> None:
    copy, dropped = rewrite_references(condition_with_references(), {"Patient/p1": "urn:uuid:p"}, base_url=BASE)
    expected = ["Encounter/e1", "Organization/org1", f"{BASE}/Observation/o2", "Practitioner/dr1"]
    assert sorted(dropped) == sorted(expected)
    assert copy.asserter.reference is None and copy.asserter.display == "Dr One"
    assert copy.extension[0].valueReference.display == "Encounter (not included)"
    assert copy.evidence[0].detail[1].display == "Observation (not included)"


def test_rewrite_keeps_the_identifier_of_a_dropped_reference() -> None:
    report = DiagnosticReport.model_validate({
        "resourceType": "DiagnosticReport", "status": "final", "code": {"text": "x"},
        "performer": [{"reference": "Organization/lab", "identifier": {"system": "urn:x", "value": "lab-1"}}]})
    copy, _ = rewrite_references(report, {})
    assert copy.performer[0].identifier.value == "lab-1"
    assert copy.performer[0].reference is None


def test_rewrite_of_a_redacted_item_drops_its_display_and_identifier() -> None:
    copy, dropped = rewrite_references(condition_with_references(), {}, redact={"Practitioner/dr1"})
    assert copy.asserter.display == "Practitioner (not included)"
    assert "Practitioner/dr1" in dropped


def test_rewrite_leaves_the_original_untouched() -> None:
    original = condition_with_references()
    rewrite_references(original, {})
    assert original.subject.reference == "Patient/p1"


def test_rewrite_keeps_references_already_pointing_into_the_bundle() -> None:
    condition = Condition.model_validate({"resourceType": "Condition", "subject": {"reference": "urn:uuid:p"}})
    copy, dropped = rewrite_references(condition, {"Patient/p1": "urn:uuid:p"})
    assert copy.subject.reference == "urn:uuid:p" and dropped == []


@pytest.mark.parametrize("redact", [frozenset(), frozenset({"Practitioner/dr1"})], ids=["plain", "redacted"])
def test_rewriting_json_matches_rewriting_the_model(redact: frozenset[str]) -> None:
    from mappers.references import rewrite_json_references

    mapping = {"Patient/p1": "urn:uuid:p", "Observation/o2": "urn:uuid:o2"}
    model = condition_with_references()
    data = model.model_dump(mode="json", exclude_none=True)
    copy, dropped = rewrite_references(model, mapping, base_url=BASE, redact=redact)
    json_copy, json_dropped = rewrite_json_references(data, mapping, base_url=BASE, redact=redact)
    assert json_copy == copy.model_dump(mode="json", exclude_none=True)
    assert sorted(json_dropped) == sorted(dropped)  # in the order the JSON has them
    assert data == model.model_dump(mode="json", exclude_none=True)  # the EHR's JSON is not changed


@pytest.mark.parametrize("redact", [frozenset(), frozenset({"Practitioner/dr1"})], ids=["plain", "redacted"])
def test_a_reference_inside_a_rewritten_reference_follows_it_in_json_as_in_the_model(redact: frozenset[str]) -> None:
    from mappers.references import json_reference_paths, rewrite_json_references

    asserter = {"reference": "Practitioner/dr1", "display": "Dr One",
                "identifier": {"value": "x", "assigner": {"reference": "Organization/org1"}}}
    model = Condition.model_validate({"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
                                      "asserter": asserter})
    data = model.model_dump(mode="json", exclude_none=True)
    mapping = {"Patient/p1": "urn:uuid:p", "Organization/org1": "urn:uuid:o"}
    copy, dropped = rewrite_references(model, mapping, redact=redact)
    json_copy, json_dropped = rewrite_json_references(data, mapping, located=json_reference_paths(data), redact=redact)
    assert json_copy == copy.model_dump(mode="json", exclude_none=True)
    assert json_dropped == dropped == ["Practitioner/dr1"]
    assert ("identifier" in json_copy["asserter"]) == (not redact)  # a left-out item's identifier does not travel
    assert data == model.model_dump(mode="json", exclude_none=True)


def test_a_reference_object_itself_is_rewritten_as_a_copy() -> None:
    from mappers.references import rewrite_json_references

    ref = {"reference": "Patient/p1", "display": "P"}
    copy, dropped = rewrite_json_references(ref, {"Patient/p1": "urn:uuid:p"})
    assert copy == {"reference": "urn:uuid:p", "display": "P"} and dropped == []
    assert ref == {"reference": "Patient/p1", "display": "P"}


def test_json_reference_paths_finds_every_reference_of_the_corpus_in_document_order() -> None:
    """The recursive walk and the explicit-stack walk it falls back on agree on every Synthea resource, and each
    path leads to the object found."""
    import json

    from mappers.references import _reference_paths_by_stack, json_reference_paths, json_references
    from tests.conftest import SYNTHEA_FILES

    assert SYNTHEA_FILES
    count = 0
    for path in SYNTHEA_FILES:
        for entry in json.loads(path.read_bytes())["entry"]:
            data = entry["resource"]
            found = json_reference_paths(data)
            assert [(p, id(r)) for p, r in found] == [(p, id(r)) for p, r in _reference_paths_by_stack(data)]
            assert [id(r) for r in json_references(data)] == [id(r) for _, r in found]
            for steps, ref in found:
                node = data
                for step in steps:
                    node = node[step]
                assert node is ref and isinstance(ref["reference"], str)
            count += len(found)
    assert count > 1000, count


def test_json_nested_deeper_than_the_recursion_limit_is_walked_without_recursing() -> None:
    import sys

    from mappers.references import json_reference_paths, json_references

    depth = sys.getrecursionlimit() * 2
    inner: dict = {"reference": "Patient/p1"}
    data: dict = {"resourceType": "Basic", "extension": [{"valueReference": {"reference": "Patient/p0"}}]}
    node = data
    for _ in range(depth):  # each level an extension inside the last one's: two path steps per level
        child: dict = {"url": "x"}
        node["extension"] = [*node.get("extension", []), child]
        node = child
    node["valueReference"] = inner
    found = json_reference_paths(data)
    assert [r["reference"] for _, r in found] == ["Patient/p0", "Patient/p1"]
    assert len(found[1][0]) == 2 * depth + 1 and found[1][1] is inner
    assert json_references(data)[1] is inner
