"""What people do to invoices: approve or reject a pending approval, correct fields or
override a step's decision. Every action is an `AuditEntry` (who, when, before, after,
why); approvals and rejections are also `ApprovalAction` rows.

A correction returns the step the chain resumes from: fields changed → `validate_invoice`
(every later decision depended on them); a step's decision overridden → the step after
it. The `StepRun` rows from the resume step on are deleted so the chain runs them again;
the audit keeps their history.
"""

from __future__ import annotations

from sqlmodel import Session, select

from invoicechain.ap.approval import approval_requirement
from invoicechain.ap.findings import reason as make_reason
from invoicechain.ap.payment import schedule_payment, unschedule_payment
from invoicechain.ap.steps import STOP_STATUS, rules_verdict
from invoicechain.config import Settings, get_settings
from invoicechain.db.tables import ApprovalAction, AuditEntry, Invoice, StepRun, utcnow
from invoicechain.decisions import STEP_DECISIONS, TOOLCHAIN_STEPS, Decision, InvoiceStatus, Reason, Step
from invoicechain.schema import InvoiceFields
from invoicechain.enums import StepRunStatus

#: Reason codes an overridden decision is recorded with when the reviewer names none and
#: the rules did not reach the same decision.
DEFAULT_OVERRIDE_REASONS: dict[str, list[str]] = {
    Decision.VALID: [],
    Decision.INVALID: [],
    Decision.MATCHED: [Reason.PO_MATCHED],
    Decision.PARTIAL: [],
    Decision.NO_MATCH: [Reason.PO_NOT_FOUND],
    Decision.NO_PO: [Reason.NO_PO_REFERENCE],
    Decision.APPROVED: [Reason.APPROVED_BY_PERSON],
    Decision.PENDING_APPROVAL: [],
    Decision.REJECTED: [Reason.REJECTED_BY_PERSON],
    Decision.SCHEDULED: [Reason.PAYMENT_SCHEDULED],
    Decision.HELD: [],
}


class ApprovalError(ValueError):
    """An approval that the policy does not allow (wrong state or role)."""


def _audit(session: Session, invoice: Invoice, actor: str, action: str, step: str | None, before, after, why) -> AuditEntry:
    entry = AuditEntry(invoice_id=invoice.id, actor=actor, action=action, step=step, before=before, after=after, reason=why)
    session.add(entry)
    return entry


def _approval_run(session: Session, invoice: Invoice) -> StepRun | None:
    return session.exec(
        select(StepRun).where(StepRun.invoice_id == invoice.id, StepRun.step == Step.APPROVAL)
    ).first()


def _set_status(invoice: Invoice, status: str, step: str | None = None) -> None:
    invoice.status = str(status)
    if step is not None:
        invoice.current_step = str(step)
    invoice.updated_at = utcnow()


def approve(
    session: Session,
    invoice: Invoice,
    approver: str,
    role: str | None,
    reason: str | None = None,
    *,
    settings: Settings | None = None,
) -> str:
    """Record an approval: "approved" when the policy's approvers are complete, else "waiting"."""
    settings = settings or get_settings()
    if invoice.status != InvoiceStatus.PENDING_APPROVAL:
        raise ApprovalError(f"Invoice {invoice.id} is {invoice.status}, not pending_approval.")
    required, roles = approval_requirement(session, invoice, settings)
    required = max(required, 1)
    if roles and role not in roles:
        raise ApprovalError(
            f"Role {role or '(none)'} may not approve invoice {invoice.id}; it needs {required} approver(s) with role {' or '.join(roles)}."
        )
    run = _approval_run(session, invoice)
    since = run.started_at if run is not None else None
    query = select(ApprovalAction).where(ApprovalAction.invoice_id == invoice.id, ApprovalAction.decision == Decision.APPROVED)
    if since is not None:
        query = query.where(ApprovalAction.at >= since)
    approvers = {a.approver for a in session.exec(query).all()}
    if approver not in approvers:  # the same person twice counts once (and a resent request adds nothing)
        session.add(ApprovalAction(invoice_id=invoice.id, approver=approver, role=role, decision=Decision.APPROVED, reason=reason))
        approvers.add(approver)
        _audit(
            session, invoice, approver, "approve", Step.APPROVAL,
            {"status": invoice.status},
            {"role": role, "approvers": sorted(approvers), "required": required},
            reason,
        )
    if len(approvers) >= required:
        _set_status(invoice, InvoiceStatus.PROCESSING, Step.PAYMENT)
        session.add(invoice)
        session.flush()
        return "approved"
    session.add(invoice)
    session.flush()
    return "waiting"


