"""Rule-by-rule tests of the C-CDA entry mappers, on small inline documents (see the `build` fixture)."""

from collections.abc import Callable
from decimal import Decimal
from types import SimpleNamespace

import pytest

from mappers.ccda.ccda import ts_to_fhir
from mappers.ccda.document import CcdaMapping
from mappers.ccda.text import check_xhtml
from mappers.validation import check_document_bundle

Mapper = Callable[..., CcdaMapping]


def _one(mapping: CcdaMapping, resource_type: str):  # noqa: ANN202 - a resource model
    found = [e.resource for e in mapping.bundle.entry if e.resource.get_resource_type() == resource_type]
    assert len(found) == 1, f"expected one {resource_type}, got {len(found)}"
    return found[0]


def _code(concept) -> str | None:  # noqa: ANN001 - a CodeableConcept or None
    return concept.coding[0].code if concept is not None and concept.coding else None


# --- timestamps ---

@pytest.mark.parametrize(("value", "expected"), [
    ("2024", "2024"),
    ("202406", "2024-06"),
    ("20240601", "2024-06-01"),
    ("20240601143000-0500", "2024-06-01T14:30:00-05:00"),
    ("202406011430-0500", "2024-06-01T14:30:00-05:00"),
    ("2024060114-0500", "2024-06-01T14:00:00-05:00"),
    ("20240601143000.123+0100", "2024-06-01T14:30:00.123+01:00"),
    ("20240601143000", "2024-06-01"),
    ("202406011430", "2024-06-01"),
    ("20240601-0500", "2024-06-01"),
    ("200130311", None),
    ("20241301", None),
    ("20240230", None),
    ("20240601250000-0500", None),
    ("-08", None),
    ("", None),
    (None, None),
], ids=["year", "month", "day", "seconds-with-zone", "minutes-with-zone", "hour-only-gets-minutes",
        "fraction-kept", "time-without-zone-keeps-only-the-date", "minutes-without-zone-keep-only-the-date",
        "zone-without-time-is-ignored", "nine-digits-is-invalid", "month-13-is-invalid", "february-30-is-invalid",
        "hour-25-is-invalid", "zone-only-is-invalid", "empty", "absent"])
def test_timestamp_keeps_its_precision_and_never_invents_a_zone(value: str | None, expected: str | None) -> None:
    assert ts_to_fhir(value) == expected


def test_document_date_keeps_time_and_zone(build: SimpleNamespace, mapper: Mapper) -> None:
    composition = mapper(build.document([], effective="20240531143000-0500")).bundle.entry[0].resource
    assert composition.model_dump(mode="json")["date"] == "2024-05-31T14:30:00-05:00"


def test_document_date_without_zone_becomes_a_date(build: SimpleNamespace, mapper: Mapper) -> None:
    composition = mapper(build.document([], effective="20240531143000")).bundle.entry[0].resource
    assert composition.model_dump(mode="json")["date"] == "2024-05-31"


# --- problems ---

@pytest.mark.parametrize(("kwargs", "clinical", "abatement"), [
    ({"act_status": "active"}, "active", None),
    ({"act_status": "completed"}, "inactive", None),
    ({"act_status": "completed", "high": "20240601"}, "resolved", "2024-06-01"),
    ({"act_status": "active", "status_value": "413322009"}, "resolved", None),
    ({"act_status": "completed", "status_value": "55561003"}, "active", None),
    ({"act_status": "active", "high": "20240601"}, "resolved", "2024-06-01"),
], ids=["active-concern-is-active", "completed-concern-without-high-is-inactive",
        "completed-concern-with-high-is-resolved", "problem-status-observation-wins-over-concern",
        "active-status-observation-on-completed-concern", "resolution-date-forces-resolved-con-4"])
def test_problem_clinical_status(kwargs: dict, clinical: str, abatement: str | None, build: SimpleNamespace,
                                 mapper: Mapper) -> None:
    condition = _one(mapper(build.problem_doc(**kwargs)), "Condition")
    assert _code(condition.clinicalStatus) == clinical
    assert condition.model_dump(mode="json").get("abatementDateTime") == abatement


def test_negated_problem_observation_is_refuted(build: SimpleNamespace, mapper: Mapper) -> None:
    condition = _one(mapper(build.problem_doc(negated=True)), "Condition")
    assert _code(condition.verificationStatus) == "refuted"
    assert _code(condition.code) == "44054006"


