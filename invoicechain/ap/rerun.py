"""Re-running invoices that waited for master data or a person's confirmation.

An invoice stopped by a reason that new master data can resolve (an unknown vendor, a PO
not found, goods not yet received) or by a held bank account runs again from the step that
stopped it, once the data is there. Exactly-once effects hold: the invoice is claimed with
a conditional update (`status` still the one it was found in), so two reruns of the same
invoice enqueue it once; the step rows from the restart step on are deleted and written
again (one row per invoice and step), and a payment exists at most once per invoice
(an invoice that has one is never re-run).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import update
from sqlmodel import Session, select

from invoicechain.db.tables import AuditEntry, Invoice, Payment, StepRun, utcnow
from invoicechain.decisions import TOOLCHAIN_STEPS, InvoiceStatus, Reason, Step
from invoicechain.enums import StepRunStatus

#: Statuses an invoice may be re-run from: it has stopped, and no payment was made.
RERUNNABLE_STATUSES: tuple[str, ...] = (
    InvoiceStatus.INVALID, InvoiceStatus.NEEDS_REVIEW, InvoiceStatus.PENDING_APPROVAL, InvoiceStatus.PAYMENT_HELD,
)
#: Reasons that loading master data can resolve (re-run after every import).
MASTER_DATA_REASONS: tuple[str, ...] = (
    Reason.UNKNOWN_VENDOR, Reason.PO_NOT_FOUND, Reason.QUANTITY_OVER_RECEIPT, Reason.AMOUNT_OVER_REMAINING,
    Reason.VENDOR_MISMATCH, Reason.VENDOR_BLOCKED, Reason.PAYMENT_BLOCKED_VENDOR, Reason.BANK_ACCOUNT_UNVERIFIED,
)


@dataclass(frozen=True)
class Rerun:
    """An invoice to run again from `step` (it was found in `status` because of `reasons`)."""

    invoice_id: str
    status: str
    step: str
    reasons: tuple[str, ...]


def waiting_invoices(
    session: Session,
    statuses: list[str] | tuple[str, ...] = RERUNNABLE_STATUSES,
    reasons: list[str] | tuple[str, ...] = MASTER_DATA_REASONS,
    *,
    invoice_ids: list[str] | None = None,
) -> list[Rerun]:
    """Stopped invoices whose steps gave one of `reasons`, each with the earliest such step."""
    bad = [s for s in statuses if s not in RERUNNABLE_STATUSES]
    if bad:
        raise ValueError(f"invoices in {', '.join(bad)} cannot be re-run; re-runnable: {', '.join(RERUNNABLE_STATUSES)}")
    unknown = [r for r in reasons if r not in set(Reason.__members__.values())]
    if unknown:
        raise ValueError(f"unknown reason code(s): {', '.join(unknown)}")
    query = (
        select(StepRun, Invoice.status)
        .join(Invoice, Invoice.id == StepRun.invoice_id)
        .where(Invoice.status.in_(list(statuses)), StepRun.status == StepRunStatus.DONE, StepRun.step.in_([str(s) for s in TOOLCHAIN_STEPS]))
        .where(Invoice.id.not_in(select(Payment.invoice_id)))
    )
    if invoice_ids is not None:
        query = query.where(Invoice.id.in_(invoice_ids))
    order = {str(s): i for i, s in enumerate(TOOLCHAIN_STEPS)}
    found: dict[str, Rerun] = {}
    wanted = set(reasons)
    for run, status in session.exec(query):
        codes = tuple(sorted({r.get("code") for r in (run.reasons or []) if isinstance(r, dict)} & wanted))
        if not codes:
            continue
        current = found.get(run.invoice_id)
        if current is None or order[run.step] < order[current.step]:
            found[run.invoice_id] = Rerun(run.invoice_id, status, run.step, codes)
    return sorted(found.values(), key=lambda r: r.invoice_id)


def claim_rerun(session: Session, rerun: Rerun, actor: str, why: str) -> list[dict] | None:
    """Take the invoice for a rerun: None when it moved on meanwhile (someone else re-ran it).

    Otherwise the invoice is `processing` at `rerun.step` with the step rows from that step on
    deleted (returned, for `release_rerun`); the caller commits and then enqueues the chain
    from `rerun.step`.
    """
    claimed = session.execute(
        update(Invoice)
        .where(Invoice.id == rerun.invoice_id, Invoice.status == rerun.status)
        .values(status=InvoiceStatus.PROCESSING, current_step=rerun.step, error=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if not claimed:
        return None
    later = [str(s) for s in TOOLCHAIN_STEPS[TOOLCHAIN_STEPS.index(Step(rerun.step)) :]]
    runs = session.exec(select(StepRun).where(StepRun.invoice_id == rerun.invoice_id, StepRun.step.in_(later))).all()
    kept = [run.model_dump(exclude={"id"}) for run in runs]
    for run in runs:
        session.delete(run)
    session.add(AuditEntry(
        invoice_id=rerun.invoice_id, actor=actor, action="rerun", step=rerun.step,
        before={"status": rerun.status, "reasons": list(rerun.reasons), "steps": sorted(r.step for r in runs)},
        after={"status": str(InvoiceStatus.PROCESSING)}, reason=why,
    ))
    session.flush()
    session.expire_all()
    return kept


def release_rerun(session: Session, rerun: Rerun, runs: list[dict], problem: str) -> None:
    """Put an invoice whose rerun could not be enqueued back where it was (its step rows
    included, so a later rerun finds it again), saying why."""
    for values in runs:
        session.add(StepRun(**values))
    session.execute(
        update(Invoice)
        .where(Invoice.id == rerun.invoice_id, Invoice.status == InvoiceStatus.PROCESSING)
        .values(status=rerun.status, error=f"The rerun from {rerun.step} could not be queued: {problem}"[:2000], updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def rerun_waiting(
    settings,
    enqueue,
    *,
    statuses: list[str] | tuple[str, ...] = RERUNNABLE_STATUSES,
    reasons: list[str] | tuple[str, ...] = MASTER_DATA_REASONS,
    invoice_ids: list[str] | None = None,
    actor: str = "system",
    why: str = "master data changed",
) -> tuple[list[Rerun], list[tuple[Rerun, str]]]:
    """Re-run the waiting invoices that match: (queued, [(not queued, why)]).

    `enqueue(invoice_id, step)` sends the chain from `step` (e.g. `workers.chain.enqueue_invoice`).
    Each invoice is claimed and committed before it is enqueued; one that cannot be enqueued
    is put back as it was.
    """
    from invoicechain.db.session import session_scope

    with session_scope(settings) as session:
        found = waiting_invoices(session, statuses, reasons, invoice_ids=invoice_ids)
    queued: list[Rerun] = []
    failed: list[tuple[Rerun, str]] = []
    for rerun in found:
        with session_scope(settings) as session:
            runs = claim_rerun(session, rerun, actor, why)
        if runs is None:
            continue  # someone else re-ran it meanwhile
        try:
            enqueue(rerun.invoice_id, rerun.step)
        except Exception as exc:  # the broker is down: the invoice waits as before, with the reason
            problem = f"{type(exc).__name__}: {exc}"
            with session_scope(settings) as session:
                release_rerun(session, rerun, runs, problem)
            failed.append((rerun, problem))
            continue
        queued.append(rerun)
    return queued, failed
