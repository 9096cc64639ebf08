"""One entry point per accounts-payable step, with the decision modes.

`run_step` computes the rules' decision for a step, and, in modes `model` and `guarded`,
asks the toolchain adapter (`proposer`) for its own decision on the same context:

- `rules`: the rules decide; the adapter is not called.
- `model`: the adapter decides; the rules' decision is still computed and stored.
- `guarded`: the adapter proposes and the rules verify. When they agree the decision
  stands; when they disagree nothing is applied and the invoice waits in `needs_review`.

Both outputs, their agreement, the reasons and the adapter's latency are returned for
the caller to store in the step's `StepRun`. The step's own effect (a payment) is
idempotent: a repeated `trigger_payment` finds the existing payment and adds nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlmodel import Session, select

from invoicechain.ap.approval import run_approval
from invoicechain.ap.context import build_context
from invoicechain.ap.findings import RuleResult, reason
from invoicechain.ap.match_po import match_po
from invoicechain.ap.payment import existing_payment, schedule_payment, scheduled_outcome, trigger_payment
from invoicechain.ap.validate import validate_invoice
from invoicechain.config import Settings
from invoicechain.db.tables import Invoice, StepRun, done_decisions, forget_step_runs, utcnow
from invoicechain.decisions import STEP_DECISIONS, TOOLCHAIN_STEPS, Decision, InvoiceStatus, Reason, Step
from invoicechain.enums import StepRunStatus

#: proposer(step, context) -> {"decision": str, "reasons": [codes]} (the toolchain adapter).
Proposer = Callable[[str, dict], dict]

RULES: dict[Step, Callable[..., RuleResult]] = {
    Step.VALIDATE: validate_invoice,
    Step.MATCH_PO: match_po,
    Step.APPROVAL: run_approval,
    Step.PAYMENT: trigger_payment,
}
MODE_SETTING: dict[Step, str] = {
    Step.VALIDATE: "validate_mode",
    Step.MATCH_PO: "match_po_mode",
    Step.APPROVAL: "approval_mode",
    Step.PAYMENT: "payment_mode",
}
#: The invoice status a decision stops the chain with; decisions not listed continue it.
STOP_STATUS: dict[str, str] = {
    Decision.INVALID: InvoiceStatus.INVALID,
    Decision.PENDING_APPROVAL: InvoiceStatus.PENDING_APPROVAL,
    Decision.REJECTED: InvoiceStatus.REJECTED,
    Decision.SCHEDULED: InvoiceStatus.PAYMENT_READY,
    Decision.HELD: InvoiceStatus.PAYMENT_HELD,
}

#: What a reason code means, for reasons the adapter gives that the rules did not.
REASON_TEXT: dict[str, str] = {
    Reason.MISSING_FIELD: "a required field is missing",
    Reason.ARITHMETIC_MISMATCH: "the amounts do not add up",
    Reason.LINES_DONT_SUM: "the line amounts do not sum to the subtotal",
    Reason.DUE_BEFORE_ISSUE: "the due date is before the invoice date",
    Reason.DATE_TOO_FAR: "a date is too far in the future",
    Reason.UNKNOWN_CURRENCY: "the currency is not an ISO 4217 code",
    Reason.UNKNOWN_VENDOR: "the vendor is not in the vendor master",
    Reason.VENDOR_BLOCKED: "the vendor is blocked",
    Reason.DUPLICATE_INVOICE: "the invoice duplicates one already received",
    Reason.BANK_ACCOUNT_CHANGED: "the bank account differs from the vendor record",
    Reason.VENDOR_ON_HOLD: "the vendor is on hold",
    Reason.PO_MATCHED: "the invoice matches its purchase order",
    Reason.PO_RESOLVED_FUZZY: "the PO number was read as a near typo of an existing PO",
    Reason.PO_NOT_FOUND: "the PO number was not found",
    Reason.NO_PO_REFERENCE: "the invoice states no PO number",
    Reason.PRICE_OVER_TOLERANCE: "a unit price is above the PO price tolerance",
    Reason.AMOUNT_OVER_REMAINING: "the amount is over the PO's remaining balance",
    Reason.QUANTITY_OVER_PO: "a quantity is over the ordered quantity",
    Reason.QUANTITY_OVER_RECEIPT: "a quantity is over the received quantity",
    Reason.VENDOR_MISMATCH: "the PO belongs to another vendor",
    Reason.CURRENCY_MISMATCH: "the invoice and PO currencies differ",
    Reason.AUTO_APPROVED: "the amount is within the auto-approve limit",
    Reason.AMOUNT_ABOVE_THRESHOLD: "the amount is above the auto-approve limit",
    Reason.PO_EXCEPTION: "the PO match needs a person",
    Reason.VENDOR_HIGH_RISK: "the vendor's risk needs a person",
    Reason.DEPARTMENT_LIMIT: "the amount is over the department's limit",
    Reason.APPROVED_BY_PERSON: "a person approved",
    Reason.REJECTED_BY_PERSON: "a person rejected",
    Reason.PAYMENT_SCHEDULED: "the payment is scheduled",
    Reason.EARLY_PAYMENT_DISCOUNT: "the early-payment discount is taken",
    Reason.BANK_ACCOUNT_UNVERIFIED: "the bank account must be verified first",
    Reason.PAYMENT_BLOCKED_VENDOR: "the vendor's payments are blocked",
    Reason.MODEL_RULES_DISAGREE: "the adapter and the rules disagree",
}


@dataclass
class StepOutcome:
    """What one step decided and how; the caller stores it as the step's StepRun."""

    decision: str  # a Decision value
    reasons: list[dict]  # [{"code": Reason value, "message": "one sentence"}]
    rules_output: dict | None  # {"decision", "reasons": [codes]} from the rules
    model_output: dict | None  # {"decision", "reasons": [codes]} from the adapter (modes model/guarded)
    agree: bool | None
    mode: str  # rules | model | guarded
    status: str | None  # new InvoiceStatus when the chain stops here; None = continue
    model_ms: float | None = None
    adapter_version: str | None = None
    context: dict | None = field(default=None, repr=False)  # what the adapter saw (or would have)


