"""R4B models read R4 (4.0.1) JSON: every R4 core and US Core example in the corpus parses and round-trips."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "fhir-examples"
R4_FILES = sorted((EXAMPLES / "core-r4").glob("*.json")) + sorted((EXAMPLES / "us-core").glob("*.json"))

# Files that are not valid R4 as committed, with the exact reason (each is checked below, not skipped).
INVALID_AS_COMMITTED = {
    # text.status is "generated" but there is no text.div. Narrative.div is 1..1 in R4 too, so the file is not
    # valid R4: the US Core source examples rely on the IG publisher to generate the narrative at build time.
    "diagnosticreport-cbc.json": (("text", "div"), "model_field_validation.missing"),
}


def element_paths(value: Any, path: str = "") -> Iterator[str]:
    """Every leaf path of a JSON value (e.g. /code/coding[0]/system)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from element_paths(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from element_paths(item, f"{path}[{index}]")
    else:
        yield path


def test_the_corpus_has_r4_examples() -> None:
    assert len(R4_FILES) >= 20


@pytest.mark.parametrize("path", R4_FILES, ids=[f"{p.parent.name}/{p.stem}" for p in R4_FILES])
def test_r4_example_parses_with_r4b_and_keeps_every_element(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    model_class = get_fhir_model_class(data["resourceType"])
    assert model_class.__module__.startswith("fhir.resources.R4B.")
    if path.name in INVALID_AS_COMMITTED:
        location, error_type = INVALID_AS_COMMITTED[path.name]
        with pytest.raises(ValidationError) as caught:
            model_class.model_validate(data)
        assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [(location, error_type)]
        return
    model = model_class.model_validate(data)
    dumped = model.model_dump(mode="json")
    assert set(element_paths(dumped)) == set(element_paths(data))
    model_class.model_validate(dumped)


def test_the_invalid_us_core_example_parses_once_its_narrative_div_is_there() -> None:
    data = json.loads((EXAMPLES / "us-core" / "diagnosticreport-cbc.json").read_text(encoding="utf-8"))
    data["text"]["div"] = '<div xmlns="http://www.w3.org/1999/xhtml">CBC panel</div>'
    get_fhir_model_class("DiagnosticReport").model_validate(data)


@pytest.mark.parametrize(
    ("resource_type", "r4_element"),
    [("Procedure", "performedPeriod"), ("MedicationRequest", "medicationCodeableConcept"),
     ("MedicationRequest", "medicationReference"), ("MedicationStatement", "medicationCodeableConcept"),
     ("DocumentReference", "context"), ("Encounter", "class_fhir"), ("Condition", "onsetDateTime"),
     ("Observation", "valueQuantity"), ("Composition", "attester"), ("Task", "for_fhir")],
    ids=["procedure-performedPeriod", "medreq-medicationCodeableConcept", "medreq-medicationReference",
         "medstatement", "docref-context", "encounter-class", "condition-onset", "observation-value",
         "composition-attester", "task-for"],
)
def test_r4b_models_have_the_r4_elements_we_use(resource_type: str, r4_element: str) -> None:
    assert r4_element in get_fhir_model_class(resource_type).model_fields