def test_problem_without_negation_has_no_verification_status(build: SimpleNamespace, mapper: Mapper) -> None:
    assert _one(mapper(build.problem_doc()), "Condition").verificationStatus is None


def test_null_flavor_onset_is_absent(build: SimpleNamespace, mapper: Mapper) -> None:
    condition = _one(mapper(build.problem_doc(low=None)), "Condition")
    assert condition.onsetDateTime is None


def test_null_flavor_code_with_translation_keeps_the_translation(build: SimpleNamespace, mapper: Mapper) -> None:
    value = ('<value xsi:type="CD" nullFlavor="OTH"><translation code="E11.9" codeSystem="2.16.840.1.113883.6.90" '
             'displayName="Type 2 diabetes mellitus without complications"/></value>')
    condition = _one(mapper(build.problem_doc(value=value)), "Condition")
    assert [(c.system, c.code) for c in condition.code.coding] == [("http://hl7.org/fhir/sid/icd-10-cm", "E11.9")]


def test_null_flavor_code_with_original_text_reference_resolves_the_narrative(build: SimpleNamespace,
                                                                             mapper: Mapper) -> None:
    value = '<value xsi:type="CD" nullFlavor="OTH"><originalText><reference value="#p1"/></originalText></value>'
    data = build.document([build.section(build.PROBLEMS, "11450-4", "Problems", [build.problem_entry(value=value)],
                                         text='<content ID="p1">Knee pain,  left</content>')])
    condition = _one(mapper(data), "Condition")
    assert condition.code.text == "Knee pain, left" and condition.code.coding is None


def test_problem_without_any_code_is_skipped_with_a_warning(build: SimpleNamespace, mapper: Mapper) -> None:
    mapping = mapper(build.problem_doc(value='<value xsi:type="CD" nullFlavor="UNK"/>'))
    assert not [e for e in mapping.bundle.entry if e.resource.get_resource_type() == "Condition"]
    assert any("problem observation" in w for w in mapping.warnings)
    assert mapping.sections[0].status == "narrative"


def test_null_flavor_section_is_recorded_empty(build: SimpleNamespace, mapper: Mapper) -> None:
    mapping = mapper(build.document([build.section(build.PROBLEMS, "11450-4", "Problems", text=None, null="NI")]))
    section = mapping.bundle.entry[0].resource.section[0]
    assert mapping.sections[0].status == "empty"
    assert section.emptyReason.coding[0].code == "unavailable"
    assert section.text is not None and check_xhtml(section.text.div) == []


@pytest.mark.parametrize(("null", "reason"), [("NASK", "notasked"), ("MSK", "withheld"), ("UNK", "unavailable")],
                         ids=["nask-is-notasked", "msk-is-withheld", "unk-is-unavailable"])
def test_section_null_flavor_maps_to_empty_reason(null: str, reason: str, build: SimpleNamespace,
                                                  mapper: Mapper) -> None:
    mapping = mapper(build.document([build.section(build.ALLERGIES, "48765-2", "Allergies", null=null)]))
    assert mapping.bundle.entry[0].resource.section[0].emptyReason.coding[0].code == reason


# --- medications ---

@pytest.mark.parametrize(("timing", "expected"), [
    ('<effectiveTime xsi:type="PIVL_TS" institutionSpecified="true"><period value="12" unit="h"/></effectiveTime>',
     {"frequency": 1, "period": 12, "periodUnit": "h"}),
    ('<effectiveTime xsi:type="PIVL_TS"><period value="1" unit="d"/></effectiveTime>',
     {"frequency": 1, "period": 1, "periodUnit": "d"}),
    ('<effectiveTime xsi:type="PIVL_TS"><period xsi:type="IVL_PQ"><low value="4" unit="h"/>'
     '<high value="6" unit="h"/></period></effectiveTime>',
     {"frequency": 1, "period": 4, "periodMax": 6, "periodUnit": "h"}),
    ('<effectiveTime xsi:type="EIVL_TS"><event code="HS"/></effectiveTime>', {"when": ["HS"]}),
    ('<effectiveTime xsi:type="PIVL_TS"><period value="2" unit="furlongs"/></effectiveTime>', None),
], ids=["pivl-every-12-hours", "pivl-daily", "pivl-every-4-to-6-hours", "eivl-at-bedtime",
        "pivl-non-time-unit-is-dropped"])
