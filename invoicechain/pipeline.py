"""The invoice pipeline as plain Python: running each step once and recording it (documents are
stored and read by `ingestion.documents`). Celery tasks (workers/tasks.py), the in-process
`process` command and the API all call these functions; none of them needs a broker.

Exactly-once effects under at-least-once delivery: every step owns one StepRun row,
unique on (invoice_id, step). A step that finds its row `done` repeats nothing and hands
on the stored decision; a row left `running` by a crashed worker is taken over with
`attempt + 1` (the step's own effects are idempotent, e.g. one Payment per invoice).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from invoicechain.config import Settings, get_settings
from invoicechain.db.session import session_scope
from invoicechain.db.tables import Invoice, StepRun, forget_step_runs, remember_step_runs
from invoicechain.decisions import ALL_STEPS, Decision, InvoiceStatus, Step
from invoicechain.clock import utcnow
from invoicechain.enums import StepRunStatus
from invoicechain.recovery import clear_attempt

log = logging.getLogger(__name__)


# --- documents -------------------------------------------------------------------------


# --- step bookkeeping ------------------------------------------------------------------


@dataclass
class StepResult:
    """What a step hands to the chain: continue or stop, and the stored decision."""

    invoice_id: str
    step: str
    decision: str | None
    proceed: bool
    replayed: bool = False  # True: the step had already run; nothing was repeated


def claim_step(session: Session, invoice_id: str, step: str, *, deferred: bool = False) -> StepRun:
    """The step's row, created or taken over (attempt + 1); rows already done are returned as they are.

    `deferred`: a new row is not inserted now but by `finish_step`, in the same transaction, so
    a step that runs in one transaction writes its row once (one INSERT, not INSERT + UPDATE).
    A concurrent redelivery then surfaces as an IntegrityError at commit; `_once` runs the step
    again, and it finds the winner's row done.
    """
    query = select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == step)
    # One query for all of the invoice's rows: the step's own, and the earlier steps'
    # decisions that the accounts-payable rules read (`invoicechain.ap.steps.prior_decisions`).
    runs = session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id)).all()
    remember_step_runs(session, invoice_id, runs)  # until finish_step
    run = next((r for r in runs if r.step == step), None)
    if run is None:
        if deferred:
            return StepRun(invoice_id=invoice_id, step=step)
        try:
            with session.begin_nested():  # a concurrent redelivery may insert the row first
                run = StepRun(invoice_id=invoice_id, step=step)
                session.add(run)
            return run
        except IntegrityError:
            run = session.exec(query).one()
    if run.status != StepRunStatus.DONE:
        run.attempt += 1  # taking over a run that crashed or failed
        run.status = StepRunStatus.RUNNING
        run.started_at = utcnow()
        session.add(run)
        if not deferred:
            session.flush()
    return run


def once_per_step(fn):
    """Run a one-transaction step; when a concurrent delivery of the same step committed its
    row first (unique (invoice_id, step)), run it again: it then replays the stored result."""

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except IntegrityError:
            return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__, wrapper.__wrapped__ = fn.__name__, fn.__doc__, fn
    return wrapper


def finish_step(
    session: Session,
    run: StepRun,
    decision: str | None,
    reasons: list | None = None,
    *,
    t0: float,
    model_ms: float | None = None,
    **extra,
) -> None:
    forget_step_runs(session, run.invoice_id)
    run.status = StepRunStatus.DONE
    run.decision = decision
    run.reasons = reasons or []
    run.finished_at = utcnow()
    run.duration_ms = (time.perf_counter() - t0) * 1000.0
    run.model_ms = model_ms
    for key, value in extra.items():
        setattr(run, key, value)
    session.add(run)


def set_status(session: Session, invoice: Invoice, status: str, *, step: str | None = None, error: str | None = None) -> None:
    invoice.status = status
    if step is not None:
        invoice.current_step = step
    if error is not None:
        invoice.error = error
    invoice.updated_at = utcnow()
    session.add(invoice)


def fail_invoice(invoice_id: str, step: str | None, reason: str, settings: Settings | None = None) -> None:
    """Terminal failure with a reason; the step's row (if any) is marked failed too."""
    with session_scope(settings) as session:
        inv = session.get(Invoice, invoice_id)
        if inv is None:
            return
        if step:
            run = session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == step)).first()
            if run is not None and run.status != StepRunStatus.DONE:
                run.status = StepRunStatus.FAILED
                run.decision = Decision.FAILED
                run.reasons = [{"code": "ERROR", "message": reason[:1000]}]
                run.finished_at = utcnow()
                session.add(run)
        set_status(session, inv, InvoiceStatus.FAILED, step=step, error=reason[:2000])


# --- ingest ----------------------------------------------------------------------------


# --- extract ---------------------------------------------------------------------------


def batched_step_start(model_s: float, setup_s: float, batch: int) -> float:
    """perf_counter start of one document's extract step inside a batch, taken just before it
    is saved: the batch's model call, plus this document's share of the batch's setup. The
    step's duration minus the model call is then the document's own bookkeeping, not the
    saves of the documents before it."""
    return time.perf_counter() - model_s - setup_s / max(1, batch)


def extraction_replay(invoice_id: str, settings: Settings | None = None) -> StepResult | None:
    """The stored result when extraction already ran for this invoice, else None."""
    with session_scope(settings) as session:
        run = session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == Step.EXTRACT)).first()
        if run is not None and run.status == StepRunStatus.DONE:
            return StepResult(invoice_id, Step.EXTRACT, run.decision, run.decision == Decision.OK, replayed=True)
    return None


# --- toolchain steps -------------------------------------------------------------------


@once_per_step
def run_toolchain_step(invoice_id: str, step: str, settings: Settings | None = None, proposer=None) -> StepResult:
    """Run one accounts-payable step through invoicechain.ap and record it."""
    from invoicechain.ap.steps import run_step

    settings = settings or get_settings()
    t0 = time.perf_counter()
    with session_scope(settings) as session:
        inv = session.get(Invoice, invoice_id)
        if inv is None:
            raise LookupError(f"invoice {invoice_id} does not exist")
        clear_attempt(session, invoice_id, step)  # committed with the step's result
        run = claim_step(session, invoice_id, step, deferred=True)
        if run.status == StepRunStatus.DONE:
            return StepResult(invoice_id, step, run.decision, inv.status == InvoiceStatus.PROCESSING, replayed=True)
        outcome = run_step(step, inv, session, settings, proposer=proposer)
        finish_step(
            session, run, outcome.decision, outcome.reasons, t0=t0, model_ms=outcome.model_ms,
            rules_output=outcome.rules_output, model_output=outcome.model_output,
            agree=outcome.agree, mode=outcome.mode,
            adapter_version=getattr(outcome, "adapter_version", None),
        )
        # One UPDATE of the invoice, after the rules (not one before them and one after).
        set_status(session, inv, outcome.status or InvoiceStatus.PROCESSING, step=step)
        return StepResult(invoice_id, step, outcome.decision, outcome.status is None)


def next_step(step: str) -> str | None:
    order = [str(s) for s in ALL_STEPS]
    i = order.index(str(step))
    return order[i + 1] if i + 1 < len(order) else None


def steps_from(step: str) -> list[str]:
    order = [str(s) for s in ALL_STEPS]
    return order[order.index(str(step)) :]
