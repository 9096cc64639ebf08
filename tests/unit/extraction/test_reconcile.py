"""Reconciliation: a broken row or total is mended only by printed numbers, never guessed; numbers, names
and addresses are held to what their labels and shapes say."""

from __future__ import annotations

import copy

from extraction.grounding import ground_fields
from extraction.reconcile import (
    reconcile,
    reconcile_address,
    reconcile_identifiers,
    reconcile_receipt_total,
    reconcile_rows,
    reconcile_run_on_text,
    reconcile_shapes,
    reconcile_subtotal,
    reconcile_totals,
    undo,
)

TWO_COLUMN = """ACME Supplies Ltd
Invoice 4711
Description  Qty  Price  Amount
Laptop bag 14in  4  25.99  103.96
HDMI cable 5m  8  12.50  100.00
Net amount  203.96
Bank details  Freight  20,15
Bank: UniCredit  VAT 0%  0,00
IBAN: IT28 I750 0068 1221 0232 4933 366  TOTAL  EUR 224,11
"""


def fields(**kw) -> dict:
    base = {
        "subtotal": "203.96", "discount": None, "shipping": None, "tax": "0.00", "total_amount": "224.11",
        "line_items": [
            {"description": "Laptop bag 14in", "quantity": "4", "unit_price": "25.99", "amount": "103.96"},
            {"description": "HDMI cable 5m", "quantity": "8", "unit_price": "12.50", "amount": "100.00"},
        ],
    }
    base.update(kw)
    return base


def run(f: dict, text: str):
    return reconcile(f, text, ground_fields(f, text))


def test_a_balanced_answer_is_left_as_it_is():
    f = fields(shipping="20.15")
    before = copy.deepcopy(f)
    assert run(f, TWO_COLUMN) == []
    assert f == before


def test_shipping_missed_beside_a_second_column_is_taken_from_the_print():
    f = fields()
    changes = run(f, TWO_COLUMN)
    assert f["shipping"] == "20.15"
    assert [(c.field, c.before, c.after) for c in changes] == [("shipping", None, "20.15")]


def test_a_discount_read_as_tax_moves_to_the_discount():
    text = "Total HT  147,64\nRemise 2 %  -2,95\nNet à payer  144,69 EUR\n"
    f = {"subtotal": "147.64", "discount": None, "shipping": None, "tax": "2.95", "total_amount": "144.69"}
    changes = reconcile_totals(f, text)
    assert (f["discount"], f["tax"]) == ("2.95", None)
    assert [c.field for c in changes] == ["tax", "discount"]


def test_the_adjustments_are_read_by_their_labels_where_that_balances_the_totals():
    text = ("Nettobetrag EUR 1.087,33\nBankverbindung  Nachlass 3 %  -32,62\nBank: Volksbank  Fracht  79,62\n"
            "IBAN: DE97 0093 4605 2115 0850 61  MwSt. 0 %  0,00\nGesamtbetrag  EUR 1.134,33\n")
    f = {"subtotal": "1087.33", "discount": None, "shipping": None, "tax": "32.62", "total_amount": "1134.33"}
    changes = reconcile_totals(f, text)
    assert f == {"subtotal": "1087.33", "discount": "32.62", "shipping": "79.62", "tax": "0.00", "total_amount": "1134.33"}
    assert {c.field for c in changes} == {"discount", "shipping", "tax"}
    # one amount written twice under the wrong fields
    text = "Total HT  2 395,80\nRemise 5 %  -119,79\nNet à payer  2 276,01 EUR\n"
    f = {"subtotal": "2395.80", "discount": None, "shipping": "119.79", "tax": "119.79", "total_amount": "2276.01"}
    reconcile_totals(f, text)
    assert (f["discount"], f["shipping"], f["tax"]) == ("119.79", None, None)
    # a credit note's tax keeps its printed sign (moving it to the discount would balance too)
    text = "Subtotal  -1.980,94\nVAT 19%  -376,38\nInvoice total  € -2.357,32\n"
    f = {"subtotal": "-1980.94", "discount": None, "shipping": None, "tax": "376.38", "total_amount": "-2357.32"}
    reconcile_totals(f, text)
    assert (f["discount"], f["tax"]) == (None, "-376.38")
    # balanced already: a tax printed as zero under its label is zero, not unstated
    text = "Subtotaal  2,917.00\nKorting 2%  -58.34\nBTW 0%  0.00\nTe betalen  EUR 2,858.66\n"
    f = {"subtotal": "2917.00", "discount": "58.34", "shipping": None, "tax": None, "total_amount": "2858.66"}
    assert [(c.field, c.after) for c in reconcile_totals(f, text)] == [("tax", "0.00")]
    # the subtotal read again as the total: the printed total the labelled adjustments make
    text = ("Summe netto  574,20\nNachlass 5 %  -28,71\nPorto und Verpackung  63,00\nMwSt. 19 %  115,61\n"
            "Summe brutto  724,10 EUR\n")
    f = {"subtotal": "574.20", "discount": None, "shipping": None, "tax": "28.71", "total_amount": "574.20"}
    changes = reconcile_totals(f, text)
    assert f == {"subtotal": "574.20", "discount": "28.71", "shipping": "63.00", "tax": "115.61", "total_amount": "724.10"}
    assert changes[0].field == "total_amount"
    # ... but never a total the document does not print
    f = {"subtotal": "574.20", "discount": None, "shipping": None, "tax": "28.71", "total_amount": "574.20"}
    reconcile_totals(f, text.replace("724,10", "724,00"))
    assert f["total_amount"] == "574.20"
    # two different amounts under one label: no reading by labels
    text = "Subtotal  100.00\nVAT 10% on 100.00  10.00\nShipping  5.00\nTotal  115.00\n"
    f = {"subtotal": "100.00", "discount": None, "shipping": "10.00", "tax": "5.00", "total_amount": "115.00"}
    assert reconcile_totals(f, text) == [] and f["tax"] == "5.00"


