"""Durable write-back: drive a referral's outbox jobs into the EHR, step by step, until each has succeeded.

Every step is idempotent (conditional create on identifiers we assign, PUT on ids we know or choose) and its
result is recorded before the next starts, so a retry, a crash or a second worker repeats nothing that landed.
Only the worker holding a referral's lease runs its jobs; jobs of one referral run in the order they were queued.
A failing step is retried with exponential backoff and jitter, honouring Retry-After, until the retry budget is
spent; then the referral becomes failed with the reason, and `retry` resumes it.
"""

import json
import logging
import os
import random
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from fhir.resources.R4B.task import Task
from flask import Flask

from mappers.referral import task_with_status
from service.ehr.client import FhirClient, WriteResult
from service.ehr.connection import get_client
from service.errors import ConfigurationError, ServiceError
from service.lifecycle import BUSINESS_STATUS
from service.store.repository import (
    JOB_CONSULT,
    AuditEvent,
    Consult,
    Referral,
    ReferralRepository,
    WritebackJob,
    get_repository,
    utcnow,
)
from service.writeback_profiles import (
    STEP_BUNDLE,
    STEP_DOCUMENT_REFERENCE,
    STEP_PROVENANCE,
    STEP_TASK,
    STEP_TASK_STATUS,
    WritebackProfile,
    build_provenance,
    get_profile,
    provenance_id,
)

log = logging.getLogger(__name__)

ACTOR = "write-back"
REASONED_STATUSES = frozenset({"rejected", "cancelled", "failed"})


@dataclass(frozen=True)
class WritebackSettings:
    """The write-back's knobs, read from the app's configuration."""

    budget_s: float
    base_delay_s: float
    max_delay_s: float
    lease_s: float

    @classmethod
    def from_app(cls, app: Flask) -> "WritebackSettings":
        c = app.config
        return cls(budget_s=float(c["WRITEBACK_RETRY_BUDGET_S"]), base_delay_s=float(c["WRITEBACK_BASE_DELAY_S"]),
                   max_delay_s=float(c["WRITEBACK_MAX_DELAY_S"]), lease_s=float(c["WRITEBACK_LEASE_S"]))


def retry_delay(attempt: int, *, base_s: float, max_s: float, retry_after_s: float | None = None,
                rng: random.Random | None = None) -> float:
    """Seconds before attempt+1: exponential backoff with full-range jitter in [½, 1], never before Retry-After."""
    backoff = min(max_s, base_s * 2 ** max(attempt - 1, 0)) * (rng or random).uniform(0.5, 1.0)
    return max(backoff, retry_after_s or 0.0)


# -- the steps ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepContext:
    """What a step needs: the EHR client, the referral, its consult (for consult jobs), what already landed."""

    client: FhirClient
    referral: Referral
    consult: Consult | None
    job: WritebackJob
    done: dict[str, str | None]


@dataclass(frozen=True)
class StepWrite:
    """One write a step makes: method and resource type (for the audit), and the call."""

    method: str
    resource_type: str
    call: Callable[[StepContext], WriteResult]


def _identifier_query(resource: dict) -> str:
    ident = resource["identifier"]
    ident = ident[0] if isinstance(ident, list) else ident
    return f"identifier={ident['system']}|{ident['value']}"


def write_bundle(ctx: StepContext) -> WriteResult:
    """POST the consult document, conditional on its identifier."""
    document = json.loads(ctx.consult.document_json)
    return ctx.client.create(document, if_none_exist=_identifier_query(document))


def write_document_reference(ctx: StepContext) -> WriteResult:
    """POST the DocumentReference (shaped by the profile when the consult arrived), conditional on its identifier."""
    docref = json.loads(ctx.consult.document_reference_json)
    return ctx.client.create(docref, if_none_exist=_identifier_query(docref))


def complete_task(ctx: StepContext) -> WriteResult:
    """PUT the referral's Task as completed, its output the DocumentReference."""
    task = task_with_status(Task.model_validate_json(ctx.referral.task_json), "completed", now=utcnow(),
                            business_status=BUSINESS_STATUS["completed"],
                            output_ref=ctx.done.get(STEP_DOCUMENT_REFERENCE))
    return ctx.client.update(task)


