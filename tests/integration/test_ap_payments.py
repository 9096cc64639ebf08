"""Payment dates from terms, payment batches, and their export as pain.001 XML and CSV."""

from __future__ import annotations

import csv
import os
import xml.etree.ElementTree as ET
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import Session, select

from invoicechain.ap.export import ExportError, export_payments
from invoicechain.ap.payment import parse_terms, payment_schedule
from invoicechain.ap.steps import run_chain
from invoicechain.db.session import get_engine
from invoicechain.db.tables import Payment, PaymentBatch
from tests.factories import TODAY, add_invoice, invoice_fields, load_master

PAYER = {"payer_name": "Buyer Corp", "payer_iban": "DE02100100100006820101", "payer_bic": "PBNKDEFFXXX"}
NS = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"}


@pytest.mark.parametrize(
    "text, net, pct, days, eom, receipt",
    [
        ("Net 30", 30, None, None, False, False),
        ("2/10 Net 30", 30, "2", 10, False, False),
        ("10 Tage 2 % Skonto, 30 Tage netto", 30, "2", 10, False, False),
        ("2 % à 10 jours, net à 30 jours", 30, "2", 10, False, False),
        ("2% binnen 10 dagen, netto 30 dagen", 30, "2", 10, False, False),
        ("Due on receipt", 0, None, None, False, True),
        ("Zahlbar nach Erhalt", 0, None, None, False, True),
        ("End of month", None, None, None, True, False),
        ("Net 30 EOM", 30, None, None, True, False),
        ("Pagamento a 30 giorni", 30, None, None, False, False),
    ],
)
def test_terms_are_read_in_several_languages(text, net, pct, days, eom, receipt):
    t = parse_terms(text)
    assert (t.net_days, t.discount_pct, t.discount_days, t.end_of_month, t.on_receipt) == (
        net, Decimal(pct) if pct else None, days, eom, receipt
    )


def test_unreadable_terms():
    assert parse_terms("see contract") is None and parse_terms(None) is None


def _fields(terms, issued="2026-03-01", due=None, total="1000.00"):
    return {"invoice_date": issued, "due_date": due, "payment_terms": terms, "total_amount": total}


def test_payment_dates():
    # Net 30: pay on the due date.
    s = payment_schedule(_fields("Net 30"), date(2026, 3, 5))
    assert (s.pay_on, s.amount, s.discount) == (date(2026, 3, 31), Decimal("1000.00"), Decimal("0.00"))
    # 2/10 Net 30 inside the window: pay on its last day, 2 % less.
    s = payment_schedule(_fields("2/10 Net 30"), date(2026, 3, 5))
    assert (s.pay_on, s.amount, s.discount, s.due) == (date(2026, 3, 11), Decimal("980.00"), Decimal("20.00"), date(2026, 3, 31))
    # ... and after it closed: the full amount on the due date.
    s = payment_schedule(_fields("2/10 Net 30"), date(2026, 3, 20))
    assert (s.pay_on, s.amount) == (date(2026, 3, 31), Decimal("1000.00"))
    # Due on receipt, already past: pay today.
    assert payment_schedule(_fields("Due on receipt"), date(2026, 3, 9)).pay_on == date(2026, 3, 9)
    # End of month, and Net 30 after the end of the month.
    assert payment_schedule(_fields("End of month", issued="2026-02-10"), date(2026, 2, 11)).pay_on == date(2026, 2, 28)
    assert payment_schedule(_fields("Net 30 EOM", issued="2026-02-10"), date(2026, 2, 11)).pay_on == date(2026, 3, 30)
    # No terms: the stated due date, else Net 30.
    assert payment_schedule(_fields(None, due="2026-04-15"), date(2026, 3, 2)).pay_on == date(2026, 4, 15)
    assert payment_schedule(_fields(None), date(2026, 3, 2)).pay_on == date(2026, 3, 31)
    # Overdue: pay today, never in the past.
    assert payment_schedule(_fields("Net 30"), date(2026, 5, 1)).pay_on == date(2026, 5, 1)


@pytest.fixture
def paid(settings):
    """Three payment-ready invoices: two in EUR, one in USD."""
    with Session(get_engine(settings), expire_on_commit=False) as s:
        load_master(s)
        for fields in (
            invoice_fields(),
            invoice_fields(invoice_id="ACM-2041", po_number=None, terms="2/10 Net 30"),
            invoice_fields(vendor="Blue Harbor Consulting LLC", po_number="PO-2026-0410", currency="USD",
                           iban=None, bic=None, invoice_id="BH-77"),
        ):
            inv = add_invoice(s, fields)
            run_chain(s, inv, settings, today=TODAY)
            assert inv.status == "payment_ready", inv.fields
        s.commit()
        yield s