def test_a_total_that_includes_its_tax_is_not_balanced_by_force():
    receipt = "TOTAL  RM 100.00\nGST 6% included  5.66\nCASH  100.00\n"
    f = {"subtotal": "100.00", "discount": None, "shipping": None, "tax": "5.66", "total_amount": "100.00"}
    assert reconcile_totals(f, receipt) == []
    assert f["discount"] is None and f["tax"] == "5.66"


def test_a_wrong_total_on_the_invoice_is_not_hidden():
    """The invoice's own arithmetic error (total off by 10; "10" printed in a date, a line
    amount equal to the gap) must reach validation, not be balanced away."""
    text = ("Date 07/10/2026  Due 07.11.2026\nWidget  1  10.00  10.00\nGadget  2  96.98  193.96\n"
            "Subtotal  203.96\nVAT 0%  0.00\nTotal  213.96\n")
    f = fields(total_amount="213.96", line_items=[
        {"description": "Widget", "quantity": "1", "unit_price": "10.00", "amount": "10.00"},
        {"description": "Gadget", "quantity": "2", "unit_price": "96.98", "amount": "193.96"},
    ])
    assert run(f, text) == []
    assert f["shipping"] is None and f["discount"] is None


def test_two_ways_to_balance_means_no_change():
    text = "Subtotal 100.00\nService fee 5.00\nInsurance 5.00\nTotal 105.00\n"
    # shipping or tax could each take a printed 5.00: which one is not for arithmetic to say
    f = {"subtotal": "100.00", "discount": None, "shipping": None, "tax": None, "total_amount": "105.00"}
    assert reconcile_totals(f, text) == []


def test_of_two_ways_to_balance_the_label_of_the_printed_amount_decides():
    text = "Bank: Wells Fargo Bank  Subtotal  274.73\nSWIFT: QFDLUSKN  Shipping  11.70\nTotal due  $286.43\n"
    f = {"subtotal": "274.73", "discount": None, "shipping": None, "tax": None, "total_amount": "286.43"}
    changes = reconcile_totals(f, text)
    assert (f["shipping"], f["tax"]) == ("11.70", None)
    assert [(c.field, c.before, c.after) for c in changes] == [("shipping", None, "11.70")]
    f = {"subtotal": "274.73", "discount": None, "shipping": None, "tax": None, "total_amount": "286.43"}
    reconcile_totals(f, text.replace("Shipping", "Sales Tax 4.26%"))
    assert (f["shipping"], f["tax"]) == (None, "11.70")


def test_an_adjustment_that_is_no_printed_amount_and_breaks_the_totals_is_dropped():
    text = "Terms: Net 30\nSubtotal  203.99\nVAT 0%  0.00\nTotal  203.99\n"
    for wrong in ("30", "203.99"):  # a number of days; the total read again
        f = {"subtotal": "203.99", "discount": None, "shipping": wrong, "tax": "0.00", "total_amount": "203.99"}
        changes = reconcile_totals(f, text)
        assert f["shipping"] is None, wrong
        assert [(c.field, c.before, c.after) for c in changes] == [("shipping", wrong, None)]
    # a printed amount is never dropped: the invoice's own arithmetic may be wrong
    text = "Subtotal  203.99\nShipping  12.50\nTotal  203.99\n"
    f = {"subtotal": "203.99", "discount": None, "shipping": "12.50", "tax": None, "total_amount": "203.99"}
    assert reconcile_totals(f, text) == [] and f["shipping"] == "12.50"


def test_a_quantity_read_from_the_description_is_corrected_from_its_line():
    f = fields(line_items=[
        {"description": "Laptop bag 14in", "quantity": "14", "unit_price": "25.99", "amount": "103.96"},
        {"description": "HDMI cable 5m", "quantity": "8", "unit_price": "12.50", "amount": "100.00"},
    ], shipping="20.15")
    changes = run(f, TWO_COLUMN)
    assert f["line_items"][0]["quantity"] == "4"
    assert [(c.field, c.before, c.after) for c in changes] == [("line_items[0].quantity", "14", "4")]


def mend_row(text: str, description: str, quantity: str, unit_price: str, amount: str) -> dict:
    """One item as decoded, after row reconciliation against `text`."""
    f = {"line_items": [{"description": description, "quantity": quantity, "unit_price": unit_price, "amount": amount}]}
    reconcile_rows(f, text, ground_fields(f, text))
    return f["line_items"][0]


def test_a_credit_note_row_keeps_its_sign():
    text = "Bubble wrap 1.5m x 100m  -1  56,20  -56,20\n"
    assert mend_row(text, "Bubble wrap 1.5m x 100m", "-56.20", "56.20", "-56.20")["quantity"] == "-1"


