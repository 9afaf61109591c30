"""The scopes we ask for: only what the service uses, in SMART v2 syntax when the server offers it, else v1."""

# What the fetch reads (patient compartment, then what it references) and what send and write-back write.
PATIENT_READ_TYPES = ("Patient", "Condition", "Procedure", "DiagnosticReport", "Observation", "MedicationStatement",
                      "MedicationRequest", "AllergyIntolerance", "CarePlan", "DocumentReference", "Encounter", "Specimen")
# Not patient data (what the fetch resolves from references): user/ scopes.
SHARED_READ_TYPES = ("Medication", "Practitioner", "PractitionerRole", "Organization", "Location")
WRITE_TYPES = ("DocumentReference", "Bundle", "ServiceRequest", "Provenance")
UPDATE_TYPES = ("Task",)  # created when a referral is sent, completed by the write-back

V1 = {"rs": "read", "c": "write", "cu": "write"}


def launch_scopes(*, v2: bool, standalone: bool, access: str = "offline") -> str:
    """Scopes for an EHR launch (``launch``) or a standalone launch (``launch/patient``)."""
    scopes = ["launch/patient" if standalone else "launch", "openid", "fhirUser",
              "offline_access" if access == "offline" else "online_access"]
    scopes += [_scope("patient", t, "rs", v2) for t in PATIENT_READ_TYPES]
    scopes += [_scope("user", t, "rs", v2) for t in SHARED_READ_TYPES]
    scopes += [_scope("user", t, "c", v2) for t in WRITE_TYPES]
    scopes += [_scope("user", t, "cu", v2) for t in UPDATE_TYPES]
    return " ".join(dict.fromkeys(scopes))


def backend_scopes(*, v2: bool) -> str:
    """System scopes for backend services: the same reads and writes, for any patient the EHR allows us."""
    scopes = [_scope("system", t, "rs", v2) for t in (*PATIENT_READ_TYPES, *SHARED_READ_TYPES)]
    scopes += [_scope("system", t, "c", v2) for t in WRITE_TYPES]
    scopes += [_scope("system", t, "cu", v2) for t in UPDATE_TYPES]
    return " ".join(dict.fromkeys(scopes))


def _scope(context: str, resource_type: str, permissions: str, v2: bool) -> str:
    return f"{context}/{resource_type}.{permissions if v2 else V1[permissions]}"
