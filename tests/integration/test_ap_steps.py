"""run_step: decision modes with a proposer, idempotent payment, and the chain through the pipeline."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session, func, select

from invoicechain.ap.steps import run_chain, run_step
from invoicechain.db.session import get_engine, session_scope
from invoicechain.db.tables import Invoice, Payment, PaymentBatch, StepRun
from invoicechain.decisions import Decision, InvoiceStatus, Reason, Step
from tests.factories import TODAY, add_invoice, invoice_fields, load_master


class Proposer:
    """A stand-in for the toolchain adapter: answers a fixed decision per step and keeps what it saw."""

    def __init__(self, answers: dict[str, object]):
        self.answers = answers
        self.seen: list[tuple[str, dict]] = []

    def __call__(self, step: str, context: dict) -> dict:
        self.seen.append((step, context))
        answer = self.answers[step]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _modes(settings, mode: str):
    return settings.model_copy(
        update={"validate_mode": mode, "match_po_mode": mode, "approval_mode": mode, "payment_mode": mode}
    )


def test_rules_mode_never_calls_the_adapter(session, settings):
    inv = add_invoice(session, invoice_fields())
    proposer = Proposer({})
    out = run_step(Step.VALIDATE, inv, session, settings, proposer, today=TODAY)
    assert out.mode == "rules" and proposer.seen == []
    assert out.decision == Decision.VALID and out.status is None
    assert out.model_output is None and out.agree is None and out.model_ms is None
    assert out.rules_output == {"decision": "VALID", "reasons": []}


def test_guarded_agreement_applies_the_decision(session, settings):
    inv = add_invoice(session, invoice_fields())
    proposer = Proposer({Step.VALIDATE: {"decision": "VALID", "reasons": [], "adapter_version": "toolchain@3"}})
    out = run_step(Step.VALIDATE, inv, session, _modes(settings, "guarded"), proposer, today=TODAY)
    assert out.decision == Decision.VALID and out.status is None and out.agree is True
    assert out.model_output == {"decision": "VALID", "reasons": []}
    assert out.model_ms is not None and out.model_ms >= 0 and out.adapter_version == "toolchain@3"
    # The adapter saw the same context the step reports (vendor facts included).
    step, context = proposer.seen[0]
    assert step == "validate_invoice" and context == out.context
    assert context["vendor"]["id"] == "V001" and context["invoice"]["invoice_id"] == "ACM-2040"


def test_guarded_disagreement_waits_for_review(session, settings):
    inv = add_invoice(session, invoice_fields())
    proposer = Proposer({Step.MATCH_PO: {"decision": "NO_MATCH", "reasons": ["PO_NOT_FOUND"]}})
    run_step(Step.VALIDATE, inv, session, settings, today=TODAY)
    out = run_step(Step.MATCH_PO, inv, session, _modes(settings, "guarded"), proposer, today=TODAY)
    assert out.status == InvoiceStatus.NEEDS_REVIEW and out.agree is False
    assert out.rules_output["decision"] == "MATCHED" and out.model_output["decision"] == "NO_MATCH"
    assert [r["code"] for r in out.reasons][-1] == Reason.MODEL_RULES_DISAGREE
    assert "proposed NO_MATCH" in out.reasons[-1]["message"] and "rules decided MATCHED" in out.reasons[-1]["message"]


def test_model_mode_lets_the_adapter_decide(session, settings):
    inv = add_invoice(session, invoice_fields())
    proposer = Proposer({Step.VALIDATE: {"decision": "INVALID", "reasons": ["ARITHMETIC_MISMATCH", "NOT_A_CODE"]}})
    out = run_step(Step.VALIDATE, inv, session, _modes(settings, "model"), proposer, today=TODAY)
    assert out.decision == Decision.INVALID and out.status == InvoiceStatus.INVALID
    assert out.agree is False and out.rules_output["decision"] == "VALID"
    assert out.model_output == {"decision": "INVALID", "reasons": ["ARITHMETIC_MISMATCH"]}
    assert [r["code"] for r in out.reasons] == ["ARITHMETIC_MISMATCH"]


@pytest.mark.parametrize("answer", [RuntimeError("out of memory"), {"decision": "MAYBE"}, "VALID"])
def test_unusable_adapter_answer_goes_to_review(session, settings, answer):
    inv = add_invoice(session, invoice_fields())
    for mode in ("model", "guarded"):
        out = run_step(Step.VALIDATE, inv, session, _modes(settings, mode), Proposer({Step.VALIDATE: answer}), today=TODAY)
        assert out.status == InvoiceStatus.NEEDS_REVIEW and out.agree is False
        assert "error" in out.model_output
        assert out.reasons[-1]["code"] == Reason.MODEL_RULES_DISAGREE


def test_adapter_modes_need_a_proposer(session, settings):
    inv = add_invoice(session, invoice_fields())
    with pytest.raises(ValueError, match="needs the toolchain adapter"):
        run_step(Step.VALIDATE, inv, session, _modes(settings, "guarded"), None, today=TODAY)


def test_guarded_payment_disagreement_pays_nothing(session, settings):
    inv = add_invoice(session, invoice_fields())
    for step in (Step.VALIDATE, Step.MATCH_PO, Step.APPROVAL):
        run_step(step, inv, session, settings, today=TODAY)
    proposer = Proposer({Step.PAYMENT: {"decision": "HELD", "reasons": ["BANK_ACCOUNT_UNVERIFIED"]}})
    out = run_step(Step.PAYMENT, inv, session, _modes(settings, "guarded"), proposer, today=TODAY)
    assert out.status == InvoiceStatus.NEEDS_REVIEW
    assert session.exec(select(func.count()).select_from(Payment)).one() == 0


def test_chain_in_guarded_mode_with_an_agreeing_adapter(session, settings):
    """An adapter that answers what the rules answer: every step agrees, the invoice is paid."""
    answers = {
        Step.VALIDATE: {"decision": "VALID", "reasons": []},
        Step.MATCH_PO: {"decision": "MATCHED", "reasons": ["PO_MATCHED"]},
        Step.APPROVAL: {"decision": "APPROVED", "reasons": ["AUTO_APPROVED"]},
        Step.PAYMENT: {"decision": "SCHEDULED", "reasons": ["PAYMENT_SCHEDULED"]},
    }
    inv = add_invoice(session, invoice_fields())
    proposer = Proposer(answers)
    outcomes = run_chain(session, inv, _modes(settings, "guarded"), proposer, today=TODAY)
    assert [o.agree for _, o in outcomes] == [True] * 4
    assert inv.status == InvoiceStatus.PAYMENT_READY
    # Later steps see the decisions before them.
    assert proposer.seen[-1][1]["prior"] == {"validate_invoice": "VALID", "match_po": "MATCHED", "run_approval": "APPROVED"}
    runs = session.exec(select(StepRun).where(StepRun.invoice_id == inv.id)).all()
    assert {r.mode for r in runs} == {"guarded"} and all(r.model_output for r in runs)


def test_repeated_payment_step_adds_nothing(session, settings):
    inv = add_invoice(session, invoice_fields())
    run_chain(session, inv, settings, today=TODAY)
    session.commit()
    first = session.exec(select(Payment).where(Payment.invoice_id == inv.id)).one()
    again = run_step(Step.PAYMENT, inv, session, settings, today=TODAY)
    session.commit()
    assert again.decision == Decision.SCHEDULED and again.status == InvoiceStatus.PAYMENT_READY
    assert session.exec(select(func.count()).select_from(Payment)).one() == 1
    assert session.exec(select(Payment)).one().id == first.id


def test_concurrent_payment_steps_make_one_payment(settings):
    """Two workers run trigger_payment for one invoice at the same moment: one Payment, one batch."""
    with session_scope(settings) as s:
        load_master(s)
        inv = add_invoice(s, invoice_fields())
        for step in (Step.VALIDATE, Step.MATCH_PO, Step.APPROVAL):
            run_step(step, inv, s, settings, today=TODAY)
        invoice_id = inv.id

    barrier = threading.Barrier(2)
    results, errors = [], []

    def worker():
        try:
            with Session(get_engine(settings), expire_on_commit=False) as s:
                invoice = s.get(Invoice, invoice_id)
                barrier.wait()
                out = run_step(Step.PAYMENT, invoice, s, settings, today=TODAY)
                s.commit()
                results.append(out)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert [r.decision for r in results] == [Decision.SCHEDULED, Decision.SCHEDULED]
    with session_scope(settings) as s:
        assert s.exec(select(func.count()).select_from(Payment)).one() == 1
        assert s.exec(select(func.count()).select_from(PaymentBatch)).one() == 1


def test_pipeline_runs_the_chain_once(settings):
    """The service's step runner (claim, run_step, record) over the whole chain, then redelivered."""
    from invoicechain import pipeline

    with session_scope(settings) as s:
        load_master(s)
        invoice_id = add_invoice(s, invoice_fields()).id
    for step in (Step.VALIDATE, Step.MATCH_PO, Step.APPROVAL, Step.PAYMENT):
        result = pipeline.run_toolchain_step(invoice_id, step, settings)
        assert result.decision in (Decision.VALID, Decision.MATCHED, Decision.APPROVED, Decision.SCHEDULED)
    replay = pipeline.run_toolchain_step(invoice_id, Step.PAYMENT, settings)
    assert replay.replayed and replay.decision == Decision.SCHEDULED
    with session_scope(settings) as s:
        assert s.get(Invoice, invoice_id).status == InvoiceStatus.PAYMENT_READY
        assert s.exec(select(func.count()).select_from(Payment)).one() == 1
        runs = s.exec(select(StepRun).where(StepRun.invoice_id == invoice_id)).all()
        assert {r.step: r.decision for r in runs} == {
            "validate_invoice": "VALID", "match_po": "MATCHED", "run_approval": "APPROVED", "trigger_payment": "SCHEDULED",
        }
        assert all(r.rules_output and r.mode == "rules" for r in runs)


