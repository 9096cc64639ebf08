"""An unknown vendor is a question, master data added later re-runs the waiting invoices,
and doubtful fields send an invoice to a person: against the real Postgres and Redis.

The chain's steps run in-process through `invoicechain.pipeline.run_toolchain_step`, the
function each Celery task calls; the reruns are enqueued on the real Redis broker."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis
from fastapi.testclient import TestClient
from sqlmodel import func, select
from typer.testing import CliRunner

from invoicechain.db.session import session_scope
from invoicechain.db.tables import AuditEntry, Invoice, Payment, StepRun, Vendor
from invoicechain.pipeline import next_step, run_toolchain_step
from tests.factories import OTHER_IBAN, TODAY, add_invoice, invoice_fields

NEW_VENDOR = "Quillfeather Paper Company Ltd"


@pytest.fixture
def app(settings, redis_url, monkeypatch):
    from invoicechain import config
    from workers.celery_app import reconfigure

    monkeypatch.setenv("REDIS_URL", redis_url)
    config.get_settings.cache_clear()
    reconfigure(config.get_settings())
    from api.main import create_app

    yield create_app()
    config.get_settings.cache_clear()


def key_for(settings, owner: str, scopes=("review", "read")) -> dict[str, str]:
    from invoicechain.auth import create_key

    with session_scope(settings) as session:
        return {"Authorization": f"Bearer {create_key(session, owner, list(scopes))[1]}"}


def run_from(settings, invoice_id: str, step: str = "validate_invoice") -> str:
    """Run the chain from `step` the way the workers do, until it stops; the final status."""
    while step:
        result = run_toolchain_step(invoice_id, step, settings)
        if not result.proceed:
            break
        step = next_step(step)
    with session_scope(settings) as session:
        return session.get(Invoice, invoice_id).status


def queued_for(redis_url: str, invoice_id: str) -> list[str]:
    """Task names waiting on the broker's toolchain queue for this invoice, oldest first."""
    out = []
    for raw in reversed(redis.Redis.from_url(redis_url).lrange("toolchain", 0, -1)):  # kombu pushes on the left
        message = json.loads(raw)
        if invoice_id in message["headers"].get("argsrepr", ""):
            out.append(message["headers"]["task"])
    return out


def new_invoice(settings, session, **overrides) -> str:
    fields = invoice_fields(vendor=NEW_VENDOR, po_number=None, iban=OTHER_IBAN, bic=None, invoice_id="QF-7781", **overrides)
    inv = add_invoice(session, fields)
    session.commit()
    return inv.id


def step_rows(settings, invoice_id: str) -> dict[str, int]:
    with session_scope(settings) as s:
        rows = s.exec(select(StepRun.step, func.count()).where(StepRun.invoice_id == invoice_id).group_by(StepRun.step)).all()
    return dict(rows)