def test_pivl_ts_becomes_dosage_timing(timing: str, expected: dict | None, build: SimpleNamespace,
                                       mapper: Mapper) -> None:
    statement = _one(mapper(build.medication_doc(timing=timing)), "MedicationStatement")
    dumped = statement.model_dump(mode="json", exclude_none=True)["dosage"][0]
    assert dumped.get("timing", {}).get("repeat") == expected


@pytest.mark.parametrize(("dose", "expected"), [
    ('<doseQuantity value="25" unit="mg"/>', {"value": 25, "unit": "mg", "system": "http://unitsofmeasure.org",
                                             "code": "mg"}),
    ('<doseQuantity value="2"/>', {"value": 2}),
    ('<doseQuantity value="0.5" unit="mL"/>', {"value": 0.5, "unit": "mL", "system": "http://unitsofmeasure.org",
                                              "code": "mL"}),
], ids=["pq-with-ucum-unit", "pq-without-unit-has-no-unit", "pq-decimal"])
def test_dose_quantity_units_are_ucum(dose: str, expected: dict, build: SimpleNamespace, mapper: Mapper) -> None:
    statement = _one(mapper(build.medication_doc(dose=dose)), "MedicationStatement")
    assert statement.model_dump(mode="json", exclude_none=True)["dosage"][0]["doseAndRate"][0]["doseQuantity"] == \
        expected


def test_medication_statement_carries_rxnorm_route_and_period(build: SimpleNamespace, mapper: Mapper) -> None:
    statement = _one(mapper(build.medication_doc()), "MedicationStatement")
    assert statement.medicationCodeableConcept.coding[0].system == "http://www.nlm.nih.gov/research/umls/rxnorm"
    assert statement.medicationCodeableConcept.coding[0].code == "197380"
    assert statement.dosage[0].route.coding[0].code == "C38288"
    assert str(statement.effectivePeriod.start) == "2024-01-03"
    assert statement.status == "active"


@pytest.mark.parametrize(("status", "mood", "expected"), [
    ("active", "EVN", "active"), ("completed", "EVN", "completed"), ("aborted", "EVN", "stopped"),
    ("active", "INT", "intended"), ("nullified", "EVN", "entered-in-error"), ("bogus", "EVN", "unknown"),
], ids=["active", "completed", "aborted-is-stopped", "intended-mood", "nullified", "unknown-status"])
def test_medication_statement_status(status: str, mood: str, expected: str, build: SimpleNamespace,
                                     mapper: Mapper) -> None:
    assert _one(mapper(build.medication_doc(status=status, mood=mood)), "MedicationStatement").status == expected


# --- results ---

@pytest.mark.parametrize(("value", "field", "expected"), [
    ('<value xsi:type="PQ" value="13.2" unit="g/dL"/>', "valueQuantity",
     {"value": 13.2, "unit": "g/dL", "system": "http://unitsofmeasure.org", "code": "g/dL"}),
    ('<value xsi:type="PQ" value="6.7" unit="10*9/L"/>', "valueQuantity",
     {"value": 6.7, "unit": "10*9/L", "system": "http://unitsofmeasure.org", "code": "10*9/L"}),
    ('<value xsi:type="CD" code="260385009" codeSystem="2.16.840.1.113883.6.96" displayName="Negative"/>',
     "valueCodeableConcept", {"coding": [{"system": "http://snomed.info/sct", "code": "260385009",
                                          "display": "Negative"}]}),
    ('<value xsi:type="ST">Pending</value>', "valueString", "Pending"),
    ('<value xsi:type="INT" value="3"/>', "valueInteger", 3),
    ('<value xsi:type="IVL_PQ"><low value="1" unit="mg"/><high value="2" unit="mg"/></value>', "valueRange",
     {"low": {"value": 1, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
      "high": {"value": 2, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}),
    ('<value xsi:type="PQ" value="&lt;5" unit="mg"/>', "valueString", "<5 mg"),
    ('<value xsi:type="PQ" nullFlavor="UNK"/>', "dataAbsentReason",
     {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "unknown"}]}),
], ids=["pq-ucum", "pq-annotated-ucum", "cd", "st", "int", "ivl-pq", "pq-not-a-number-is-a-string",
        "null-flavor-is-data-absent"])
