"""Code systems, codes and identifier systems used across the mappers, with their sources."""

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
# What people call the code systems (for labels such as "Prostate cancer (SNOMED CT 399068003)").
SYSTEM_NAMES = {SNOMED: "SNOMED CT", ICD10CM: "ICD-10-CM", ICD10: "ICD-10", LOINC: "LOINC", RXNORM: "RxNorm"}
URN_IETF_RFC_3986 = "urn:ietf:rfc:3986"  # identifier system whose values are URIs (urn:uuid:...)

# Document types (LOINC). https://loinc.org/57133-1/ Referral note; https://loinc.org/11488-4/ Consult note
LOINC_REFERRAL_NOTE = "57133-1"
LOINC_CONSULT_NOTE = "11488-4"

# Section codes (LOINC), as C-CDA / US Core use them.
SECTION_REASON_FOR_REFERRAL = ("42349-1", "Reason for referral")
SECTION_PROBLEMS = ("11450-4", "Problem list")
SECTION_PROCEDURES = ("47519-4", "History of Procedures")
SECTION_RESULTS = ("30954-2", "Relevant diagnostic tests/laboratory data")
SECTION_MEDICATIONS = ("10160-0", "History of Medication use")
SECTION_ALLERGIES = ("48765-2", "Allergies and adverse reactions")
SECTION_PLAN = ("18776-5", "Plan of care note")
SECTION_DOCUMENTS = ("77599-9", "Additional documentation")  # attached reports, as EHDS/IPS-family IGs code them
SECTION_ASSESSMENT = ("51848-0", "Evaluation note")
SECTION_SECOND_OPINION_SUMMARY = ("55110-1", "Conclusions")  # LOINC 55110-1 Conclusions [Interpretation] Document
SECTION_READINESS = ("48767-8", "Annotation comment")

# Report document types a consultant needs (DESIGN.md "What we pull").
LOINC_DISCHARGE_SUMMARY = "18842-5"
LOINC_OPERATIVE_NOTE = "11504-8"
LOINC_PROCEDURE_NOTE = "28570-0"
LOINC_PATHOLOGY_STUDY = "11526-1"
LOINC_IMAGING_STUDY = "18748-4"

# Referral (BSeR): SNOMED 3457005 "Patient referral"; HL7 v2 table 0336 "S" = Second Opinion.
SNOMED_PATIENT_REFERRAL = "3457005"
V2_0336 = "http://terminology.hl7.org/CodeSystem/v2-0336"
V2_0336_SECOND_OPINION = "S"

# Task.code: http://hl7.org/fhir/CodeSystem/task-code "fulfill"
TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"

# US Core DocumentReference category: http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category
US_CORE_DOCREF_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"

CONDITION_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER_STATUS = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

# C-CDA on FHIR: Composition extension carrying the order a document fulfils (inFulfillmentOf).
EXT_CCDA_ORDER = "http://hl7.org/fhir/us/ccda/StructureDefinition/OrderExtension"

# Composition.attester / Provenance participant type
PROVENANCE_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

# BSeR Task businessStatus codes (https://hl7.org/fhir/us/bser/) as DESIGN.md's life table uses them.
BSER_BUSINESS_STATUS = "http://hl7.org/fhir/us/bser/CodeSystem/TaskBusinessStatusCS"

# --- added for the packet, consult and write-back mappers -------------------------------------------------

LOINC_REFERRAL_NOTE_DISPLAY = "Referral note"
LOINC_CONSULT_NOTE_DISPLAY = "Consult note"

# Composition.section.emptyReason: http://terminology.hl7.org/CodeSystem/list-empty-reason
LIST_EMPTY_REASON = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
EMPTY_REASON_NIL_KNOWN = ("nilknown", "Nil Known")

SNOMED_PATIENT_REFERRAL_DISPLAY = "Patient referral"
V2_0336_SECOND_OPINION_DISPLAY = "Second Opinion"
TASK_CODE_FULFILL = ("fulfill", "Fulfill the focal request")

# US Core DocumentReference category code (us-core-documentreference-category)
US_CORE_CLINICAL_NOTE = ("clinical-note", "Clinical Note")

# DocumentReference.content.format: IHE format code "mime type sufficient" (in US Core's format value set)
IHE_FORMAT_CODE = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
IHE_FORMAT_MIME_TYPE_SUFFICIENT = ("urn:ihe:iti:xds:2017:mimeTypeSufficient", "mimeType Sufficient")

# BSeR TaskBusinessStatusCS codes and displays for each Task.status of DESIGN.md's life table.
# "in-progress" has the 5.1.x family; 5.1.1 "Service Request Event Scheduled" is the default (work has begun).
BSER_BUSINESS_STATUS_FOR_TASK_STATUS: dict[str, tuple[str, str]] = {
    "requested": ("2.0", "Service Request Created"),
    "accepted": ("3.0", "Service Request Accepted"),
    "rejected": ("4.0", "Service Request Declined"),
    "in-progress": ("5.1.1", "Service Request Event Scheduled"),
    "failed": ("6.0", "Service Request Fulfillment Cancelled"),
    "cancelled": ("6.0", "Service Request Fulfillment Cancelled"),
    "completed": ("7.0", "Service Request Fulfillment Completed"),
}

# Composition.status values a consult may keep (http://hl7.org/fhir/composition-status)
COMPOSITION_STATUSES_KEPT = ("preliminary", "final", "amended")
