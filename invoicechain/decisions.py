"""Steps, decisions, reason codes and synthetic fault types: shared by the rules, the
synthetic generator (its `expected` block), the toolchain adapter's prompts and the tests.
"""

from __future__ import annotations

from enum import StrEnum


class Step(StrEnum):
    INGEST = "ingest"
    EXTRACT = "extract"
    VALIDATE = "validate_invoice"
    MATCH_PO = "match_po"
    APPROVAL = "run_approval"
    PAYMENT = "trigger_payment"


#: The accounts-payable steps after extraction, in chain order.
TOOLCHAIN_STEPS: tuple[Step, ...] = (Step.VALIDATE, Step.MATCH_PO, Step.APPROVAL, Step.PAYMENT)
ALL_STEPS: tuple[Step, ...] = (Step.INGEST, Step.EXTRACT, *TOOLCHAIN_STEPS)


class InvoiceStatus(StrEnum):
    RECEIVED = "received"
    PROCESSING = "processing"
    NEEDS_OCR = "needs_ocr"
    FAILED = "failed"
    INVALID = "invalid"
    NEEDS_REVIEW = "needs_review"
    PENDING_APPROVAL = "pending_approval"
    REJECTED = "rejected"
    PAYMENT_HELD = "payment_held"
    PAYMENT_READY = "payment_ready"


TERMINAL_STATUSES = frozenset(
    {
        InvoiceStatus.NEEDS_OCR,
        InvoiceStatus.FAILED,
        InvoiceStatus.INVALID,
        InvoiceStatus.REJECTED,
        InvoiceStatus.PAYMENT_HELD,
        InvoiceStatus.PAYMENT_READY,
    }
)
#: States where the chain has stopped and waits for a person.
WAITING_STATUSES = frozenset({InvoiceStatus.NEEDS_REVIEW, InvoiceStatus.PENDING_APPROVAL})


class Decision(StrEnum):
    # ingest / extract
    OK = "OK"
    NEEDS_OCR = "NEEDS_OCR"
    FAILED = "FAILED"
    # validate_invoice
    VALID = "VALID"
    INVALID = "INVALID"
    # match_po
    MATCHED = "MATCHED"
    PARTIAL = "PARTIAL"
    NO_MATCH = "NO_MATCH"
    NO_PO = "NO_PO"
    # run_approval
    APPROVED = "APPROVED"
    PENDING_APPROVAL = "PENDING_APPROVAL"
    REJECTED = "REJECTED"
    # trigger_payment
    SCHEDULED = "SCHEDULED"
    HELD = "HELD"


STEP_DECISIONS: dict[Step, tuple[Decision, ...]] = {
    Step.VALIDATE: (Decision.VALID, Decision.INVALID),
    Step.MATCH_PO: (Decision.MATCHED, Decision.PARTIAL, Decision.NO_MATCH, Decision.NO_PO),
    Step.APPROVAL: (Decision.APPROVED, Decision.PENDING_APPROVAL, Decision.REJECTED),
    Step.PAYMENT: (Decision.SCHEDULED, Decision.HELD),
}


class Reason(StrEnum):
    """Machine-readable reason codes; each decision carries codes plus one sentence each."""

    # validate_invoice (blocking)
    MISSING_FIELD = "MISSING_FIELD"
    ARITHMETIC_MISMATCH = "ARITHMETIC_MISMATCH"
    LINES_DONT_SUM = "LINES_DONT_SUM"
    DUE_BEFORE_ISSUE = "DUE_BEFORE_ISSUE"
    DATE_TOO_FAR = "DATE_TOO_FAR"
    UNKNOWN_CURRENCY = "UNKNOWN_CURRENCY"
    UNKNOWN_VENDOR = "UNKNOWN_VENDOR"
    VENDOR_BLOCKED = "VENDOR_BLOCKED"
    DUPLICATE_INVOICE = "DUPLICATE_INVOICE"
    # validate_invoice (warnings, not blocking)
    BANK_ACCOUNT_CHANGED = "BANK_ACCOUNT_CHANGED"
    VENDOR_ON_HOLD = "VENDOR_ON_HOLD"
    # match_po
    PO_MATCHED = "PO_MATCHED"
    PO_RESOLVED_FUZZY = "PO_RESOLVED_FUZZY"
    PO_NOT_FOUND = "PO_NOT_FOUND"
    NO_PO_REFERENCE = "NO_PO_REFERENCE"
    PRICE_OVER_TOLERANCE = "PRICE_OVER_TOLERANCE"
    AMOUNT_OVER_REMAINING = "AMOUNT_OVER_REMAINING"
    QUANTITY_OVER_PO = "QUANTITY_OVER_PO"
    QUANTITY_OVER_RECEIPT = "QUANTITY_OVER_RECEIPT"
    VENDOR_MISMATCH = "VENDOR_MISMATCH"
    CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
    # run_approval
    AUTO_APPROVED = "AUTO_APPROVED"
    AMOUNT_ABOVE_THRESHOLD = "AMOUNT_ABOVE_THRESHOLD"
    PO_EXCEPTION = "PO_EXCEPTION"
    VENDOR_HIGH_RISK = "VENDOR_HIGH_RISK"
    DEPARTMENT_LIMIT = "DEPARTMENT_LIMIT"
    APPROVED_BY_PERSON = "APPROVED_BY_PERSON"
    REJECTED_BY_PERSON = "REJECTED_BY_PERSON"
    # trigger_payment
    PAYMENT_SCHEDULED = "PAYMENT_SCHEDULED"
    EARLY_PAYMENT_DISCOUNT = "EARLY_PAYMENT_DISCOUNT"
    BANK_ACCOUNT_UNVERIFIED = "BANK_ACCOUNT_UNVERIFIED"
    PAYMENT_BLOCKED_VENDOR = "PAYMENT_BLOCKED_VENDOR"
    # model / guarded modes
    MODEL_RULES_DISAGREE = "MODEL_RULES_DISAGREE"
    # extract: a field changed by the reconciliation rules (the value before is kept in the model output)
    RECONCILED_AMOUNT = "RECONCILED_AMOUNT"
    RECONCILED_IDENTIFIER = "RECONCILED_IDENTIFIER"
    RECONCILED_TEXT = "RECONCILED_TEXT"


