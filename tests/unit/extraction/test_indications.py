"""Document type, paid and language, detected from the text by the phrases in
extraction/indications.yaml, on real documents of the dev split and on short receipts."""

from __future__ import annotations

from pathlib import Path

import pytest

from extraction.indications import DOCUMENT_TYPES, detect, rules
from invoicechain.pdf import pdf_text

REAL = Path(__file__).resolve().parents[3] / "datasets" / "real-invoices" / "files"


@pytest.mark.parametrize("name, kind, paid, language", [
    ("de-intarsys-einfach", "invoice", False, "de"),
    ("fr-fnfe-avoir", "credit_note", False, "fr"),
    ("de-intarsys-sepa", "invoice", True, "de"),           # "per SEPA-Lastschrift eingezogen"
    ("de-hetzner-r0005532486", "invoice", True, "de"),     # "Der Betrag wird von nachfolgendem Konto abgebucht"
    ("fr-akretion-f20260023", "invoice", False, "fr"),     # "Montant déjà payé : 0,00" is not paid
    ("de-mustang-alphabet", "invoice", False, "de"),       # "Wenn bereits bezahlt, ..." is not paid
    ("en-oca-akretion-vt-2022-0001", "invoice", False, "en"),
    ("es-oca-tecnativa-inv-2024-00005", "invoice", False, "es"),
])
def test_real_documents(name, kind, paid, language):
    found = detect(pdf_text((REAL / f"{name}.pdf").read_bytes()).text)
    assert (found.document_type, found.paid, found.language) == (kind, paid, language)


def test_a_till_receipt_paid_by_card():
    text = "SUPERMART SDN BHD\nReceipt #A-1234\n2 x Milk 3.50\nTOTAL 7.00\nPaid by card VISA ****1234\nThank you for shopping"
    found = detect(text)
    assert (found.document_type, found.paid, found.language) == ("receipt", True, "en")


def test_a_reminder_and_a_german_credit_note():
    assert detect("Zahlungserinnerung\nRechnung Nr. 42 vom 01.02.2024\nOffener Betrag 100,00 EUR").document_type == "reminder"
    gutschrift = detect("Muster GmbH\nGUTSCHRIFT Nr. G-7\nBetrag 19,00 EUR wird Ihnen gutgeschrieben.")
    assert (gutschrift.document_type, gutschrift.language) == ("credit_note", "de")


def test_ocr_text_without_spaces_is_still_read():
    assert detect("Zahlungserinnerung\nRechnungNr.42\nBitteüberweisenSiebis").document_type == "reminder"
    assert detect("Total 7.00\nPaidbycard").paid


def test_an_unpaid_invoice_stays_unpaid_even_with_card_details():
    assert not detect("Invoice 17\nAmount due 50.00\nPlease pay by card or transfer").paid


def test_an_e_invoice_type_code_wins():
    assert detect("Rechnung Nr. 1", type_code="381").document_type == "credit_note"
    assert detect("Gutschrift (Selbst ausgestellte Rechnung)", type_code="389").document_type == "invoice"


def test_no_text_no_guess():
    found = detect("")
    assert (found.document_type, found.paid, found.language) == ("invoice", False, None)


def test_every_language_states_every_kind_and_the_types_are_the_schema_s():
    data = rules()
    assert set(data["types"]) == set(DOCUMENT_TYPES)
    assert set(data["type_codes"].values()) <= set(DOCUMENT_TYPES)
    import yaml

    from extraction.indications import DATA

    for code, lang in yaml.safe_load(DATA.read_text(encoding="utf-8"))["languages"].items():
        assert set(lang["document_type"]) == set(DOCUMENT_TYPES), code
        assert lang["paid"] and lang["not_paid"] and len(lang["words"]) >= 10, code
