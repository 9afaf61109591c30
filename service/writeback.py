"""Durable write-back: drive each stored consult's outbox steps into the EHR until all succeed.

Every step is idempotent (conditional create on our identifiers, PUT on the EHR's Task id) and its result
is recorded before the next starts, so a retry or a restart repeats nothing that already landed.
"""

import heapq
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from fhir.resources.R4B.task import Task
from flask import Flask

from mappers.referral import task_with_status
from service.ehr.client import FhirClient
from service.ehr.connection import get_client
from service.errors import ServiceError
from service.lifecycle import BUSINESS_STATUS
from service.store.repository import Consult, Referral, ReferralRepository, get_repository

log = logging.getLogger(__name__)

EXTENSION = "second_opinion.writeback"
ACTOR = "write-back"
MAX_BACKOFF_S = 300.0

StepAction = Callable[[FhirClient, Referral, Consult, dict[str, str]], str | None]


def write_bundle(client: FhirClient, referral: Referral, consult: Consult, done: dict[str, str]) -> str | None:
    """POST the consult document, conditional on its identifier."""
    document = json.loads(consult.document_json)
    ident = document["identifier"]
    return client.create(document, if_none_exist=f"identifier={ident['system']}|{ident['value']}").location


def write_document_reference(client: FhirClient, referral: Referral, consult: Consult,
                             done: dict[str, str]) -> str | None:
    """POST the US Core DocumentReference, conditional on its identifier."""
    docref = json.loads(consult.document_reference_json)
    ident = docref["identifier"][0]
    return client.create(docref, if_none_exist=f"identifier={ident['system']}|{ident['value']}").location


def complete_task(client: FhirClient, referral: Referral, consult: Consult, done: dict[str, str]) -> str | None:
    """PUT the referral's Task as completed, its output the DocumentReference."""
    task = Task.model_validate_json(referral.task_json)
    task = task_with_status(task, "completed", now=datetime.now(UTC), business_status=BUSINESS_STATUS["completed"],
                            output_ref=done.get("document_reference"))
    return client.update(task).location


STEP_ACTIONS: dict[str, StepAction] = {
    "bundle": write_bundle,
    "document_reference": write_document_reference,
    "task": complete_task,
}


def run_writeback(client: FhirClient, repo: ReferralRepository, consult_id: str, *, budget_s: float) -> str:
    """Run a consult's remaining steps once; returns 'written', 'retry' or 'failed'."""
    consult = repo.get_consult_by_id(consult_id)
    if consult.status != "pending":
        return consult.status
    referral = repo.get(consult.referral_id)
    done = {s.step: s.location for s in consult.steps if s.status == "done"}
    try:
        for step in consult.steps:
            if step.step in done:
                continue
            done[step.step] = STEP_ACTIONS[step.step](client, referral, consult, done)
            repo.complete_step(consult_id, step.step, done[step.step])
            log.info("consult %s: %s written as %s", consult_id, step.step, done[step.step])
    except ServiceError as exc:
        repo.record_attempt(consult_id, exc.diagnostics)
        age = (datetime.now(UTC) - _aware(consult.received_at)).total_seconds()
        if exc.transient and age < budget_s:
            log.warning("consult %s: write-back attempt failed, will retry: %s", consult_id, exc.diagnostics)
            return "retry"
        reason = exc.diagnostics if not exc.transient else f"gave up after {age:.0f} s: {exc.diagnostics}"
        repo.finish_consult(consult_id, "failed", actor=ACTOR, reason=reason)
        log.error("consult %s: write-back failed: %s", consult_id, reason)
        return "failed"
    repo.finish_consult(consult_id, "written", actor=ACTOR, reason="consult written back")
    return "written"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class WritebackRunner:
    """An in-process worker thread: runs write-backs as they are queued, retries with backoff and jitter."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._due: list[tuple[float, int, str]] = []
        self._attempts: dict[str, int] = {}
        self._seq = 0
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def submit(self, consult_id: str, delay_s: float = 0.0) -> None:
        """Queue a consult's write-back (now, or after a delay)."""
        with self._cv:
            self._seq += 1
            heapq.heappush(self._due, (time.monotonic() + delay_s, self._seq, consult_id))
            self._cv.notify()
        self._ensure_started()

    def _ensure_started(self) -> None:
        with self._cv:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._loop, name="writeback", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _next(self) -> str | None:
        with self._cv:
            while not self._stopping:
                if self._due and self._due[0][0] <= time.monotonic():
                    return heapq.heappop(self._due)[2]
                timeout = self._due[0][0] - time.monotonic() if self._due else None
                self._cv.wait(timeout)
            return None

    def _loop(self) -> None:
        while (consult_id := self._next()) is not None:
            try:
                with self.app.app_context():
                    outcome = run_writeback(get_client(self.app), get_repository(self.app), consult_id,
                                            budget_s=float(self.app.config["WRITEBACK_RETRY_BUDGET_S"]))
            except Exception:  # the worker must outlive any one consult; the consult stays pending
                log.exception("consult %s: unexpected write-back error", consult_id)
                outcome = "retry"
            if outcome == "retry":
                attempts = self._attempts[consult_id] = self._attempts.get(consult_id, 0) + 1
                delay = min(MAX_BACKOFF_S, float(self.app.config["WRITEBACK_BASE_DELAY_S"]) * 2 ** (attempts - 1))
                self.submit(consult_id, delay * random.uniform(0.5, 1.0))
            else:
                self._attempts.pop(consult_id, None)


def init_app(app: Flask) -> None:
    """Attach a runner; in thread mode, resume every consult whose write-back had not finished."""
    runner = WritebackRunner(app)
    app.extensions[EXTENSION] = runner
    if app.config["WRITEBACK"] == "thread" and app.config.get("FHIR_BASE_URL"):
        for consult_id in get_repository(app).pending_consult_ids():
            runner.submit(consult_id)


def enqueue(app: Flask, consult_id: str) -> None:
    """Start the write-back of a stored consult according to the WRITEBACK setting."""
    mode = app.config["WRITEBACK"]
    if mode == "thread":
        app.extensions[EXTENSION].submit(consult_id)
    elif mode == "inline":
        run_writeback(get_client(app), get_repository(app), consult_id,
                      budget_s=float(app.config["WRITEBACK_RETRY_BUDGET_S"]))