def write_provenance(ctx: StepContext) -> WriteResult:
    """PUT a Provenance (an id we choose, so a repeat replaces it) for the DocumentReference and Bundle we wrote."""
    targets = [loc for step in (STEP_DOCUMENT_REFERENCE, STEP_BUNDLE) if (loc := ctx.done.get(step))]
    provenance = build_provenance(targets, resource_id=provenance_id(ctx.job.id, ctx.referral.id), now=utcnow())
    return ctx.client.update(provenance)


def mirror_task_status(ctx: StepContext) -> WriteResult:
    """PUT the EHR's Task with the referral's status as it is now (so late or repeated runs converge)."""
    referral = ctx.referral
    status = referral.status
    output = None
    if status == "completed" and ctx.consult is not None:
        output = next((s.location for s in ctx.consult.steps if s.step == STEP_DOCUMENT_REFERENCE), None)
    task = task_with_status(Task.model_validate_json(referral.task_json), status, now=utcnow(),
                            business_status=BUSINESS_STATUS.get(status),
                            reason=referral.status_reason if status in REASONED_STATUSES else None,
                            output_ref=output)
    return ctx.client.update(task)


STEPS: dict[str, StepWrite] = {
    STEP_BUNDLE: StepWrite("POST", "Bundle", write_bundle),
    STEP_DOCUMENT_REFERENCE: StepWrite("POST", "DocumentReference", write_document_reference),
    STEP_TASK: StepWrite("PUT", "Task", complete_task),
    STEP_PROVENANCE: StepWrite("PUT", "Provenance", write_provenance),
    STEP_TASK_STATUS: StepWrite("PUT", "Task", mirror_task_status),
}


# -- running jobs -------------------------------------------------------------------------------------
class LeaseLost(Exception):
    """Another worker took the referral's lease (ours expired): stop before the next step."""


class Lease:
    """A referral's write-back lease, renewed by a heartbeat thread while we hold it."""

    def __init__(self, repo: ReferralRepository, referral_id: str, ttl_s: float) -> None:
        self.repo, self.referral_id, self.ttl_s = repo, referral_id, ttl_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        if not self.repo.claim(self.referral_id, self.owner, self.ttl_s):
            return False
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.referral_id[:8]}", daemon=True)
        self._thread.start()
        return True

    def check(self) -> None:
        """Raise LeaseLost when the lease is no longer ours."""
        if self._lost.is_set() or not self.repo.renew_lease(self.referral_id, self.owner, self.ttl_s):
            self._lost.set()
            raise LeaseLost(self.referral_id)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl_s)
        self.repo.release_lease(self.referral_id, self.owner)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                if not self.repo.renew_lease(self.referral_id, self.owner, self.ttl_s):
                    self._lost.set()
                    return
            except Exception:  # noqa: BLE001 - a heartbeat must not die silently; the next check() decides
                log.warning("referral %s: could not renew the write-back lease", self.referral_id, exc_info=True)


def drive_referral(app: Flask, referral_id: str, *, rng: random.Random | None = None) -> float | None:
    """Run the referral's due write-back jobs under its lease; returns seconds until it should run again, or None.

    Only a run that scheduled a retry (or found the lease busy while work is due) asks to be called again, so
    duplicate queue messages die out; the sweeper re-enqueues whatever a crash left behind.
    """
    repo = get_repository(app)
    settings = WritebackSettings.from_app(app)
    lease = Lease(repo, referral_id, settings.lease_s)
    if not lease.acquire():
        job = repo.next_job(referral_id)
        if job is None or job.next_attempt_at > utcnow():
            return None
        expiry = repo.lease_expiry(referral_id) or utcnow()
        return max((expiry - utcnow()).total_seconds(), 0.0) + 0.05
    retrying = False
    try:
        while (job := repo.next_job(referral_id)) is not None:
            wait = (job.next_attempt_at - utcnow()).total_seconds()
            if wait > 0:
                return wait if retrying else None
            retrying = run_job(app, repo, job, settings, lease, rng=rng) == "retry"
        return None
    except LeaseLost:
        log.warning("referral %s: write-back lease lost; another worker carries on", referral_id)
        return None
    finally:
        lease.release()


