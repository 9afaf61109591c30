"""The C-CDA header: document kind, patient, authors, custodian, attesters, events and inFulfillmentOf."""

import re
from dataclasses import dataclass, field

from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.composition import CompositionAttester, CompositionEvent, CompositionRelatesTo
from fhir.resources.R4B.device import Device, DeviceDeviceName
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.patient import Patient, PatientCommunication
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource
from lxml import etree

from mappers import systems
from mappers.ccda import ccda
from mappers.ccda.datatypes import (
    addresses,
    codeable_concept,
    identifier,
    identifiers,
    names,
    telecoms,
)
from mappers.errors import MappingError
from mappers.ids import IdFactory
from mappers.oids import CODE_SYSTEMS, DOCUMENT_KIND_BY_TEMPLATE, IDENTIFIER_SYSTEMS, OID_UNSTRUCTURED_DOCUMENT

LOINC_OID = "2.16.840.1.113883.6.1"
_GENDER = {"M": "male", "F": "female", "UN": "other"}
_BCP47 = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
_CONFIDENTIALITY = {"U", "L", "M", "N", "R", "V"}
_RELATES = {"RPLC": "replaces", "APND": "appends", "XFRM": "transforms"}

# LOINC document codes → kind. Consult: C-CDA ConsultDocumentType (2.16.840.1.113883.11.20.9.31); referral:
# ReferralDocumentType (2.16.840.1.113883.1.11.20.2.3); the others are the C-CDA R2.1 document-type codes.
_CONSULT_LOINC = frozenset(
    "11488-4 34099-2 34756-7 34758-3 34760-9 34879-7 34761-7 34764-1 34776-5 34779-9 34781-5 72555-6 34783-1 "
    "34785-6 34795-5 34798-9 34797-1 34800-3 34777-3 34803-7 34855-7 34805-2 34807-8 34810-2 34812-8 34814-4 "
    "34816-9 60570-9 34820-1 34822-7 34824-3 34826-8 34828-4 34788-0 34791-4 34103-2 34831-8 73575-3 34833-4 "
    "34835-9 34837-5 34839-1 34841-7 34845-8 34847-4 34849-0 34851-6 34853-2 51846-4 34104-0 68619-6 68633-7 "
    "68639-4 68486-0 68648-5 68651-9 68661-8 64072-2 68551-1 68670-9 64056-5 68681-6 68685-7 68694-9 68705-3 "
    "68566-9 68570-1 68575-0 68584-2 68716-0 68469-6 68727-7 68892-9 68897-8 68746-7 68757-4 68765-7 68869-7 "
    "68874-7 68787-1 68879-6 68802-8 68864-8 68812-7 68821-8 68586-7 68590-9 68597-4 68837-4 34102-4 64080-5 "
    "68846-5 64068-0 64076-3 68852-3 34100-8 51854-8 51845-6 34749-2 34101-6".split()
)
_REFERRAL_LOINC = frozenset(
    "57133-1 57170-3 57178-6 57134-9 57135-6 57136-4 57137-2 57138-0 57139-8 57171-1 57141-4 57142-2 57143-0 "
    "57144-8 57146-3 57145-5 57173-7 57179-4 57147-1 57148-9 57149-7 57150-5 57151-3 57174-5 57175-2 57176-0 "
    "57152-1 57153-9 57154-7 57155-4 57156-2 57157-0 57158-8 57177-8 57159-6 57160-4 57161-2 57162-0 57163-8 "
    "57164-6 57166-1 57167-9 57168-7 57169-5 69438-0".split()
)
_KIND_BY_LOINC = {
    "34133-9": "ccd", "18842-5": "discharge-summary", "11490-0": "discharge-summary",
    "28655-9": "discharge-summary", "34105-7": "discharge-summary", "34106-5": "discharge-summary",
    "11506-3": "progress-note", "34117-2": "history-and-physical", "11504-8": "operative-note",
    "28570-0": "procedure-note", "18761-7": "transfer-summary", "18748-4": "diagnostic-imaging-report",
}
_KIND_BY_TITLE = (("consult", "consultation-note"), ("referral", "referral-note"),
                  ("discharge", "discharge-summary"), ("progress note", "progress-note"),
                  ("continuity of care", "ccd"), ("history and physical", "history-and-physical"),
                  ("transfer summary", "transfer-summary"), ("operative", "operative-note"))