def test_unknown_vendor_goes_to_review_then_create_vendor_and_a_second_person_release_the_payment(app, settings, session, redis_url):
    client = TestClient(app)
    invoice_id = new_invoice(settings, session)
    assert run_from(settings, invoice_id) == "needs_review"
    with session_scope(settings) as s:
        run = s.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == "validate_invoice")).one()
        assert [r["code"] for r in run.reasons] == ["UNKNOWN_VENDOR"]

    alice, bob = key_for(settings, "alice"), key_for(settings, "bob")
    proposal = client.get(f"/v1/invoices/{invoice_id}/vendor-proposal", headers=alice).json()
    assert proposal["vendor"]["name"] == NEW_VENDOR and proposal["vendor"]["iban"] == OTHER_IBAN
    assert proposal["known_vendor_id"] is None

    r = client.post(f"/v1/invoices/{invoice_id}/create-vendor", json={"country": "GB"}, headers=alice)
    assert r.status_code == 201, r.text
    vendor = r.json()["vendor"]
    assert (vendor["status"], vendor["proposed_by"], vendor["iban"]) == ("pending_bank_confirmation", "alice", OTHER_IBAN)
    assert [x["queued"] for x in r.json()["reruns"]] == [True]
    assert queued_for(redis_url, invoice_id) == ["invoicechain.validate_invoice"]
    # A second "create vendor" for the same invoice finds the vendor now known.
    assert client.post(f"/v1/invoices/{invoice_id}/create-vendor", headers=alice).status_code == 409

    assert run_from(settings, invoice_id) == "payment_held"
    with session_scope(settings) as s:
        pay = s.exec(select(StepRun).where(StepRun.invoice_id == invoice_id, StepRun.step == "trigger_payment")).one()
        assert pay.decision == "HELD" and pay.reasons[0]["code"] == "BANK_ACCOUNT_UNVERIFIED"
        assert s.exec(select(func.count()).select_from(Payment)).one() == 0

    same = client.post(f"/v1/vendors/{vendor['id']}/confirm-bank", headers=alice)
    assert same.status_code == 403 and "second person" in same.json()["detail"]
    r = client.post(f"/v1/vendors/{vendor['id']}/confirm-bank", headers=bob)
    assert r.status_code == 200, r.text
    assert r.json()["vendor"]["status"] == "active" and r.json()["vendor"]["bank_confirmed_by"] == "bob"
    assert [(x["invoice_id"], x["from_step"]) for x in r.json()["reruns"]] == [(invoice_id, "trigger_payment")]
    assert queued_for(redis_url, invoice_id)[-1] == "invoicechain.trigger_payment"

    assert run_from(settings, invoice_id, "trigger_payment") == "payment_ready"
    # Redelivered steps and a repeated rerun add nothing: one payment, one row per step.
    run_from(settings, invoice_id, "trigger_payment")
    again = client.post("/v1/reruns", json={"status": ["payment_held"], "reasons": ["BANK_ACCOUNT_UNVERIFIED"]}, headers=bob)
    assert again.status_code == 200 and again.json()["reruns"] == []
    assert client.post(f"/v1/vendors/{vendor['id']}/confirm-bank", headers=bob).status_code == 409
    with session_scope(settings) as s:
        assert s.exec(select(func.count()).select_from(Payment).where(Payment.invoice_id == invoice_id)).one() == 1
        actions = [a.action for a in s.exec(select(AuditEntry).where(AuditEntry.invoice_id == invoice_id).order_by(AuditEntry.id))]
    assert actions == ["create_vendor", "rerun", "confirm_vendor_bank", "rerun"]
    assert set(step_rows(settings, invoice_id).values()) == {1}