def test_a_quantity_whose_decimal_point_a_scan_lost_is_put_back():
    text = "ART-61964  Travel time  h  15  119.44  179.16\n"  # printed 1.5; OCR read 15
    f = {"line_items": [{"description": "Travel time", "quantity": "15", "unit_price": "119.44", "amount": "179.16"}]}
    changes = reconcile_rows(f, text, ground_fields(f, text))
    assert f["line_items"][0]["quantity"] == "1.5"
    assert [(c.field, c.before, c.after) for c in changes] == [("line_items[0].quantity", "15", "1.5")]
    assert "decimal point" in changes[0].reason


def test_rows_that_cannot_be_checked_or_mended_stay_as_read():
    text = "Consulting, March  12  110.00  1,250.00\nSetup fee  450.00\n"
    items = [
        # 12 x 110 != 1250 (a line discount?), and no other printed number balances it
        {"description": "Consulting, March", "quantity": "12", "unit_price": "110.00", "amount": "1250.00"},
        # a null column: nothing to check
        {"description": "Setup fee", "quantity": None, "unit_price": None, "amount": "450.00"},
    ]
    f = {"line_items": copy.deepcopy(items)}
    assert reconcile_rows(f, text, ground_fields(f, text)) == []
    assert f["line_items"] == items


def test_receipt_rows_take_their_figures_from_the_line_below():
    text = "KF MODELLING CLAY KIDDY FISH\n1 PC  9.00  9.00\nTOTAL 9.00\n"
    assert mend_row(text, "KF MODELLING CLAY KIDDY FISH", "9.00", "9.00", "9.00")["quantity"] == "1"


def test_the_runtime_regrounds_a_mended_field_and_trusts_it_as_much_as_the_totals():
    from models.runtime import ModelRuntime

    f = fields()
    merged = {"fields": f, "grounding": ground_fields(f, TWO_COLUMN),
              "confidence": {"subtotal": 0.9, "total_amount": 0.8, "shipping": 0.99, "line_items": 0.7}}
    changes = ModelRuntime._reconcile(merged, TWO_COLUMN)
    assert [c.field for c in changes] == ["shipping"]
    span = merged["grounding"]["shipping"]
    assert TWO_COLUMN[span["start"] : span["end"]] == "20,15"
    assert merged["confidence"]["shipping"] == 0.8


def test_undo_gives_back_the_answer_as_decoded():
    from extraction.reconcile import undo

    decoded = fields(discount="20.15", line_items=[
        {"description": "Laptop bag 14in", "quantity": "14", "unit_price": "25.99", "amount": "103.96"},
        {"description": "HDMI cable 5m", "quantity": "8", "unit_price": "12.50", "amount": "100.00"},
    ])
    f = copy.deepcopy(decoded)
    changes = run(f, TWO_COLUMN)
    assert [c.field for c in changes] == ["line_items[0].quantity", "discount", "shipping"]
    assert undo(f, [c.as_dict() for c in changes]) == decoded


def test_of_several_mends_the_one_read_left_to_right_is_taken():
    """12 x 12 != 117.84: 9.82 balances the row as quantity or as unit price; the row prints
    quantity, unit price, amount, so it is the unit price."""
    text = "Tea assortment (100 bags)  12  9,82  117,84\n"
    item = mend_row(text, "Tea assortment (100 bags)", "12", "12", "117.84")
    assert (item["quantity"], item["unit_price"]) == ("12", "9.82")


def test_true_answers_are_never_changed_faulty_invoices_included(tmp_path):
    """On the generator's true answers (60% faults, arithmetic errors among them), nothing to mend."""
    import json

    from training.synth.corpus import generate_corpus

    summary = generate_corpus(60, 778, tmp_path, fault_rate=0.6, processes=1, toolchain=False)
    records = [json.loads(line) for line in summary.extract_jsonl.read_text().splitlines()]
    assert len(records) == 60
    assert any("arithmetic" in str(k).lower() and n > 0 for k, n in summary.faults.items()), summary.faults
    for r in records:
        answer = r["output"] if isinstance(r["output"], dict) else json.loads(r["output"])
        assert run(copy.deepcopy(answer), r["input"]) == [], r["input"][:200]


TWO_PAGES = """Article  Qty  Price  Amount
Laptop bag 14in  4  25.99  103.96
Subtotal carried forward  103.96
Page 1 of 2
Brought forward  103.96
HDMI cable 5m  8  12.50  100.00
Total net  203.96
VAT 0%  0.00
TOTAL  203.96
"""


def test_a_subtotal_carried_forward_gives_way_to_the_printed_sum_of_the_lines():
    f = fields(subtotal="103.96", total_amount="203.96")
    changes = reconcile_subtotal(f, TWO_PAGES)
    assert f["subtotal"] == "203.96"
    assert [(c.field, c.before, c.after) for c in changes] == [("subtotal", "103.96", "203.96")]


def test_a_subtotal_is_left_alone_when_the_sum_is_not_printed_apart_from_the_rows():
    one_row = "Laptop bag 14in  4  25.99  103.96\nService fee  10.00\nSubtotal  113.96\nTOTAL  113.96\n"
    f = fields(subtotal="113.96", line_items=fields()["line_items"][:1])
    assert reconcile_subtotal(f, one_row) == []  # the fee is no item, and 103.96 is printed only on its row
    f = fields(subtotal="203.96")
    assert reconcile_subtotal(f, TWO_COLUMN) == []  # already the sum
    assert reconcile_subtotal(fields(subtotal="100.00", line_items=[{**fields()["line_items"][0], "amount": None}]),
                              TWO_COLUMN) == []  # a row without an amount: no sum to check against