def document_kind(root: etree._Element) -> tuple[str, list[str]]:
    """Return the document kind from templateId, LOINC code and title together, with disagreement warnings.

    Real files disagree (corpus README): the LOINC code wins when it is a known document code (it is what
    EHRs file on); else a document-type templateId; else keywords of the title; else "unstructured" for a
    nonXMLBody / Unstructured Document, else "unknown". A template/code disagreement is reported.
    """
    by_template = [DOCUMENT_KIND_BY_TEMPLATE[t] for t in ccda.templates(root) if t in DOCUMENT_KIND_BY_TEMPLATE]
    code = ccda.attr(root, "hl7:code", "code")
    by_code = _kind_for_loinc(code) if ccda.attr(root, "hl7:code", "codeSystem") in (None, LOINC_OID) else None
    by_title = _kind_for_title(ccda.text_of(ccda.first(root, "hl7:title")))
    warnings = []
    if by_code and by_template and by_code not in by_template:
        warnings.append(f"document templateId says {by_template[0]} but its LOINC code {code} says {by_code}")
    unstructured = ccda.has_template(root, OID_UNSTRUCTURED_DOCUMENT) or ccda.first(
        root, "hl7:component/hl7:nonXMLBody") is not None
    preferred = [k for k in by_template if k == by_title] or by_template
    kind = by_code or (preferred[0] if preferred else None) or by_title
    return kind or ("unstructured" if unstructured else "unknown"), warnings


def _kind_for_loinc(code: str | None) -> str | None:
    """Map a LOINC document code to a kind."""
    if code in _CONSULT_LOINC:
        return "consultation-note"
    if code in _REFERRAL_LOINC:
        return "referral-note"
    return _KIND_BY_LOINC.get(code or "")


def _kind_for_title(title: str | None) -> str | None:
    """Guess a kind from keywords of the document title (the weakest signal)."""
    lowered = (title or "").lower()
    return next((kind for word, kind in _KIND_BY_TITLE if word in lowered), None)


def map_patient(root: etree._Element, new_id: IdFactory) -> Patient:
    """Map recordTarget/patientRole to a Patient (422 when the document names no patient)."""
    role = ccda.first(root, "hl7:recordTarget/hl7:patientRole")
    if role is None:
        raise MappingError("the C-CDA document has no recordTarget/patientRole", status=422)
    person = ccda.first(role, "hl7:patient")
    gender_el = ccda.first(person, "hl7:administrativeGenderCode")
    gender = _GENDER.get(ccda.attr(gender_el, None, "code") or "") or (
        "unknown" if gender_el is not None and gender_el.get("nullFlavor") else None)
    birth = ccda.ts(person, "hl7:birthTime")
    return Patient(
        id=new_id(),
        identifier=identifiers(role) or None,
        name=names(person) or None,
        telecom=telecoms(role) or None,
        gender=gender,
        birthDate=birth[:10] if birth else None,
        address=addresses(role) or None,
        maritalStatus=codeable_concept(ccda.first(person, "hl7:maritalStatusCode")),
        communication=_communication(person) or None,
    )


def _communication(person: etree._Element | None) -> list[PatientCommunication]:
    """Map languageCommunication (BCP-47-shaped language codes only) to Patient.communication."""
    result = []
    for language in ccda.each(person, "hl7:languageCommunication"):
        code = ccda.attr(language, "hl7:languageCode", "code")
        if code and _BCP47.match(code):
            preferred = ccda.attr(language, "hl7:preferenceInd", "value")
            result.append(PatientCommunication(
                language=CodeableConcept(coding=[Coding(system="urn:ietf:bcp:47", code=code)]),
                preferred=True if preferred == "true" else None,
            ))
    return result


