"""C-CDA template OIDs and the OID → FHIR URI tables for code systems and identifier systems.

Sources: HL7 C-CDA R2.1 (templates 2.16.840.1.113883.10.20.22.*), C-CDA 3.0 (same roots, new extensions),
IHE PCC (1.3.6.1.4.1.19376.*), and the FHIR R4 terminology pages (https://hl7.org/fhir/R4/terminologies-systems.html)
for the URIs. Templates are matched on `@root` only; `@extension` (the template version) is ignored.
"""

from types import MappingProxyType

CDA_NS = "urn:hl7-org:v3"
SDTC_NS = "urn:hl7-org:sdtc"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

# --- Document templates (2.16.840.1.113883.10.20.22.1.*) ---
OID_US_REALM_HEADER = "2.16.840.1.113883.10.20.22.1.1"
OID_CCD_DOCUMENT = "2.16.840.1.113883.10.20.22.1.2"
OID_HISTORY_AND_PHYSICAL = "2.16.840.1.113883.10.20.22.1.3"
OID_CONSULTATION_NOTE = "2.16.840.1.113883.10.20.22.1.4"
OID_DIAGNOSTIC_IMAGING_REPORT = "2.16.840.1.113883.10.20.22.1.5"
OID_PROCEDURE_NOTE = "2.16.840.1.113883.10.20.22.1.6"
OID_OPERATIVE_NOTE = "2.16.840.1.113883.10.20.22.1.7"
OID_DISCHARGE_SUMMARY = "2.16.840.1.113883.10.20.22.1.8"
OID_PROGRESS_NOTE = "2.16.840.1.113883.10.20.22.1.9"
OID_UNSTRUCTURED_DOCUMENT = "2.16.840.1.113883.10.20.22.1.10"
OID_TRANSFER_SUMMARY = "2.16.840.1.113883.10.20.22.1.13"
OID_REFERRAL_NOTE = "2.16.840.1.113883.10.20.22.1.14"
OID_CARE_PLAN = "2.16.840.1.113883.10.20.22.1.15"

# document kind by document-level templateId (the US Realm Header and Unstructured Document say nothing of the type)
DOCUMENT_KIND_BY_TEMPLATE = MappingProxyType({
    OID_CCD_DOCUMENT: "ccd",
    OID_HISTORY_AND_PHYSICAL: "history-and-physical",
    OID_CONSULTATION_NOTE: "consultation-note",
    OID_DIAGNOSTIC_IMAGING_REPORT: "diagnostic-imaging-report",
    OID_PROCEDURE_NOTE: "procedure-note",
    OID_OPERATIVE_NOTE: "operative-note",
    OID_DISCHARGE_SUMMARY: "discharge-summary",
    OID_PROGRESS_NOTE: "progress-note",
    OID_TRANSFER_SUMMARY: "transfer-summary",
    OID_REFERRAL_NOTE: "referral-note",
    OID_CARE_PLAN: "care-plan",
})

# --- Section templates ---
OID_MEDICATIONS_SECTION = "2.16.840.1.113883.10.20.22.2.1"
OID_MEDICATIONS_SECTION_ENTRIES = "2.16.840.1.113883.10.20.22.2.1.1"
OID_IMMUNIZATIONS_SECTION = "2.16.840.1.113883.10.20.22.2.2"
OID_IMMUNIZATIONS_SECTION_ENTRIES = "2.16.840.1.113883.10.20.22.2.2.1"
OID_RESULTS_SECTION = "2.16.840.1.113883.10.20.22.2.3"
OID_RESULTS_SECTION_ENTRIES = "2.16.840.1.113883.10.20.22.2.3.1"
OID_VITAL_SIGNS_SECTION = "2.16.840.1.113883.10.20.22.2.4"
OID_VITAL_SIGNS_SECTION_ENTRIES = "2.16.840.1.113883.10.20.22.2.4.1"
OID_PROBLEMS_SECTION = "2.16.840.1.113883.10.20.22.2.5"
OID_PROBLEMS_SECTION_ENTRIES = "2.16.840.1.113883.10.20.22.2.5.1"
OID_ALLERGIES_SECTION = "2.16.840.1.113883.10.20.22.2.6"
OID_ALLERGIES_SECTION_ENTRIES = "2.16.840.1.113883.10.20.22.2.6.1"
OID_PROCEDURES_SECTION = "2.16.840.1.113883.10.20.22.2.7"
OID_PROCEDURES_SECTION_ENTRIES = "2.16.840.1.113883.10.20.22.2.7.1"
OID_ASSESSMENT_SECTION = "2.16.840.1.113883.10.20.22.2.8"
OID_ASSESSMENT_AND_PLAN_SECTION = "2.16.840.1.113883.10.20.22.2.9"
OID_PLAN_OF_TREATMENT_SECTION = "2.16.840.1.113883.10.20.22.2.10"
OID_REASON_FOR_REFERRAL_SECTION = "1.3.6.1.4.1.19376.1.5.3.1.3.1"