HEADER = """Perry, Lee and Brown LLC  Rechnung Nr.:  RE20265307
Datum:  30. September 2026
Lieferschein:  LS248008
Kunden-Nr.:  070208
Ihre Bestellung:  4502373840
USt-IdNr.: DE811907980  Tel. +49 30 1234567
RECHNUNG RE20265307
Pos.  Artikel  Menge  Preis  Betrag
"""


def test_a_number_printed_only_under_another_numbers_label_is_no_po_or_invoice_number():
    for wrong in ("RE20265307", "LS248008", "070208", "2026", "DE811907980"):
        f = {"invoice_id": "RE20265307", "po_number": wrong}
        changes = reconcile_identifiers(f, HEADER)
        assert f == {"invoice_id": "RE20265307", "po_number": None}, wrong
        assert [(c.field, c.before, c.after) for c in changes] == [("po_number", wrong, None)]
    f = {"invoice_id": "4502373840", "po_number": "4502373840"}  # a PO number read as the invoice number
    reconcile_identifiers(f, HEADER)
    assert f == {"invoice_id": None, "po_number": "4502373840"}
    # tax registration numbers in other languages' wording are no PO numbers either
    for label, number in (("VAT Reg. No.:", "GB123456789"), ("N° TVA intracom.", "FR40303265045"),
                          ("Btw-nummer:", "NL853749620B01"), ("P. IVA", "IT01234567890"),
                          ("GST/HST No.", "123456789RT0001"), ("ABN", "51 824 753 556"), ("EIN:", "12-3456789")):
        f = {"invoice_id": "RE20265307", "po_number": number}
        reconcile_identifiers(f, HEADER + f"{label} {number}\n")
        assert f["po_number"] is None, label
    # an item code at the start of a line item's row, terms that are a tax number
    f = {"invoice_id": "RE20265307", "po_number": "34023", "payment_terms": "No. 988134110RT0001"}
    changes = reconcile_identifiers(f, HEADER + "34023  Steel shelving unit 1800x900  2  285.00  570.00\n"
                                    "GST/HST No. 988134110RT0001\nTerms:  30 dagen netto\n")
    assert f == {"invoice_id": "RE20265307", "po_number": None, "payment_terms": None}
    assert [c.reason for c in changes] == ["printed only as line item", "printed only as tax_id"]
    bank = {"iban": None, "bic": None, "account_number": "IE0312471S", "routing_number": None}
    f = {"invoice_id": "RE20265307", "po_number": None, "bank": dict(bank)}
    changes = reconcile_identifiers(f, HEADER + "VAT Reg. No.: IE0312471S\n")
    assert f["bank"] == {**bank, "account_number": None}
    assert undo(f, [c.as_dict() for c in changes])["bank"] == bank
    f = {"invoice_id": "RE20265307", "po_number": None, "bank": {**bank, "account_number": "D28040"}}
    reconcile_identifiers(f, HEADER + "Account no.:  D28040\n")  # may be a bank account: kept
    assert f["bank"]["account_number"] == "D28040"
    f = {"invoice_id": "RE20265307", "po_number": "30 dagen netto", "payment_terms": "30 dagen netto"}
    reconcile_identifiers(f, HEADER + "Terms:  30 dagen netto\n")
    assert f == {"invoice_id": "RE20265307", "po_number": None, "payment_terms": "30 dagen netto"}
    # its own label, or a value printed without a known label, stays as read
    for kept in ({"invoice_id": "RE20265307", "po_number": "4502373840"}, {"invoice_id": "Perry", "po_number": None}):
        f = dict(kept)
        assert reconcile_identifiers(f, HEADER) == [] and f == kept


def test_an_address_loses_the_company_name_before_it_and_the_phone_after_it():
    cases = [
        ({"vendor_name": "ACME SDN BHD", "vendor_address": "14 JALAN MANIS 4 TAMAN SEGAR 56100 KL TEL: 03-91334364"},
         "14 JALAN MANIS 4 TAMAN SEGAR 56100 KL"),
        ({"vendor_name": "AIK HUAT HARDWARE", "vendor_address":
          "ENTERPRISE (SETIA ALAM) SDN BHD 822737-X NO. 17-G, JALAN SETIA INDAH (X) U13/X, 40170 SHAH ALAM,"},
         "NO. 17-G, JALAN SETIA INDAH (X) U13/X, 40170 SHAH ALAM,"),
        ({"vendor_name": "Fiere Verpakkingen BV", "vendor_address": "Fiere Verpakkingen BV, Wesselweg 53, 3461QU Nijlande"},
         "Wesselweg 53, 3461QU Nijlande"),
        # no postcode printed: a street number and two words make it a whole address
        ({"vendor_name": "C W KHOO HARDWARE SDN BHD", "vendor_address":
          "NO.50, JALAN PBS 14/11, KAWASAN PERINDUSTRIAN BUKIT SERDANG, TEL : 03-89410243"},
         "NO.50, JALAN PBS 14/11, KAWASAN PERINDUSTRIAN BUKIT SERDANG"),
    ]
    for f, after in cases:
        changes = reconcile_address(f, "")
        assert f["vendor_address"] == after and changes[0].after == after
    # a label inside what is not yet a whole address, or nothing around it: left as read
    for kept in ("BENTONG-2, GST REG NO 000184401920 JALAN TRAS BATU 1, 28700 BENTONG", "Wesselweg 53, 3461QU Nijlande"):
        f = {"vendor_name": "X", "vendor_address": kept}
        assert reconcile_address(f, "") == [] and f["vendor_address"] == kept


