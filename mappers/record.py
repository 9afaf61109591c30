"""What the fetch hands the packet mapper: one patient's resources from one EHR."""

from dataclasses import dataclass, field

from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource


@dataclass(frozen=True)
class PatientRecord:
    """A patient and every resource fetched for them (clinical resources and what they reference)."""

    patient: Patient
    resources: list[Resource] = field(default_factory=list)
    base_url: str = ""  # the EHR's FHIR base, to recognise absolute references to it
    warnings: list[str] = field(default_factory=list)

    def of_type(self, resource_type: str) -> list[Resource]:
        """Return the resources of one type, in fetch order."""
        return [r for r in self.resources if r.get_resource_type() == resource_type]
