"""Confidence-driven review: which invoices a person must look at before the rules go on.

After validate_invoice finds an invoice VALID, it still stops in `needs_review` when one of
its required fields is doubtful: the model's confidence in it is below the field's threshold
(`settings.review_confidence`), its value is not found in the document (grounding failed), or
the reconciliation rules replaced what the model read (rules and model disagree; a value the
model left empty and the rules filled from the page is not a disagreement). The reason
names the fields. Once a person has corrected the invoice's fields, its values are theirs,
and the routing no longer applies.
"""

from __future__ import annotations

from enum import StrEnum

from sqlmodel import Session, select

from invoicechain.ap.findings import reason
from invoicechain.config import Settings
from invoicechain.db.tables import AuditEntry, Invoice, StepRun
from invoicechain.decisions import Reason, Step


class ReviewReason(StrEnum):
    """Why an invoice waits for a person although the rules found nothing wrong."""

    LOW_CONFIDENCE = "LOW_CONFIDENCE"
    UNGROUNDED_FIELD = "UNGROUNDED_FIELD"
    RULES_CHANGED_FIELD = "RULES_CHANGED_FIELD"
    UNKNOWN_VENDOR = Reason.UNKNOWN_VENDOR
    EINVOICE_MISMATCH = "EINVOICE_MISMATCH"


def required_fields() -> tuple[str, ...]:
    from invoicechain.ap.validate import REQUIRED_FIELDS

    return REQUIRED_FIELDS


def threshold(settings: Settings, name: str) -> float:
    table = settings.review_confidence or {}
    return float(table.get(name, table.get("default", 0.0)))


def doubtful_fields(invoice: Invoice, settings: Settings, reconciled: list[dict] | None = None) -> dict[str, list[str]]:
    """Required fields per review reason: low confidence, ungrounded, changed by the rules."""
    fields = invoice.fields or {}
    confidence = invoice.confidence or {}
    grounding = invoice.grounding or {}
    out: dict[str, list[str]] = {}
    for name in required_fields():
        if fields.get(name) in (None, ""):
            continue  # a missing field is the rules' MISSING_FIELD
        value = confidence.get(name)
        if isinstance(value, (int, float)) and value < threshold(settings, name):
            out.setdefault(ReviewReason.LOW_CONFIDENCE, []).append(name)
        g = grounding.get(name)
        if settings.review_on_ungrounded and isinstance(g, dict) and g.get("grounded") is False:
            out.setdefault(ReviewReason.UNGROUNDED_FIELD, []).append(name)
    if settings.review_on_reconciled:
        changed = overruled_fields(reconciled)
        if changed:
            out[ReviewReason.RULES_CHANGED_FIELD] = changed
    return out


def overruled_fields(reconciled: list[dict] | None) -> list[str]:
    """Required fields whose value the model read and the rules replaced or removed: rules and
    model disagree. A field the model left empty and the rules filled (a value printed after
    its label) is not a disagreement; the grounding check still applies to it."""
    first: dict[str, object] = {}
    for change in reconciled or []:
        name = change.get("field")
        if name in required_fields() and name not in first:
            first[name] = change.get("before")
    return sorted(name for name, before in first.items() if before not in (None, ""))


def _extract_run(session: Session, invoice_id: str) -> StepRun | None:
    """The extract step's row, from the rows the step already read when they are cached."""
    cached = session.info.get(("step_runs", invoice_id))
    if cached is not None and cached[0] is session.get_transaction():
        return next((r for r in cached[1] if r.step == Step.EXTRACT), None)
    return session.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == Step.EXTRACT)).first()


def review_reasons(session: Session, invoice: Invoice, settings: Settings) -> list[dict]:
    """The reasons that send a VALID invoice to a person; none once a person corrected it."""
    extract = _extract_run(session, invoice.id)
    reconciled = ((extract.model_output or {}).get("reconciled") if extract is not None else None) or []
    found = doubtful_fields(invoice, settings, reconciled)
    mismatches = ((extract.model_output or {}).get("einvoice_mismatches") if extract is not None else None) or []
    if not found and not mismatches:
        return []
    corrected = session.exec(
        select(AuditEntry.id).where(AuditEntry.invoice_id == invoice.id, AuditEntry.action == "correct_fields").limit(1)
    ).first()
    if corrected is not None:
        return []
    out = []
    if ReviewReason.LOW_CONFIDENCE in found:
        parts = ", ".join(
            f"{n} ({(invoice.confidence or {})[n]:.2f} < {threshold(settings, n):.2f})" for n in found[ReviewReason.LOW_CONFIDENCE]
        )
        out.append(reason(ReviewReason.LOW_CONFIDENCE, f"The model is unsure of {parts}: a person checks."))
    if ReviewReason.UNGROUNDED_FIELD in found:
        out.append(reason(ReviewReason.UNGROUNDED_FIELD,
                          f"The value of {', '.join(found[ReviewReason.UNGROUNDED_FIELD])} is not found in the document: a person checks."))
    if ReviewReason.RULES_CHANGED_FIELD in found:
        out.append(reason(ReviewReason.RULES_CHANGED_FIELD,
                          f"The rules changed what the model read for {', '.join(found[ReviewReason.RULES_CHANGED_FIELD])}: a person checks."))
    for r in out:
        r["fields"] = list(found[r["code"]])
    if mismatches:  # a structured e-invoice whose XML and visible page differ
        names = [m["field"] for m in mismatches]
        out.append(reason(ReviewReason.EINVOICE_MISMATCH,
                          f"The e-invoice XML and the visible page differ in {', '.join(names)}: a person checks."))
        out[-1]["fields"] = names
    return out


def only_unknown_vendor(reasons: list[dict]) -> bool:
    """True when an unknown vendor is the invoice's only problem (a question for a person)."""
    codes = {r.get("code") for r in reasons}
    return codes == {str(Reason.UNKNOWN_VENDOR)}