class Fault(StrEnum):
    """Faults the synthetic generator injects; each has an expected decision per step."""

    AMOUNT_OVER_PO_TOLERANCE = "amount_over_po_tolerance"
    UNKNOWN_PO = "unknown_po"
    DUPLICATE_INVOICE = "duplicate_invoice"
    QUANTITY_OVER_RECEIPT = "quantity_over_receipt"
    VENDOR_ON_HOLD = "vendor_on_hold"
    CHANGED_BANK_ACCOUNT = "changed_bank_account"
    ARITHMETIC_ERROR = "arithmetic_error"
    MISSING_REQUIRED_FIELD = "missing_required_field"
    APPROVAL_ABOVE_THRESHOLD = "approval_above_threshold"


Expected = dict[str, str | None]

_CLEAN_WITH_PO: Expected = {
    Step.VALIDATE: Decision.VALID,
    Step.MATCH_PO: Decision.MATCHED,
    Step.APPROVAL: Decision.APPROVED,
    Step.PAYMENT: Decision.SCHEDULED,
}
_INVALID: Expected = {Step.VALIDATE: Decision.INVALID, Step.MATCH_PO: None, Step.APPROVAL: None, Step.PAYMENT: None}
_NEEDS_PERSON: Expected = {Step.VALIDATE: Decision.VALID, Step.APPROVAL: Decision.PENDING_APPROVAL, Step.PAYMENT: None}

#: What each step should decide for an invoice carrying one fault. `None`: the chain
#: stops before that step (an INVALID invoice is not matched; a pending approval waits).
FAULT_EXPECTATIONS: dict[Fault, Expected] = {
    Fault.ARITHMETIC_ERROR: _INVALID,
    Fault.MISSING_REQUIRED_FIELD: _INVALID,
    Fault.DUPLICATE_INVOICE: _INVALID,
    Fault.UNKNOWN_PO: {**_NEEDS_PERSON, Step.MATCH_PO: Decision.NO_MATCH},
    Fault.AMOUNT_OVER_PO_TOLERANCE: {**_NEEDS_PERSON, Step.MATCH_PO: Decision.PARTIAL},
    Fault.QUANTITY_OVER_RECEIPT: {**_NEEDS_PERSON, Step.MATCH_PO: Decision.PARTIAL},
    Fault.APPROVAL_ABOVE_THRESHOLD: {**_NEEDS_PERSON, Step.MATCH_PO: Decision.MATCHED},
    # Payment blocks: the invoice is processed and approved, the money is not released.
    Fault.VENDOR_ON_HOLD: {**_CLEAN_WITH_PO, Step.PAYMENT: Decision.HELD},
    Fault.CHANGED_BANK_ACCOUNT: {**_CLEAN_WITH_PO, Step.PAYMENT: Decision.HELD},
}

#: Main reason code each fault must produce at the step that catches it.
FAULT_REASONS: dict[Fault, tuple[Step, Reason]] = {
    Fault.ARITHMETIC_ERROR: (Step.VALIDATE, Reason.ARITHMETIC_MISMATCH),
    Fault.MISSING_REQUIRED_FIELD: (Step.VALIDATE, Reason.MISSING_FIELD),
    Fault.DUPLICATE_INVOICE: (Step.VALIDATE, Reason.DUPLICATE_INVOICE),
    Fault.UNKNOWN_PO: (Step.MATCH_PO, Reason.PO_NOT_FOUND),
    Fault.AMOUNT_OVER_PO_TOLERANCE: (Step.MATCH_PO, Reason.PRICE_OVER_TOLERANCE),
    Fault.QUANTITY_OVER_RECEIPT: (Step.MATCH_PO, Reason.QUANTITY_OVER_RECEIPT),
    Fault.APPROVAL_ABOVE_THRESHOLD: (Step.APPROVAL, Reason.AMOUNT_ABOVE_THRESHOLD),
    Fault.VENDOR_ON_HOLD: (Step.PAYMENT, Reason.PAYMENT_BLOCKED_VENDOR),
    Fault.CHANGED_BANK_ACCOUNT: (Step.PAYMENT, Reason.BANK_ACCOUNT_UNVERIFIED),
}


def expected_for(faults: list[str], has_po: bool) -> Expected:
    """Expected decisions for an invoice with the given faults (the first blocking one wins)."""
    if not faults:
        clean = dict(_CLEAN_WITH_PO)
        if not has_po:
            clean[Step.MATCH_PO] = Decision.NO_PO
        return {str(s): (str(clean[s]) if clean.get(s) else None) for s in TOOLCHAIN_STEPS}
    # Earlier steps stop the chain first, so the fault caught earliest decides.
    order = {s: i for i, s in enumerate(TOOLCHAIN_STEPS)}
    first = min((Fault(f) for f in faults), key=lambda f: order[FAULT_REASONS[f][0]])
    exp = FAULT_EXPECTATIONS[first]
    return {str(s): (str(exp[s]) if exp.get(s) else None) for s in TOOLCHAIN_STEPS}
