"""What a FHIR server can do for us, read from its CapabilityStatement (and SMART configuration)."""

from dataclasses import dataclass, field

from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from service.auth.discovery import SmartServer
from service.ehr.client import FhirClient
from service.ehr.plan import plan_searches, supported_types
from service.errors import ServiceError

REQUIRED_TYPES = ("Patient", "Condition")
WRITE_TYPES = ("DocumentReference", "Task", "ServiceRequest", "Bundle")


@dataclass
class CapabilityReport:
    """A readable account of a server for IT staff, and whether the service can work with it."""

    base_url: str
    software: str | None = None
    fhir_version: str | None = None
    formats: list[str] = field(default_factory=list)
    searches: dict[str, bool] = field(default_factory=dict)
    medications_from: list[str] = field(default_factory=list)
    everything: bool = False
    writes: dict[str, bool] = field(default_factory=dict)
    smart: SmartServer | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.problems


def capability_report(client: FhirClient, smart: SmartServer | None = None) -> CapabilityReport:
    """Read /metadata and say which of our searches and writes the server supports."""
    report = CapabilityReport(base_url=client.base_url, smart=smart)
    try:
        statement = client.capabilities()
    except ServiceError as exc:
        report.problems.append(f"/metadata could not be read: {exc.diagnostics}")
        return report
    report.software = " ".join(filter(None, [statement.software.name, statement.software.version])) \
        if statement.software else None
    report.fhir_version = statement.fhirVersion
    report.formats = list(statement.format or [])
    types = supported_types(statement)
    planned = {s.resource_type for s in plan_searches("example", statement)}
    report.searches = {t: t in planned for t in ("Condition", "Procedure", "DiagnosticReport", "MedicationStatement",
                                                 "MedicationRequest", "AllergyIntolerance", "CarePlan",
                                                 "DocumentReference")}
    report.medications_from = [t for t in ("MedicationStatement", "MedicationRequest") if report.searches.get(t)]
    report.everything = has_operation(statement, "Patient", "everything")
    report.writes = {t: _supports(statement, t, "create") or _supports(statement, t, "update") for t in WRITE_TYPES}
    _judge(report, types)
    return report


def _judge(report: CapabilityReport, types: set[str]) -> None:
    if not (report.fhir_version or "").startswith("4.0"):
        report.problems.append(f"FHIR version {report.fhir_version} is not R4 (4.0.x)")
    missing = [t for t in REQUIRED_TYPES if types and t not in types]
    if missing:
        report.problems.append(f"the server does not offer {', '.join(missing)}")
    if not report.medications_from:
        report.notes.append("no MedicationStatement or MedicationRequest: the packet will have no medications")
    if not report.writes.get("DocumentReference"):
        report.problems.append("the server does not accept DocumentReference writes: the consult cannot be written back")
    if report.formats and not any("json" in f for f in report.formats):
        report.problems.append("the server does not offer JSON")


def _resource(statement: CapabilityStatement, resource_type: str):  # noqa: ANN202
    for rest in statement.rest or []:
        for resource in rest.resource or []:
            if resource.type == resource_type:
                return resource
    return None


def _supports(statement: CapabilityStatement, resource_type: str, interaction: str) -> bool:
    resource = _resource(statement, resource_type)
    return resource is not None and any(i.code == interaction for i in resource.interaction or [])


def has_operation(statement: CapabilityStatement, resource_type: str, name: str) -> bool:
    """The statement lists the operation on the type or server-wide (by name, or by its definition's canonical)."""
    resource = _resource(statement, resource_type)
    ops = list(resource.operation or []) if resource else []
    ops += [op for rest in statement.rest or [] for op in rest.operation or []]
    return any(op.name == name or (op.definition or "").endswith(f"/{resource_type}-{name}") for op in ops)
