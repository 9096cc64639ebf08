"""Crash recovery as plain Python: attempt counting, the dead-letter list, stuck invoices.

A step's start is counted in Postgres (`StepAttempt`) before it does any work and the
count is cleared when the step ends in any handled way (done, failed with a reason,
retried after a transient error). A count that keeps growing therefore means starts that
never ended: the worker died under the step. Past `max_step_attempts` such starts the
invoice ends `failed` with reason `worker_crashed` and a `DeadLetter` row, which an admin
may retry. The reaper finds invoices whose running step is older than the step's deadline
(the broker should have redelivered it by then) and sends them again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from invoicechain.config import Settings, get_settings
from invoicechain.db.session import session_scope
from invoicechain.db.tables import DeadLetter, Invoice, StepAttempt, StepRun, utcnow
from invoicechain.decisions import Decision, InvoiceStatus, Step
from invoicechain.enums import Queue, StepRunStatus

log = logging.getLogger(__name__)

WORKER_CRASHED = "worker_crashed"


def step_deadline_s(step: str, settings: Settings) -> int:
    """Longest a step may legitimately stay running before the broker redelivers it."""
    if step == Step.EXTRACT:
        return extract_visibility_s(settings) + settings.unacked_restore_interval_s + 60
    return toolchain_visibility_s(settings) + settings.unacked_restore_interval_s + 60


def extract_visibility_s(settings: Settings) -> int:
    if settings.extract_visibility_timeout_s:
        return settings.extract_visibility_timeout_s
    return settings.extract_time_limits(settings.extract_batch_size)[1] + 60


def toolchain_visibility_s(settings: Settings) -> int:
    return settings.toolchain_visibility_timeout_s or settings.task_time_limit_s + 60


def training_visibility_s(settings: Settings) -> int:
    return settings.training_time_limit_s + 600


def queue_visibility_s(queue: str, settings: Settings) -> int:
    return {Queue.EXTRACT: extract_visibility_s, Queue.TRAINING: training_visibility_s}.get(queue, toolchain_visibility_s)(settings)


@dataclass(frozen=True)
class AttemptVerdict:
    attempts: int
    exhausted: bool  # True: the invoice was failed with worker_crashed; do not run the step


def start_attempt(invoice_id: str, step: str, settings: Settings | None = None) -> AttemptVerdict:
    """Count one start of `step`; past the cap, fail the invoice (worker_crashed) and dead-letter it.

    One statement in the common case (an upsert that returns the count), since every step of
    every invoice pays for it."""
    settings = settings or get_settings()
    table = StepAttempt.__table__
    now = utcnow()
    try:
        with session_scope(settings) as session:
            stmt = (
                _insert(session)(table)
                .values(invoice_id=invoice_id, step=step, attempts=1, last_started_at=now)
                .on_conflict_do_update(index_elements=["invoice_id", "step"],
                                       set_={"attempts": table.c.attempts + 1, "last_started_at": now})
                .returning(table.c.attempts)
            )
            attempts = session.execute(stmt).scalar_one()
            if attempts <= settings.max_step_attempts:
                return AttemptVerdict(attempts, False)
            _dead_letter(session, invoice_id, step, attempts - 1)
            return AttemptVerdict(attempts, True)
    except IntegrityError:  # no such invoice (foreign key): the step itself reports it
        return AttemptVerdict(0, False)


def _insert(session: Session):
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert


def _dead_letter(session: Session, invoice_id: str, step: str, crashes: int) -> None:
    inv = session.exec(select(Invoice).where(Invoice.id == invoice_id).with_for_update()).first()
    if inv is None:
        return
    message = f"The {step} step's worker stopped {crashes} time(s) while running it ({WORKER_CRASHED})."
    run = session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == step)).first()
    if run is not None and run.status != StepRunStatus.DONE:
        run.status, run.decision, run.finished_at = StepRunStatus.FAILED, Decision.FAILED, utcnow()
        run.reasons = [{"code": WORKER_CRASHED, "message": message}]
        session.add(run)
    open_letter = session.exec(
        select(DeadLetter).where(DeadLetter.invoice_id == invoice_id, DeadLetter.retried_at.is_(None))
    ).first()
    if open_letter is None:
        session.add(DeadLetter(invoice_id=invoice_id, step=step, reason=WORKER_CRASHED, detail=message, attempts=crashes))
    inv.status, inv.current_step, inv.error, inv.updated_at = InvoiceStatus.FAILED, step, message, utcnow()
    session.add(inv)
    log.warning("invoice %s dead-lettered at %s after %d crashes", invoice_id, step, crashes)


def end_attempt(invoice_id: str, step: str, settings: Settings | None = None) -> None:
    """The step ended in a handled way: its crash count starts again from zero."""
    try:
        with session_scope(settings) as session:
            session.execute(delete(StepAttempt).where(StepAttempt.invoice_id == invoice_id, StepAttempt.step == step))
    except Exception:  # bookkeeping only: never fail a finished step for it
        log.exception("could not clear the attempt count of %s/%s", invoice_id, step)


def clear_attempt(session: Session, invoice_id: str, step: str) -> None:
    """`end_attempt` inside the caller's transaction: a step that commits its result clears
    its crash count in the same commit (one transaction less per step)."""
    session.execute(delete(StepAttempt).where(StepAttempt.invoice_id == invoice_id, StepAttempt.step == step))


def attempts_of(session: Session, invoice_ids: list[str], step: str) -> dict[str, int]:
    """Unfinished starts of `step` per invoice (0 when none)."""
    if not invoice_ids:
        return {}
    rows = session.exec(select(StepAttempt).where(StepAttempt.invoice_id.in_(invoice_ids), StepAttempt.step == step)).all()
    return {r.invoice_id: r.attempts for r in rows}


# --- dead letters ------------------------------------------------------------------------


def dead_letters(session: Session, include_retried: bool = False, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
    query = select(DeadLetter).order_by(DeadLetter.created_at.desc(), DeadLetter.id.desc())
    if not include_retried:
        query = query.where(DeadLetter.retried_at.is_(None))
    return list(session.exec(query.offset(offset).limit(limit)).all())


class RetryRefused(ValueError):
    """The dead letter was already retried, or does not exist."""


def retry_dead_letter(session: Session, letter_id: int, actor: str) -> DeadLetter:
    """Clear the crash count and put the invoice back to `processing`; the caller enqueues it
    from `letter.step`. Retrying twice is refused."""
    letter = session.exec(select(DeadLetter).where(DeadLetter.id == letter_id).with_for_update()).first()
    if letter is None:
        raise RetryRefused(f"No dead letter {letter_id}.")
    if letter.retried_at is not None:
        raise RetryRefused(f"Dead letter {letter_id} was already retried by {letter.retried_by}.")
    inv = session.exec(select(Invoice).where(Invoice.id == letter.invoice_id).with_for_update()).one()
    for row in session.exec(select(StepAttempt).where(StepAttempt.invoice_id == inv.id)).all():
        session.delete(row)
    run = session.exec(select(StepRun).where(StepRun.invoice_id == inv.id, StepRun.step == letter.step)).first()
    if run is not None and run.status != StepRunStatus.DONE:
        session.delete(run)
    letter.retried_at, letter.retried_by = utcnow(), actor
    inv.status, inv.error, inv.current_step, inv.updated_at = InvoiceStatus.PROCESSING, None, letter.step, utcnow()
    session.add(letter)
    session.add(inv)
    session.flush()
    return letter


# --- the reaper ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stuck:
    invoice_id: str
    step: str
    since_s: float


def find_stuck(session: Session, settings: Settings | None = None) -> list[Stuck]:
    """Invoices in a running state whose step started longer ago than the step's deadline,
    and invoices still `received` past `received_deadline_s` (never reached a worker)."""
    settings = settings or get_settings()
    now = utcnow()
    out: list[Stuck] = []
    running = session.exec(
        select(Invoice, StepRun)
        .join(StepRun, (StepRun.invoice_id == Invoice.id) & (StepRun.step == Invoice.current_step))
        .where(Invoice.status == InvoiceStatus.PROCESSING, StepRun.status == StepRunStatus.RUNNING)
    ).all()
    for inv, run in running:
        age = (now - run.started_at).total_seconds()
        quiet = (now - inv.updated_at).total_seconds()  # a reaped invoice waits one more deadline
        if min(age, quiet) > step_deadline_s(run.step, settings):
            out.append(Stuck(inv.id, run.step, age))
    # Processing with no row for the current step yet (between steps) or received: by last change.
    waiting = session.exec(
        select(Invoice).where(
            Invoice.status.in_([InvoiceStatus.RECEIVED, InvoiceStatus.PROCESSING]),
            Invoice.updated_at < now - timedelta(seconds=settings.received_deadline_s),
        )
    ).all()
    seen = {s.invoice_id for s in out}
    for inv in waiting:
        if inv.id in seen:
            continue
        step = inv.current_step or Step.INGEST
        has_running = session.exec(
            select(StepRun.id).where(StepRun.invoice_id == inv.id, StepRun.step == step, StepRun.status == StepRunStatus.RUNNING)
        ).first()
        if has_running:
            continue  # judged above by its step's own deadline
        age = (now - inv.updated_at).total_seconds()
        if inv.status == InvoiceStatus.RECEIVED or age > step_deadline_s(step, settings):
            out.append(Stuck(inv.id, str(step), age))
    return out


def reap(enqueue, settings: Settings | None = None) -> list[Stuck]:
    """Send every stuck invoice again from its step (`enqueue(invoice_id, step)`); the steps are
    idempotent, so one that was in fact still queued runs once. Returns what was sent."""
    settings = settings or get_settings()
    with session_scope(settings) as session:
        stuck = find_stuck(session, settings)
        for item in stuck:
            inv = session.get(Invoice, item.invoice_id)
            inv.updated_at = utcnow()  # not sent again before another deadline passes
            session.add(inv)
    for item in stuck:
        log.warning("invoice %s stuck in %s for %.0f s: sent again", item.invoice_id, item.step, item.since_s)
        enqueue(item.invoice_id, item.step)
    return stuck
