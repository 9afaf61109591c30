"""assess_concordance: confirmed / revised / refuted / new / not addressed, by the rules of its mapping table."""

import pytest
from fhir.resources.R4B.condition import Condition

from mappers.concordance import assess_concordance

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"


def condition(cid: str | None, *codings: tuple[str, str, str], status: str | None = None,
              evidence: list[str] | None = None, text: str | None = None) -> Condition:
    """A Condition with codings (system, code, display), an optional verificationStatus and evidence links."""
    fields: dict = {"subject": {"reference": "Patient/p"},
                    "code": {"coding": [{"system": s, "code": c, "display": d} for s, c, d in codings],
                             "text": text}}
    if cid:
        fields["id"] = cid
    if status:
        fields["verificationStatus"] = {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": status}]}
    if evidence:
        fields["evidence"] = [{"detail": [{"reference": r} for r in evidence]}]
    return Condition.model_validate(fields)


DIABETES = condition("c1", (ICD10CM, "E11.9", "Type 2 diabetes mellitus without complications"))
ASTHMA = condition("c2", (SNOMED, "195967001", "Asthma"))
HTN = condition("c3", (ICD10CM, "I10", "Essential hypertension"))


def test_same_code_confirms() -> None:
    result = assess_concordance([DIABETES], [condition(None, (ICD10CM, "E11.9", "T2DM"), status="confirmed")])
    assert result.confirmed == [{"condition": "Condition/c1", "code": f"{ICD10CM}|E11.9",
                                 "display": "Type 2 diabetes mellitus without complications"}]
    assert result.revised == result.refuted == result.new == result.not_addressed == []


@pytest.mark.parametrize("code", ["e11.9", "E119", "e119"], ids=["lower-case", "no-dot", "lower-case-no-dot"])
def test_icd10_codes_compare_case_insensitively_without_the_dot(code: str) -> None:
    result = assess_concordance([DIABETES], [condition(None, (ICD10CM, code, "T2DM"))])
    assert [i["condition"] for i in result.confirmed] == ["Condition/c1"]


def test_oid_system_matches_its_uri() -> None:
    result = assess_concordance([ASTHMA], [condition(None, ("urn:oid:2.16.840.1.113883.6.96", "195967001", "A"))])
    assert [i["condition"] for i in result.confirmed] == ["Condition/c2"]


@pytest.mark.parametrize("status", ["refuted", "entered-in-error"])
def test_refuted_same_code_refutes(status: str) -> None:
    result = assess_concordance([ASTHMA], [condition(None, (SNOMED, "195967001", "Asthma"), status=status)])
    assert [i["condition"] for i in result.refuted] == ["Condition/c2"]
    assert result.confirmed == [] and result.not_addressed == []


def test_evidence_link_with_a_different_code_revises() -> None:
    copd = condition(None, (SNOMED, "13645005", "Chronic obstructive lung disease"), evidence=["Condition/c2"])
    result = assess_concordance([ASTHMA, DIABETES], [copd])
    assert result.revised == [{
        "from": {"condition": "Condition/c2", "code": f"{SNOMED}|195967001", "display": "Asthma"},
        "to": {"code": f"{SNOMED}|13645005", "display": "Chronic obstructive lung disease"},
    }]
    assert [i["condition"] for i in result.not_addressed] == ["Condition/c1"]


def test_evidence_link_as_absolute_url_counts() -> None:
    copd = condition(None, (SNOMED, "13645005", "COPD"), evidence=["https://ehr.example/fhir/Condition/c2"])
    assert len(assess_concordance([ASTHMA], [copd]).revised) == 1


def test_evidence_link_with_the_same_code_confirms() -> None:
    same = condition(None, (SNOMED, "195967001", "Asthma"), evidence=["Condition/c2"])
    assert [i["condition"] for i in assess_concordance([ASTHMA], [same]).confirmed] == ["Condition/c2"]


def test_refuted_consult_condition_linked_by_evidence_refutes() -> None:
    linked = condition(None, (SNOMED, "13645005", "COPD"), status="refuted", evidence=["Condition/c2"])
    assert [i["condition"] for i in assess_concordance([ASTHMA], [linked]).refuted] == ["Condition/c2"]


def test_same_icd10_category_with_a_different_code_revises() -> None:
    result = assess_concordance([DIABETES], [condition(None, (ICD10CM, "E11.65", "T2DM with hyperglycemia"))])
    assert result.revised == [{
        "from": {"condition": "Condition/c1", "code": f"{ICD10CM}|E11.9",
                 "display": "Type 2 diabetes mellitus without complications"},
        "to": {"code": f"{ICD10CM}|E11.65", "display": "T2DM with hyperglycemia"},
    }]


def test_snomed_condition_with_an_icd10_translation_in_the_same_category_revises() -> None:
    snomed_with_icd = condition(None, (SNOMED, "421893009", "Renal disorder due to type 2 diabetes"),
                                (ICD10CM, "E11.22", "T2DM with diabetic CKD"))
    result = assess_concordance([DIABETES], [snomed_with_icd])
    assert result.revised[0]["from"]["condition"] == "Condition/c1"
    assert result.revised[0]["to"]["code"] == f"{ICD10CM}|E11.22"


def test_refuted_condition_in_the_same_category_is_not_a_revision() -> None:
    result = assess_concordance([DIABETES], [condition(None, (ICD10CM, "E11.65", "x"), status="refuted")])
    assert result.revised == [] and result.refuted == []
    assert [i["condition"] for i in result.not_addressed] == ["Condition/c1"]


def test_unmatched_consult_condition_is_new() -> None:
    result = assess_concordance([DIABETES], [condition(None, (SNOMED, "38341003", "Hypertension"))])
    assert result.new == [{"code": f"{SNOMED}|38341003", "display": "Hypertension"}]
    assert [i["condition"] for i in result.not_addressed] == ["Condition/c1"]


def test_unmatched_refuted_condition_is_not_reported() -> None:
    result = assess_concordance([DIABETES], [condition(None, (SNOMED, "363346000", "Cancer"), status="refuted")])
    assert result.new == [] and result.refuted == []


def test_text_only_condition_is_new_with_its_text() -> None:
    result = assess_concordance([], [condition(None, text="Fatigue of unclear cause")])
    assert result.new == [{"code": None, "display": "Fatigue of unclear cause"}]


def test_referred_conditions_nobody_matched_are_not_addressed() -> None:
    result = assess_concordance([DIABETES, ASTHMA, HTN], [condition(None, (SNOMED, "195967001", "Asthma"))])
    assert [i["condition"] for i in result.confirmed] == ["Condition/c2"]
    assert [i["condition"] for i in result.not_addressed] == ["Condition/c1", "Condition/c3"]


def test_as_dict_has_the_five_lists_and_no_duplicates() -> None:
    consult = [condition(None, (SNOMED, "195967001", "Asthma")), condition(None, (SNOMED, "195967001", "Asthma"))]
    result = assess_concordance([ASTHMA], consult).as_dict()
    assert set(result) == {"confirmed", "revised", "refuted", "new", "not_addressed"}
    assert len(result["confirmed"]) == 1


def test_conditions_mapped_from_a_ccda_feed_concordance(build, mapper) -> None:  # noqa: ANN001 - fixtures
    mapping = mapper(build.problem_doc(negated=True))
    consult = [e.resource for e in mapping.bundle.entry if e.resource.get_resource_type() == "Condition"]
    referred = [condition("r1", (SNOMED, "44054006", "Diabetes mellitus type 2"))]
    assert [i["condition"] for i in assess_concordance(referred, consult).refuted] == ["Condition/r1"]