def test_result_value_types(value: str, field: str, expected: object, build: SimpleNamespace,
                            mapper: Mapper) -> None:
    observation = _one(mapper(build.result_doc(value)), "Observation")
    assert observation.model_dump(mode="json", exclude_none=True)[field] == expected


def test_result_reference_range_and_interpretation(build: SimpleNamespace, mapper: Mapper) -> None:
    extra = ('<interpretationCode code="L" codeSystem="2.16.840.1.113883.5.83" displayName="Low"/>'
             '<referenceRange><observationRange><value xsi:type="IVL_PQ"><low value="12.0" unit="g/dL"/>'
             '<high value="15.5" unit="g/dL"/></value></observationRange></referenceRange>')
    mapping = mapper(build.result_doc('<value xsi:type="PQ" value="10.1" unit="g/dL"/>', extra=extra))
    observation = _one(mapping, "Observation")
    assert observation.interpretation[0].coding[0].system == \
        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
    assert observation.referenceRange[0].low.value == Decimal("12.0")
    assert observation.referenceRange[0].high.unit == "g/dL"
    report = _one(mapping, "DiagnosticReport")
    assert report.code.coding[0].code == "57021-8" and report.status == "final"
    assert report.result[0].reference == f"urn:uuid:{observation.id}"
    assert mapping.bundle.entry[0].resource.section[0].entry[0].reference == f"urn:uuid:{report.id}"


# --- allergies ---

def test_allergy_maps_substance_reaction_and_severity(build: SimpleNamespace, mapper: Mapper) -> None:
    allergy = _one(mapper(build.allergy_doc()), "AllergyIntolerance")
    assert _code(allergy.code) == "70618"
    assert allergy.category == ["medication"]
    assert _code(allergy.reaction[0].manifestation[0]) == "247472004"
    assert allergy.reaction[0].severity == "moderate"
    assert _code(allergy.clinicalStatus) == "active" and _code(allergy.verificationStatus) == "confirmed"


def test_negated_allergy_without_substance_is_no_known_allergy(build: SimpleNamespace, mapper: Mapper) -> None:
    allergy = _one(mapper(build.allergy_doc(negated=True, substance='<code nullFlavor="NA"/>')),
                   "AllergyIntolerance")
    assert _code(allergy.code) == "716186003"
    assert _code(allergy.verificationStatus) == "confirmed"


def test_negated_allergy_to_a_substance_is_refuted(build: SimpleNamespace, mapper: Mapper) -> None:
    allergy = _one(mapper(build.allergy_doc(negated=True)), "AllergyIntolerance")
    assert _code(allergy.code) == "70618" and _code(allergy.verificationStatus) == "refuted"


# --- narrative ---

@pytest.mark.parametrize(("text", "present", "absent"), [
    ('<paragraph>a &lt;script&gt;alert(1)&lt;/script&gt; b</paragraph>', ["&lt;script&gt;"], ["<script"]),
    ('<linkHtml href="javascript:alert(1)">click</linkHtml>', ["<span>click</span>"], ["javascript", "href"]),
    ('<linkHtml href="https://example.org/a?b=1&amp;c=2">doc</linkHtml>',
     ['<a href="https://example.org/a?b=1&amp;c=2">doc</a>'], []),
    ('<linkHtml href="file:///etc/passwd">x</linkHtml>', ["<span>x</span>"], ["file:"]),
    ('<content styleCode="Bold" ID="c1" onclick="x()">bold</content>', ['<span id="c1" class="Bold">bold</span>'],
     ["onclick"]),
    ('<list listType="ordered"><caption>Steps</caption><item>one</item></list>',
     ['<p class="caption">Steps</p><ol><li>one</li></ol>'], []),
    ('<table border="1" onmouseover="x"><thead><tr><th colspan="2">h</th></tr></thead>'
     '<tbody><tr><td>1</td><td>2</td></tr></tbody></table>',
     ['<table border="1"><thead><tr><th colspan="2">h</th></tr></thead>'], ["onmouseover"]),
    ('<paragraph>x<renderMultiMedia referencedObject="img1"/>y</paragraph>', ["multimedia content not included"],
     ["img1", "<img"]),
    ('<paragraph>H<sub>2</sub>O and m<sup>2</sup><br/>next</paragraph>', ["<sub>2</sub>", "<sup>2</sup>", "<br/>"],
     []),
    ('<paragraph>before<list><item>inside</item></list></paragraph>', ["<div>before<ul><li>inside</li></ul></div>"],
     ["<p>"]),
    ('<script xmlns="http://www.w3.org/1999/xhtml">alert(1)</script>text', ["alert(1)text"], ["<script"]),
], ids=["escapes-script-text", "drops-javascript-href", "keeps-https-href", "drops-file-href",
        "style-code-becomes-class-and-events-are-dropped", "list-caption-precedes-the-list",
        "table-keeps-layout-attributes-only", "render-multimedia-is-dropped-with-a-note", "sub-sup-br",
        "paragraph-holding-a-list-becomes-a-div", "foreign-elements-are-unwrapped"])