def step_mode(step: str, settings: Settings) -> str:
    """The decision mode configured for a step."""
    return getattr(settings, MODE_SETTING[Step(step)])


def prior_decisions(session: Session, invoice: Invoice, step: str) -> dict[str, str]:
    """Decisions of the toolchain steps before `step` that already ran for this invoice."""
    earlier = [str(s) for s in TOOLCHAIN_STEPS[: TOOLCHAIN_STEPS.index(Step(step))]]
    if not earlier:
        return {}
    found = done_decisions(session, invoice.id)
    return {s: found[s] for s in earlier if s in found}


def rules_verdict(step: str, invoice: Invoice, session: Session, settings: Settings, *, today: date | None = None) -> tuple[RuleResult, dict]:
    """The rules' result for a step and the adapter context built from it."""
    step = Step(step)
    result = RULES[step](session, invoice, settings, today=today)
    facts = dict(result.facts)
    prior = prior_decisions(session, invoice, step)
    if prior:
        facts["prior"] = prior
    return result, build_context(step, invoice.fields, facts)


def normalize_proposal(step: str, raw: Any) -> tuple[dict | None, str | None]:
    """The adapter's answer as `{"decision", "reasons": [codes]}`, or None and what is wrong with it."""
    if isinstance(raw, BaseException):
        return None, f"{type(raw).__name__}: {raw}"
    if not isinstance(raw, dict):
        return None, f"expected an object, got {type(raw).__name__}"
    decision = raw.get("decision")
    allowed = [str(d) for d in STEP_DECISIONS[Step(step)]]
    if decision not in allowed:
        return None, f"decision {decision!r} is not one of {', '.join(allowed)}"
    codes = raw.get("reasons") or []
    if not isinstance(codes, list):
        codes = [codes]
    known = set(Reason.__members__.values())
    codes = [c for c in (x.get("code") if isinstance(x, dict) else x for x in codes) if c in known]
    return {"decision": decision, "reasons": codes}, None


def _adapter_reasons(proposal: dict, rules: RuleResult) -> list[dict]:
    by_code = {r["code"]: r for r in rules.reasons}
    out = []
    for code in proposal["reasons"]:
        out.append(by_code.get(code) or reason(code, f"The toolchain adapter reports that {REASON_TEXT.get(code, code)}."))
    return out


@dataclass
class _Proposal:
    """What the toolchain adapter proposed for a step, as stored on the step run."""

    output: dict | None
    agree: bool | None
    model_ms: float | None
    adapter_version: str | None


def _ask_adapter(
    step: Step,
    mode: str,
    proposer: Proposer | None,
    context: dict,
    rules: RuleResult,
    rules_output: dict,
    reasons: list[dict],
) -> tuple[str, list[dict], bool, _Proposal]:
    """The toolchain adapter's proposal for a step beside the rules' verdict: in mode "model" its
    decision stands; otherwise a disagreement (or no usable proposal) sends the invoice to a
    person. Returns (decision, reasons, whether a person reviews, the proposal)."""
    decision = str(rules.decision)
    if proposer is None:
        raise ValueError(f"{step} runs in mode {mode!r}, which needs the toolchain adapter; none was given")
    t0 = time.perf_counter()
    try:
        raw = proposer(str(step), context)
    except Exception as exc:  # an adapter failure must not decide anything: a person looks
        raw = exc
    model_ms = (time.perf_counter() - t0) * 1000.0
    adapter_version = None
    if isinstance(raw, dict) and raw.get("adapter_version") is not None:
        adapter_version = str(raw["adapter_version"])
    proposal, problem = normalize_proposal(step, raw)
    if proposal is None:
        reasons.append(
            reason(Reason.MODEL_RULES_DISAGREE, f"The toolchain adapter gave no usable {step} decision ({problem}); the rules decided {rules.decision}.")
        )
        return decision, reasons, True, _Proposal({"error": problem}, False, model_ms, adapter_version)
    agree = proposal["decision"] == str(rules.decision)
    review = False
    if mode == "model":
        decision, reasons = proposal["decision"], _adapter_reasons(proposal, rules)
    elif not agree:
        review = True
        theirs = ", ".join(proposal["reasons"]) or "no reasons"
        ours = ", ".join(rules_output["reasons"]) or "no reasons"
        reasons.append(
            reason(
                Reason.MODEL_RULES_DISAGREE,
                f"The toolchain adapter proposed {proposal['decision']} ({theirs}) but the rules decided {rules.decision} ({ours}): a person decides.",
            )
        )
    return decision, reasons, review, _Proposal(proposal, agree, model_ms, adapter_version)


