"""Pure transformations: FHIR models and lxml trees in, FHIR models out. No I/O, no clock, no randomness."""
