"""The approval policy: packaged file, a settings override file, master-data values, and each rule."""

from __future__ import annotations

from invoicechain.ap.approval import load_policy, run_approval, store_master_policy
from invoicechain.ap.steps import run_chain
from invoicechain.decisions import Decision, Reason, Step
from tests.factories import TODAY, add_invoice, invoice_fields


def _approval(session, settings, fields):
    inv = add_invoice(session, fields)
    outcomes = dict(run_chain(session, inv, settings, today=TODAY))
    return outcomes.get(Step.APPROVAL)


def test_layers_of_the_policy(session, settings, tmp_path):
    policy = load_policy(session, settings)
    assert str(policy.auto_approve_limit) == "5000.00" and str(policy.fx_to_eur["JPY"]) == "0.0061"
    assert str(policy.fx_to_eur["GBP"]) == "1.15"  # from the master data, over the packaged 1.17
    override = tmp_path / "policy.yaml"
    override.write_text('auto_approve_limit: "100.00"\ndepartment_limits: {Finance: "50.00"}\n')
    policy = load_policy(session, settings.model_copy(update={"approval_policy": override}))
    # The master data's auto_approve_limit_eur still wins over the file.
    assert str(policy.auto_approve_limit) == "5000.00" and str(policy.department_limits["Finance"]) == "50.00"
    store_master_policy(session, {"approval_policy": {"auto_approve_limit_eur": "250.00"}})
    assert str(load_policy(session, settings).auto_approve_limit) == "250.00"


def test_master_data_limit_applies(session, settings):
    store_master_policy(session, {"approval_policy": {"auto_approve_limit_eur": "250.00"}})
    out = _approval(session, settings, invoice_fields())  # 291.55 EUR
    assert out.decision == Decision.PENDING_APPROVAL
    assert [r["code"] for r in out.reasons] == [Reason.AMOUNT_ABOVE_THRESHOLD]
    assert "291.55 EUR is above the auto-approve limit of 250.00 EUR" in out.reasons[0]["message"]


def test_foreign_currency_is_converted(session, settings):
    fields = invoice_fields(vendor="Blue Harbor Consulting LLC", po_number="PO-2026-0410", currency="USD",
                            iban=None, bic=None, invoice_id="BH-1")
    out = _approval(session, settings, fields)  # 3570.00 USD = 3213.00 EUR at 0.90
    assert out.decision == Decision.APPROVED
    assert out.context["amount_eur"] == "3213.00" and out.context["fx_rate"] == "0.90"


def test_vendor_risk_department_and_hard_limits(session, settings, tmp_path):
    high_risk = invoice_fields(vendor="Sunrise Office Products Ltd", po_number=None, currency="GBP",
                               iban="GB29NWBK60161331926819", bic="NWBKGB2L", invoice_id="S-1",
                               lines=[{"description": "Desk organiser bamboo", "quantity": "100", "unit_price": "9.00", "amount": "900.00"}])
    out = _approval(session, settings, high_risk)  # 1071.00 GBP = 1231.65 EUR, high risk limit 1000
    assert out.decision == Decision.PENDING_APPROVAL and [r["code"] for r in out.reasons] == [Reason.VENDOR_HIGH_RISK]

    policy = tmp_path / "policy.yaml"
    policy.write_text('department_limits: {Operations: "200.00"}\nreject_above: "30000.00"\nno_po: person\n')
    strict = settings.model_copy(update={"approval_policy": policy})
    out = _approval(session, strict, invoice_fields(invoice_id="D-1"))  # PO department Operations, 291.55 EUR
    assert out.decision == Decision.PENDING_APPROVAL and [r["code"] for r in out.reasons] == [Reason.DEPARTMENT_LIMIT]
    out = _approval(session, strict, invoice_fields(invoice_id="D-2", po_number="PO-2026-0170"))  # 34391.00 EUR
    assert out.decision == Decision.REJECTED and "above the 30000.00 EUR" in out.reasons[0]["message"]
    out = _approval(session, strict, invoice_fields(invoice_id="D-3", po_number=None))
    assert out.decision == Decision.PENDING_APPROVAL and [r["code"] for r in out.reasons] == [Reason.PO_EXCEPTION]


def test_currency_without_rate_needs_a_person(session, settings):
    inv = add_invoice(session, invoice_fields(currency="ISK", po_number=None))
    result = run_approval(session, inv, settings, today=TODAY)
    assert result.decision == Decision.PENDING_APPROVAL
    assert "no EUR rate for ISK" in result.reasons[0]["message"]