def test_payments_go_to_one_open_batch_per_currency(paid):
    batches = paid.exec(select(PaymentBatch).order_by(PaymentBatch.id)).all()
    assert [(b.currency, b.status) for b in batches] == [("EUR", "open"), ("USD", "open")]
    payments = paid.exec(select(Payment).order_by(Payment.id)).all()
    assert [p.amount for p in payments] == ["291.55", "34.99", "3570.00"]  # 2 % off 35.70
    assert payments[1].discount == "0.71" and payments[1].pay_on == date(2026, 3, 21)
    assert payments[0].iban == "DE89370400440532013000"  # the vendor record's account, not the invoice's


def test_pain001_export_validates_and_closes_the_batch(paid, settings, tmp_path):
    settings = settings.model_copy(update=PAYER)
    results = export_payments(paid, tmp_path, settings)
    paid.commit()
    eur, usd = results
    assert [p.name for p in eur.files] == ["payment-batch-1-EUR.pain001.xml", "payment-batch-1-EUR.csv"]
    assert [p.name for p in usd.files] == ["payment-batch-2-USD.csv"]
    assert "SEPA carries EUR only" in usd.notes[0]

    xml = eur.files[0].read_bytes()
    # sepaxml validated the file against the pain.001.001.03 schema; check it here as well.
    import sepaxml
    import xmlschema

    xsd = Path(sepaxml.__file__).with_name("schemas") / "pain.001.001.03.xsd"
    xmlschema.XMLSchema(str(xsd)).validate(xml.decode())
    root = ET.fromstring(xml)
    assert root.find("p:CstmrCdtTrfInitn/p:GrpHdr/p:NbOfTxs", NS).text == "2"
    assert root.find("p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum", NS).text == "326.54"
    names = [e.text for e in root.iter("{urn:iso:std:iso:20022:tech:xsd:pain.001.001.03}Nm")]
    assert "Acme Industrial Supplies GmbH" in names and "Buyer Corp" in names

    rows = list(csv.DictReader(usd.files[0].open()))
    assert rows[0]["account_number"] == "000123456789" and rows[0]["routing_number"] == "021000021"
    assert rows[0]["amount"] == "3570.00" and rows[0]["currency"] == "USD"

    assert {b.status for b in paid.exec(select(PaymentBatch)).all()} == {"exported"}
    assert export_payments(paid, tmp_path / "again", settings) == []  # nothing open is left

    # The next EUR payment opens a new batch.
    inv = add_invoice(paid, invoice_fields(invoice_id="ACM-2050", po_number=None, issued=TODAY))
    run_chain(paid, inv, settings, today=TODAY)
    assert inv.status == "payment_ready"
    batch = paid.exec(select(PaymentBatch).where(PaymentBatch.status == "open")).one()
    assert batch.currency == "EUR" and batch.id == 3


def test_xml_needs_the_payer_account(paid, settings, tmp_path):
    with pytest.raises(ExportError, match="INVOICECHAIN_PAYER_IBAN"):
        export_payments(paid, tmp_path, settings, batch_id=1, fmt="xml")


def test_payments_cli(paid, settings, tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from invoicechain import config
    from cli.payments import app as payments_app

    for key, value in PAYER.items():
        monkeypatch.setenv(f"INVOICECHAIN_{key.upper()}", value)
    config.get_settings.cache_clear()
    app = typer.Typer()
    app.add_typer(payments_app, name="payments")  # mounted as `invoicechain payments`
    result = CliRunner().invoke(app, ["payments", "export", "--batch", "1", "--out", str(tmp_path), "--format", "xml"])
    assert result.exit_code == 0, result.output
    assert "batch 1 (EUR): 2 payment(s), total 326.54" in result.output
    assert sorted(os.listdir(tmp_path)) == ["payment-batch-1-EUR.pain001.xml"]
    result = CliRunner().invoke(app, ["payments", "export", "--batch", "9", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "no payment batch 9" in result.output


def test_credit_note_is_offset_not_paid(settings, tmp_path):
    settings = settings.model_copy(update=PAYER)
    lines = [{"description": "Returned: Hex bolts M8x40 (100)", "quantity": "-2", "unit_price": "12.50", "amount": "-25.00"}]
    with Session(get_engine(settings), expire_on_commit=False) as s:
        load_master(s)
        inv = add_invoice(s, invoice_fields(invoice_id="CN-88", po_number=None, lines=lines, terms=None, iban=None, bic=None))
        outcomes = dict(run_chain(s, inv, settings, today=TODAY))
        assert [o.decision for o in outcomes.values()] == ["VALID", "NO_PO", "APPROVED", "SCHEDULED"]
        assert outcomes["trigger_payment"].reasons[0]["message"].startswith("Credit of 29.75 EUR from Acme")
        assert s.exec(select(Payment)).one().amount == "-29.75"
        (result,) = export_payments(s, tmp_path, settings)
        assert [p.name for p in result.files] == ["payment-batch-1-EUR.csv"]
        assert "credit to offset" in result.notes[0]