# Sections we know but keep as narrative only (name for warnings/reports; LOINC where the template fixes one).
NARRATIVE_SECTIONS = MappingProxyType({
    OID_IMMUNIZATIONS_SECTION: "Immunizations",
    OID_IMMUNIZATIONS_SECTION_ENTRIES: "Immunizations",
    OID_VITAL_SIGNS_SECTION: "Vital Signs",
    OID_VITAL_SIGNS_SECTION_ENTRIES: "Vital Signs",
    "2.16.840.1.113883.10.20.22.2.11": "Discharge Medications",
    "2.16.840.1.113883.10.20.22.2.11.1": "Discharge Medications",
    "2.16.840.1.113883.10.20.22.2.12": "Reason for Visit",
    "2.16.840.1.113883.10.20.22.2.13": "Chief Complaint and Reason for Visit",
    "2.16.840.1.113883.10.20.22.2.14": "Functional Status",
    "2.16.840.1.113883.10.20.22.2.15": "Family History",
    "2.16.840.1.113883.10.20.22.2.16": "Hospital Discharge Studies Summary",
    "2.16.840.1.113883.10.20.22.2.17": "Social History",
    "2.16.840.1.113883.10.20.22.2.18": "Payers",
    "2.16.840.1.113883.10.20.22.2.20": "Past Medical History",
    "2.16.840.1.113883.10.20.22.2.21": "Advance Directives",
    "2.16.840.1.113883.10.20.22.2.21.1": "Advance Directives",
    "2.16.840.1.113883.10.20.22.2.22": "Encounters",
    "2.16.840.1.113883.10.20.22.2.22.1": "Encounters",
    "2.16.840.1.113883.10.20.22.2.23": "Medical Equipment",
    "2.16.840.1.113883.10.20.22.2.24": "Discharge Diagnosis",
    "2.16.840.1.113883.10.20.22.2.38": "Medications Administered",
    "2.16.840.1.113883.10.20.22.2.41": "Hospital Discharge Instructions",
    "2.16.840.1.113883.10.20.22.2.42": "Hospital Consultations",
    "2.16.840.1.113883.10.20.22.2.43": "Admission Diagnosis",
    "2.16.840.1.113883.10.20.22.2.44": "Admission Medications",
    "2.16.840.1.113883.10.20.22.2.45": "Instructions",
    "2.16.840.1.113883.10.20.22.2.56": "Mental Status",
    "2.16.840.1.113883.10.20.22.2.57": "Nutrition",
    "2.16.840.1.113883.10.20.22.2.58": "Health Concerns",
    "2.16.840.1.113883.10.20.22.2.60": "Goals",
    "2.16.840.1.113883.10.20.22.2.61": "Health Status Evaluations and Outcomes",
    "2.16.840.1.113883.10.20.22.2.63": "Physical Findings of Skin",
    "2.16.840.1.113883.10.20.22.2.64": "Course of Care",
    "2.16.840.1.113883.10.20.22.2.65": "Notes",
    "2.16.840.1.113883.10.20.22.2.80": "Anesthesia",
    "2.16.840.1.113883.10.20.22.2.500": "Care Teams",
    "2.16.840.1.113883.10.20.21.2.3": "Interventions",
    "2.16.840.1.113883.10.20.2.10": "Physical Exam",
    "2.16.840.1.113883.10.20.22.2.10.1": "Physical Exam",
    "2.16.840.1.113883.3.3251.1.5": "Security and Privacy Prohibitions",  # DS4P
    "1.3.6.1.4.1.19376.1.5.3.1.1.13.2.1": "Chief Complaint",
    "1.3.6.1.4.1.19376.1.5.3.1.3.4": "History of Present Illness",
    "1.3.6.1.4.1.19376.1.5.3.1.3.5": "Hospital Course",
    "1.3.6.1.4.1.19376.1.5.3.1.3.18": "Review of Systems",
    "1.3.6.1.4.1.19376.1.5.3.1.3.26": "Hospital Discharge Physical",
    "1.3.6.1.4.1.19376.1.5.3.1.1.5.3.3": "Review of Systems",
    "2.16.840.1.113883.10.20.21.2.1": "Objective",
    "2.16.840.1.113883.10.20.21.2.2": "Subjective",
    "2.16.840.1.113883.10.20.22.2.2.5": "General Status",
})