def test_narrative_conversion_is_safe_xhtml(text: str, present: list[str], absent: list[str],
                                            build: SimpleNamespace, mapper: Mapper) -> None:
    mapping = mapper(build.narrative_doc(text))
    div = mapping.bundle.entry[0].resource.section[0].text.div
    assert check_xhtml(div) == []
    assert div.startswith('<div xmlns="http://www.w3.org/1999/xhtml">')
    for fragment in present:
        assert fragment in div
    for fragment in absent:
        assert fragment not in div
    assert check_document_bundle(mapping.bundle) == []


def test_section_without_text_gets_a_generated_narrative(build: SimpleNamespace, mapper: Mapper) -> None:
    entry = build.medication_entry()
    mapping = mapper(build.document([build.section(build.MEDICATIONS, "10160-0", "Medications", [entry],
                                                   text=None)]))
    section = mapping.bundle.entry[0].resource.section[0]
    assert section.text.status == "generated" and "atenolol" in section.text.div
    assert mapping.sections[0].status == "structured"


def test_unknown_section_is_kept_as_narrative_with_a_warning(build: SimpleNamespace, mapper: Mapper) -> None:
    mapping = mapper(build.document([build.section("1.2.3.4.5", "99999-9", "Mystery", ["<act/>"],
                                                   text="<paragraph>kept</paragraph>")]))
    section = mapping.bundle.entry[0].resource.section[0]
    assert section.title == "Mystery" and "kept" in section.text.div
    assert mapping.sections[0].status == "narrative"
    assert any("not a known C-CDA section" in w for w in mapping.warnings)


def test_nested_sections_become_nested_composition_sections(build: SimpleNamespace, mapper: Mapper) -> None:
    inner = build.section("2.16.840.1.113883.10.20.22.2.63", "8709-8", "Skin", text="<paragraph>rash</paragraph>")
    outer = build.section("2.16.840.1.113883.10.20.2.10", "29545-1", "Physical exam").replace(
        "</section>", f"<component>{inner}</component></section>")
    mapping = mapper(build.document([outer]))
    section = mapping.bundle.entry[0].resource.section[0]
    assert section.section[0].title == "Skin"
    assert [r.code for r in mapping.sections] == ["29545-1", "8709-8"]


# --- planned items ---

def test_planned_procedure_becomes_a_service_request_with_intent_plan(build: SimpleNamespace,
                                                                      mapper: Mapper) -> None:
    planned = ('<procedure classCode="PROC" moodCode="RQO"><templateId root="2.16.840.1.113883.10.20.22.4.41"/>'
               '<id root="9a6d1bac-17d3-4195-89a4-1121bc809b4a"/><code code="73761001" '
               'codeSystem="2.16.840.1.113883.6.96" displayName="Colonoscopy"/><statusCode code="active"/>'
               '<effectiveTime value="20240701"/></procedure>')
    goal = ('<observation classCode="OBS" moodCode="GOL"><templateId root="2.16.840.1.113883.10.20.22.4.121"/>'
            '<code code="289169006" codeSystem="2.16.840.1.113883.6.96"/></observation>')
    mapping = mapper(build.document([build.section(build.PLAN, "18776-5", "Plan", [planned, goal])]))
    request = _one(mapping, "ServiceRequest")
    assert request.intent == "plan" and request.status == "active" and _code(request.code) == "73761001"
    assert mapping.sections[0].entries == 1
    assert any("1 of 2 entries not converted" in w for w in mapping.warnings)