def test_a_pipeline_step_reads_the_step_rows_and_the_vendor_once(settings):
    """One query for the invoice's step rows (its own row and the earlier decisions the rules
    read), one for the vendor record, and no second look for a payment before the lock."""
    from sqlalchemy import event

    from invoicechain import pipeline

    with session_scope(settings) as s:
        load_master(s)
        invoice_id = add_invoice(s, invoice_fields()).id
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(" ".join(statement.split()))

    engine = get_engine(settings)
    event.listen(engine, "before_cursor_execute", record)
    try:
        for step in (Step.VALIDATE, Step.MATCH_PO, Step.APPROVAL, Step.PAYMENT):
            statements.clear()
            assert pipeline.run_toolchain_step(invoice_id, step, settings).proceed is (step != Step.PAYMENT)
            reads = [q for q in statements if q.startswith("SELECT")]
            assert sum(q.startswith("SELECT steprun.") for q in reads) == 1, (step, reads)
            assert sum(q.startswith("SELECT vendor.id, vendor.name, vendor.aliases, vendor.address") for q in reads) <= 1, (step, reads)
        # trigger_payment: the step's own check, then once more under the currency lock.
        assert sum(q.startswith("SELECT payment.") for q in statements) == 2
    finally:
        event.remove(engine, "before_cursor_execute", record)
    with session_scope(settings) as s:
        assert s.get(Invoice, invoice_id).status == InvoiceStatus.PAYMENT_READY


def test_concurrent_deliveries_of_a_pipeline_step_write_one_row(settings):
    """A step redelivered while its first delivery still runs: both finish, one row, one payment."""
    from invoicechain import pipeline

    with session_scope(settings) as s:
        load_master(s)
        invoice_id = add_invoice(s, invoice_fields()).id
    for step in (Step.VALIDATE, Step.MATCH_PO, Step.APPROVAL):
        pipeline.run_toolchain_step(invoice_id, step, settings)

    barrier = threading.Barrier(2)
    results, errors = [], []

    def deliver():
        try:
            barrier.wait()
            results.append(pipeline.run_toolchain_step(invoice_id, Step.PAYMENT, settings))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert [r.decision for r in results] == [Decision.SCHEDULED, Decision.SCHEDULED]
    with session_scope(settings) as s:
        runs = s.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == Step.PAYMENT)).all()
        assert len(runs) == 1 and runs[0].status == "done"
        assert s.exec(select(func.count()).select_from(Payment)).one() == 1
        assert s.get(Invoice, invoice_id).status == InvoiceStatus.PAYMENT_READY
