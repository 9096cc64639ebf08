"""Grounding: every extracted value is located in the source text, in whatever form it is printed."""

from __future__ import annotations

import pytest

from extraction.grounding import ground_fields, locate

INVOICE = """ACME Büromaschinen GmbH
Hauptstraße 1
10115 Berlin
INVOICE  Nr. RE-2024/0815
Rechnungsdatum: 5. März 2024 / March 5th, 2024
Due date: 04.04.2024
Bill to: Globex Corporation
PO: PO-4500012
Description                 Qty   Unit price      Amount
27" monitor                   2     1.234,50    2.469,00
USB-C cable 2m               10        9,90       99,00
Subtotal                                    2.568,00
VAT 19%                                       487,92
Total due                               EUR 3.055,92
IBAN DE89 3704 0044 0532 0130 00   BIC COBADEFFXXX
Terms: Net 30
"""

FIELDS = {
    "invoice_id": "RE-2024/0815", "vendor_name": "ACME Büromaschinen GmbH",
    "vendor_address": "Hauptstraße 1, 10115 Berlin", "client_name": "Globex Corporation",
    "invoice_date": "2024-03-05", "due_date": "2024-04-04", "currency": "EUR", "subtotal": "2568.00",
    "discount": None, "shipping": None, "tax": "487.92", "total_amount": "3055.92", "po_number": "PO-4500012",
    "payment_terms": "Net 30",
    "line_items": [
        {"description": '27" monitor', "quantity": "2", "unit_price": "1234.50", "amount": "2469.00"},
        {"description": "USB-C cable 2m", "quantity": "10", "unit_price": "9.90", "amount": "99.00"},
    ],
    "bank": {"iban": "DE89370400440532013000", "bic": "COBADEFFXXX", "account_number": None, "routing_number": None},
}

PRINTED = {
    "invoice_id": "RE-2024/0815", "vendor_name": "ACME Büromaschinen GmbH", "vendor_address": "Hauptstraße 1\n10115 Berlin",
    "client_name": "Globex Corporation", "invoice_date": "5. März 2024", "due_date": "04.04.2024",
    "currency": "EUR", "subtotal": "2.568,00", "tax": "487,92", "total_amount": "3.055,92",
    "po_number": "PO-4500012", "payment_terms": "Net 30",
}


def test_every_value_is_found_as_printed():
    grounding = ground_fields(FIELDS, INVOICE)
    for key, printed in PRINTED.items():
        span = grounding[key]
        assert INVOICE[span["start"] : span["end"]] == printed, key
    assert grounding["discount"] is None and grounding["shipping"] is None  # null: nothing to ground
    first, second = grounding["line_items"]
    assert INVOICE[first["description"]["start"] : first["description"]["end"]] == '27" monitor'
    # Numbers of an item are taken from the item's own line, not the first "2" in the document.
    assert INVOICE[first["quantity"]["start"] : first["quantity"]["end"]] == "2"
    line = INVOICE.index('27" monitor')
    assert line < first["quantity"]["start"] < INVOICE.index("\n", line)
    assert INVOICE[second["unit_price"]["start"] : second["unit_price"]["end"]] == "9,90"
    iban = grounding["bank"]["iban"]
    assert INVOICE[iban["start"] : iban["end"]] == "DE89 3704 0044 0532 0130 00"
    assert grounding["bank"]["account_number"] is None


def test_values_not_in_the_text_are_ungrounded():
    fields = dict(FIELDS, vendor_name="Initech LLC", total_amount="3055.93", invoice_date="2024-03-06",
                  line_items=[], bank=None)
    grounding = ground_fields(fields, INVOICE)
    assert grounding["vendor_name"] == {"grounded": False}
    assert grounding["total_amount"] == {"grounded": False}
    assert grounding["invoice_date"] == {"grounded": False}
    assert grounding["line_items"] == [] and grounding["bank"] is None


def test_offset_shifts_spans_into_the_document():
    window_start = 1000
    span = ground_fields({"po_number": "PO-4500012"}, INVOICE, offset=window_start)["po_number"]
    assert span["start"] == INVOICE.index("PO-4500012") + window_start


@pytest.mark.parametrize(
    ("value", "kind", "text", "printed"),
    [
        ("2024-03-05", "date", "Date: 2024-03-05", "2024-03-05"),
        ("2024-03-05", "date", "Date: 05/03/2024", "05/03/2024"),
        ("2024-03-05", "date", "Date: 3/5/24", "3/5/24"),
        ("2024-03-05", "date", "Date: 5 Mar 2024", "5 Mar 2024"),
        ("2024-09-30", "date", "Sept. 30, 2024", "Sept. 30, 2024"),
        ("1234.50", "amount", "Total $1,234.50", "1,234.50"),
        ("1234.50", "amount", "Total 1 234,5 €", "1 234,5"),
        ("1234.00", "amount", "Total 1'234.-", "1'234"),
        ("-12.00", "amount", "Credit -12.00", "-12.00"),
        ("USD", "currency", "Total $12.00", "$"),
        ("Net 30", "text", "terms: NET 30 days", "NET 30"),
    ],
)
def test_printed_forms(value, kind, text, printed):
    found = locate(value, kind, text)
    assert found is not None and text[found[0] : found[1]] == printed


def test_numbers_are_not_found_inside_other_numbers():
    assert locate("234.50", "amount", "Total 1,234.50") is None
    assert locate("12", "amount", "Invoice 2024-12-01 Qty 120") is None
