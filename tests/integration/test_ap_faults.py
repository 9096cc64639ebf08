"""Every synthetic fault type gets its expected decision at every step (rules mode, Postgres)."""

from __future__ import annotations

import pytest
from sqlmodel import select

from invoicechain.ap.steps import run_chain
from invoicechain.db.tables import Payment, StepRun
from invoicechain.decisions import FAULT_EXPECTATIONS, FAULT_REASONS, Decision, Fault, Reason, Step, expected_for
from tests.factories import OTHER_IBAN, TODAY, add_invoice, invoice_fields, lines_for

# One invoice per fault, built the way the fault appears on a real document.
FAULT_INVOICES = {
    Fault.ARITHMETIC_ERROR: lambda: invoice_fields(total_amount="400.00"),
    Fault.MISSING_REQUIRED_FIELD: lambda: invoice_fields(invoice_id=None),
    Fault.DUPLICATE_INVOICE: lambda: invoice_fields(invoice_id="ACM-1001"),
    Fault.UNKNOWN_PO: lambda: invoice_fields(po_number="PO-8812-7730", lines=lines_for("PO-2026-0153")),
    Fault.AMOUNT_OVER_PO_TOLERANCE: lambda: invoice_fields(lines=lines_for("PO-2026-0153", price_factor=1.08)),
    Fault.QUANTITY_OVER_RECEIPT: lambda: invoice_fields(po_number="PO-2026-0154"),
    Fault.APPROVAL_ABOVE_THRESHOLD: lambda: invoice_fields(po_number="PO-2026-0160"),
    Fault.VENDOR_ON_HOLD: lambda: invoice_fields(
        vendor="Nordwind Logistik AG", po_number="PO-2026-0301", iban="DE75512108001245126199", bic="SOGEDEFFXXX"
    ),
    Fault.CHANGED_BANK_ACCOUNT: lambda: invoice_fields(iban=OTHER_IBAN, bic="MARKDEF1100"),
}

CLEAN_INVOICES = {
    "clean_with_po": (lambda: invoice_fields(), True),
    "clean_without_po": (lambda: invoice_fields(po_number=None), False),
    # A mistyped PO (two digits swapped) is still the vendor's PO.
    "mistyped_po": (lambda: invoice_fields(po_number="PO-2026-0135", lines=lines_for("PO-2026-0153")), True),
    # A name variant from the vendor master's aliases.
    "vendor_alias": (lambda: invoice_fields(vendor="ACME Industrial"), True),
}


def _decisions(outcomes) -> dict[str, str | None]:
    got = {str(s): None for s in (Step.VALIDATE, Step.MATCH_PO, Step.APPROVAL, Step.PAYMENT)}
    got.update({step: o.decision for step, o in outcomes})
    return got


def test_every_fault_type_is_covered():
    assert set(FAULT_INVOICES) == set(Fault)


@pytest.mark.parametrize("fault", list(Fault), ids=lambda f: f.value)
def test_fault_gets_expected_decisions(session, settings, fault):
    inv = add_invoice(session, FAULT_INVOICES[fault]())
    outcomes = run_chain(session, inv, settings, today=TODAY)
    session.commit()

    expected = expected_for([fault.value], has_po=True)
    assert _decisions(outcomes) == expected
    assert {str(k): (str(v) if v else None) for k, v in FAULT_EXPECTATIONS[fault].items()}.items() <= expected.items()

    step, code = FAULT_REASONS[fault]
    by_step = dict(outcomes)
    codes = [r["code"] for r in by_step[str(step)].reasons]
    assert code in codes, by_step[str(step)].reasons
    # Every reason explains itself in one sentence.
    for _, outcome in outcomes:
        for r in outcome.reasons:
            assert r["code"] in Reason.__members__.values() and r["message"].endswith(".")

    payments = session.exec(select(Payment).where(Payment.invoice_id == inv.id)).all()
    assert len(payments) == (1 if expected[Step.PAYMENT] == Decision.SCHEDULED else 0)
    runs = session.exec(select(StepRun).where(StepRun.invoice_id == inv.id)).all()
    assert {r.step for r in runs} == {s for s, d in expected.items() if d}


def test_payment_blocks_are_warnings_at_validation(session, settings):
    on_hold = add_invoice(session, FAULT_INVOICES[Fault.VENDOR_ON_HOLD]())
    changed = add_invoice(session, FAULT_INVOICES[Fault.CHANGED_BANK_ACCOUNT]())
    first = dict(run_chain(session, on_hold, settings, today=TODAY))
    second = dict(run_chain(session, changed, settings, today=TODAY))
    assert first[Step.VALIDATE].decision == Decision.VALID
    assert Reason.VENDOR_ON_HOLD in [r["code"] for r in first[Step.VALIDATE].reasons]
    assert second[Step.VALIDATE].decision == Decision.VALID
    assert Reason.BANK_ACCOUNT_CHANGED in [r["code"] for r in second[Step.VALIDATE].reasons]
    assert on_hold.status == "payment_held" and changed.status == "payment_held"


@pytest.mark.parametrize("name", list(CLEAN_INVOICES))
def test_clean_invoices(session, settings, name):
    build, has_po = CLEAN_INVOICES[name]
    inv = add_invoice(session, build())
    outcomes = run_chain(session, inv, settings, today=TODAY)
    session.commit()
    assert _decisions(outcomes) == expected_for([], has_po=has_po)
    assert inv.status == "payment_ready"
    match = dict(outcomes)[Step.MATCH_PO]
    if name == "mistyped_po":
        assert [r["code"] for r in match.reasons] == [Reason.PO_RESOLVED_FUZZY, Reason.PO_MATCHED]
        assert "PO-2026-0153" in match.reasons[0]["message"]
    if not has_po:
        assert [r["code"] for r in match.reasons] == [Reason.NO_PO_REFERENCE]