def test_a_name_or_terms_that_run_into_another_fields_label_end_before_it():
    f = {"vendor_name": "Thierry Communication SAS", "client_name": "Guérin SAS Numéro de facture",
         "payment_terms": "Direct bij ontvangst Subtotaal"}
    changes = reconcile_run_on_text(f, "")
    assert f == {"vendor_name": "Thierry Communication SAS", "client_name": "Guérin SAS", "payment_terms": "Direct bij ontvangst"}
    assert [c.field for c in changes] == ["client_name", "payment_terms"]
    f = {"client_name": "N° TVA intracom. FR32775594349", "po_number": "Zahlbar bis: 2026-07-31", "invoice_id": "RE-1"}
    reconcile_run_on_text(f, "")
    assert f == {"client_name": None, "po_number": None, "invoice_id": "RE-1"}
    for terms in ("Base imponible", "Payment due: 2026-10-02", "Zahlbar bis"):  # a label, no terms
        f = {"payment_terms": terms}
        reconcile_run_on_text(f, "")
        assert f["payment_terms"] is None, terms
    for kept in ("30 gg data fattura", "Payment due within 30 days", "Net 30"):
        f = {"payment_terms": kept}
        assert reconcile_run_on_text(f, "") == [] and f["payment_terms"] == kept


def test_names_and_numbers_keep_their_shapes():
    f = {"vendor_name": "COPY ANDERSSON OFFICE SUPPLIES HB", "client_name": "Z = 0% 4.00", "invoice_id": "RECHNUNG",
         "po_number": "PO-55817", "bank": {"iban": None, "bic": None, "account_number": "Konto", "routing_number": None}}
    changes = reconcile_shapes(f, "")
    assert f == {"vendor_name": "ANDERSSON OFFICE SUPPLIES HB", "client_name": None, "invoice_id": None,
                 "po_number": "PO-55817", "bank": {"iban": None, "bic": None, "account_number": None, "routing_number": None}}
    assert [c.field for c in changes] == ["vendor_name", "client_name", "invoice_id", "bank.account_number"]
    for name in ("KOPIE", "Gutschrift"):
        f = {"vendor_name": name}
        reconcile_shapes(f, "")
        assert f["vendor_name"] is None, name
    f = {"vendor_name": "Invoiceware GmbH", "client_name": "Käster"}
    assert reconcile_shapes(f, "") == []
    # a registration number after the legal form is no part of the name; one before it is kept
    for read, name in (("MOONLIGHT CAKE HOUSE SDN BHD 862725-U", "MOONLIGHT CAKE HOUSE SDN BHD"),
                       ("KT WONG TRADING (001904043-H)", "KT WONG TRADING")):
        f = {"vendor_name": read}
        assert reconcile_shapes(f, "")[0].after == name and f["vendor_name"] == name
    for kept in ("99 SPEED MART S/B", "3M Deutschland GmbH", "Studio 54 Ltd"):
        f = {"vendor_name": kept}
        assert reconcile_shapes(f, "") == [] and f["vendor_name"] == kept


ROUNDED_RECEIPT = """AEON CO. (M) BHD
SUB-TOTAL
TOTAL SALES INCL GST
ROUNDING ADJ
TOTAL AFTER ADJ INCL GST
CASH
CHANGE AMT
127.37
127.37
-0.02
127.35
150.00
22.65
GST SUMMARY  SR @ 0%  127.37  0.00
"""

TENDERED_RECEIPT = """THE TOAST F&B SDN BHD
SUB TOTAL RM
ROUND:
TOTAL DUE (GST INC):
PAID: CASH
CHANGE:
28.15
0.00
28.15
50.00
21.85
"""


def test_a_receipts_total_is_what_it_asks_for_not_the_amount_before_rounding_or_the_cash_handed_over():
    f = {"total_amount": "127.37", "tax": "0.00"}
    changes = reconcile_receipt_total(f, ROUNDED_RECEIPT)
    assert f["total_amount"] == "127.35" and changes[0].before == "127.37"
    # the amount before rounding plus its tax, where that sum is printed
    text = "TOTAL(MYR): 17.93\nGST @ 6%: 1.08\nNET TOTAL(MYR): 19.01\nROUNDING ADJ.: -0.01\nNET TOTAL ROUNDED(MYR): 19.00\n"
    f = {"total_amount": "17.93", "tax": "1.08"}
    assert reconcile_receipt_total(f, text) and f["total_amount"] == "19.00"
    f = {"total_amount": "50.00", "tax": None}
    changes = reconcile_receipt_total(f, TENDERED_RECEIPT)
    assert f["total_amount"] == "28.15" and "cash" in changes[0].reason
    # a rounded total, or a receipt without a rounding or change label: left as read
    for total, text in (("127.35", ROUNDED_RECEIPT), ("28.15", TENDERED_RECEIPT),
                        ("50.00", TENDERED_RECEIPT.replace("CHANGE:", "BALANCE:")),
                        ("127.37", ROUNDED_RECEIPT.replace("ROUNDING ADJ", "SAVINGS"))):
        f = {"total_amount": total, "tax": None}
        assert reconcile_receipt_total(f, text) == [] and f["total_amount"] == total, total


