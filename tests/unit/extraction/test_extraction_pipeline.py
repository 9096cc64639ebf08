"""The extraction pipeline: a document model, named grammar rules, named reconciliation steps."""

from __future__ import annotations

import subprocess
import sys

from extraction.grammar import VALUE_RULES
from extraction.pipeline import Document, explain, finish, grammar_for
from extraction.reconcile import RECONCILIATION_RULES, run_rules
from extraction.schemas import all_null_document, invoice_json_schema

INVOICE = """ACME Büromaschinen GmbH
Hauptstraße 1, 10115 Berlin
RECHNUNG
Rechnungsnummer: RE-2026-0815        Kundennummer: 40711
Rechnungsdatum: 14. März 2026
Fällig am: 13.04.2026
Bestellnummer: PO-4500012
Rechnungsempfänger: Globex Handel GmbH
Beschreibung                 Menge   Einzelpreis      Betrag
Toner schwarz                    2        49,50        99,00
Papier A4                       10         4,20        42,00
Zwischensumme                                         141,00
MwSt. 19%                                              26,79
Gesamtbetrag                                     EUR  167,79
IBAN DE89 3704 0044 0532 0130 00   BIC COBADEFFXXX
Zahlungsbedingungen: 30 Tage netto
"""


def applied(text: str) -> dict[str, str]:
    return grammar_for(Document(text), invoice_json_schema())[1]


def test_the_document_model_reads_the_text_once():
    doc = Document(INVOICE)
    assert doc.numbers is doc.numbers and doc.dates is doc.dates  # cached
    assert "2026-03-14" in doc.dates.issue and doc.dates.due == ["2026-04-13"]
    assert doc.date_order == "dmy" and doc.header[0] == "ACME Büromaschinen GmbH"
    hints = doc.hints()
    assert hints["labelled"]["total_amount"][0] == "167.79"
    assert hints["labelled"]["po_number"] == ["PO-4500012"] and hints["labelled"]["bic"] == ["COBADEFFXXX"]


def test_each_field_names_the_rule_that_built_its_grammar():
    rules = applied(INVOICE)
    assert rules["total_amount"] == "labelled_total"
    assert rules["due_date"] == "labelled_due_date" and rules["invoice_date"] == "labelled_issue_date"
    assert rules["vendor_name"] == "legal_name" and rules["client_name"] == "labelled_whole_cell"
    assert rules["po_number"] == "labelled_text" and rules["payment_terms"] == "labelled_text"
    assert rules["iban"] == "printed_iban" and rules["bic"] == "labelled_bank_detail"
    assert rules["routing_number"] == "unlabelled_routing_number"
    assert rules["line_items"] == "printed_rows" and rules["currency"] == "printed_currency"
    assert rules["subtotal"] == "printed_number" and rules["vendor_address"] == "printed_address"


def test_without_labels_the_general_rules_apply():
    rules = applied("Some Shop\nCoffee 3.50\nCake 4.20\nPaid 7.70 on 03/02/2026\n")
    assert rules["total_amount"] == "nonzero_total" and rules["due_date"] == "unlabelled_due_date"
    assert rules["invoice_date"] == "printed_date" and rules["vendor_name"] == "printed_text"
    assert rules["client_name"] == "printed_text" and rules["bic"] == "printed_bic"


def test_value_rules_have_unique_names_and_every_one_is_reachable():
    names = [r.name for r in VALUE_RULES]
    assert len(names) == len(set(names))
    seen = set(applied(INVOICE).values()) | set(applied("Some Shop\nCoffee 3.50\nPaid 7.70 on 03/02/2026\n").values())
    assert {"labelled_total", "nonzero_total", "printed_rows", "object"} <= seen


def test_reconciliation_steps_run_in_order_and_say_what_they_changed():
    assert [r.name for r in RECONCILIATION_RULES] == [
        "shapes", "signs", "rows", "net_total", "subtotal", "receipt_total", "totals", "gross_tax", "identifiers", "invoice_number", "bank", "currency", "address",
        "run_on_text", "parties", "whole_name"]
    fields = all_null_document(invoice_json_schema())
    fields.update(invoice_id="40711", subtotal="141.00", total_amount="167.79", line_items=[])
    fired = run_rules(fields, INVOICE)
    assert [name for name, _ in fired] == [r.name for r in RECONCILIATION_RULES]
    changed = {name: cs for name, cs in fired if cs}
    # a customer number is no invoice number; the number under the invoice number's label is
    assert list(changed) == ["identifiers", "invoice_number", "bank", "parties"]
    assert changed["identifiers"][0].field == "invoice_id" and changed["identifiers"][0].after is None
    assert fields["invoice_id"] == "RE-2026-0815"
    assert fields["bank"]["iban"] == "DE89370400440532013000"  # printed after its label
    assert fields["client_name"] == "Globex Handel GmbH"  # printed after the client's label


def test_finish_merges_reconciles_and_names_the_steps():
    fields = all_null_document(invoice_json_schema())
    fields.update(invoice_id="40711", subtotal="141.00", line_items=[])
    part = {"fields": fields, "confidence": {k: 0.9 for k in fields}, "grounding": {k: None for k in fields},
            "span": (0, len(INVOICE))}
    done = finish([part], INVOICE)
    assert done.rules == ["identifiers", "invoice_number", "bank", "parties"]
    assert done.reconciled[0]["before"] == "40711"
    assert finish([part], INVOICE, reconcile=False).rules == []


def test_explain_says_which_rules_fire_without_the_model():
    out = explain(INVOICE)
    assert out["grammar"]["total_amount"] == "labelled_total"
    assert out["reconciliation_rules"][0] == "shapes" and out["document"]["date_order"] == "dmy"
    fields = all_null_document(invoice_json_schema())
    fields.update(invoice_id="40711", subtotal="141.00", line_items=[])
    assert explain(INVOICE, fields=fields)["reconciliation"][0]["rule"] == "identifiers"
    assert fields["invoice_id"] == "40711"  # the answer given is left alone


def test_the_extraction_package_needs_neither_torch_nor_the_database():
    code = ("import sys, extraction.pipeline, invoicechain.lexicon; "
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'sqlalchemy', 'sqlmodel', 'celery', 'fastapi', 'models', 'workers', 'api')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