def test_planned_medication_becomes_a_medication_request(build: SimpleNamespace, mapper: Mapper) -> None:
    planned = build.medication_entry(mood="INT").replace("2.16.840.1.113883.10.20.22.4.16",
                                                         "2.16.840.1.113883.10.20.22.4.42")
    mapping = mapper(build.document([build.section(build.PLAN, "18776-5", "Plan", [planned])]))
    request = _one(mapping, "MedicationRequest")
    assert request.intent == "plan" and _code(request.medicationCodeableConcept) == "197380"
    assert request.dosageInstruction[0].timing.repeat.period == Decimal("12")


# --- document kind ---

@pytest.mark.parametrize(("templates", "code", "title", "kind"), [
    (("2.16.840.1.113883.10.20.22.1.1", "2.16.840.1.113883.10.20.22.1.4"), "11488-4", "Consult", "consultation-note"),
    (("2.16.840.1.113883.10.20.22.1.1",), "57133-1", "Referral Note", "referral-note"),
    (("2.16.840.1.113883.10.20.22.1.14",), "57113-1", "Referral Note", "referral-note"),
    (("2.16.840.1.113883.10.20.22.1.1", "2.16.840.1.113883.10.20.22.1.10"), "34847-4", "Surgery",
     "consultation-note"),
    (("2.16.840.1.113883.10.20.22.1.1", "2.16.840.1.113883.10.20.22.1.2"), "34133-9", "Referral Summary", "ccd"),
    (("2.16.840.1.113883.10.20.22.1.1",), "00000-0", "Cardiology consultation", "consultation-note"),
    (("2.16.840.1.113883.10.20.22.1.1", "2.16.840.1.113883.10.20.22.1.10"), "00000-0", "Scan", "unstructured"),
    (("2.16.840.1.113883.10.20.22.1.1",), "00000-0", "Summary", "unknown"),
], ids=["consult-template-and-code", "referral-code-without-referral-template",
        "referral-template-with-odd-code", "unstructured-surgery-consult-by-loinc-only",
        "ccd-titled-referral-summary-is-a-ccd", "title-keyword-as-last-resort", "unstructured-without-type",
        "nothing-known"])
def test_document_kind_from_template_code_and_title(templates: tuple[str, ...], code: str, title: str, kind: str,
                                                    build: SimpleNamespace, mapper: Mapper) -> None:
    assert mapper(build.document([], templates=templates, code=code, title=title)).document_kind == kind


def test_document_without_patient_cannot_be_mapped(build: SimpleNamespace, mapper: Mapper) -> None:
    from mappers.errors import MappingError

    data = build.document([]).replace(b"<recordTarget>", b"<!--").replace(b"</recordTarget>", b"-->")
    with pytest.raises(MappingError) as caught:
        mapper(data)
    assert caught.value.status == 422


# --- nonXMLBody ---

def _nonxml(text: str) -> str:
    return f"<component><nonXMLBody>{text}</nonXMLBody></component>"


def test_plain_text_body_is_attached_as_utf8_text(build: SimpleNamespace, mapper: Mapper) -> None:
    mapping = mapper(build.document(body=_nonxml('<text mediaType="text/plain">Impression: benign. é</text>'),
                                    templates=("2.16.840.1.113883.10.20.22.1.1", "2.16.840.1.113883.10.20.22.1.10"),
                                    code="34847-4"))
    attachment = _one(mapping, "DocumentReference").content[0].attachment
    assert attachment.contentType == "text/plain; charset=utf-8"
    assert attachment.data.decode("utf-8") == "Impression: benign. é"
    assert mapping.document_kind == "consultation-note"
    assert [r.title for r in mapping.sections] == ["Document"]
    assert check_document_bundle(mapping.bundle) == []


def test_base64_body_that_is_not_base64_is_422(build: SimpleNamespace, mapper: Mapper) -> None:
    from mappers.errors import MappingError

    with pytest.raises(MappingError) as caught:
        mapper(build.document(body=_nonxml('<text mediaType="application/pdf" representation="B64">%%%</text>')))
    assert caught.value.status == 422 and "base64" in caught.value.diagnostics


def test_empty_body_is_an_empty_document_section(build: SimpleNamespace, mapper: Mapper) -> None:
    mapping = mapper(build.document(body=_nonxml('<text mediaType="application/pdf" representation="B64"/>')))
    assert mapping.sections[0].status == "empty"
    assert mapping.bundle.entry[0].resource.section[0].emptyReason.coding[0].code == "unavailable"
    assert check_document_bundle(mapping.bundle) == []