SELLER_BLOCK = """Darstellung der Rechnungsdaten
Teilrechnung  Nr.  8812  vom  02.03.2026
Verkäufer:
Nummer  : 5521
Nordwind Handel GmbH
Kastenienweg 7
DE 20095 Hamburg
Käufer/Leistungsempfänger:
Lindenhof AG
Am Markt 3
DE 50667 Köln
IBAN  : DE12 3456 7890 1234 56
Gläubiger-ID: DE98ZZZ09999999999
Positionssumme  200,00
Umsatzsteuer (S)  200,00  19  38,00
Bruttosumme  238,00
"""


def test_the_parties_are_the_first_names_under_their_own_labels():
    from extraction.reconcile import reconcile_parties

    f = {"vendor_name": "Darstellung der Rechnungsdaten", "client_name": "Am Markt 3"}
    changes = reconcile_parties(f, SELLER_BLOCK)
    assert f == {"vendor_name": "Nordwind Handel GmbH", "client_name": "Lindenhof AG"}
    assert [c.field for c in changes] == ["vendor_name", "client_name"]
    # a name the model read from the party's own block, without a digit, is kept
    kept = {"vendor_name": "Nordwind Handel GmbH", "client_name": "Lindenhof AG"}
    assert reconcile_parties(kept, SELLER_BLOCK) == []
    # English labels, and no label: nothing to go by
    f = {"vendor_name": "INVOICE 55", "client_name": "Blue Harbour Ltd"}
    reconcile_parties(f, "INVOICE 55\nSeller:\nGreen Field Farms LLC\n12 Mill Road\nBill to:\nBlue Harbour Ltd\n")
    assert f == {"vendor_name": "Green Field Farms LLC", "client_name": "Blue Harbour Ltd"}
    f = {"vendor_name": "Green Field Farms LLC", "client_name": "Blue Harbour Ltd"}
    assert reconcile_parties(f, "Green Field Farms LLC\nBlue Harbour Ltd\n12 Mill Road\n") == []


def test_a_total_written_negative_but_printed_without_a_sign_is_positive():
    from extraction.reconcile import reconcile_signs

    f = {"subtotal": "-200.00", "tax": "38.00", "total_amount": "-238.00"}
    reconcile_signs(f, SELLER_BLOCK)
    assert f == {"subtotal": "200.00", "tax": "38.00", "total_amount": "238.00"}
    credit = "Gutschrift 77\nNetto  -200,00\nMwSt.  -38,00\nGesamt  238,00-\n"
    f = {"subtotal": "-200.00", "tax": "-38.00", "total_amount": "-238.00"}
    assert reconcile_signs(f, credit) == []  # printed with their minus: a credit note's


def test_a_null_invoice_number_is_the_number_after_its_label():
    from extraction.reconcile import reconcile_invoice_number

    f = {"invoice_id": None}
    reconcile_invoice_number(f, SELLER_BLOCK)
    assert f["invoice_id"] == "8812"  # `Teilrechnung Nr. 8812`: a kind of invoice and its number
    f = {"invoice_id": None}
    reconcile_invoice_number(f, "Rechnungsnummer: R-77/2026\nRechnung R-77/2026\nRechnungsdatum: 03.03.2026\n")
    assert f["invoice_id"] == "R-77/2026"
    # a credit note's reference to the invoice it corrects is no label of its own number
    f = {"invoice_id": None}
    assert reconcile_invoice_number(f, "Credit note\nRelates to invoice INV-0042 of 1 May 2026\n") == []


def test_the_iban_is_the_one_printed_after_its_label_or_the_one_that_passes_its_check():
    from extraction.reconcile import reconcile_bank

    f = {"bank": {"iban": None}}
    reconcile_bank(f, SELLER_BLOCK)
    assert f["bank"]["iban"] == "DE1234567890123456"  # as printed, though it fails the check
    f = {"bank": {"iban": "DE98ZZZ09999999999"}}  # a creditor identifier has an IBAN's outline
    reconcile_bank(f, "Gläubiger-ID: DE98ZZZ09999999999\nBank: DE89 3704 0044 0532 0130 00\n")
    assert f["bank"]["iban"] == "DE89370400440532013000"
    f = {"bank": {"iban": "DE89370400440532013000"}}
    assert reconcile_bank(f, "IBAN: DE89 3704 0044 0532 0130 00\n") == []


def test_an_adjustment_label_owns_the_last_amount_of_its_row_and_a_zero_tax_is_zero():
    # `Umsatzsteuer (S)  200,00  19  38,00`: the base first, the tax last
    f = {"subtotal": "200.00", "discount": None, "shipping": None, "tax": "200.00", "total_amount": "238.00",
         "line_items": []}
    reconcile_totals(f, SELLER_BLOCK)
    assert f["tax"] == "38.00"
    exempt = "Positionssumme  500,00\nSteuerbetrag in  EUR  0,00\nBruttosumme  500,00\n"
    f = {"subtotal": "500.00", "discount": None, "shipping": None, "tax": None, "total_amount": "500.00",
         "line_items": []}
    reconcile_totals(f, exempt)
    assert f["tax"] == "0.00"