def reject(session: Session, invoice: Invoice, approver: str, reason: str) -> None:
    """End the invoice's chain as rejected, with the reason."""
    if not (reason or "").strip():
        raise ApprovalError("A rejection needs a reason.")
    if invoice.status not in (InvoiceStatus.PENDING_APPROVAL, InvoiceStatus.NEEDS_REVIEW):
        raise ApprovalError(f"Invoice {invoice.id} is {invoice.status}; only invoices waiting for a person can be rejected.")
    session.add(ApprovalAction(invoice_id=invoice.id, approver=approver, decision=Decision.REJECTED, reason=reason))
    _audit(session, invoice, approver, "reject", invoice.current_step, {"status": invoice.status}, {"status": InvoiceStatus.REJECTED}, reason)
    _set_status(invoice, InvoiceStatus.REJECTED)
    session.add(invoice)
    session.flush()


def review_queue(session: Session, limit: int | None = None) -> list[Invoice]:
    """Invoices waiting in needs_review, oldest first."""
    query = select(Invoice).where(Invoice.status == InvoiceStatus.NEEDS_REVIEW).order_by(Invoice.updated_at)
    if limit:
        query = query.limit(limit)
    return list(session.exec(query).all())


def _overrides(decision_override: dict | None) -> list[tuple[Step, str, list[str] | None]]:
    """Accepts {"step": S, "decision": D, "reasons": [...]} or {S: D, ...}; in chain order."""
    if not decision_override:
        return []
    if "step" in decision_override:
        items = [(decision_override["step"], decision_override.get("decision"), decision_override.get("reasons"))]
    else:
        items = [(s, d, None) for s, d in decision_override.items()]
    out = []
    for step, decision, codes in items:
        try:
            step = Step(step)
        except ValueError:
            raise ValueError(f"{step!r} is not a step") from None
        if step not in TOOLCHAIN_STEPS:
            raise ValueError(f"The {step} step has no decision to override.")
        allowed = [str(d) for d in STEP_DECISIONS[step]]
        if decision not in allowed:
            raise ValueError(f"{decision!r} is not a {step} decision ({', '.join(allowed)}).")
        if codes is not None:
            unknown = [c for c in codes if c not in set(Reason.__members__.values())]
            if unknown:
                raise ValueError(f"Unknown reason code(s): {', '.join(map(str, unknown))}.")
        out.append((step, decision, codes))
    return sorted(out, key=lambda t: TOOLCHAIN_STEPS.index(t[0]))


def _reset_from(session: Session, invoice: Invoice, step: Step) -> list[str]:
    """Delete the StepRun rows of `step` and every later step; returns the steps reset."""
    later = [str(s) for s in TOOLCHAIN_STEPS[TOOLCHAIN_STEPS.index(step) :]]
    runs = session.exec(select(StepRun).where(StepRun.invoice_id == invoice.id, StepRun.step.in_(later))).all()
    for run in runs:
        session.delete(run)
    return sorted(r.step for r in runs)


def apply_correction(
    session: Session,
    invoice: Invoice,
    actor: str,
    fields: dict | None,
    decision_override: dict | None,
    reason: str | None,
    *,
    settings: Settings | None = None,
) -> str | None:
    """Apply a reviewer's correction; returns the step to resume the chain from, or None when it ends.

    `fields`: field values to set (top-level keys of the invoice schema; `line_items` and
    `bank` are replaced whole). `decision_override`: `{"step", "decision", "reasons"?}` or
    `{step: decision}`. Correcting fields and overriding a decision in one request is
    refused: the override would be decided on fields that are about to change.
    """
    settings = settings or get_settings()
    overrides = _overrides(decision_override)
    if fields and overrides:
        raise ValueError("Correct fields or override decisions, not both in one correction.")
    if not fields and not overrides:
        raise ValueError("Nothing to correct: give fields or a decision override.")
    if invoice.status in (InvoiceStatus.PAYMENT_READY,) and fields:
        raise ValueError(f"Invoice {invoice.id} is already payment-ready; its fields can no longer change.")

    if fields:
        return _correct_fields(session, invoice, actor, fields, reason)

    resume: str | None = None
    for step, decision, codes in overrides:
        resume = _override(session, invoice, actor, step, decision, codes, reason, settings)
    session.flush()
    return resume


