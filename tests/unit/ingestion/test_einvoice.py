"""Structured e-invoices: real ZUGFeRD / Factur-X / XRechnung / PEPPOL samples read into the
field schema, the embedded XML found and removed, and hostile XML refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingestion.einvoice import (
    EInvoiceError,
    detect_syntax,
    embedded_xml,
    parse_einvoice,
    strip_attachments,
)
from invoicechain.schema import InvoiceFields

DATA = Path(__file__).resolve().parents[2] / "data" / "einvoice"
EXPECTED = json.loads((DATA / "expected.json").read_text(encoding="utf-8"))
SAMPLE_PDF = Path(__file__).resolve().parents[3] / "samples" / "inv-00000.pdf"


def _xml(name: str) -> bytes:
    data = (DATA / name).read_bytes()
    if name.endswith(".pdf"):
        xml = embedded_xml(data)
        assert xml is not None, f"{name} carries no e-invoice XML"
        return xml
    return data


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_field_equals_the_xml(name):
    fields, meta = parse_einvoice(_xml(name))
    want = EXPECTED[name]
    assert fields == want["fields"]
    assert (meta["syntax"], meta["profile"], meta["type_code"]) == (want["syntax"], want["profile"], want["type_code"])
    assert meta["warnings"] == []
    InvoiceFields.model_validate(fields)  # the schema takes it as it is


def test_at_least_ten_distinct_real_invoices():
    # One sample may come as PDF, CII and UBL: it counts once.
    documents = {name.split(".", 1)[0] for name in EXPECTED}
    assert len(documents) >= 10, sorted(documents)
    type_codes = {EXPECTED[n]["type_code"] for n in EXPECTED}
    assert {"380", "381"} <= type_codes  # invoices and credit notes


def test_at_least_ten_real_examples_of_each_kind():
    kinds = {n.rsplit(".", 1)[-1] for n in EXPECTED}
    assert len(EXPECTED) >= 10 and kinds == {"pdf", "xml"}
    syntaxes = {EXPECTED[n]["syntax"] for n in EXPECTED}
    assert syntaxes == {"cii", "ubl"}


@pytest.mark.parametrize("same", [
    ("EN16931_Einfach.pdf", "EN16931_Einfach.cii.xml", "EN16931_Einfach.ubl.xml"),
    ("EN16931_Rabatte.pdf", "EN16931_Rabatte.ubl.xml"),
])
def test_one_invoice_in_cii_ubl_and_pdf_reads_the_same(same):
    results = [parse_einvoice(_xml(name))[0] for name in same]
    assert all(r == results[0] for r in results[1:])


def test_factur_x_values_by_hand():
    fields, meta = parse_einvoice(_xml("Facture_UE_BASICWL.pdf"))
    assert meta["profile"] == "factur-x-basic-wl"
    assert fields["invoice_id"] == "FA-2017-0008"
    assert fields["vendor_name"] == "Au bon moulin"
    assert fields["invoice_date"] == "2017-11-03" and fields["due_date"] == "2017-12-03"
    assert fields["total_amount"] == "2076.76" and fields["tax"] == "0.00"
    assert fields["po_number"] == "COMPRA0832"
    assert fields["bank"]["iban"] == "FR2012421242124212421242124"


def test_credit_note_and_allowances():
    fields, meta = parse_einvoice(_xml("ubl-tc434-creditnote1.xml"))
    assert meta["root"] == "CreditNote" and meta["type_code"] == "381"
    assert fields["bank"] == {"iban": "BE91000000143476", "bic": "BPOTBEB1", "account_number": None, "routing_number": None}
    fields, _ = parse_einvoice(_xml("EN16931_Rabatte.ubl.xml"))
    assert (fields["subtotal"], fields["discount"], fields["shipping"], fields["total_amount"]) == (
        "202.70", "14.73", "5.80", "215.07")


def test_long_payment_terms_are_cut_at_a_word_and_reported():
    fields, meta = parse_einvoice(_xml("EN16931_Einfach.cii.xml"))
    assert meta["shortened"] == ["payment_terms"]
    assert fields["payment_terms"] == "Zahlbar innerhalb 30 Tagen netto bis 04.04.2018, 3% Skonto"


def test_strip_attachments_keeps_pages_and_drops_the_xml():
    import io

    from pypdf import PdfReader

    for name in ("EN16931_Einfach.pdf", "Facture_UE_BASICWL.pdf"):
        data = (DATA / name).read_bytes()
        stripped = strip_attachments(data)
        assert embedded_xml(stripped) is None
        assert b"EmbeddedFile" not in stripped
        before, after = PdfReader(io.BytesIO(data)), PdfReader(io.BytesIO(stripped))
        assert len(before.pages) == len(after.pages)
        assert before.pages[0].extract_text() == after.pages[0].extract_text()


def test_pdfs_without_an_einvoice_give_none():
    assert embedded_xml(SAMPLE_PDF.read_bytes()) is None
    assert embedded_xml(b"%PDF-1.7 broken") is None
    assert embedded_xml(b"") is None


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
 xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"><cbc:ID>&x;</cbc:ID></Invoice>"""

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2">&lol4;</Invoice>"""

REMOTE_SCHEMA = b"""<?xml version="1.0"?>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
 xmlns:xi="http://www.w3.org/2001/XInclude"
 xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
 <cbc:ID>X-1</cbc:ID><xi:include href="http://127.0.0.1:9/evil.xml"/></Invoice>"""


@pytest.mark.parametrize("data, reason", [
    (XXE, "document type"),
    (LAUGHS, "document type"),
    ("<?xml version='1.0' encoding='UTF-16'?><!DOCTYPE x [<!ENTITY a 'b'>]><x/>".encode("utf-16"), "document type"),
    (b"<Invoice><unclosed>", "not well-formed"),
    (b"   ", "empty"),
    (b"<html xmlns='http://www.w3.org/1999/xhtml'/>", "no CII or UBL"),
])
def test_hostile_or_foreign_xml_is_refused_with_a_reason(data, reason):
    with pytest.raises(EInvoiceError, match=reason):
        parse_einvoice(data)
    assert detect_syntax(data) is None


def test_no_include_is_followed():
    fields, _ = parse_einvoice(REMOTE_SCHEMA)
    assert fields["invoice_id"] == "X-1"
