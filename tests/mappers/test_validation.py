"""The document checks: bdl-7/9/10/11, every reference resolves, subject resolves, timestamp ≥ date, narrative."""

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle, BundleEntry
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.narrative import Narrative
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.reference import Reference

from mappers.ids import sequential_ids
from mappers.packet import ReferralRequest, build_referral_bundle
from mappers.record import PatientRecord
from mappers.validation import check_document_bundle, instant_before, require_aware, resolve_in_bundle

DISCHARGE = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "fhir-examples" / "core-r4" / \
    "document-example-dischargesummary.json"


def valid_document() -> Bundle:
    """A small valid document: Composition, Patient, order and one Condition."""
    record = PatientRecord(
        patient=Patient(id="p1"),
        resources=[Condition(id="c1", subject=Reference(reference="Patient/p1"))])
    packet = build_referral_bundle(record, ReferralRequest(referral_id="r1", question="Why?"),
                                   now=datetime(2024, 6, 1, 12, tzinfo=UTC), new_id=sequential_ids())
    return packet.bundle


def set_type(b: Bundle) -> None:
    b.type = "collection"


def drop_identifier_system(b: Bundle) -> None:
    b.identifier.system = None


def drop_timestamp(b: Bundle) -> None:
    b.timestamp = None


def composition_not_first(b: Bundle) -> None:
    b.entry = [*b.entry[1:], b.entry[0]]


def repeat_full_url(b: Bundle) -> None:
    b.entry[3].fullUrl = b.entry[2].fullUrl


def drop_full_url(b: Bundle) -> None:
    b.entry[3].fullUrl = None


def dangling_reference(b: Bundle) -> None:
    b.entry[3].resource.asserter = Reference(reference="Practitioner/elsewhere")


def dangling_contained(b: Bundle) -> None:
    b.entry[3].resource.asserter = Reference(reference="#missing")


def subject_outside(b: Bundle) -> None:
    b.entry[0].resource.subject = Reference(display="someone")


def timestamp_before_date(b: Bundle) -> None:
    b.timestamp = datetime(2024, 5, 31, tzinfo=UTC)


def script_in_section(b: Bundle) -> None:
    b.entry[0].resource.section[1].text = Narrative(
        status="generated", div='<div xmlns="http://www.w3.org/1999/xhtml"><script>x()</script>y</div>')


def empty_resource_narrative(b: Bundle) -> None:
    b.entry[3].resource.text = Narrative(status="generated", div='<div xmlns="http://www.w3.org/1999/xhtml"> </div>')


BREAKAGES: list[tuple[Callable[[Bundle], None], str]] = [
    (set_type, "Bundle.type is collection, not document"),
    (drop_identifier_system, "(bdl-9)"),
    (drop_timestamp, "(bdl-10)"),
    (composition_not_first, "(bdl-11)"),
    (repeat_full_url, "Bundle.entry[3].fullUrl repeats Bundle.entry[2].fullUrl (bdl-7)"),
    (drop_full_url, "Bundle.entry[3] has no fullUrl"),
    (dangling_reference, "Bundle.entry[3] (Condition) refers to Practitioner/elsewhere, which is not in the Bundle"),
    (dangling_contained, "Bundle.entry[3] refers to #missing, which is not a contained resource"),
    (subject_outside, "Composition.subject does not resolve to an entry in the Bundle"),
    (timestamp_before_date, "Bundle.timestamp is before Composition.date"),
    (script_in_section, "Bundle.entry[0].section[1].text: element <script> is not allowed (txt-1)"),
    (empty_resource_narrative, "Bundle.entry[3].text: the narrative has no content (txt-2)"),
]


def test_a_valid_document_has_no_problems() -> None:
    assert check_document_bundle(valid_document()) == []


@pytest.mark.parametrize(("breakage", "problem"), BREAKAGES, ids=[b[0].__name__ for b in BREAKAGES])
def test_each_broken_invariant_is_reported(breakage: Callable[[Bundle], None], problem: str) -> None:
    bundle = valid_document()
    breakage(bundle)
    assert problem in "\n".join(check_document_bundle(bundle))


def test_relative_references_resolve_against_a_restful_full_url() -> None:
    known = {"https://a.example/fhir/Patient/1", "urn:uuid:x"}
    assert resolve_in_bundle("Patient/1", "https://a.example/fhir/Observation/9", known) == \
        "https://a.example/fhir/Patient/1"
    assert resolve_in_bundle("Patient/1/_history/2", "https://a.example/fhir/Observation/9", known) is not None
    assert resolve_in_bundle("Patient/1", "urn:uuid:y", known) is None
    assert resolve_in_bundle("urn:uuid:x", "urn:uuid:y", known) == "urn:uuid:x"


def test_the_r4_core_discharge_example_has_one_unresolvable_relative_reference() -> None:
    """Its MedicationRequest (fullUrl urn:uuid:…) names Practitioner/example: with no RESTful base to resolve
    against, that reference points outside the document (R4 bundle.html#references)."""
    bundle = Bundle.model_validate_json(DISCHARGE.read_text(encoding="utf-8"))
    assert check_document_bundle(bundle) == [
        "Bundle.entry[5] (MedicationRequest) refers to Practitioner/example, which is not in the Bundle"]


@pytest.mark.parametrize(
    ("date", "before"),
    [("2024-06", False), ("2024-07", True), ("2024", False), (datetime(2024, 6, 1, 13, tzinfo=UTC), True),
     (datetime(2024, 6, 1, 11, tzinfo=UTC), False)],
    ids=["same-month", "later-month", "same-year", "later-instant", "earlier-instant"],
)
def test_instant_before_compares_at_the_dates_precision(date: object, before: bool) -> None:
    assert instant_before(datetime(2024, 6, 1, 12, tzinfo=UTC), date) is before


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        require_aware(datetime(2024, 6, 1))


def test_entries_without_resources_are_reported() -> None:
    bundle = valid_document()
    bundle.entry.append(BundleEntry(fullUrl="urn:uuid:empty"))
    assert "Bundle.entry[4] has no resource" in check_document_bundle(bundle)
