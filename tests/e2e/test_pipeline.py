"""The whole system for real: a uvicorn API, Celery worker processes on Redis, Postgres,
the default base model with its shipped adapters, and real PDFs from samples/."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import Session, select

from invoicechain.db.tables import ApprovalAction, AuditEntry, Invoice, Payment
from tests.e2e.stack import api, sample, step_rows, submit_pdf, wait_for, wait_for_change

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_pdf_runs_the_whole_chain_and_every_step_is_in_postgres(stack):
    base, engine = stack["url"], stack["engine"]
    pdf = sample("payment_ready", has_po=True)
    r = submit_pdf(base, pdf)
    assert r.status_code == 202, r.text
    invoice_id = r.json()["id"]
    body = wait_for(base, invoice_id)
    rows = step_rows(engine, invoice_id)
    order = ["ingest", "extract", "validate_invoice", "match_po", "run_approval", "trigger_payment"]
    # The chain ran in order and stopped only where a decision stops it.
    reached = [s for s in order if s in rows]
    assert reached == order[: len(reached)] and len(reached) >= 3, (body, (stack["logs"] / "toolchain.log").read_text()[-3000:])
    assert all(r.status == "done" for r in rows.values())
    assert rows["extract"].model_ms and rows["extract"].adapter_version
    # The extract step's time is the batched model call it took part in plus its own bookkeeping.
    assert 0 < rows["extract"].duration_ms - rows["extract"].model_ms < rows["extract"].model_ms
    truth = json.loads(pdf.with_suffix(".json").read_text())
    wrong = {k: v for k, v in truth["fields"].items() if body["fields"].get(k) != v}
    if body["status"] != "payment_ready":
        # The model got something wrong: a reviewer corrects it through the API and the
        # chain resumes from validation (the correction is audited).
        assert wrong, body
        fix = api.patch(f"{base}/v1/invoices/{invoice_id}", timeout=30, headers=api.as_("e2e-reviewer"),
                          json={"actor": "e2e-reviewer", "reason": "fix extraction", "fields": wrong})
        assert fix.status_code == 200, fix.text
        body = wait_for_change(base, invoice_id, fix.json()["updated_at"])
    assert body["status"] == "payment_ready", body
    rows = step_rows(engine, invoice_id)
    assert set(rows) == set(order)
    assert all(r.status == "done" for r in rows.values())
    with Session(engine) as s:
        assert len(s.exec(select(Payment).where(Payment.invoice_id == invoice_id)).all()) == 1

    # The same document again is the same invoice; nothing runs twice.
    again = submit_pdf(base, pdf, name="copy-of-" + pdf.name)
    assert again.status_code == 200 and again.json()["id"] == invoice_id

    # A redelivered chain (at-least-once delivery) writes no second row and pays nothing twice.
    from workers.celery_app import reconfigure
    from invoicechain import config

    reconfigure(config.Settings(database_url=stack["env"]["DATABASE_URL"], redis_url=stack["env"]["REDIS_URL"]))
    from workers.chain import enqueue_invoice

    enqueue_invoice(invoice_id)
    time.sleep(8)
    after = step_rows(engine, invoice_id)
    assert {k: (v.id, v.attempt, v.decision) for k, v in after.items()} == {k: (v.id, v.attempt, v.decision) for k, v in rows.items()}
    with Session(engine) as s:
        assert len(s.exec(select(Payment).where(Payment.invoice_id == invoice_id)).all()) == 1
        assert s.get(Invoice, invoice_id).status == "payment_ready"


def test_corrupt_and_scanned_pdfs_end_with_a_reason(stack, tmp_path):
    base = stack["url"]
    good = sample().read_bytes()
    corrupt = good[: len(good) // 3]  # truncated: header present, body gone
    r = api.post(f"{base}/v1/invoices", files={"file": ("broken.pdf", corrupt, "application/pdf")}, timeout=30)
    assert r.status_code == 202
    body = wait_for(base, r.json()["id"], timeout=60)
    assert body["status"] == "failed" and body["error"]

    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas
    from PIL import Image

    img = Image.new("RGB", (400, 200), "white")
    scan = tmp_path / "scan.pdf"
    c = canvas.Canvas(str(scan))
    c.drawImage(ImageReader(img), 72, 500, 400, 200)
    c.showPage()
    c.save()
    r = submit_pdf(base, scan)
    body = wait_for(base, r.json()["id"], timeout=60)
    assert body["status"] == "needs_ocr"
    assert "OCR" in body["error"]
    ingest = next(s for s in body["steps"] if s["step"] == "ingest")
    assert ingest["decision"] == "NEEDS_OCR"


def waiting_invoices(out: Path, seed: int = 2, n: int = 20) -> tuple[Path, Path]:
    """Two synthetic invoices that stop at run_approval, written to `out` with their master data.

    The first is over the auto-approve limit (fault `approval_above_threshold`); the second
    is the next shortest of those and the invoices with an unknown PO (a PO exception), which
    the policy also sends to a person. Short documents first: extraction runs on the CPU.
    """
    from training.synth.corpus import render_document, write_document
    from training.synth.plan import plan_corpus

    plan = plan_corpus(n, seed, fault_rate=1.0)
    candidates = []
    for doc in plan.documents:
        if doc.layout == "multipage" or not doc.faults:
            continue
        if doc.faults[0] not in ("approval_above_threshold", "unknown_po"):
            continue
        _, text, _ = render_document(doc)
        candidates.append((len(doc.lines), len(text), doc))
    candidates.sort(key=lambda c: c[:2])
    above = next(doc for _, _, doc in candidates if doc.faults == ["approval_above_threshold"])
    other = next(doc for _, _, doc in candidates if doc is not above)
    out.mkdir(parents=True, exist_ok=True)
    for doc in (above, other):
        write_document(out, doc)
    (out / "master_data.json").write_text(json.dumps(plan.master_data, ensure_ascii=False), encoding="utf-8")
    return out / f"{above.name}.pdf", out / f"{other.name}.pdf"


def settle_on_truth(base: str, invoice_id: str, truth: dict) -> dict:
    """The invoice once the chain stops, with the true fields: a reviewer corrects what the model misread."""
    body = wait_for(base, invoice_id)
    wrong = {k: v for k, v in truth.items() if (body["fields"] or {}).get(k) != v}
    if wrong:
        fix = api.patch(f"{base}/v1/invoices/{invoice_id}", timeout=30, headers=api.as_("e2e-reviewer"),
                          json={"actor": "e2e-reviewer", "reason": "fix extraction", "fields": wrong})
        assert fix.status_code == 200, (body["status"], fix.text)
        body = wait_for_change(base, invoice_id, fix.json()["updated_at"])
    assert body["fields"] == {**body["fields"], **truth}, body
    return body


def test_approval_through_the_api_resumes_the_chain_and_rejection_ends_it(stack, tmp_path):
    from invoicechain import config
    from invoicechain.ap.approval import load_policy
    from invoicechain.master_data import load_master_data, read_master_data

    base, engine = stack["url"], stack["engine"]
    above_pdf, other_pdf = waiting_invoices(tmp_path / "corpus")
    with Session(engine) as s:  # the corpus's vendors replace the samples' of the same ids
        load_master_data(s, read_master_data(tmp_path / "corpus"))
        s.commit()
    truth = {p: json.loads(p.with_suffix(".json").read_text()) for p in (above_pdf, other_pdf)}
    assert truth[above_pdf]["expected"]["run_approval"] == "PENDING_APPROVAL"
    assert truth[other_pdf]["expected"]["run_approval"] == "PENDING_APPROVAL"

    ids = {}
    for pdf in (above_pdf, other_pdf):  # both at once: one extraction batch
        r = submit_pdf(base, pdf)
        assert r.status_code == 202, r.text
        ids[pdf] = r.json()["id"]
    approve_id, reject_id = ids[above_pdf], ids[other_pdf]

    def audit(invoice_id: str) -> list[AuditEntry]:
        with Session(engine) as s:
            return list(s.exec(select(AuditEntry).where(AuditEntry.invoice_id == invoice_id).order_by(AuditEntry.id)).all())

    def actions(invoice_id: str) -> list[ApprovalAction]:
        with Session(engine) as s:
            return list(s.exec(select(ApprovalAction).where(ApprovalAction.invoice_id == invoice_id)).all())

    def payments(invoice_id: str) -> list[Payment]:
        with Session(engine) as s:
            return list(s.exec(select(Payment).where(Payment.invoice_id == invoice_id)).all())

    # Both invoices stop at run_approval and wait for a person: nothing is paid yet.
    for pdf, invoice_id in ids.items():
        body = settle_on_truth(base, invoice_id, truth[pdf]["fields"])
        assert body["status"] == "pending_approval", body
        assert body["current_step"] == "run_approval"
        rows = step_rows(engine, invoice_id)
        assert {k: v.decision for k, v in rows.items() if k in ("validate_invoice", "match_po", "run_approval")} == {
            k: truth[pdf]["expected"][k] for k in ("validate_invoice", "match_po", "run_approval")
        }
        assert "trigger_payment" not in rows
        assert payments(invoice_id) == []
    approval_row = step_rows(engine, approve_id)["run_approval"]
    assert "AMOUNT_ABOVE_THRESHOLD" in [r["code"] for r in approval_row.reasons]

    # Rejecting the second one ends its chain with the reason.
    r = api.post(f"{base}/v1/invoices/{reject_id}/reject", timeout=30, headers=api.as_("e2e-controller"),
                   json={"approver": "e2e-controller", "reason": "not ordered by us"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "rejected"
    [shown] = r.json()["approvals"]  # the API shows who rejected it and why
    assert (shown["approver"], shown["decision"], shown["reason"]) == ("e2e-controller", "REJECTED", "not ordered by us")
    [action] = actions(reject_id)
    assert (action.approver, action.decision, action.reason) == ("e2e-controller", "REJECTED", "not ordered by us")
    rejected = [e for e in audit(reject_id) if e.action == "reject"]
    assert len(rejected) == 1 and rejected[0].reason == "not ordered by us"
    assert rejected[0].before == {"status": "pending_approval"} and rejected[0].after == {"status": "rejected"}

    # A role the policy does not allow is refused and changes nothing.
    fields = truth[above_pdf]["fields"]
    policy = load_policy(None, config.Settings(database_url=stack["env"]["DATABASE_URL"]))
    amount_eur, _ = policy.to_eur(Decimal(fields["total_amount"]), fields["currency"])
    tier = policy.tier_for(amount_eur)
    assert amount_eur > policy.auto_approve_limit and tier is not None
    r = api.post(f"{base}/v1/invoices/{approve_id}/approve", timeout=30, headers=api.as_("e2e-intern"), json={"approver": "e2e-intern", "role": "intern"})
    assert r.status_code == 403, r.text
    assert "intern" in r.json()["detail"]
    assert actions(approve_id) == [] and api.get(f"{base}/v1/invoices/{approve_id}").json()["status"] == "pending_approval"

    # The approvers the policy asks for (distinct people) resume the chain at trigger_payment.
    approvers = [("e2e-manager", "ap_manager"), ("e2e-cfo", "cfo")][: tier.approvers]
    assert len(approvers) == tier.approvers
    for i, (who, role) in enumerate(approvers, start=1):
        r = api.post(f"{base}/v1/invoices/{approve_id}/approve", timeout=30, headers=api.as_(who),
                       json={"approver": who, "role": role, "reason": "goods received"})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["id"] == approve_id
        if i < len(approvers):
            assert out["status"] == "pending_approval", out
        else:
            assert out["status"] in ("processing", "payment_ready"), out
    body = wait_for(base, approve_id)
    assert body["status"] == "payment_ready", (body, (stack["logs"] / "toolchain.log").read_text()[-3000:])
    rows = step_rows(engine, approve_id)
    assert rows["trigger_payment"].status == "done" and rows["trigger_payment"].decision == "SCHEDULED"
    assert rows["run_approval"].decision == "PENDING_APPROVAL"  # the rules' verdict; the approvals are their own record
    [payment] = payments(approve_id)
    assert payment.currency == fields["currency"]
    assert Decimal(payment.amount) + Decimal(payment.discount) == Decimal(fields["total_amount"])
    assert sorted((a.approver, a.role, a.decision) for a in actions(approve_id)) == sorted(
        (who, role, "APPROVED") for who, role in approvers
    )
    approvals = [e for e in audit(approve_id) if e.action == "approve"]
    assert [e.actor for e in approvals] == [who for who, _ in approvers]
    assert approvals[-1].step == "run_approval" and approvals[-1].reason == "goods received"
    assert approvals[-1].after["approvers"] == sorted(who for who, _ in approvers)
    assert approvals[-1].after["required"] == tier.approvers

    # Approving or rejecting an invoice that is not waiting for a person is a conflict, not an error.
    r = api.post(f"{base}/v1/invoices/{approve_id}/approve", timeout=30, headers=api.as_("e2e-manager"), json={"approver": "e2e-manager", "role": "ap_manager"})
    assert r.status_code == 200 and r.json()["status"] == "payment_ready", r.text  # the same approval again: no-op
    r = api.post(f"{base}/v1/invoices/{approve_id}/approve", timeout=30, headers=api.as_("e2e-controller"), json={})
    assert r.status_code == 409 and "payment_ready" in r.json()["detail"], r.text
    r = api.post(f"{base}/v1/invoices/{reject_id}/approve", timeout=30, headers=api.as_("e2e-manager"), json={"approver": "e2e-manager", "role": "ap_manager"})
    assert r.status_code == 409 and "rejected" in r.json()["detail"], r.text
    r = api.post(f"{base}/v1/invoices/{reject_id}/reject", timeout=30, headers=api.as_("e2e-manager"), json={"approver": "e2e-manager", "reason": "again"})
    assert r.status_code == 409, r.text
    r = api.post(f"{base}/v1/invoices/no-such-invoice/approve", timeout=30, headers=api.as_("e2e-manager"),
                   json={"approver": "e2e-manager", "role": "ap_manager"})
    assert r.status_code == 404, r.text
    assert len(payments(approve_id)) == 1 and len(actions(approve_id)) == len(approvers)

    # The rejected invoice stayed rejected while the other was paid: nothing resumed it.
    body = api.get(f"{base}/v1/invoices/{reject_id}", timeout=10).json()
    assert body["status"] == "rejected"
    assert "trigger_payment" not in step_rows(engine, reject_id) and payments(reject_id) == []
    assert len(actions(reject_id)) == 1