def run_step(
    step: str,
    invoice: Invoice,
    session: Session,
    settings: Settings,
    proposer: Proposer | None = None,
    *,
    today: date | None = None,
) -> StepOutcome:
    """Decide one accounts-payable step for an invoice in the step's configured mode."""
    step = Step(step)
    if step not in RULES:
        raise ValueError(f"{step} is not an accounts-payable step")
    mode = step_mode(step, settings)

    if step == Step.PAYMENT:
        paid = existing_payment(session, invoice.id)
        if paid is not None:  # a repeated step: the payment exists, nothing more to do
            reasons = scheduled_outcome(paid, paid.creditor_name)
            summary = {"decision": str(Decision.SCHEDULED), "reasons": [r["code"] for r in reasons]}
            return StepOutcome(Decision.SCHEDULED, reasons, summary, None, None, mode, InvoiceStatus.PAYMENT_READY)

    rules, context = rules_verdict(step, invoice, session, settings, today=today)
    rules_output = rules.summary()
    decision, reasons = str(rules.decision), list(rules.reasons)
    model_output = agree = model_ms = adapter_version = None
    review = False
    if mode != "rules":
        decision, reasons, review, asked = _ask_adapter(step, mode, proposer, context, rules, rules_output, reasons)
        model_output, agree, model_ms, adapter_version = asked.output, asked.agree, asked.model_ms, asked.adapter_version

    status = InvoiceStatus.NEEDS_REVIEW if review else STOP_STATUS.get(decision)
    if step == Step.VALIDATE and not review:
        from invoicechain.ap.review_routing import only_unknown_vendor, review_reasons

        if decision == Decision.INVALID and settings.unknown_vendor_review and only_unknown_vendor(reasons):
            status = InvoiceStatus.NEEDS_REVIEW  # a question: create the vendor from the invoice
        elif decision == Decision.VALID:
            doubts = review_reasons(session, invoice, settings)
            if doubts:
                reasons.extend(doubts)
                status = InvoiceStatus.NEEDS_REVIEW
    if step == Step.PAYMENT and decision == Decision.SCHEDULED and not review:
        payment = schedule_payment(session, invoice, today=today, checked=True)
        if payment is None:
            status = InvoiceStatus.NEEDS_REVIEW
            reasons.append(reason(Reason.PAYMENT_BLOCKED_VENDOR, "No vendor record to pay was found: a person must decide."))
    return StepOutcome(
        decision=decision,
        reasons=reasons,
        rules_output=rules_output,
        model_output=model_output,
        agree=agree,
        mode=mode,
        status=str(status) if status else None,
        model_ms=model_ms,
        adapter_version=adapter_version,
        context=context,
    )


def record_outcome(session: Session, invoice: Invoice, step: str, outcome: StepOutcome, *, duration_ms: float | None = None) -> StepRun:
    """Store a step's outcome as its StepRun (one row per invoice and step) and move the invoice on."""
    forget_step_runs(session, invoice.id)
    run = session.exec(select(StepRun).where(StepRun.invoice_id == invoice.id, StepRun.step == str(step))).first()
    if run is None:
        run = StepRun(invoice_id=invoice.id, step=str(step))
    run.status = StepRunStatus.DONE
    run.decision = outcome.decision
    run.reasons = outcome.reasons
    run.rules_output = outcome.rules_output
    run.model_output = outcome.model_output
    run.agree = outcome.agree
    run.mode = outcome.mode
    run.model_ms = outcome.model_ms
    run.adapter_version = outcome.adapter_version
    run.duration_ms = duration_ms
    run.finished_at = utcnow()
    session.add(run)
    invoice.status = outcome.status or InvoiceStatus.PROCESSING
    invoice.current_step = str(step)
    invoice.updated_at = utcnow()
    session.add(invoice)
    session.flush()
    return run


def run_chain(
    session: Session,
    invoice: Invoice,
    settings: Settings,
    proposer: Proposer | None = None,
    *,
    start: str = Step.VALIDATE,
    today: date | None = None,
) -> list[tuple[str, StepOutcome]]:
    """Run the accounts-payable steps from `start` in one session until one stops the chain."""
    done: list[tuple[str, StepOutcome]] = []
    for step in TOOLCHAIN_STEPS[TOOLCHAIN_STEPS.index(Step(start)) :]:
        t0 = time.perf_counter()
        outcome = run_step(step, invoice, session, settings, proposer, today=today)
        record_outcome(session, invoice, step, outcome, duration_ms=(time.perf_counter() - t0) * 1000.0)
        done.append((str(step), outcome))
        if outcome.status:
            break
    return done
