"""The compact context the toolchain adapter sees for one step.

One function builds it, at inference (`steps.run_step`) and for training data
(`training_data`, `corrections`), so the adapter is trained on exactly what it is later
shown: a summary of the invoice fields the step depends on, plus the facts the rules
looked up (vendor record and how it was found, PO and receipts, history, limits, earlier
step decisions). Free text is shortened and lists are capped so a context stays well
inside the model's input budget.
"""

from __future__ import annotations

from invoicechain.ap.findings import short
from invoicechain.decisions import Step

# Invoice fields each step's decision depends on, in the order they are shown.
_STEP_FIELDS: dict[str, tuple[str, ...]] = {
    Step.VALIDATE: (
        "invoice_id", "vendor_name", "invoice_date", "due_date", "currency", "subtotal", "discount",
        "shipping", "tax", "total_amount",
    ),
    Step.MATCH_PO: ("vendor_name", "currency", "po_number", "subtotal", "total_amount"),
    Step.APPROVAL: ("vendor_name", "currency", "total_amount", "po_number"),
    Step.PAYMENT: ("vendor_name", "currency", "total_amount", "invoice_date", "due_date", "payment_terms"),
}


def fields_summary(step: str, fields: dict | None) -> dict:
    """The invoice fields a step looks at (free text shortened)."""
    fields = fields or {}
    out = {}
    for name in _STEP_FIELDS[step]:
        value = fields.get(name)
        out[name] = short(value, 60) if isinstance(value, str) else value
    if step in (Step.VALIDATE, Step.MATCH_PO):
        out["lines"] = len(fields.get("line_items") or [])
    if step == Step.VALIDATE:
        bank = fields.get("bank") or {}
        out["bank"] = "stated" if any(bank.values()) else None
    return out


def build_context(step: str, fields: dict | None, facts: dict | None) -> dict:
    """`{"step", "invoice": fields summary, **facts}`: the adapter's view of one step."""
    step = str(Step(step))
    context = {"step": step, "invoice": fields_summary(step, fields)}
    for key, value in (facts or {}).items():
        if key not in context:
            context[key] = value
    return context