def test_without_party_labels_the_sender_line_names_the_vendor_and_the_recipient_under_it():
    from extraction.reconcile import reconcile_parties, sender_line

    text = ("Tannenhof Werkstatt GmbH\nTel. 0301 22 33\n"
            "Tannenhof Werkstatt GmbH · Birkenweg 4 · 31134 Hildesheim\nwww.tannenhof.example\n"
            "Obstgarten Meier KG\nz. Hd. Frau Meier\nApfelallee 9\n31135 Hildesheim\n\nRechnung  2026-118\n")
    assert sender_line(text) == ("Tannenhof Werkstatt GmbH", "Obstgarten Meier KG")
    f = {"vendor_name": "Birkenweg 4 · 31134 Hildesheim", "client_name": "Tannenhof Werkstatt GmbH"}
    reconcile_parties(f, text)
    assert f == {"vendor_name": "Tannenhof Werkstatt GmbH", "client_name": "Obstgarten Meier KG"}
    # a vendor name that is a name stays the model's; two pieces make no sender line
    f = {"vendor_name": "Tannenhof Werkstatt", "client_name": "Obstgarten Meier KG"}
    assert reconcile_parties(f, text) == []
    assert sender_line("Birkenweg 4, 31134 Hildesheim\nObstgarten Meier KG\n") is None
    # a receipt's address line of comma pieces leaves a vendor name with a digit alone
    receipt = "99 SPEED MART S/B\nTAMAN BERKELEY, JALAN ANGSA, 41150 KLANG\nCASHIER SITI\nTOTAL  12.00\n"
    f = {"vendor_name": "99 SPEED MART S/B"}
    assert reconcile_parties(f, receipt) == [] and f == {"vendor_name": "99 SPEED MART S/B"}


def test_a_tax_read_from_another_amount_takes_the_printed_amount_that_balances_the_totals():
    text = ("Menge  Produkt  USt.  Preis  Gesamt\n1,00  Beratung  7%  150,00 €  150,00 €\n"
            "Nettobetrag: 150,00 €\nUSt. Gesamt: 10,50 €\nGesamtbetrag: 160,50 €\n")
    f = {"subtotal": "150.00", "discount": None, "shipping": None, "tax": "150.00", "total_amount": "160.50",
         "line_items": [{"description": "Beratung", "quantity": "1.00", "unit_price": "150.00", "amount": "150.00"}]}
    changes = reconcile_totals(f, text)
    assert f["tax"] == "10.50" and [c.field for c in changes] == ["tax"]
    # no printed amount balances them: the tax stays as read
    f = {"subtotal": "150.00", "discount": None, "shipping": None, "tax": "150.00", "total_amount": "170.00",
         "line_items": []}
    assert reconcile_totals(f, text) == [] and f["tax"] == "150.00"


def test_an_amount_labelled_without_the_tax_is_no_tax():
    text = ("Positionssumme  380,00\nRechnungssumme ohne USt.  380,00\nSteuerbetrag in  EUR  0,00\n"
            "Bruttosumme  380,00\n")
    f = {"subtotal": "380.00", "discount": None, "shipping": None, "tax": None, "total_amount": "380.00",
         "line_items": [], "bank": None}
    reconcile_totals(f, text)
    assert f["tax"] == "0.00"
    from extraction.reconcile import reconcile_bank

    reconcile_bank(f, "IBAN: DE89 3704 0044 0532 0130 00\n")  # no bank details read: they are made
    assert f["bank"] == {"iban": "DE89370400440532013000", "bic": None, "account_number": None, "routing_number": None}


def test_a_salutation_alone_on_its_line_belongs_to_the_name_below_it():
    from extraction.reconcile import reconcile_parties

    text = "Käufer:\n\nHerrn\nKarl Beispiel\nLindenweg 2\nDE 12345 Musterdorf\n"
    f = {"client_name": "Herrn"}
    reconcile_parties(f, text)
    assert f == {"client_name": "Herrn Karl Beispiel"}


def test_a_title_under_the_sender_line_is_no_recipient():
    from extraction.reconcile import sender_line

    text = "Kiosk Am Hafen · Kaistraße 1 · 24103 Kiel\nRECHNUNG\nFrau Greta Beispiel\nMöwenweg 5\n"
    assert sender_line(text) == ("Kiosk Am Hafen", "Frau Greta Beispiel")


def test_an_invoice_number_printed_after_no_invoice_label_gives_way_to_the_labelled_one():
    from extraction.reconcile import reconcile_invoice_number

    text = "Handelsrechnung  Nr.  KX-2026-77  vom  14.03.2026\nAmtsgericht Kiel\nHRB Nr. 372876\n"
    f = {"invoice_id": "Nr. 372876"}
    reconcile_invoice_number(f, text)
    assert f["invoice_id"] == "KX-2026-77"
    f = {"invoice_id": "KX-2026-77"}
    assert reconcile_invoice_number(f, text) == []
    # a page count after the label is no invoice number
    f = {"invoice_id": "RE-5"}
    assert reconcile_invoice_number(f, "Rechnung 1\nRE-5\n") == []


def test_the_subtotal_is_the_one_amount_printed_after_a_net_totals_label():
    from extraction.reconcile import reconcile_net_total

    text = ("Art  Steuer  Betrag\nAbschlag Sonderrabatt  250,00  19 % UST  -12,50\n"
            "Positionssumme  250,00\nGesamtbetrag der Abschläge  -12,50\nRechnungssumme ohne USt.  237,50\n"
            "Steuerbetrag in  EUR  45,13\nBruttosumme  282,63\n")
    f = {"subtotal": "19"}  # a rate read as the subtotal
    reconcile_net_total(f, text)
    assert f["subtotal"] == "250.00"
    f = {"subtotal": "250.00"}
    assert reconcile_net_total(f, text) == []
    # two net totals printed (a page's and the invoice's): no reading by label
    f = {"subtotal": "19"}
    assert reconcile_net_total(f, "Subtotal  100.00\nSubtotal  180.00\n") == []