def _correct_fields(session: Session, invoice: Invoice, actor: str, fields: dict, why: str | None) -> str:
    unknown = [k for k in fields if k not in InvoiceFields.model_fields]
    if unknown:
        raise ValueError(f"Unknown field(s): {', '.join(unknown)}.")
    current = dict(invoice.fields or {})
    merged = InvoiceFields.model_validate({**current, **fields}).model_dump(mode="json")
    before = {k: current.get(k) for k in fields if current.get(k) != merged.get(k)}
    after = {k: merged.get(k) for k in before}
    if not before:
        raise ValueError("The corrected values equal the current ones: nothing changes.")
    _audit(session, invoice, actor, "correct_fields", Step.EXTRACT, {"fields": before}, {"fields": after}, why)
    invoice.fields = merged
    reset = _reset_from(session, invoice, Step.VALIDATE)
    _set_status(invoice, InvoiceStatus.PROCESSING, Step.VALIDATE)
    invoice.error = None
    session.add(invoice)
    session.flush()
    if reset:
        _audit(session, invoice, actor, "reset_steps", Step.VALIDATE, {"steps": reset}, None, "fields corrected")
    return str(Step.VALIDATE)


def _override(
    session: Session,
    invoice: Invoice,
    actor: str,
    step: Step,
    decision: str,
    codes: list[str] | None,
    why: str | None,
    settings: Settings,
) -> str | None:
    run = session.exec(select(StepRun).where(StepRun.invoice_id == invoice.id, StepRun.step == str(step))).first()
    # The context the adapter saw (or would see) for this step: what the correction teaches.
    rules, context = rules_verdict(step, invoice, session, settings)
    if step == Step.APPROVAL and decision == Decision.APPROVED and str(rules.decision) != Decision.APPROVED:
        # A correction must not bypass the approvers the policy asks for.
        raise ValueError(
            f"The approval policy decides {rules.decision} for invoice {invoice.id}; approve it through the approval "
            "route, where the required approvers and roles are checked."
        )
    if codes is None:
        codes = rules.summary()["reasons"] if str(rules.decision) == decision else [str(c) for c in DEFAULT_OVERRIDE_REASONS[decision]]
    before = {
        "decision": run.decision if run else None,
        "reasons": [r.get("code") for r in (run.reasons or [])] if run else [],
        "rules": rules.summary(),
        "context": context,
    }
    after = {"decision": decision, "reasons": [str(c) for c in codes]}
    _audit(session, invoice, actor, "override_decision", step, before, after, why)

    who = f"Reviewer {actor} set {step} to {decision}" + (f": {why}" if why else ".")
    if run is None:
        run = StepRun(invoice_id=invoice.id, step=str(step))
    run.status = StepRunStatus.DONE
    run.decision = decision
    run.reasons = [make_reason(c, who) for c in codes] or [make_reason("OVERRIDDEN", who)]
    run.mode = "human"
    run.agree = None
    run.finished_at = utcnow()
    session.add(run)

    following = TOOLCHAIN_STEPS[TOOLCHAIN_STEPS.index(step) + 1 :]
    if following:
        _reset_from(session, invoice, following[0])

    if step == Step.PAYMENT:
        if decision == Decision.SCHEDULED:
            if schedule_payment(session, invoice) is None:
                raise ValueError("The invoice has no vendor record to pay.")
        else:
            unschedule_payment(session, invoice.id)
        _set_status(invoice, STOP_STATUS[decision], step)
        session.add(invoice)
        return None
    stop = STOP_STATUS.get(decision)
    if stop is not None:
        _set_status(invoice, stop, step)
        session.add(invoice)
        return None
    resume = following[0]
    _set_status(invoice, InvoiceStatus.PROCESSING, resume)
    session.add(invoice)
    return str(resume)