def check_same_patient(ccda_patient: Patient, ehr_patient: Patient) -> None:
    """Raise MappingError(422) unless the C-CDA patient is the referral's patient.

    Compared: birthDate (same day, at their common precision), identifiers of the same system (OIDs and their
    FHIR URIs are the same system; values compared without spaces/dashes, case-insensitively) and, when both
    are known, administrative gender. At least a birth date or a shared identifier system must be comparable.
    Messages never carry the values themselves.
    """
    compared = False
    if ccda_patient.birthDate and ehr_patient.birthDate:
        ours, theirs = str(ccda_patient.birthDate), str(ehr_patient.birthDate)
        size = min(len(ours), len(theirs))
        if ours[:size] != theirs[:size]:
            raise _different("birth date differs")
        compared = True
    ours_ids, theirs_ids = _identifier_values(ccda_patient), _identifier_values(ehr_patient)
    for system in ours_ids.keys() & theirs_ids.keys():
        if not ours_ids[system] & theirs_ids[system]:
            raise _different("identifier differs")
        compared = True
    genders = {ccda_patient.gender, ehr_patient.gender}
    if None not in genders and "unknown" not in genders and len(genders) == 2:
        raise _different("administrative gender differs")
    if not compared:
        raise MappingError("cannot confirm the C-CDA document is about the referred patient "
                           "(no birth date or shared identifier to compare)", status=422)


def _different(reason: str) -> MappingError:
    """Return the 'different patient' error (the reason names the field, never the values)."""
    return MappingError(f"the C-CDA document is about a different patient ({reason})", status=422)


def _identifier_values(patient: Patient) -> dict[str, set[str]]:
    """Return a patient's identifier values by normalised system."""
    result: dict[str, set[str]] = {}
    for ident in patient.identifier or []:
        if ident.system and ident.value:
            value = re.sub(r"[\s-]", "", ident.value).upper()
            result.setdefault(normalise_system(ident.system), set()).add(value)
    return result


def normalise_system(system: str) -> str:
    """Return a comparable identifier/code system: urn:oid:X and its FHIR URI compare equal."""
    system = system.strip()
    if system.startswith("urn:oid:"):
        oid = system[len("urn:oid:"):]
        return IDENTIFIER_SYSTEMS.get(oid) or CODE_SYSTEMS.get(oid) or system
    return system.rstrip("/")


@dataclass
class Participants:
    """Practitioners, Organizations and Devices of the header, de-duplicated by identifier."""

    new_id: IdFactory
    resources: list[Resource] = field(default_factory=list)
    _by_key: dict[tuple, Resource] = field(default_factory=dict)

    def add(self, resource: Resource, key: tuple | None) -> Reference:
        """Register a resource (or return the one already known under key) and return a Reference to it."""
        if key is not None and key in self._by_key:
            return Reference(reference=f"urn:uuid:{self._by_key[key].id}")
        resource.id = self.new_id()
        self.resources.append(resource)
        if key is not None:
            self._by_key[key] = resource
        return Reference(reference=f"urn:uuid:{resource.id}")

    def person(self, assigned: etree._Element | None) -> Reference | None:
        """Map assignedAuthor/assignedEntity with an assignedPerson to a Practitioner."""
        person = ccda.first(assigned, "hl7:assignedPerson")
        if person is None:
            return None
        ids = identifiers(assigned)
        person_names = names(person)
        if not ids and not person_names:
            return None
        practitioner = Practitioner(identifier=ids or None, name=person_names or None,
                                    telecom=telecoms(assigned) or None, address=addresses(assigned) or None)
        return self.add(practitioner, _key("Practitioner", ids))

    def organization(self, org: etree._Element | None) -> Reference | None:
        """Map an Organization element (representedOrganization, ...) to an Organization (org-1: name or id)."""
        if ccda.is_null(org):
            return None
        ids = identifiers(org)
        name = ccda.text_of(ccda.first(org, "hl7:name"))
        if not ids and not name:
            return None
        organization = Organization(identifier=ids or None, name=name, telecom=telecoms(org) or None,
                                    address=addresses(org) or None)
        return self.add(organization, _key("Organization", ids) or (("Organization", name),))

    def device(self, assigned: etree._Element | None) -> Reference | None:
        """Map assignedAuthor/assignedAuthoringDevice to a Device (model and software names)."""
        device = ccda.first(assigned, "hl7:assignedAuthoringDevice")
        if device is None:
            return None
        model = ccda.text_of(ccda.first(device, "hl7:manufacturerModelName"))
        software = ccda.text_of(ccda.first(device, "hl7:softwareName"))
        device_names = [DeviceDeviceName(name=n, type=t) for n, t in ((model, "model-name"), (software, "other")) if n]
        ids = identifiers(assigned)
        if not device_names and not ids:
            return None
        return self.add(Device(identifier=ids or None, deviceName=device_names or None), _key("Device", ids))