# --- Entry templates ---
OID_PROBLEM_CONCERN_ACT = "2.16.840.1.113883.10.20.22.4.3"
OID_PROBLEM_OBSERVATION = "2.16.840.1.113883.10.20.22.4.4"
OID_PROBLEM_STATUS = "2.16.840.1.113883.10.20.22.4.6"
OID_MEDICATION_ACTIVITY = "2.16.840.1.113883.10.20.22.4.16"
OID_INDICATION = "2.16.840.1.113883.10.20.22.4.19"
OID_MEDICATION_INFORMATION = "2.16.840.1.113883.10.20.22.4.23"
OID_ALLERGY_CONCERN_ACT = "2.16.840.1.113883.10.20.22.4.30"
OID_ALLERGY_OBSERVATION = "2.16.840.1.113883.10.20.22.4.7"
OID_SEVERITY_OBSERVATION = "2.16.840.1.113883.10.20.22.4.8"
OID_REACTION_OBSERVATION = "2.16.840.1.113883.10.20.22.4.9"
OID_ALLERGY_STATUS = "2.16.840.1.113883.10.20.22.4.28"
OID_CRITICALITY_OBSERVATION = "2.16.840.1.113883.10.20.22.4.145"
OID_RESULT_ORGANIZER = "2.16.840.1.113883.10.20.22.4.1"
OID_RESULT_OBSERVATION = "2.16.840.1.113883.10.20.22.4.2"
OID_PROCEDURE_ACT = "2.16.840.1.113883.10.20.22.4.12"
OID_PROCEDURE_OBSERVATION = "2.16.840.1.113883.10.20.22.4.13"
OID_PROCEDURE_PROCEDURE = "2.16.840.1.113883.10.20.22.4.14"
OID_PLANNED_ACT = "2.16.840.1.113883.10.20.22.4.39"
OID_PLANNED_ENCOUNTER = "2.16.840.1.113883.10.20.22.4.40"
OID_PLANNED_PROCEDURE = "2.16.840.1.113883.10.20.22.4.41"
OID_PLANNED_MEDICATION = "2.16.840.1.113883.10.20.22.4.42"
OID_PLANNED_SUPPLY = "2.16.840.1.113883.10.20.22.4.43"
OID_PLANNED_OBSERVATION = "2.16.840.1.113883.10.20.22.4.44"
OID_INSTRUCTION = "2.16.840.1.113883.10.20.22.4.20"
OID_GOAL_OBSERVATION = "2.16.840.1.113883.10.20.22.4.121"
OID_PATIENT_REFERRAL_ACT = "2.16.840.1.113883.10.20.22.4.140"

# --- Code systems: OID → FHIR URI (anything else becomes urn:oid:<oid>) ---
CODE_SYSTEMS = MappingProxyType({
    "2.16.840.1.113883.6.1": "http://loinc.org",
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "2.16.840.1.113883.6.88": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "2.16.840.1.113883.6.90": "http://hl7.org/fhir/sid/icd-10-cm",
    "2.16.840.1.113883.6.3": "http://hl7.org/fhir/sid/icd-10",
    "2.16.840.1.113883.6.103": "http://hl7.org/fhir/sid/icd-9-cm",
    "2.16.840.1.113883.6.104": "http://hl7.org/fhir/sid/icd-9-cm",
    "2.16.840.1.113883.6.4": "http://www.cms.gov/Medicare/Coding/ICD10",
    "2.16.840.1.113883.6.12": "http://www.ama-assn.org/go/cpt",
    "2.16.840.1.113883.6.285": "urn:oid:2.16.840.1.113883.6.285",  # HCPCS: no FHIR URI in R4
    "2.16.840.1.113883.6.8": "http://unitsofmeasure.org",
    "2.16.840.1.113883.6.69": "http://hl7.org/fhir/sid/ndc",
    "2.16.840.1.113883.12.292": "http://hl7.org/fhir/sid/cvx",
    "2.16.840.1.113883.6.101": "http://nucc.org/provider-taxonomy",
    "2.16.840.1.113883.3.26.1.1": "http://ncithesaurus-stage.nci.nih.gov",  # NCI Thesaurus (THO URL)
    "2.16.840.1.113883.4.9": "http://fdasis.nlm.nih.gov",
    "2.16.840.1.113883.3.26.1.5": "http://hl7.org/fhir/ndfrt",
    "2.16.840.1.113883.6.238": "urn:oid:2.16.840.1.113883.6.238",  # CDC Race & Ethnicity
    "2.16.840.1.113883.6.254": "urn:oid:2.16.840.1.113883.6.254",  # ICF: no R4 URI
    "2.16.840.1.113883.5.1": "http://terminology.hl7.org/CodeSystem/v3-AdministrativeGender",
    "2.16.840.1.113883.5.2": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
    "2.16.840.1.113883.5.4": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "2.16.840.1.113883.5.6": "http://terminology.hl7.org/CodeSystem/v3-ActClass",
    "2.16.840.1.113883.5.7": "http://terminology.hl7.org/CodeSystem/v3-ActPriority",
    "2.16.840.1.113883.5.25": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
    "2.16.840.1.113883.5.83": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
    "2.16.840.1.113883.5.111": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
    "2.16.840.1.113883.5.112": "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration",
    "2.16.840.1.113883.5.1008": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
    "2.16.840.1.113883.5.1076": "http://terminology.hl7.org/CodeSystem/v3-ReligiousAffiliation",
    "2.16.840.1.113883.5.1063": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "2.16.840.1.113883.5.14": "http://terminology.hl7.org/CodeSystem/v3-ActStatus",
    "2.16.840.1.113883.5.1119": "http://terminology.hl7.org/CodeSystem/v3-AddressUse",
    "2.16.840.1.113883.5.45": "http://terminology.hl7.org/CodeSystem/v3-EntityNameUse",
    "2.16.840.1.113883.5.60": "http://terminology.hl7.org/CodeSystem/v3-LanguageAbilityMode",
    "2.16.840.1.113883.5.61": "http://terminology.hl7.org/CodeSystem/v3-LanguageAbilityProficiency",
    "2.16.840.1.113883.5.89": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
    "2.16.840.1.113883.5.90": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
    "2.16.840.1.113883.1.11.19832": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "2.16.840.1.113883.6.259": "urn:oid:2.16.840.1.113883.6.259",  # HSLOC
})

