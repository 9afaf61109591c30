"""What the fetch hands the packet mapper: one patient's resources from one EHR."""

from dataclasses import dataclass, field
from functools import cached_property

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
        """Return the resources of one type, in fetch order (a new list each time)."""
        return list(self._by_type.get(resource_type, ()))

    @cached_property
    def _by_type(self) -> dict[str, list[Resource]]:
        """The resources by type, made on first use (the packet mapper asks for some types a dozen times): the
        record's resources are not to change once it is read."""
        by_type: dict[str, list[Resource]] = {}
        for resource in self.resources:
            by_type.setdefault(resource.get_resource_type(), []).append(resource)
        return by_type
