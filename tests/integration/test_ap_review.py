"""People in the loop: approvals (one and two approvers), rejections, corrections with their
audit trail and resume step, and the corrections exported as training data."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select

from invoicechain.ap import review
from training.corrections import export_corrections
from invoicechain.ap.steps import run_chain
from invoicechain.db.session import get_engine
from invoicechain.db.tables import ApprovalAction, AuditEntry, Payment, StepRun
from invoicechain.decisions import Decision, InvoiceStatus, Step
from models.prompts import EXTRACT_INSTRUCTION, TOOLCHAIN_INSTRUCTIONS
from tests.factories import TODAY, add_invoice, invoice_fields, load_master
from training.data import check_record


def _steps(session, inv) -> dict[str, str]:
    return {r.step: r.decision for r in session.exec(select(StepRun).where(StepRun.invoice_id == inv.id)).all()}


def test_one_approver_resumes_the_chain(session, settings):
    inv = add_invoice(session, invoice_fields(po_number="PO-2026-0160"))  # 9472.40 EUR
    run_chain(session, inv, settings, today=TODAY)
    assert inv.status == InvoiceStatus.PENDING_APPROVAL

    with pytest.raises(review.ApprovalError, match="Role intern may not approve"):
        review.approve(session, inv, "kim", "intern", settings=settings)
    assert review.approve(session, inv, "kim", "ap_clerk", "checked delivery", settings=settings) == "approved"
    assert inv.status == InvoiceStatus.PROCESSING and inv.current_step == Step.PAYMENT

    outcomes = run_chain(session, inv, settings, start=Step.PAYMENT, today=TODAY)
    assert [(s, o.decision) for s, o in outcomes] == [("trigger_payment", "SCHEDULED")]
    assert inv.status == InvoiceStatus.PAYMENT_READY
    action = session.exec(select(ApprovalAction).where(ApprovalAction.invoice_id == inv.id)).one()
    assert (action.approver, action.role, action.decision) == ("kim", "ap_clerk", "APPROVED")
    audit = session.exec(select(AuditEntry).where(AuditEntry.invoice_id == inv.id)).one()
    assert audit.action == "approve" and audit.after["approvers"] == ["kim"] and audit.reason == "checked delivery"


def test_two_approvers_are_two_different_people(session, settings):
    inv = add_invoice(session, invoice_fields(po_number="PO-2026-0170"))  # 34391.00 EUR: second tier
    run_chain(session, inv, settings, today=TODAY)
    assert inv.status == InvoiceStatus.PENDING_APPROVAL

    assert review.approve(session, inv, "ana", "finance_manager", settings=settings) == "waiting"
    # The same person again (or the same request resent) does not count twice.
    assert review.approve(session, inv, "ana", "finance_manager", settings=settings) == "waiting"
    # A clerk may approve the first tier but not this one.
    with pytest.raises(review.ApprovalError):
        review.approve(session, inv, "kim", "ap_clerk", settings=settings)
    assert inv.status == InvoiceStatus.PENDING_APPROVAL
    assert review.approve(session, inv, "ben", "cfo", settings=settings) == "approved"
    assert len(session.exec(select(ApprovalAction).where(ApprovalAction.invoice_id == inv.id)).all()) == 2

    run_chain(session, inv, settings, start=Step.PAYMENT, today=TODAY)
    assert inv.status == InvoiceStatus.PAYMENT_READY


def test_reject_ends_the_chain(session, settings):
    inv = add_invoice(session, invoice_fields(po_number="PO-2026-0160"))
    run_chain(session, inv, settings, today=TODAY)
    with pytest.raises(review.ApprovalError, match="needs a reason"):
        review.reject(session, inv, "ana", "  ")
    review.reject(session, inv, "ana", "not ordered by us")
    assert inv.status == InvoiceStatus.REJECTED
    with pytest.raises(review.ApprovalError):
        review.approve(session, inv, "ben", "cfo", settings=settings)
    entry = session.exec(select(AuditEntry).where(AuditEntry.invoice_id == inv.id)).one()
    assert (entry.action, entry.reason) == ("reject", "not ordered by us")


def test_field_correction_resumes_at_validation(session, settings):
    fields = invoice_fields(total_amount="400.00")  # arithmetic error (a misread total)
    inv = add_invoice(session, fields, text="INVOICE ACM-2040\nTotal 291.55 EUR")
    run_chain(session, inv, settings, today=TODAY)
    assert inv.status == InvoiceStatus.INVALID

    resume = review.apply_correction(session, inv, "rita", {"total_amount": "291.55"}, None, "total misread", settings=settings)
    assert resume == Step.VALIDATE
    assert _steps(session, inv) == {}  # every step runs again on the corrected fields
    entry = session.exec(select(AuditEntry).where(AuditEntry.action == "correct_fields")).one()
    assert entry.before == {"fields": {"total_amount": "400.00"}} and entry.after == {"fields": {"total_amount": "291.55"}}
    assert (entry.actor, entry.reason) == ("rita", "total misread")

    run_chain(session, inv, settings, start=resume, today=TODAY)
    assert inv.status == InvoiceStatus.PAYMENT_READY


def test_decision_override_resumes_after_the_step(session, settings):
    inv = add_invoice(session, invoice_fields(po_number="PO-8812-7730"))  # unknown PO → NO_MATCH → pending
    run_chain(session, inv, settings, today=TODAY)
    assert _steps(session, inv) == {"validate_invoice": "VALID", "match_po": "NO_MATCH", "run_approval": "PENDING_APPROVAL"}

    resume = review.apply_correction(
        session, inv, "rita", None, {"match_po": "MATCHED"}, "PO number is on the delivery note", settings=settings
    )
    assert resume == Step.APPROVAL
    assert _steps(session, inv) == {"validate_invoice": "VALID", "match_po": "MATCHED"}
    run = session.exec(select(StepRun).where(StepRun.invoice_id == inv.id, StepRun.step == "match_po")).one()
    assert run.mode == "human" and run.reasons[0]["code"] == "PO_MATCHED" and "rita" in run.reasons[0]["message"]
    entry = session.exec(select(AuditEntry).where(AuditEntry.action == "override_decision")).one()
    assert entry.step == "match_po" and entry.before["decision"] == "NO_MATCH"
    assert entry.before["context"]["po_ref"]["given"] == "PO-8812-7730"
    assert entry.after == {"decision": "MATCHED", "reasons": ["PO_MATCHED"]}

    outcomes = run_chain(session, inv, settings, start=resume, today=TODAY)
    assert [o.decision for _, o in outcomes] == ["APPROVED", "SCHEDULED"]


def test_override_to_a_stopping_decision_ends_the_chain(session, settings):
    inv = add_invoice(session, invoice_fields())
    run_chain(session, inv, settings, today=TODAY)
    assert inv.status == InvoiceStatus.PAYMENT_READY
    # Releasing a scheduled payment back to held removes the unexported payment.
    assert review.apply_correction(session, inv, "rita", None, {"trigger_payment": "HELD"}, "vendor called", settings=settings) is None
    assert inv.status == InvoiceStatus.PAYMENT_HELD
    assert session.exec(select(Payment).where(Payment.invoice_id == inv.id)).first() is None
    # And releasing the hold pays it (once).
    assert review.apply_correction(session, inv, "rita", None, {"trigger_payment": "SCHEDULED"}, "verified", settings=settings) is None
    assert inv.status == InvoiceStatus.PAYMENT_READY
    assert len(session.exec(select(Payment).where(Payment.invoice_id == inv.id)).all()) == 1

    other = add_invoice(session, invoice_fields(invoice_id="ACM-2041", po_number=None))
    run_chain(session, other, settings, today=TODAY)
    assert review.apply_correction(
        session, other, "rita", None, {"step": "validate_invoice", "decision": "INVALID", "reasons": ["DUPLICATE_INVOICE"]},
        "paid by card already", settings=settings,
    ) is None
    assert other.status == InvoiceStatus.INVALID and _steps(session, other) == {"validate_invoice": "INVALID"}


def test_bad_corrections_are_refused(session, settings):
    inv = add_invoice(session, invoice_fields(total_amount="400.00"))
    run_chain(session, inv, settings, today=TODAY)
    with pytest.raises(ValueError, match="not both"):
        review.apply_correction(session, inv, "r", {"total_amount": "291.55"}, {"match_po": "MATCHED"}, "x", settings=settings)
    with pytest.raises(ValueError, match="not a match_po decision"):
        review.apply_correction(session, inv, "r", None, {"match_po": "VALID"}, "x", settings=settings)
    big = add_invoice(session, invoice_fields(invoice_id="ACM-2043", po_number="PO-2026-0160"))
    run_chain(session, big, settings, today=TODAY)
    with pytest.raises(ValueError, match="approve it through the approval route"):
        review.apply_correction(session, big, "r", None, {"run_approval": "APPROVED"}, "x", settings=settings)
    with pytest.raises(ValueError, match="Unknown field"):
        review.apply_correction(session, inv, "r", {"amount": "1"}, None, "x", settings=settings)
    with pytest.raises(ValueError):
        review.apply_correction(session, inv, "r", {"total_amount": "12,30"}, None, "x", settings=settings)
    with pytest.raises(ValueError, match="nothing changes"):
        review.apply_correction(session, inv, "r", {"total_amount": "400.00"}, None, "x", settings=settings)


def test_review_queue_holds_disagreements(session, settings):
    guarded = settings.model_copy(update={"match_po_mode": "guarded"})
    inv = add_invoice(session, invoice_fields())
    run_chain(session, inv, guarded, lambda step, ctx: {"decision": "PARTIAL", "reasons": ["PRICE_OVER_TOLERANCE"]}, today=TODAY)
    assert inv.status == InvoiceStatus.NEEDS_REVIEW
    assert [i.id for i in review.review_queue(session)] == [inv.id]
    review.apply_correction(session, inv, "rita", None, {"match_po": "MATCHED"}, "prices as ordered", settings=settings)
    assert review.review_queue(session) == []


def test_corrections_export_as_training_data(session, settings, tmp_path):
    text = "INVOICE ACM-2040\nAcme Industrial Supplies GmbH\nTotal 291.55 EUR"
    misread = add_invoice(session, invoice_fields(total_amount="400.00"), text=text)
    run_chain(session, misread, settings, today=TODAY)
    review.apply_correction(session, misread, "rita", {"total_amount": "291.55"}, None, "total misread", settings=settings)

    disputed = add_invoice(session, invoice_fields(invoice_id="ACM-2042", po_number="PO-8812-7730"))
    run_chain(session, disputed, settings, today=TODAY)
    review.apply_correction(session, disputed, "rita", None, {"match_po": "MATCHED"}, "see delivery note", settings=settings)
    session.commit()

    out = tmp_path / "corrections.jsonl"
    assert export_corrections(session, out) == {"extract": 1, "toolchain": 1}
    records = [json.loads(line) for line in out.read_text().splitlines()]
    extract = next(r for r in records if r["instruction"] == EXTRACT_INSTRUCTION)
    assert extract["input"] == text and extract["output"]["total_amount"] == "291.55"
    tool = next(r for r in records if r["instruction"] == TOOLCHAIN_INSTRUCTIONS["match_po"])
    assert tool["output"] == {"decision": "MATCHED", "reasons": ["PO_MATCHED"]}
    assert json.loads(tool["input"])["po_ref"]["given"] == "PO-8812-7730"
    for rec in records:  # the training job's own validation accepts every record
        ok, problem = check_record(rec)
        assert ok is not None, problem

    only = tmp_path / "toolchain.jsonl"
    assert export_corrections(session, only, adapter="toolchain") == {"extract": 0, "toolchain": 1}


def test_corrections_cli(settings, tmp_path):
    import typer
    from typer.testing import CliRunner

    from cli.corrections import app as corrections_app

    with Session(get_engine(settings), expire_on_commit=False) as s:
        load_master(s)
        inv = add_invoice(s, invoice_fields(po_number="PO-8812-7730"))
        run_chain(s, inv, settings, today=TODAY)
        review.apply_correction(s, inv, "rita", None, {"match_po": Decision.MATCHED}, "ok", settings=settings)
        s.commit()
    out = tmp_path / "c.jsonl"
    app = typer.Typer()
    app.add_typer(corrections_app, name="corrections")  # mounted as `invoicechain corrections`
    result = CliRunner().invoke(app, ["corrections", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "0 extract record(s), 1 toolchain record(s)" in result.output
    assert len(out.read_text().splitlines()) == 1
