"""What every entry mapper needs: the subject, the id factory, the narrative index and a warnings sink."""

from dataclasses import dataclass, field

from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource

from mappers.ccda.datatypes import NarrativeIndex
from mappers.ids import IdFactory


@dataclass
class EntryContext:
    """Shared state for mapping the entries of one document (no I/O, no clock)."""

    subject: Reference
    new_id: IdFactory
    narrative: NarrativeIndex
    warnings: list[str] = field(default_factory=list)

    def warn(self, message: str) -> None:
        """Record a warning once (messages name templates and codes, never patient data)."""
        if message not in self.warnings:
            self.warnings.append(message)


@dataclass(frozen=True)
class Mapped:
    """One section entry's result: the resource the section lists, plus resources it references."""

    entry: Resource
    related: tuple[Resource, ...] = ()


def ref(resource: Resource) -> Reference:
    """Return a urn:uuid Reference to a resource created by the mappers (its id is the uuid)."""
    return Reference(reference=f"urn:uuid:{resource.id}")