def _key(kind: str, ids: list[Identifier]) -> tuple | None:
    """Return a de-duplication key from identifiers (None when there are none: never merge on names)."""
    return (kind, *sorted((i.system or "", i.value or "") for i in ids)) if ids else None


def map_authors(root: etree._Element, participants: Participants) -> list[Reference]:
    """Map every author: the person (or device) and their organization, without duplicates."""
    refs: list[Reference] = []
    for assigned in ccda.each(root, "hl7:author/hl7:assignedAuthor"):
        for candidate in (participants.person(assigned) or participants.device(assigned),
                          participants.organization(ccda.first(assigned, "hl7:representedOrganization"))):
            if candidate is not None and all(r.reference != candidate.reference for r in refs):
                refs.append(candidate)
    return refs


def map_custodian(root: etree._Element, participants: Participants) -> Reference | None:
    """Map custodian/assignedCustodian/representedCustodianOrganization to an Organization."""
    return participants.organization(ccda.first(
        root, "hl7:custodian/hl7:assignedCustodian/hl7:representedCustodianOrganization"))


def map_attesters(root: etree._Element, participants: Participants) -> list[CompositionAttester]:
    """Map legalAuthenticator (mode legal) and authenticators (mode professional) to attesters."""
    attesters = []
    for path, mode in (("hl7:legalAuthenticator", "legal"), ("hl7:authenticator", "professional")):
        for signer in ccda.each(root, path):
            assigned = ccda.first(signer, "hl7:assignedEntity")
            party = participants.person(assigned) or participants.organization(
                ccda.first(assigned, "hl7:representedOrganization"))
            time = ccda.ts(signer, "hl7:time")
            if party is not None or time is not None:
                attesters.append(CompositionAttester(mode=mode, time=time, party=party))
    return attesters


def map_events(root: etree._Element) -> list[CompositionEvent]:
    """Map documentationOf/serviceEvent (code and period) to Composition.event."""
    events = []
    for service in ccda.each(root, "hl7:documentationOf/hl7:serviceEvent"):
        code = codeable_concept(ccda.first(service, "hl7:code"))
        span = ccda.period(ccda.first(service, "hl7:effectiveTime"))
        if code is not None or span is not None:
            events.append(CompositionEvent(code=[code] if code else None, period=span))
    return events


def map_relates_to(root: etree._Element) -> list[CompositionRelatesTo]:
    """Say the Composition transforms the source document (its id), and map relatedDocument links."""
    relations = []
    source = identifier(ccda.first(root, "hl7:id"))
    if source is not None:
        relations.append(CompositionRelatesTo(code="transforms", targetIdentifier=source))
    for related in ccda.each(root, "hl7:relatedDocument"):
        code = _RELATES.get((related.get("typeCode") or "").strip())
        target = identifier(ccda.first(related, "hl7:parentDocument/hl7:id"))
        if code and target is not None:
            relations.append(CompositionRelatesTo(code=code, targetIdentifier=target))
    return relations


def map_order_extensions(root: etree._Element, extra: Identifier | None) -> list[Extension]:
    """Map inFulfillmentOf/order/id (and the referral's ServiceRequest identifier) to OrderExtensions.

    C-CDA on FHIR OrderExtension: a logical Reference (by identifier, type ServiceRequest), since the order
    itself is not in the Bundle.
    """
    orders = [i for i in (identifier(el) for el in ccda.each(root, "hl7:inFulfillmentOf/hl7:order/hl7:id")) if i]
    if extra is not None and all((o.system, o.value) != (extra.system, extra.value) for o in orders):
        orders.append(extra)
    return [Extension(url=systems.EXT_CCDA_ORDER,
                      valueReference=Reference(type="ServiceRequest", identifier=order)) for order in orders]


def confidentiality(root: etree._Element) -> str | None:
    """Return the confidentialityCode when it is one of the R4 Composition codes."""
    code = ccda.attr(root, "hl7:confidentialityCode", "code")
    return code if code in _CONFIDENTIALITY else None


def language(root: etree._Element) -> str | None:
    """Return the document languageCode when it looks like BCP-47."""
    code = ccda.attr(root, "hl7:languageCode", "code")
    return code if code and _BCP47.match(code) else None