def test_a_null_tax_is_the_amount_under_a_tax_label_that_the_total_is_the_net_plus():
    from extraction.reconcile import reconcile_gross_tax

    text = ("Abschlag Sonderrabatt  250,00  19 % UST (S)  -12,50\nUmsatzsteuer (S)  250,00  -12,50  237,50  19  45,13\n"
            "Positionssumme  250,00\nRechnungssumme ohne USt.  237,50\nSteuerbetrag in  EUR  45,13\nBruttosumme  282,63\n")
    f = {"subtotal": "250.00", "tax": None, "total_amount": "282.63"}
    reconcile_gross_tax(f, text)
    assert f["tax"] == "45.13"  # 237,50 + 45,13; never the net itself
    # balanced without a tax: none is charged
    f = {"subtotal": "282.63", "tax": None, "total_amount": "282.63"}
    assert reconcile_gross_tax(f, text) == [] and f["tax"] is None


def test_a_document_that_prints_no_currency_but_a_euro_area_account_is_in_euros():
    from extraction.reconcile import reconcile_currency

    scan = "Netto  87,39\nBrutto  104,00\nIBAN:DE89 3704 0044 0532 0130 00\n"
    f = {"currency": None}
    reconcile_currency(f, scan)
    assert f["currency"] == "EUR"
    f = {"currency": None}  # a currency printed: the model's reading of it stands
    assert reconcile_currency(f, scan + "Total CHF 104.00\n") == [] and f["currency"] is None
    f = {"currency": None}  # an account outside the euro area
    assert reconcile_currency(f, "Total 104.00\nIBAN GB82 WEST 1234 5698 7654 32\n") == []


def test_a_name_ends_at_its_legal_form_where_an_address_follows_it_and_a_number_sign_is_no_part_of_a_number():
    for read, name in (("Au bon moulin SARL - 1242 chemin de l'olive", "Au bon moulin SARL"),
                       ("ACME Ltd, London", "ACME Ltd"), ("Acme AG | Basel", "Acme AG"),
                       ("Müller GmbH & Co. KG - Werk 2", "Müller GmbH & Co. KG")):
        f = {"vendor_name": read}
        assert reconcile_shapes(f, "")[0].after == name and f["vendor_name"] == name, read
    # a legal form after the separator: the name goes on (`(M) SDN BHD`); no legal form: nothing to cut at
    for kept in ("XYZ TRADING (M) SDN BHD", "Müller GmbH & Co. KG", "Kaffeehaus - Am Markt 3"):
        f = {"vendor_name": kept}
        assert reconcile_shapes(f, "") == [] and f["vendor_name"] == kept, kept
    for read, number in (("N°F-20240000014", "F-20240000014"), ("Nr.4711", "4711"), ("#10023", "10023")):
        f = {"invoice_id": read, "po_number": read}
        reconcile_shapes(f, "")
        assert f == {"invoice_id": number, "po_number": number}, read
    for kept in ("NO-7781", "No123", "INV-1"):
        f = {"invoice_id": kept}
        assert reconcile_shapes(f, "") == [], kept


def test_the_invoice_number_after_its_label_loses_a_number_sign_and_a_party_label_takes_a_numbered_company_name():
    from extraction.reconcile import reconcile_invoice_number, reconcile_parties

    f = {"invoice_id": "20"}
    reconcile_invoice_number(f, "FACTURE\nN°F-20240000014\n\nDATE : 07-11-2024\nFacture N°F-20240000014\n")
    assert f["invoice_id"] == "F-20240000014"
    text = ("Kundenname / Firma\nMusterkunde GmbH & Co Name 2 Musterkunde\nUSt.-Id:N/A\nStNr.:DE2012129398\n"
            "Musterstrasse 44, 40789 Musterstadt, DE\n")
    f = {"vendor_name": None, "client_name": "StNr.:DE2012129398"}
    reconcile_parties(f, text)
    assert f["client_name"] == "Musterkunde GmbH & Co Name 2 Musterkunde"


def test_a_vendor_name_that_ends_a_legal_name_printed_whole_in_the_header_is_the_whole_name():
    from extraction.reconcile import reconcile_whole_name

    text = "KIKU JAPANESE RESTAURANT\nTK DIVISION KITCHEN SDN BHD\n1202152-P\n19-1, JALAN MALINJA 2\n"
    f = {"vendor_name": "KITCHEN SDN BHD"}
    assert reconcile_whole_name(f, text)[0].after == "TK DIVISION KITCHEN SDN BHD" == f["vendor_name"]
    # a label before the name, a title word, or a vendor label elsewhere: the name stays as read
    for kept_text in ("OWN BY: CHEF LEE SDN BHD\n", "COPY CHEF LEE SDN BHD\n",
                      "THE FOOD CORNER CHEF LEE SDN BHD\nSeller:\nCHEF LEE SDN BHD\n"):
        f = {"vendor_name": "CHEF LEE SDN BHD"}
        assert reconcile_whole_name(f, kept_text) == [] and f["vendor_name"] == "CHEF LEE SDN BHD", kept_text
    f = {"vendor_name": "Kiku Restaurant"}  # no legal form: no name to complete
    assert reconcile_whole_name(f, "The Kiku Restaurant\n") == []