def test_vendor_import_reruns_waiting_invoices_automatically(app, settings, session, redis_url, auth_headers):
    client = TestClient(app)
    invoice_id = new_invoice(settings, session)
    assert run_from(settings, invoice_id) == "needs_review"
    csv = f"vendor_id,name,country,currency,iban\nV900,{NEW_VENDOR},GB,EUR,{OTHER_IBAN}\n".encode()
    r = client.post("/v1/master-data/vendors", content=csv, headers={**auth_headers, "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert [(x["invoice_id"], x["from_step"], x["reasons"]) for x in r.json()["reruns"]] == [(invoice_id, "validate_invoice", ["UNKNOWN_VENDOR"])]
    assert queued_for(redis_url, invoice_id) == ["invoicechain.validate_invoice"]
    assert run_from(settings, invoice_id) == "payment_ready"
    assert set(step_rows(settings, invoice_id).values()) == {1}


def test_cli_rerun_of_invalid_unknown_vendor_invoices_claims_each_once(app, settings, session, redis_url, monkeypatch):
    strict = settings.model_copy(update={"unknown_vendor_review": False})
    invoice_id = new_invoice(settings, session)
    assert run_from(strict, invoice_id) == "invalid"
    from cli.main import app as cli_app

    runner = CliRunner()
    nothing = runner.invoke(cli_app, ["rerun", "--status", "invalid", "--reason", "UNKNOWN_VENDOR"])
    assert nothing.exit_code == 0 and f"rerun\t{invoice_id}" in nothing.output  # re-run: still unknown
    assert run_from(strict, invoice_id) == "invalid"

    with session_scope(settings) as s:
        s.add(Vendor(id="V901", name=NEW_VENDOR, iban=OTHER_IBAN, currency="EUR"))
    first = runner.invoke(cli_app, ["rerun", "--status", "invalid", "--reason", "UNKNOWN_VENDOR"])
    assert first.exit_code == 0, first.output
    assert f"rerun\t{invoice_id}\tfrom validate_invoice\t(was invalid: UNKNOWN_VENDOR)" in first.output
    second = runner.invoke(cli_app, ["rerun", "--status", "invalid", "--reason", "UNKNOWN_VENDOR"])
    assert second.exit_code == 0 and "no waiting invoice matches" in second.output
    assert run_from(strict, invoice_id) == "payment_ready"

    bad = runner.invoke(cli_app, ["rerun", "--status", "payment_ready"])
    assert bad.exit_code == 2 and "cannot be re-run" in bad.output


CONFIDENT = {"invoice_id": 0.99, "vendor_name": 0.98, "invoice_date": 0.97, "total_amount": 0.99, "currency": 0.99}


def test_low_confidence_or_ungrounded_required_fields_route_to_review_and_a_correction_releases(settings, session):
    from invoicechain.ap.review import apply_correction

    fields = invoice_fields(invoice_id="ACM-3001", issued=TODAY - timedelta(days=3))
    unsure = add_invoice(session, fields)
    unsure.confidence = {**CONFIDENT, "total_amount": 0.21, "invoice_date": 0.3}
    ungrounded = add_invoice(session, invoice_fields(invoice_id="ACM-3002", issued=TODAY - timedelta(days=4)))
    ungrounded.confidence = dict(CONFIDENT)
    ungrounded.grounding = {"invoice_id": {"grounded": False}, "total_amount": {"grounded": True}}
    sure = add_invoice(session, invoice_fields(invoice_id="ACM-3003", issued=TODAY - timedelta(days=6)))
    sure.confidence = dict(CONFIDENT)
    session.commit()

    assert run_from(settings, sure.id) == "payment_ready"
    assert run_from(settings, unsure.id) == "needs_review"
    assert run_from(settings, ungrounded.id) == "needs_review"
    with session_scope(settings) as s:
        reasons = s.exec(select(StepRun.reasons).where(StepRun.invoice_id == unsure.id, StepRun.step == "validate_invoice")).one()
        (low,) = [r for r in reasons if r["code"] == "LOW_CONFIDENCE"]
        assert low["fields"] == ["invoice_date", "total_amount"] and "total_amount (0.21 < 0.50)" in low["message"]
        reasons = s.exec(select(StepRun.reasons).where(StepRun.invoice_id == ungrounded.id, StepRun.step == "validate_invoice")).one()
        assert [(r["code"], r.get("fields")) for r in reasons if r["code"] == "UNGROUNDED_FIELD"] == [("UNGROUNDED_FIELD", ["invoice_id"])]

    with session_scope(settings) as s:
        inv = s.get(Invoice, unsure.id)
        resume = apply_correction(s, inv, "carol", {"total_amount": fields["total_amount"], "invoice_date": (TODAY - timedelta(days=2)).isoformat()}, None, "checked")
    assert resume == "validate_invoice"
    assert run_from(settings, unsure.id) == "payment_ready"


def extracted_with(session, invoice_id: str, reconciled: list[dict]) -> str:
    """A confident extraction of the invoice `invoice_id` whose reconciliation made `reconciled`
    (a list of a change dict per field, as the extract step records it); the invoice's id."""
    inv = add_invoice(session, invoice_fields(invoice_id=invoice_id))
    inv.confidence = dict(CONFIDENT)
    session.add(StepRun(invoice_id=inv.id, step="extract", status="done", decision="OK",
                        model_output={"fields": inv.fields, "reconciled": reconciled}))
    session.commit()
    return inv.id


def rules_changed(settings, invoice_id: str) -> list[list[str]]:
    with session_scope(settings) as s:
        reasons = s.exec(select(StepRun.reasons).where(StepRun.invoice_id == invoice_id, StepRun.step == "validate_invoice")).one()
    return [r.get("fields") for r in reasons if r["code"] == "RULES_CHANGED_FIELD"]


TOTAL = invoice_fields()["total_amount"]


def test_rules_changing_a_required_field_routes_to_review(settings, session):
    inv = extracted_with(session, "ACM-3004", [{"field": "total_amount", "before": "1.00", "after": TOTAL, "reason": "labelled total"}])
    assert run_from(settings, inv) == "needs_review"
    assert rules_changed(settings, inv) == [["total_amount"]]


def test_a_required_field_the_rules_filled_where_the_model_read_nothing_is_not_a_disagreement(settings, session):
    filled = [{"field": "invoice_id", "before": None, "after": "ACM-3005", "reason": "null; the number after its label"},
              # removed and then filled again: the model's value was overruled
              {"field": "total_amount", "before": "9.99", "after": None, "reason": "printed only as customer"},
              {"field": "total_amount", "before": None, "after": TOTAL, "reason": "labelled total"}]
    inv = extracted_with(session, "ACM-3005", filled)
    assert run_from(settings, inv) == "needs_review"
    assert rules_changed(settings, inv) == [["total_amount"]]


def test_a_required_field_only_filled_by_the_rules_goes_on_to_payment(settings, session):
    inv = extracted_with(session, "ACM-3006",
                         [{"field": "invoice_id", "before": None, "after": "ACM-3006", "reason": "null; the number after its label"}])
    assert run_from(settings, inv) == "payment_ready"
