"""CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/): the second-opinion referral services behind service/api/cds_hooks.py.

services.py     what discovery advertises (one hook per service) and the prefetch templates
hook_request.py reading and checking a hook call: context, draftOrders, fhirAuthorization (never kept)
orders.py       which draft orders are second-opinion referrals
gather.py       the patient record from prefetch, plus what is missing fetched from fhirServer within a budget
cards.py        readiness assessment → cards (summary, indicator, source, smart link, suggestions)
auth.py         trusting CDS clients: signed JWTs, issuer allowlist, JWK Sets, replay protection
store.py        the tiny repository: cards issued, feedback received, JWT ids seen
hooks.py        orchestration of one hook call
"""