def run_job(app: Flask, repo: ReferralRepository, job: WritebackJob, settings: WritebackSettings, lease: Lease,
            *, rng: random.Random | None = None) -> str:
    """Run a job's remaining steps once; returns 'done', 'retry' or 'failed'."""
    profile = get_profile(job.profile)
    referral = repo.get(job.referral_id)
    consult = repo.get_consult(job.referral_id) if job.kind == JOB_CONSULT else repo.find_consult(job.referral_id)
    done = job.done
    client = get_client(app, base_url=referral.ehr_base_url)  # the referral's own EHR, with its tenant's credentials
    for step in job.steps:
        if step.status == "done":
            continue
        lease.check()
        write = STEPS[step.step]
        ctx = StepContext(client, referral, consult, job, done)
        try:
            result = write.call(ctx)
        except ServiceError as exc:
            return _failed_attempt(repo, job, profile, settings, step.step, write, exc, rng=rng)
        done[step.step] = result.location
        repo.complete_step(job.id, step.step, result.location, audit=_write_audit(
            job, write, result.location, result.status, "created" if result.created else "already there / updated"))
        log.info("referral %s job %s: %s written as %s (%s)", job.referral_id, job.id, step.step, result.location,
                 result.status)
    repo.finish_job(job.id, "done", actor=ACTOR, reason="consult written back" if job.kind == JOB_CONSULT else None)
    return "done"


def _failed_attempt(repo: ReferralRepository, job: WritebackJob, profile: WritebackProfile,
                    settings: WritebackSettings, step: str, write: StepWrite, exc: ServiceError,
                    *, rng: random.Random | None) -> str:
    """Record a failed step: schedule the next attempt, or give up when the error is permanent or the budget spent."""
    now = utcnow()
    attempts = job.attempts + 1
    audit = _write_audit(job, write, None, exc.upstream_status, exc.diagnostics)
    spent = (now - job.budget_started_at).total_seconds()
    if exc.transient and spent < settings.budget_s:
        delay = retry_delay(attempts, base_s=settings.base_delay_s, max_s=settings.max_delay_s,
                            retry_after_s=exc.retry_after, rng=rng)
        deadline = job.budget_started_at + timedelta(seconds=settings.budget_s)
        next_at = min(now + timedelta(seconds=delay), max(deadline, now))
        repo.record_attempt(job.id, f"{step}: {exc.diagnostics}", next_at, audit=audit)
        log.warning("referral %s job %s: %s failed (attempt %d), retrying in %.1f s: %s", job.referral_id, job.id,
                    step, attempts, (next_at - now).total_seconds(), exc.diagnostics)
        return "retry"
    if exc.transient:
        reason = f"write-back gave up after {spent:.0f} s and {attempts} attempts; last error at {step}: {exc.diagnostics}"
    else:
        reason = f"the EHR refused the write-back at {step}: {exc.diagnostics}"
    repo.finish_job(job.id, "failed", actor=ACTOR, reason=reason, audit=audit,
                    mirror_profile=profile.name if profile.task_writes else None)
    log.error("referral %s job %s: write-back failed: %s", job.referral_id, job.id, reason)
    return "failed"


def _write_audit(job: WritebackJob, write: StepWrite, location: str | None, status: int | None,
                 detail: str) -> AuditEvent:
    return AuditEvent(at=utcnow(), actor=ACTOR, action="ehr.write", referral_id=job.referral_id,
                      resource=location or write.resource_type, method=write.method, http_status=status,
                      detail=detail)


def profile_for(app: Flask, base_url: str | None = None) -> WritebackProfile:
    """The write-back profile for an EHR: its tenant's own, else the app's WRITEBACK_PROFILE."""
    from service.auth import get_auth
    from service.auth.tenants import normalize_iss

    tenant = get_auth(app).tenants.get(normalize_iss(base_url)) if base_url else None
    return get_profile(tenant.writeback_profile if tenant and tenant.writeback_profile else
                       app.config["WRITEBACK_PROFILE"])


def init_app(app: Flask) -> None:
    """Check the write-back configuration at startup (the app's profile and every tenant's)."""
    from service.auth import get_auth

    profile_for(app)
    for tenant in get_auth(app).tenants.values():
        if tenant.writeback_profile:
            get_profile(tenant.writeback_profile)
    if app.config["WRITEBACK"] not in ("queue", "inline", "off"):
        raise ConfigurationError("WRITEBACK must be 'queue', 'inline' or 'off'")
