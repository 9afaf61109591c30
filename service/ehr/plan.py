"""What to search for one patient: the plan of one search per resource type, limited to what the server offers.

Shared by the fetch (service/ehr/fetch.py), the $everything selection (service/ehr/everything.py) and the
capability report (service/ehr/capability.py).
"""

from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from mappers import systems

# Encounters are not resolved one by one (a long history has hundreds); hospital stays come from their own search.
REFERENCED_TYPES = ("Practitioner", "PractitionerRole", "Organization", "Medication", "Location", "Specimen",
                    "Observation")
HOSPITAL_STAY_CLASSES = "IMP,ACUTE,NONAC"  # v3 ActCode inpatient classes (readiness: discharge summaries)
# Report documents a consultant needs (DESIGN.md "What we pull").
REPORT_TYPES = (systems.LOINC_PATHOLOGY_STUDY, "60567-5", systems.LOINC_OPERATIVE_NOTE, systems.LOINC_PROCEDURE_NOTE,
                systems.LOINC_DISCHARGE_SUMMARY, systems.LOINC_IMAGING_STUDY, systems.LOINC_CONSULT_NOTE)
# The includes a search may ask for: name → (where the references are, as an element path through lists; the types
# it brings). R4 search parameter expressions (hl7.org/fhir/R4/searchparameter-registry.html), limited to the
# REFERENCED_TYPES, so a search with includes brings exactly what would otherwise be read by _id afterwards. The
# DEFAULT_INCLUDES (DESIGN.md "What we pull") are asked for whenever the server does not list its includes, the
# others only where it lists them.
_AGENTS = ("Practitioner", "PractitionerRole", "Organization")
INCLUDES: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "DiagnosticReport": {"DiagnosticReport:result": (("result",), ("Observation",)),
                         "DiagnosticReport:performer": (("performer",), _AGENTS),
                         "DiagnosticReport:specimen": (("specimen",), ("Specimen",))},
    "MedicationRequest": {"MedicationRequest:medication": (("medicationReference",), ("Medication",)),
                          "MedicationRequest:requester": (("requester",), _AGENTS)},
    "MedicationStatement": {"MedicationStatement:medication": (("medicationReference",), ("Medication",))},
    "Condition": {"Condition:asserter": (("asserter",), ("Practitioner", "PractitionerRole"))},
    "Procedure": {"Procedure:performer": (("performer", "actor"), _AGENTS)},
    "AllergyIntolerance": {"AllergyIntolerance:recorder": (("recorder",), ("Practitioner", "PractitionerRole")),
                           "AllergyIntolerance:asserter": (("asserter",), ("Practitioner", "PractitionerRole"))},
    "DocumentReference": {"DocumentReference:author": (("author",), _AGENTS),
                          "DocumentReference:custodian": (("custodian",), ("Organization",))},
    "Encounter": {"Encounter:practitioner": (("participant", "individual"), ("Practitioner",)),
                  "Encounter:service-provider": (("serviceProvider",), ("Organization",)),
                  "Encounter:location": (("location", "location"), ("Location",))},
}
DEFAULT_INCLUDES = ("DiagnosticReport:result", "MedicationRequest:medication")


@dataclass(frozen=True, eq=False)  # identity hashing: pages are kept per search
class PlannedSearch:
    """One search the fetch will run to the end (params: a value, or a list for a repeated parameter)."""

    resource_type: str
    params: dict[str, Any]

    def include_names(self) -> list[str]:
        """The `_include` values this search asks for."""
        names = self.params.get("_include") or []
        return [names] if isinstance(names, str) else list(names)

    def included_types(self) -> set[str]:
        """The referenced types this search's includes can bring."""
        table = INCLUDES.get(self.resource_type, {})
        return {t for name in self.include_names() for t in table.get(name, ((), ()))[1]}


def plan_searches(patient_id: str, capability: CapabilityStatement) -> list[PlannedSearch]:
    """The patient searches to run, limited to what the server says it supports."""
    resources = {r.type: r for rest in capability.rest or [] if rest.mode == "server" for r in rest.resource or []}
    plan = []
    # The usually longest searches first: a search's later pages can only be asked for once its first page has
    # said how many there are, so the long chains should learn it in the first round (medication orders and
    # reports outnumber the rest in most records; an order that is wrong for a record costs at most a round).
    for resource_type, extra in [
        ("MedicationRequest", {"intent": "order,plan"}),
        ("DiagnosticReport", {}),
        ("Procedure", {}), ("Encounter", {"class": HOSPITAL_STAY_CLASSES}),
        ("Condition", {}), ("MedicationStatement", {}),
        ("DocumentReference", {"type": ",".join(f"{systems.LOINC}|{c}" for c in REPORT_TYPES)}),
        ("CarePlan", {}), ("AllergyIntolerance", {}),
    ]:
        if resources and resource_type not in resources:
            continue
        if resource_type == "Encounter" and not _lists_param(resources.get(resource_type), "class"):
            continue  # without a class filter this would read every visit
        resource = resources.get(resource_type)
        includes = _includes(resource_type, resource)
        params = {"patient": patient_id, **_supported(resource, extra)}
        if includes:
            params["_include"] = includes[0] if len(includes) == 1 else includes
        plan.append(PlannedSearch(resource_type, params))
    return plan


def _includes(resource_type: str, resource: object) -> list[str]:
    """The includes to ask for: those of INCLUDES the server lists, else (when it lists none) the default ones."""
    listed = set(getattr(resource, "searchInclude", None) or [])
    wanted = INCLUDES.get(resource_type, {})
    if not listed:
        return [name for name in wanted if name in DEFAULT_INCLUDES]
    return [name for name in wanted if name in listed]


def _supported(resource: object, params: dict[str, str]) -> dict[str, str]:
    """Keep only the parameters the server lists for this type (all, when it lists none)."""
    if resource is None:
        return params
    names = {p.name for p in resource.searchParam or []}
    return {name: value for name, value in params.items() if not names or name in names}


def _lists_param(resource: object, name: str) -> bool:
    return resource is not None and any(p.name == name for p in resource.searchParam or [])


def supported_types(capability: CapabilityStatement) -> set[str]:
    """Resource types the server's CapabilityStatement lists (empty when it lists none)."""
    return {r.type for rest in capability.rest or [] if rest.mode == "server" for r in rest.resource or []}