# --- Identifier systems: OID → FHIR URI (others become urn:oid:<oid>) ---
IDENTIFIER_SYSTEMS = MappingProxyType({
    "2.16.840.1.113883.4.6": "http://hl7.org/fhir/sid/us-npi",
    "2.16.840.1.113883.4.1": "http://hl7.org/fhir/sid/us-ssn",
})

# Structured section kinds, by template root and (for sections without a known template) by LOINC code.
STRUCTURED_BY_TEMPLATE = MappingProxyType({
    OID_PROBLEMS_SECTION: "problems",
    OID_PROBLEMS_SECTION_ENTRIES: "problems",
    OID_MEDICATIONS_SECTION: "medications",
    OID_MEDICATIONS_SECTION_ENTRIES: "medications",
    OID_ALLERGIES_SECTION: "allergies",
    OID_ALLERGIES_SECTION_ENTRIES: "allergies",
    OID_RESULTS_SECTION: "results",
    OID_RESULTS_SECTION_ENTRIES: "results",
    OID_PROCEDURES_SECTION: "procedures",
    OID_PROCEDURES_SECTION_ENTRIES: "procedures",
    OID_ASSESSMENT_SECTION: "assessment-plan",
    OID_ASSESSMENT_AND_PLAN_SECTION: "assessment-plan",
    OID_PLAN_OF_TREATMENT_SECTION: "assessment-plan",
    OID_REASON_FOR_REFERRAL_SECTION: "assessment-plan",
})
STRUCTURED_BY_LOINC = MappingProxyType({
    "11450-4": "problems",
    "10160-0": "medications",
    "48765-2": "allergies",
    "30954-2": "results",
    "47519-4": "procedures",
    "51848-0": "assessment-plan",
    "51847-2": "assessment-plan",
    "18776-5": "assessment-plan",
    "42349-1": "assessment-plan",
})
# LOINC codes of C-CDA sections kept as narrative (used when a section carries no known templateId).
KNOWN_SECTION_LOINC = frozenset({
    "11369-6", "8716-3", "29762-2", "46240-8", "10157-6", "47420-5", "10190-7", "61144-2", "29545-1", "10164-2",
    "10187-3", "42348-3", "48768-6", "46264-8", "61146-7", "75310-3", "69730-0", "29549-3", "10154-3", "29299-5",
    "46239-0", "8653-8", "18841-7", "8648-8", "10184-0", "11493-4", "42347-5", "46241-6", "11535-2", "10183-2",
    "75311-1", "11348-0", "8709-8", "85847-2", "11488-4", "57017-6", "62387-6", "11383-7", "61149-1", "61150-9",
    "10210-3", "42346-7", "11537-8", "59768-2", "59769-0", "59770-8", "59771-6", "59772-4", "59773-2",
})
