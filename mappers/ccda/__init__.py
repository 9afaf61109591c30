"""C-CDA → FHIR: hardened parsing (parser), the header (header), one module per section kind, and the document."""
